from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from modelrepo.schema import TensorSpec
from service.engine.providers import CPU, ProviderSpec
from service.engine.session import Engine
from service.errors import InferenceFailed
from tests.service.conftest import RGB_BIAS, RGB_WEIGHT

TRT, CUDA = "TensorrtExecutionProvider", "CUDAExecutionProvider"
INPUT = TensorSpec(name="input", dtype="float32", shape=(-1, 3, 16, 16))
OUTPUT = TensorSpec(name="logits", dtype="float32", shape=(-1, 4), layout="NC")


def engine(path: Path, **kwargs) -> Engine:
    kwargs.setdefault("providers", [ProviderSpec(CPU)])
    return Engine(path, input_spec=INPUT, output_spec=OUTPUT, intra_op_threads=1, **kwargs)


@pytest.fixture
def rgb_path(model_repo) -> Path:
    return model_repo / "tiny_rgb" / "1" / "model.onnx"


def test_engine_runs_and_matches_hand_computation(rgb_path):
    e = engine(rgb_path)
    batch = np.random.default_rng(0).normal(size=(3, 3, 16, 16)).astype(np.float32)
    expected = batch.mean(axis=(2, 3)) @ RGB_WEIGHT + RGB_BIAS
    np.testing.assert_allclose(e.run(batch), expected, rtol=1e-5, atol=1e-5)
    assert e.providers_in_use == [CPU]
    e.warmup([1, 4, 8])
    e.close()


@pytest.mark.parametrize(
    "batch",
    [np.zeros((2, 3, 8, 8), np.float32), np.zeros((2, 3, 16, 16), np.float64), np.zeros((3, 16, 16), np.float32)],
)
def test_engine_validates_its_input(rgb_path, batch):
    with pytest.raises(ValueError, match="expected"):
        engine(rgb_path).run(batch)


def test_io_binding_gives_the_same_logits(rgb_path):
    """The bound path (what a GPU session uses), run here with CPU buffers."""
    x = np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32)
    plain, bound = engine(rgb_path).run(x), engine(rgb_path, io_binding=True).run(x)
    assert bound.shape == (5, 4) and bound.dtype == np.float32
    np.testing.assert_array_equal(bound, plain)
    with pytest.raises(ValueError, match="expected"):
        engine(rgb_path, io_binding=True).run(x.astype(np.float64))


@pytest.mark.parametrize("io_binding", [False, True])
def test_engine_takes_a_list_of_images_as_a_batch(rgb_path, io_binding):
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    e = engine(rgb_path, io_binding=io_binding)
    np.testing.assert_array_equal(e.run(list(x)), e.run(x))
    with pytest.raises(ValueError, match=r"float32\(3, 8, 8\)"):
        e.run([x[0], np.zeros((3, 8, 8), np.float32)])
    with pytest.raises(ValueError, match="expected 0"):
        e.run([])


@pytest.mark.parametrize(("graph_sizes", "runs"), [((), [1, 1, 4, 4]), ((1, 4), [1, 1, 1, 4, 4, 4])])
def test_warmup_runs_each_size_enough_to_capture_its_graph(rgb_path, graph_sizes, runs):
    e = engine(rgb_path, io_binding=True)
    e._bound.graph_batch_sizes = list(graph_sizes)
    seen = []
    e.run = lambda images: seen.append(len(images))
    e.warmup([4, 1, 4])
    assert seen == runs


class OnCuda:
    """A CPU session that says it runs on CUDA: what the engine decides from the providers in use."""

    def __init__(self, session):
        self._session = session

    def get_providers(self):
        return [CUDA, CPU]

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.mark.parametrize("graphs_start", [True, False])
def test_engine_retries_a_provider_without_cuda_graphs_before_dropping_it(rgb_path, graphs_start):
    calls = []

    def factory(path, *, sess_options, providers, provider_options):
        calls.append((providers[0], dict(provider_options[0])))
        if "enable_cuda_graph" in provider_options[0] and not graphs_start:
            raise RuntimeError("not all nodes are partitioned to the CUDA EP")
        return OnCuda(ort.InferenceSession(path, sess_options=sess_options, providers=[CPU]))

    spec = ProviderSpec(CUDA, {"device_id": "0", "enable_cuda_graph": "1"})
    e = engine(rgb_path, providers=[spec], session_factory=factory, io_binding=True, bucket_sizes=[4, 1])
    if graphs_start:
        assert calls == [(CUDA, spec.options)]
        assert e.cuda_graph_batch_sizes == [1, 4]
    else:
        assert calls == [(CUDA, spec.options), (CUDA, {"device_id": "0"})]
        assert e.cuda_graph_batch_sizes == []


def test_no_cuda_graphs_when_onnx_runtime_itself_fell_back_to_cpu(rgb_path):
    def factory(path, *, sess_options, providers, provider_options):
        return ort.InferenceSession(path, sess_options=sess_options, providers=[CPU])  # CUDA skipped, no error

    spec = ProviderSpec(CUDA, {"device_id": "0", "enable_cuda_graph": "1"})
    e = engine(rgb_path, providers=[spec], session_factory=factory, io_binding=True, bucket_sizes=[1, 4])
    assert e.cuda_graph_batch_sizes == []
    x = np.random.default_rng(2).random((3, 3, 16, 16), dtype=np.float32)
    np.testing.assert_array_equal(e.run(x), engine(rgb_path).run(x))  # bound to CPU buffers, not CUDA ones


def test_engine_falls_back_when_a_provider_fails_to_start(rgb_path):
    calls = []

    def factory(path, *, sess_options, providers, provider_options):
        calls.append(providers)
        if CUDA in providers:
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return ort.InferenceSession(path, sess_options=sess_options, providers=providers)

    e = engine(rgb_path, providers=[ProviderSpec(CUDA, {"device_id": "0"})], session_factory=factory)
    assert calls == [[CUDA, CPU], [CPU]]  # CPU is appended as the last resort
    assert e.providers_in_use == [CPU]


def test_engine_reports_when_even_cpu_fails(rgb_path):
    def factory(*args, **kwargs):
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        engine(rgb_path, session_factory=factory)


def test_engine_checks_outputs_match_inputs(rgb_path):
    e = engine(rgb_path)

    class OneRowTooFew:
        def run(self, names, feeds):
            return [np.zeros((len(feeds["input"]) - 1, 4), np.float32)]

    e._session = OneRowTooFew()
    with pytest.raises(InferenceFailed, match="batch of 2"):
        e.run(np.zeros((2, 3, 16, 16), np.float32))


def test_engine_rejects_names_that_do_not_match_config(rgb_path):
    with pytest.raises(ValueError, match="expects"):
        Engine(
            rgb_path,
            input_spec=INPUT.model_copy(update={"name": "pixels"}),
            output_spec=OUTPUT,
            providers=[ProviderSpec(CPU)],
        )


@pytest.mark.parametrize("spinning", [False, True])
def test_engine_passes_thread_options_to_the_session(rgb_path, spinning):
    seen = []

    def factory(path, *, sess_options, providers, provider_options):
        seen.append(sess_options)
        return ort.InferenceSession(path, sess_options=sess_options, providers=providers)

    engine(rgb_path, spinning=spinning, session_factory=factory)
    (options,) = seen
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == str(int(spinning))


class RecordingSession:
    """Wraps a real session; records the run options of each run."""

    def __init__(self, session: ort.InferenceSession, providers: list[str] | None = None):
        self._session, self._providers, self.options = session, providers, []

    def run(self, outputs, feeds, run_options=None):
        self.options.append(run_options)
        return self._session.run(outputs, feeds, run_options)

    def get_providers(self):
        return self._providers or self._session.get_providers()

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.mark.parametrize(("providers", "trims"), [(None, True), ([CUDA, CPU], False)])
def test_trim_memory_shrinks_the_cpu_arena_only_on_cpu(rgb_path, providers, trims):
    recorded = []

    def factory(*args, **kwargs):
        recorded.append(RecordingSession(ort.InferenceSession(*args, **kwargs), providers))
        return recorded[-1]

    e = engine(rgb_path, session_factory=factory)
    e.trim_memory()
    (session,) = recorded
    if not trims:
        assert session.options == []  # a GPU session keeps its memory
        return
    (options,) = session.options
    assert options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"


def test_onnx_runtime_own_fallback_is_off_so_options_survive_a_failed_provider(rgb_path, monkeypatch):
    made = []
    real = ort.InferenceSession

    def recording(path, **kwargs):
        made.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    e = engine(rgb_path)
    assert made and all(kwargs["enable_fallback"] == 0 for kwargs in made)
    assert e.providers_in_use == [CPU]


class LostDevice:
    """A session on 'CUDA' whose runs fail the way ONNX Runtime reported it on an H100."""

    def __init__(self, session, message: str):
        self._session, self._message = session, message

    def get_providers(self):
        return [CUDA, CPU]

    def run(self, *args, **kwargs):
        raise RuntimeError(self._message)

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.mark.parametrize(
    ("message", "lost"),
    [
        ("Error in execution: CUDA failure 715: an illegal instruction was encountered ; GPU=0", True),
        ("CUDNN failure 4000: CUDNN_STATUS_INTERNAL_ERROR", True),
        ("Got invalid dimensions for input: input", False),
    ],
)
def test_a_failed_gpu_marks_the_engine_for_restart_other_errors_do_not(rgb_path, message, lost):
    def factory(path, *, sess_options, providers, provider_options):
        return LostDevice(ort.InferenceSession(path, sess_options=sess_options, providers=[CPU]), message)

    e = engine(rgb_path, providers=[ProviderSpec(CUDA)], session_factory=factory)
    x = np.zeros((1, 3, 16, 16), np.float32)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            e.run(x)
    assert (e.device_error is not None) == lost
    if lost:
        assert e.device_error.startswith(message[:20])
