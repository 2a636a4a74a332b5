"""How front ends and the engine talk (SERVE_WORKERS >= 2): tensors through shared memory, control through
`multiprocessing` connections on a Unix socket.

Each front end owns one shared-memory segment of equal slots (`SlotPool`), created by the supervisor. A
request's decoded images are written into free slots; the engine reads them from there into its batch and
writes each image's output row back over the same slot, so the messages stay small: ("submit", id, model,
slots, deadline) one way, ("result", id, timings) or ("error", id, ...) the other. Every submit gets exactly
one answer, and only that answer frees its slots: until then the engine may still be reading them. Free
slots are the front end's backpressure: none free means 429 before decoding.

`multiprocessing` connections, not pyzmq: read from asyncio (add_reader), a round trip cost the two sides
28 µs of CPU against pyzmq's 106 µs at 16 in flight (`python -m loadtest.transport`, docs/BENCHMARKS.md),
and the engine's CPU per request bounds what one engine can feed.

The engine also learns from the socket when a front end dies: its connection ends. It then drops that front
end's queued images and, once no running batch reads its slots, lets the replacement (same segment) in.
"""

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from modelrepo.schema import ModelConfig, TensorSpec

log = logging.getLogger(__name__)

SLOT_ALIGN = 64  # a cache line: slots never share one


def tensor_bytes(spec: TensorSpec) -> int:
    """Bytes of one sample of `spec` (its shape without the batch dimension)."""
    return math.prod(spec.shape[1:]) * np.dtype(spec.dtype).itemsize


def slot_bytes(configs: Sequence[ModelConfig]) -> int:
    """A slot holds one image's input or its output row, whichever is larger, for every model given."""
    largest = max((max(tensor_bytes(c.input), tensor_bytes(c.output)) for c in configs), default=SLOT_ALIGN)
    return -(-largest // SLOT_ALIGN) * SLOT_ALIGN


@dataclass(frozen=True)
class PoolSpec:
    """What a process needs to attach to a front end's segment (picklable)."""

    name: str
    slots: int
    slot_bytes: int


class SlotPool:
    """One front end's slots in one shared-memory segment. The front end takes and gives slots; the engine
    only views them. Only the creator (the supervisor) unlinks the segment."""

    def __init__(self, shm: SharedMemory, spec: PoolSpec, owner: bool):
        self._shm, self.spec, self._owner = shm, spec, owner
        self._free = list(range(spec.slots - 1, -1, -1))  # a stack: recently used slots are warm in cache

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> "SlotPool":
        shm = SharedMemory(create=True, size=slots * slot_bytes)
        return cls(shm, PoolSpec(shm.name, slots, slot_bytes), owner=True)

    @classmethod
    def attach(cls, spec: PoolSpec) -> "SlotPool":
        # Python < 3.13 registers an attached segment with the resource tracker as well (cpython#82300). The
        # processes here are started by multiprocessing and share the supervisor's tracker, which holds each
        # name once: the registration is a no-op, and must not be undone here or the creator's would be too.
        # That tracker unlinks whatever is left if every process was killed.
        return cls(SharedMemory(name=spec.name), spec, owner=False)

    def view(self, slot: int, shape: Sequence[int], dtype: np.dtype | str) -> np.ndarray:
        """An array over slot `slot`'s bytes (no copy)."""
        if not 0 <= slot < self.spec.slots:
            raise ValueError(f"slot {slot} is outside 0..{self.spec.slots - 1}")
        return np.ndarray(tuple(shape), dtype=dtype, buffer=self._shm.buf, offset=slot * self.spec.slot_bytes)

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self, n: int) -> list[int] | None:
        """`n` free slots, or None if fewer are free."""
        if n > len(self._free):
            return None
        return [self._free.pop() for _ in range(n)]

    def give(self, slots: Sequence[int]) -> None:
        self._free.extend(slots)

    def close(self) -> None:
        """Detach; the creator also unlinks. Views still alive keep the mapping until they go."""
        with contextlib.suppress(BufferError):  # a view is still alive; the mapping goes with the process
            self._shm.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()


class Link:
    """One control connection, read from the event loop: each whole message goes to `on_message`; when the
    peer is gone, `on_closed` runs once. Messages are small tuples, written whole by one send."""

    def __init__(self, conn: Connection, on_message: Callable[[tuple], None], on_closed: Callable[[], None]):
        self._conn, self._on_message, self._on_closed = conn, on_message, on_closed
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._readable)
        # Under the service's event loop (uvloop: libuv's poll handle) the descriptor turned non-blocking, and a
        # message larger than one read (the status of three models) failed half-way with EAGAIN. Messages are
        # read whole here; the loop only polls. (tests/service/frontend/routes/test_models.py, 50,000 labels)
        os.set_blocking(self._conn.fileno(), True)

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                self._on_message(self._conn.recv())
        except (EOFError, OSError) as e:
            log.debug("link closed: %r", e)
            self._lost()

    def send(self, message: tuple) -> None:
        if self.closed:
            return
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self._lost()

    def _lost(self) -> None:
        if not self.closed:
            self.close()
            self._on_closed()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
        self._conn.close()


def listen(address: str) -> Listener:
    return Listener(address, family="AF_UNIX")


def connect(address: str) -> Connection:
    return Client(address, family="AF_UNIX")
