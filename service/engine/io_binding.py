"""I/O binding for a session on a GPU: where a batch lives on its way to the device and back.

The images of a batch are stacked straight into a host staging buffer that is reused from batch to
batch and, when the provider offers it, pinned (page-locked), so the copy to the device is one DMA
with no bounce through a driver buffer. ONNX Runtime copies the batch's rows to the device once and
the logits come back once.

Batches are padded up to the nearest of a few bucket sizes (powers of two, see service/app.py), each
run during warm-up: the CUDA provider picks cuDNN's algorithms per input shape, and a shape first
seen while serving would pay that search (seconds with EXHAUSTIVE) inside a client's request. With
CUDA graphs a replay reads and writes the device addresses it was captured at, so each bucket owns
one set of buffers bound once, and replays take turns (ONNX Runtime does not replay graphs from
several threads at once).
"""

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

GRAPH_ID = "gpu_graph_id"  # run option: which captured graph to replay; 0 is ONNX Runtime's own, -1 none


def pinned_memory(provider: str) -> "ort.OrtMemoryInfo | None":
    """The provider's host-accessible (pinned) memory, where this ONNX Runtime build offers it."""
    if not hasattr(ort, "get_ep_devices") or not hasattr(ort, "OrtDeviceMemoryType"):
        return None
    for device in ort.get_ep_devices():
        if device.ep_name == provider:
            info = device.memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)
            if info is not None:
                return info
    return None


class HostBuffer:
    """A host array for `rows` samples, zeroed (padding rows must be numbers); pinned when `memory` is given
    and ONNX Runtime shares it with numpy."""

    def __init__(self, rows: int, sample_shape: Sequence[int], dtype: np.dtype, memory=None):
        shape = [rows, *sample_shape]
        self.pinned = False
        if memory is not None:
            try:
                self._value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, memory_info=memory)
                array = self._value.numpy()
                if array.ctypes.data == self._value.data_ptr():  # a view, not a copy
                    array.fill(0)
                    self.array, self.pinned = array, True
            except Exception as e:  # an allocator this build lacks: pageable memory still works
                log.warning("no pinned host memory (%s); staging in pageable memory", e)
        if not self.pinned:
            self.array = np.zeros(shape, dtype)

    @property
    def rows(self) -> int:
        return len(self.array)

    def stack(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Write the images into the first len(images) rows; returns that view."""
        rows = self.array[: len(images)]
        np.stack(images, out=rows, casting="no")
        return rows


@dataclass(eq=False)
class _GraphSet:
    """Everything one captured graph touches, allocated once."""

    host: HostBuffer
    device_input: ort.OrtValue
    device_output: ort.OrtValue
    binding: ort.IOBinding
    run_options: ort.RunOptions
    lock: threading.Lock


class BoundRunner:
    """Runs batches through a session with inputs and outputs bound; thread-safe."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        input_name: str,
        output_name: str,
        sample_shape: Sequence[int],
        dtype: np.dtype,
        output_row_shape: Sequence[int],
        output_dtype: np.dtype,
        device: str,
        device_id: int = 0,
        pinned=None,
        bucket_sizes: Sequence[int] = (),
        graphs: bool = False,
    ):
        self._session = session
        self._input, self._output = input_name, output_name
        self._sample_shape, self._dtype = tuple(sample_shape), np.dtype(dtype)
        self._output_row_shape, self._output_dtype = tuple(output_row_shape), np.dtype(output_dtype)
        self._device, self._device_id = device, device_id
        self._pinned_memory = pinned
        self.bucket_sizes = sorted(set(bucket_sizes))
        self.graph_batch_sizes = self.bucket_sizes if graphs else []
        self._staging: queue.SimpleQueue[HostBuffer] = queue.SimpleQueue()  # free buffers, one per run in flight
        self._graph_sets: dict[int, _GraphSet] = {}
        self._graph_sets_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._uncaptured = None  # with graphs on, a run past the largest captured size must not capture one
        if self.graph_batch_sizes:
            self._uncaptured = ort.RunOptions()
            self._uncaptured.add_run_config_entry(GRAPH_ID, "-1")
        first = self._host_buffer(1)  # grows on first use; allocated now to learn whether staging is pinned
        self._staging.put(first)
        self.pinned = first.pinned

    def _host_buffer(self, rows: int) -> HostBuffer:
        return HostBuffer(rows, self._sample_shape, self._dtype, self._pinned_memory)

    def padded_size(self, n: int) -> int:
        """The batch size a batch of n runs at: the nearest bucket's, or n itself past the largest."""
        return next((size for size in self.bucket_sizes if size >= n), n)

    def run(self, images: Sequence[np.ndarray]) -> np.ndarray:
        size = self.padded_size(len(images))
        if size in self.graph_batch_sizes:
            return self._replay(images, self._graph_set(size))
        return self._run_staged(images, size)

    def _run_staged(self, images: Sequence[np.ndarray], size: int) -> np.ndarray:
        """One run at `size` rows, the first len(images) of them these images; their logits."""
        try:
            staging = self._staging.get_nowait()
        except queue.Empty:
            staging = self._host_buffer(size)
        try:
            if staging.rows < size:  # grows to the largest batch seen (warm-up: the largest there is)
                staging = self._host_buffer(size)
            staging.stack(images)  # rows past len(images) hold zeros or an earlier batch's images
            batch = staging.array[:size]
            binding = self._session.io_binding()
            binding.bind_input(self._input, "cpu", 0, self._dtype, list(batch.shape), batch.ctypes.data)
            binding.bind_output(self._output, self._device, self._device_id)
            self._session.run_with_iobinding(binding, self._uncaptured)
            (logits,) = binding.copy_outputs_to_cpu()
            return logits[: len(images)]
        finally:
            self._staging.put(staging)

    def _graph_set(self, size: int) -> _GraphSet:
        with self._graph_sets_lock:
            if size not in self._graph_sets:
                graph_id = self.graph_batch_sizes.index(size) + 1
                self._graph_sets[size] = self._new_graph_set(size, graph_id)
            return self._graph_sets[size]

    def _new_graph_set(self, size: int, graph_id: int) -> _GraphSet:
        on_device = (self._device, self._device_id)
        device_input = ort.OrtValue.ortvalue_from_shape_and_type([size, *self._sample_shape], self._dtype, *on_device)
        device_output = ort.OrtValue.ortvalue_from_shape_and_type(
            [size, *self._output_row_shape], self._output_dtype, *on_device
        )
        binding = self._session.io_binding()
        binding.bind_ortvalue_input(self._input, device_input)
        binding.bind_ortvalue_output(self._output, device_output)
        run_options = ort.RunOptions()
        run_options.add_run_config_entry(GRAPH_ID, str(graph_id))
        log.info("batch size %d: CUDA graph %d", size, graph_id)
        return _GraphSet(self._host_buffer(size), device_input, device_output, binding, run_options, threading.Lock())

    def _replay(self, images: Sequence[np.ndarray], graph: _GraphSet) -> np.ndarray:
        n = len(images)
        with graph.lock:
            graph.host.stack(images)  # rows past n keep an earlier batch's images; their logits are dropped
            with self._replay_lock:
                graph.device_input.update_inplace(graph.host.array)
                self._session.run_with_iobinding(graph.binding, graph.run_options)
                return np.array(graph.device_output.numpy()[:n])
