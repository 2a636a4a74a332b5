"""The bound path a GPU session takes, run here on CPU buffers (this machine has no GPU): staging reuse,
padding to captured graph sizes, the graph ids each run asks for, and results equal to a plain run."""

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.engine.io_binding import GRAPH_ID, BoundRunner, HostBuffer, pinned_memory

SAMPLE = (3, 16, 16)


class RecordingSession:
    """A real CPU session that records the graph id each bound run asks for."""

    def __init__(self, path: Path):
        self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.graph_ids: list[str | None] = []

    def io_binding(self) -> ort.IOBinding:
        return self._session.io_binding()

    def run_with_iobinding(self, binding, run_options=None):
        self.graph_ids.append(run_options.get_run_config_entry(GRAPH_ID) if run_options else None)
        self._session.run_with_iobinding(binding, run_options)

    def run(self, *args):
        return self._session.run(*args)


@pytest.fixture
def session(model_repo) -> RecordingSession:
    return RecordingSession(model_repo / "tiny_rgb" / "1" / "model.onnx")


def runner(session, bucket_sizes=(), graphs=False, **kwargs) -> BoundRunner:
    return BoundRunner(
        session,
        input_name="input",
        output_name="logits",
        sample_shape=SAMPLE,
        dtype=np.float32,
        output_row_shape=(4,),
        output_dtype=np.float32,
        device="cpu",
        bucket_sizes=bucket_sizes,
        graphs=graphs,
        **kwargs,
    )


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).random((n, *SAMPLE), dtype=np.float32))


def plain(session, batch) -> np.ndarray:
    return session.run(["logits"], {"input": np.stack(batch)})[0]


def test_host_buffer_stacks_into_its_rows_and_refuses_other_dtypes():
    buffer = HostBuffer(4, SAMPLE, np.dtype(np.float32))
    batch = images(3)
    rows = buffer.stack(batch)
    assert rows.shape == (3, *SAMPLE) and np.shares_memory(rows, buffer.array)
    np.testing.assert_array_equal(rows, np.stack(batch))
    assert not buffer.pinned
    with pytest.raises(TypeError):
        buffer.stack([image.astype(np.float64) for image in batch])


def test_host_buffer_from_onnx_runtime_memory_is_shared_with_numpy():
    """Pinned memory comes from ONNX Runtime's allocator; CPU memory stands in for it here."""
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(memory, None)
    buffer = HostBuffer(2, SAMPLE, np.dtype(np.float32), memory)
    assert buffer.pinned and buffer.array.shape == (2, *SAMPLE)
    buffer.stack(images(2))
    assert buffer.array.ctypes.data == buffer._value.data_ptr()


def test_host_buffer_falls_back_to_pageable_memory_when_allocation_fails(monkeypatch):
    def no_allocator(*args, **kwargs):
        raise RuntimeError("No shared allocator found")  # what ONNX Runtime says for memory it cannot allocate

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type", no_allocator)
    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    buffer = HostBuffer(2, SAMPLE, np.dtype(np.float32), memory)
    assert not buffer.pinned and buffer.array.shape == (2, *SAMPLE)
    np.testing.assert_array_equal(buffer.stack(images(2)), np.stack(images(2)))


def test_no_pinned_memory_without_a_gpu_provider():
    assert pinned_memory("CUDAExecutionProvider") is None  # not installed here
    assert pinned_memory("NoSuchExecutionProvider") is None


def test_unpadded_runs_reuse_one_staging_buffer_and_match_a_plain_run(session):
    bound = runner(session)
    first, second = images(5, seed=1), images(2, seed=2)
    np.testing.assert_array_equal(bound.run(first), plain(session, first))
    buffer = bound._staging.get()
    bound._staging.put(buffer)
    np.testing.assert_array_equal(bound.run(second), plain(session, second))
    assert bound._staging.get() is buffer  # reused, not reallocated
    assert session.graph_ids == [None, None]  # no graphs: no graph id asked for


def test_staging_grows_to_the_largest_batch(session):
    bound = runner(session)
    bound.run(images(2))
    big = images(9, seed=3)
    np.testing.assert_array_equal(bound.run(big), plain(session, big))
    assert bound._staging.get().rows == 9


def test_concurrent_runs_do_not_share_staging(session):
    bound = runner(session)
    batches = [images(4, seed=s) for s in range(8)]
    expected = [plain(session, b) for b in batches]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(4, timeout=10)

    def worker(k: int):
        barrier.wait()
        for _ in range(20):
            for i in range(k, len(batches), 4):
                results[i] = bound.run(batches[i])
                np.testing.assert_array_equal(results[i], expected[i])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8))


class ShapeRecordingSession(RecordingSession):
    """Also records the batch size each bound run was given."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.batch_sizes: list[int] = []

    def run_with_iobinding(self, binding, run_options=None):
        super().run_with_iobinding(binding, run_options)
        self.batch_sizes.append(binding.get_outputs()[0].shape()[0])


def test_without_graphs_batches_still_pad_to_the_warmed_up_buckets(model_repo):
    session = ShapeRecordingSession(model_repo / "tiny_rgb" / "1" / "model.onnx")
    bound = runner(session, bucket_sizes=[1, 2, 4, 8])
    assert bound.graph_batch_sizes == []
    for n, seed in ((3, 1), (5, 2), (1, 3), (2, 4), (9, 5)):
        batch = images(n, seed=seed)
        out = bound.run(batch)
        assert out.shape == (n, 4)  # the padding rows' logits are dropped
        np.testing.assert_allclose(out, plain(session, batch), rtol=1e-6)
    assert session.batch_sizes == [4, 8, 1, 2, 9]  # past the largest bucket, a batch runs as it is
    assert session.graph_ids == [None] * 5


def test_padding_rows_start_as_zeros_not_garbage():
    buffer = HostBuffer(4, SAMPLE, np.dtype(np.float32))
    assert not buffer.array.any()


def test_graph_sizes_pad_and_each_size_keeps_its_own_buffers(session):
    bound = runner(session, bucket_sizes=[8, 1, 4], graphs=True)
    assert [bound.padded_size(n) for n in (1, 2, 4, 5, 8, 9)] == [1, 4, 4, 8, 8, 9]
    three, two, eight = images(3, seed=4), images(2, seed=5), images(8, seed=6)
    out = bound.run(three)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, plain(session, three), rtol=1e-6)
    graph = bound._graph_sets[4]
    np.testing.assert_allclose(bound.run(two), plain(session, two), rtol=1e-6)  # stale third row is dropped
    assert bound._graph_sets[4] is graph and sorted(bound._graph_sets) == [4]
    np.testing.assert_allclose(bound.run(eight), plain(session, eight), rtol=1e-6)
    bound.run(images(9))  # past the largest captured size: runs as it is, asking for no capture
    assert session.graph_ids == ["2", "2", "3", "-1"]  # ids start at 1 (0 is ONNX Runtime's own)


def test_graph_replays_take_turns(session):
    bound = runner(session, bucket_sizes=[2, 4], graphs=True)
    batches = {n: images(n, seed=n) for n in (1, 2, 3, 4)}
    expected = {n: plain(session, b) for n, b in batches.items()}
    errors = []

    def worker(n: int):
        try:
            for _ in range(30):
                np.testing.assert_allclose(bound.run(batches[n]), expected[n], rtol=1e-6)
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(bound._graph_sets) == [2, 4]
