"""The front end's way to the models when they live in the engine process (SERVE_WORKERS >= 2): a
`ModelBackend` over service/transport.py, answering exactly as the in-process one does.

`reserve` takes slots in this front end's shared-memory segment (none free: 429 before decoding, Retry-After
from the model's drain rate) and, for a model with a latency objective, asks the engine to hold room for the
images (its batcher's admission, before they are decoded); the decoder writes each image straight into its
slot; `infer` sends the slots and waits for the one answer every submit gets. A request that times out (504)
or whose client left sends a cancel, and its slots stay taken until the engine's answer says it no longer reads
them.

Statuses are the engine's, cached: refreshed often until every model has loaded or failed, then every
STATUS_REFRESH_S, and on each probe. The front end takes connections only once the engine has let it in.
"""

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from modelrepo.read import RepositoryError, configured_models
from service.config import Settings
from service.errors import DeadlineExceeded, ModelNotReady, QueueFull, from_wire
from service.metrics import Metrics
from service.schemas import ModelState
from service.status import InferenceResult, ModelStatus, require
from service.transport import Link, PoolSpec, SlotPool, connect, tensor_bytes

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 600.0  # the engine imports ONNX Runtime before it listens
STATUS_TIMEOUT_S = 2.0
LOADING_REFRESH_S = 0.1
STATUS_REFRESH_S = 2.0
HOLD_TIMEOUT_S = 5.0  # the engine answers a hold from its event loop at once; this long means it is stuck


@dataclass(eq=False)
class SlotReservation:
    pool: SlotPool
    slots: list[int]
    buffers: list[np.ndarray]
    request_id: int
    version: int | None = None  # the version asked for; None: the newest ready when the engine queues them
    held: Link | None = None  # the engine holds room for these images (a latency objective) until submit
    submitted: bool = False

    def release(self) -> None:
        if self.submitted:
            return
        if self.slots:
            self.pool.give(self.slots)
            self.slots = []
        if self.held is not None and not self.held.closed:
            self.held.send(("unhold", self.request_id))
        self.held = None


@dataclass(eq=False)
class _Waiting:
    reservation: SlotReservation
    status: ModelStatus
    future: asyncio.Future
    abandoned: bool = False  # answered the client already (504, or it left): only the slots matter


class EngineClient:
    def __init__(self, settings: Settings, address: str, pool: PoolSpec, index: int):
        self.settings = settings
        self._address, self._index = address, index
        self._pool = SlotPool.attach(pool)
        try:
            names = configured_models(settings.model_repository, settings.models)
        except RepositoryError:
            names = []
        self._statuses = {n: ModelStatus(n, ModelState.LOADING, "the engine is starting") for n in names}
        self._link: Link | None = None
        self._welcome = asyncio.Event()
        self._waiting: dict[int, _Waiting] = {}
        self._status_replies: dict[int, asyncio.Future] = {}
        self._hold_replies: dict[int, asyncio.Future] = {}
        self._control_replies: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        """Connected and let in by the engine (it listens before it loads any model), so that this front end
        takes no connection it could only answer with 503; then statuses are refreshed in the background."""
        conn = await asyncio.to_thread(_connect, self._address)
        self._link = Link(conn, self._on_message, self._engine_lost)
        self._link.start()
        self._link.send(("hello", self._index))
        await self._welcome.wait()
        self._tasks.append(asyncio.create_task(self._refresh(), name="refresh-statuses"))

    async def _refresh(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await self.fresh_statuses()
            settled = all(s.state is not ModelState.LOADING for s in self._statuses.values())
            await asyncio.sleep(STATUS_REFRESH_S if settled else LOADING_REFRESH_S)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._link is not None:
            self._link.close()
        self._pool.close()

    # -- messages from the engine -------------------------------------------------------------------

    def _on_message(self, message: tuple) -> None:
        kind, request_id = message[0], message[1]
        if kind == "welcome":
            self._welcome.set()
            return
        if kind == "status":
            future = self._status_replies.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(message[2])
            return
        if kind in ("held", "refused"):
            future = self._hold_replies.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(None if kind == "held" else from_wire(*message[2:]))
            return
        if kind == "controlled":
            future = self._control_replies.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(None if message[2] is None else from_wire(*message[2]))
            return
        waiting = self._waiting.pop(request_id, None)
        if waiting is None:
            log.warning("answer for unknown request %d", request_id)
            return
        reservation = waiting.reservation
        try:
            if waiting.abandoned or waiting.future.done():
                return
            if kind == "result":
                output = waiting.status.source.config.output
                shape, dtype = tuple(output.shape[1:]), np.dtype(output.dtype)
                results = [
                    InferenceResult(self._pool.view(slot, shape, dtype).copy(), *timings)
                    for slot, timings in zip(reservation.slots, message[2], strict=True)
                ]
                waiting.future.set_result(results)
            elif kind == "error":
                waiting.future.set_exception(from_wire(*message[2:]))
            else:  # "released": the request was cancelled
                waiting.future.set_exception(ModelNotReady("the request was cancelled"))
        finally:
            self._pool.give(reservation.slots)

    def _engine_lost(self) -> None:
        """The engine process is gone: nothing will be answered (the supervisor is stopping the service)."""
        log.error("the engine process is gone")
        self._statuses = {n: ModelStatus(n, ModelState.FAILED, "the engine process stopped") for n in self._statuses}
        for waiting in self._waiting.values():
            if not waiting.future.done():
                waiting.future.set_exception(ModelNotReady("the engine process stopped"))
        self._waiting.clear()
        for replies in (self._hold_replies, self._control_replies):
            for future in replies.values():
                if not future.done():
                    future.set_result(ModelNotReady("the engine process stopped"))
            replies.clear()

    # -- ModelBackend ----------------------------------------------------------------------------------

    def statuses(self) -> dict[str, ModelStatus]:
        return self._statuses

    async def fresh_statuses(self) -> dict[str, ModelStatus]:
        if self._link is None or self._link.closed:
            return self._statuses
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._status_replies[request_id] = future
        self._link.send(("status", request_id))
        try:
            self._statuses = await asyncio.wait_for(future, STATUS_TIMEOUT_S)
        finally:
            self._status_replies.pop(request_id, None)
        return self._statuses

    async def ready(self, name: str, version: int | None = None) -> ModelStatus:
        """From the cached statuses; a model (or version) they say is not ready is asked about again first: another
        front end may already have said ready for it (/readyz is answered by whichever front end takes the probe).
        An unknown name costs the engine nothing unless models come and go (SERVE_MODEL_CONTROL)."""
        status = self._statuses.get(name)
        if status is None:
            stale = self.settings.model_control != "none"
        elif version is None:
            stale = status.state is not ModelState.READY
        else:
            found = status.version_status(version)
            stale = found is None or found.state is not ModelState.READY
        if stale:
            with contextlib.suppress(TimeoutError):
                await self.fresh_statuses()
        return require(self._statuses, name, version=version)

    async def reserve(self, status: ModelStatus, n: int, version: int | None = None) -> SlotReservation:
        if self._link is None or self._link.closed:
            raise ModelNotReady(f"model {status.name!r} is not reachable: the engine process is not connected")
        config = status.source.config
        if max(tensor_bytes(config.input), tensor_bytes(config.output)) > self._pool.spec.slot_bytes:
            raise ModelNotReady(f"model {status.name!r} does not fit the shared-memory slots; restart the service")
        queue = status.batching.max_queue_size
        if n > queue:  # as the engine's batcher would say, before decoding: no amount of waiting makes room
            raise QueueFull(f"model {status.name!r} has 0 images queued (max {queue})", retry_after=1)
        slots = self._pool.take(n)
        if slots is None:
            rate = self._statuses.get(status.name, status).drain_rate
            retry_after = 1 if rate <= 0 else min(60, max(1, math.ceil(n / rate)))
            raise QueueFull(
                f"model {status.name!r}: {self._pool.spec.slots - self._pool.free} images of this worker are queued "
                f"or running (limit {self._pool.spec.slots})",
                retry_after=retry_after,
            )
        spec = config.input
        buffers = [self._pool.view(slot, spec.shape[1:], spec.dtype) for slot in slots]
        reservation = SlotReservation(self._pool, slots, buffers, next(self._ids), version)
        if status.batching.latency_slo_ms is not None:
            await self._hold(status, n, reservation)
        return reservation

    async def _hold(self, status: ModelStatus, n: int, reservation: SlotReservation) -> None:
        """The engine's batcher admits the images now, before they are decoded, and counts them as coming."""
        future = asyncio.get_running_loop().create_future()
        self._hold_replies[reservation.request_id] = future
        self._link.send(("hold", reservation.request_id, status.name, reservation.version, n))
        try:
            refused = await asyncio.wait_for(future, HOLD_TIMEOUT_S)
        except BaseException as e:  # cancelled or no answer: the engine may hold the room, so give it back
            self._hold_replies.pop(reservation.request_id, None)
            reservation.held = self._link
            reservation.release()
            if isinstance(e, TimeoutError):
                raise ModelNotReady(f"model {status.name!r}: the engine did not answer in {HOLD_TIMEOUT_S:g} s") from e
            raise
        if refused is not None:
            reservation.release()
            raise refused
        reservation.held = self._link

    async def infer(
        self, status: ModelStatus, reservation: SlotReservation, arrays: list[np.ndarray], deadline: float
    ) -> list[InferenceResult]:
        request_id = reservation.request_id
        waiting = _Waiting(reservation, status, asyncio.get_running_loop().create_future())
        self._waiting[request_id] = waiting
        reservation.submitted = True  # from here only the engine's answer frees the slots (and the hold)
        prepared = status.source.version  # what the images were decoded for
        self._link.send(("submit", request_id, status.name, reservation.version, prepared, reservation.slots, deadline))
        try:
            timeout = max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(asyncio.shield(waiting.future), timeout)
        except TimeoutError:
            self._abandon(request_id, waiting)
            raise DeadlineExceeded("deadline passed before the results were ready") from None
        except asyncio.CancelledError:
            self._abandon(request_id, waiting)
            raise

    async def load(self, name: str) -> None:
        await self._control("load", name)

    async def unload(self, name: str) -> None:
        await self._control("unload", name)

    async def _control(self, kind: str, name: str) -> None:
        """Ask the engine to load or unload `name`; returns when it has (a load may take minutes: no timeout)."""
        if self._link is None or self._link.closed:
            raise ModelNotReady("the engine process is not connected")
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._control_replies[request_id] = future
        self._link.send((kind, request_id, name))
        try:
            error = await future
        finally:
            self._control_replies.pop(request_id, None)
        with contextlib.suppress(TimeoutError):
            await self.fresh_statuses()
        if error is not None:
            raise error

    def _abandon(self, request_id: int, waiting: _Waiting) -> None:
        waiting.abandoned = True
        if request_id in self._waiting and self._link is not None:
            self._link.send(("cancel", request_id))


def _connect(address: str):
    """Blocking: connect to the engine, retrying while it starts."""
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            return connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def remote(address: str, pool: PoolSpec, index: int):
    """A `create_app(backend=...)` for a front end: the engine process's models."""

    @contextlib.asynccontextmanager
    async def backend(settings: Settings, metrics: Metrics) -> AsyncIterator[EngineClient]:
        client = EngineClient(settings, address, pool, index)
        await client.start()
        try:
            yield client
        finally:
            await client.stop()

    return backend
