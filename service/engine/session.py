"""One ONNX Runtime session for one model version: `run(batch) -> logits`, on the providers that
service/engine/providers.py chose, retrying without those that fail to start."""

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from modelrepo.schema import TensorSpec
from service.engine.io_binding import BoundRunner, pinned_memory
from service.engine.providers import CPU, GRAPH_OPTIONS, ProviderSpec
from service.errors import InferenceFailed, shorten

log = logging.getLogger(__name__)


def session_options(intra_op_threads: int = 0, spinning: bool = False) -> ort.SessionOptions:
    """Sequential execution, `intra_op_threads` for each operator. Spinning keeps those threads busy-waiting
    between operators and between runs; off, they sleep and leave the cores to decoding and HTTP."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


SessionFactory = Callable[..., ort.InferenceSession]

# How ONNX Runtime words a failed CUDA, cuDNN or cuBLAS call. Seen on an H100: "CUDA failure 715: an illegal
# instruction was encountered" from a CUDA graph replay. Such errors are sticky: the device context is lost
# and every later run fails the same way, so the process must be restarted, not retried.
DEVICE_FAILURES = ("CUDA failure", "CUDNN failure", "CUBLAS failure", "cudaError")


def is_device_failure(error: BaseException) -> bool:
    return any(marker in str(error) for marker in DEVICE_FAILURES)


def inference_session(path: str, **kwargs) -> ort.InferenceSession:
    """An InferenceSession with ONNX Runtime's own fallback off. Left on, a provider that fails to start
    (TensorRT without its libraries) is retried as plain CUDA with every option dropped (device id, CUDA
    graphs, memory cap), and a failing run silently moves the session to CPU; `open_session` does the
    retrying instead, keeping each provider's options."""
    return ort.InferenceSession(path, enable_fallback=0, **kwargs)


def open_session(
    path: Path,
    providers: Sequence[ProviderSpec],
    intra_op_threads: int = 0,
    spinning: bool = False,
    session_factory: SessionFactory = inference_session,
) -> tuple[ort.InferenceSession, ProviderSpec]:
    """The session and the spec of the provider it runs on. A provider that fails to start is retried
    without CUDA graphs if it asked for them (they need every node on the GPU), then dropped."""
    candidates = list(providers)
    if not any(p.name == CPU for p in candidates):
        candidates.append(ProviderSpec(CPU))
    while True:
        try:
            session = session_factory(
                str(path),
                sess_options=session_options(intra_op_threads, spinning),
                providers=[p.name for p in candidates],
                provider_options=[p.options for p in candidates],
            )
            return session, candidates[0]
        except Exception as e:
            if len(candidates) == 1:
                raise
            first, graph_option = candidates[0], GRAPH_OPTIONS.get(candidates[0].name)
            if graph_option in first.options:
                log.warning("%s: %s cannot use CUDA graphs (%s); retrying without", path, first.name, e)
                options = {k: v for k, v in first.options.items() if k != graph_option}
                candidates[0] = ProviderSpec(first.name, options)
            else:
                log.warning("%s: %s failed (%s); retrying without it", path, first.name, e)
                candidates = candidates[1:]


def cuda_graphs_in_use(session: ort.InferenceSession, used: ProviderSpec) -> bool:
    """Whether `session` (opened with `used`, see open_session) runs on that provider with CUDA graphs asked
    for: ONNX Runtime may itself have fallen back to CPU."""
    return session.get_providers()[0] == used.name and GRAPH_OPTIONS.get(used.name) in used.options


class Engine:
    """An InferenceSession; if a provider fails to initialize, retries without it, down to CPU.

    On a GPU with `io_binding`, batches go through a `BoundRunner` (service/engine/io_binding.py): reused,
    pinned staging buffers, batches padded up to the nearest of `bucket_sizes`, and a CUDA graph for
    each bucket when the provider accepted them.
    """

    def __init__(
        self,
        path: Path,
        *,
        input_spec: TensorSpec,
        output_spec: TensorSpec,
        providers: Sequence[ProviderSpec],
        intra_op_threads: int = 0,
        spinning: bool = False,
        io_binding: bool = False,
        device_id: int = 0,
        bucket_sizes: Sequence[int] = (),
        session_factory: SessionFactory = inference_session,
    ):
        self.input_spec = input_spec
        self.output_spec = output_spec
        self._dtype = np.dtype(input_spec.dtype)
        self._session, used = open_session(path, providers, intra_op_threads, spinning, session_factory)
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if input_spec.name not in inputs or output_spec.name not in outputs:
            raise ValueError(
                f"{path} has inputs {inputs} and outputs {outputs}; config.json expects "
                f"{input_spec.name!r} -> {output_spec.name!r}"
            )
        self._bound = None
        self.device_error: str | None = None  # set when the GPU failed: the process needs a restart
        if io_binding:
            running_on = self._session.get_providers()[0]  # ONNX Runtime may itself have fallen back to CPU
            on_gpu = running_on != CPU
            self._bound = BoundRunner(
                self._session,
                input_name=input_spec.name,
                output_name=output_spec.name,
                sample_shape=input_spec.shape[1:],
                dtype=self._dtype,
                output_row_shape=output_spec.shape[1:],
                output_dtype=np.dtype(output_spec.dtype),
                device="cuda" if on_gpu else "cpu",
                device_id=device_id if on_gpu else 0,
                pinned=pinned_memory(running_on) if on_gpu else None,
                bucket_sizes=bucket_sizes if on_gpu else (),
                graphs=cuda_graphs_in_use(self._session, used),
            )
            log.info(
                "%s: I/O binding, %s staging, batches padded to %s, CUDA graphs %s",
                path,
                self.staging,
                self._bound.bucket_sizes or "no bucket",
                "captured for each" if self._bound.graph_batch_sizes else "off",
            )

    @property
    def providers_in_use(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def cuda_graph_batch_sizes(self) -> list[int]:
        """Batch sizes with a captured CUDA graph."""
        return list(self._bound.graph_batch_sizes) if self._bound else []

    @property
    def staging(self) -> str | None:
        """Where a bound batch waits for its copy to the device: "pinned", "pageable", or None (not bound)."""
        if self._bound is None:
            return None
        return "pinned" if self._bound.pinned else "pageable"

    @property
    def bucket_sizes(self) -> list[int]:
        """The batch sizes batches run at on a GPU: each is padded up to the nearest."""
        return list(self._bound.bucket_sizes) if self._bound else []

    def run(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """The images of one batch, each (C, H, W) of the input dtype (or one (N, C, H, W) array)
        -> (N, num_classes) float32 logits; checks both ends. Stacking happens here so that a GPU
        session can stack straight into its pinned staging buffer."""
        expected = tuple(self.input_spec.shape[1:])
        n = len(images)
        if n == 0 or any(image.shape != expected or image.dtype != self._dtype for image in images):
            found = {f"{image.dtype}{image.shape}" for image in images}
            raise ValueError(f"batch holds {sorted(found)}, expected {n} of {self._dtype}{expected}")
        try:
            if self._bound is not None:
                logits = self._bound.run(images)
            else:
                batch = images if isinstance(images, np.ndarray) else np.stack(images)
                (logits,) = self._session.run([self.output_spec.name], {self.input_spec.name: batch})
        except Exception as e:
            if self.device_error is None and is_device_failure(e):
                self.device_error = shorten(str(e), 300)
                log.critical("the GPU failed; this process must be restarted (/healthz now says 503): %s", e)
            raise
        if logits.ndim != 2 or logits.shape[0] != n:
            raise InferenceFailed(f"model returned shape {logits.shape} for a batch of {n}")
        return logits.astype(np.float32, copy=False)

    def warmup(self, batch_sizes: Sequence[int]) -> dict[int, float]:
        """Runs at every batch size, so allocations, TensorRT engines and CUDA graphs are ready before
        traffic. Graph capture needs a few runs per size (ONNX Runtime runs plainly before capturing).
        Returns each size's seconds, its last run's (a second one, not the cold first): where the batching
        policy starts from."""
        runs = 3 if self.cuda_graph_batch_sizes else 2
        seconds = {}
        for n in sorted(set(batch_sizes)):
            for _ in range(runs):
                started = time.perf_counter()
                self.run(np.zeros((n, *self.input_spec.shape[1:]), dtype=self._dtype))
                seconds[n] = time.perf_counter() - started
        return seconds

    def trim_memory(self) -> None:
        """Give back what ONNX Runtime's CPU arena grew to for large batches (a batch of 32 on resnet50: 190 MB)
        by running one image with arena shrinkage on; the batcher calls it once a model falls idle. Keeping
        the arena while busy matters: without one, mobilenet_v2 ran 50% slower. A GPU session keeps its memory."""
        if self.providers_in_use[0] != CPU:
            return
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        batch = np.zeros((1, *self.input_spec.shape[1:]), dtype=self._dtype)
        self._session.run([self.output_spec.name], {self.input_spec.name: batch}, options)

    def close(self) -> None:
        self._bound = None
        self._session = None  # ONNX Runtime frees the session when its last reference goes
