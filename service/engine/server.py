"""The engine process (SERVE_WORKERS >= 2): owns the ONNX Runtime sessions, their warm-up and the dynamic
batchers (service/engine/models.py, as in one process), and serves the front ends over service/transport.py.
Only this process touches the GPU.

A submitted request's images are viewed in its front end's shared-memory slots and queued as they are; the
batch reads them from there. The answer goes back once every image has an outcome and the batcher has let go
of every slot (on_release), with each output row written over its image's slot. A front end that goes away
(its connection ends) has its queued images dropped; a front end starting with the same index is let in only
once no batch still reads that segment.
"""

import asyncio
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener

import numpy as np

from service.config import Settings
from service.engine.batcher import DynamicBatcher
from service.engine.models import Models, in_process
from service.errors import InferenceFailed, ServiceError, to_wire
from service.metrics import Metrics
from service.runtime import die_with_parent, tune_process
from service.status import InferenceResult
from service.transport import Link, PoolSpec, SlotPool, listen

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    frontend: "_Frontend"
    id: int
    slots: list[int]
    futures: list[asyncio.Future] = field(default_factory=list)
    held: int = 0  # images the batcher still holds
    output: tuple[tuple[int, ...], np.dtype] | None = None  # shape and dtype of one output row

    def released(self) -> None:
        self.held -= 1
        self._maybe_answer()

    def outcome(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            for other in self.futures:  # one failed: the others need not run
                other.cancel()
        self._maybe_answer()

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()

    def _maybe_answer(self) -> None:
        if self.held > 0 or not all(f.done() for f in self.futures):
            return
        self.frontend.answered(self)


class _Frontend:
    """One connected front end: its link, its slots (viewed), its requests not yet answered."""

    def __init__(self, index: int, link: Link, pool: SlotPool):
        self.index, self.link, self.pool = index, link, pool
        self.requests: dict[int, _Request] = {}
        self.holds: dict[int, tuple[DynamicBatcher, int]] = {}  # room held for images being decoded, by request
        self.gone = False
        self.emptied = asyncio.Event()
        self.emptied.set()

    def answered(self, request: _Request) -> None:
        if self.requests.pop(request.id, None) is None:
            return
        if not self.requests:
            self.emptied.set()
        if self.gone:
            return
        failed = next((f for f in request.futures if not f.cancelled() and f.exception() is not None), None)
        if failed is not None:
            error = failed.exception()
            if not isinstance(error, ServiceError):
                error = InferenceFailed(f"inference failed: {type(error).__name__}")
            self.link.send(("error", request.id, *to_wire(error)))
        elif any(f.cancelled() for f in request.futures):
            self.link.send(("released", request.id))
        else:
            timings = []
            shape, dtype = request.output
            for slot, future in zip(request.slots, request.futures, strict=True):
                result: InferenceResult = future.result()
                self.pool.view(slot, shape, dtype)[...] = result.output
                timings.append((result.queue_ms, result.inference_ms, result.batch_size, result.version))
            self.link.send(("result", request.id, timings))


class EngineServer:
    def __init__(self, models: Models, pools: list[PoolSpec], address: str):
        self.models = models
        self._pools = [SlotPool.attach(spec) for spec in pools]
        self._address = address
        self._frontends: dict[int, _Frontend] = {}  # by index: the newest connection for each
        self._listener: Listener | None = None
        self._controls: set[asyncio.Task] = set()  # loads and unloads asked for by a front end

    def start(self) -> None:
        """Listen; connections are accepted in a thread and handed to the event loop."""
        self._listener = listen(self._address)
        loop = asyncio.get_running_loop()

        def accept() -> None:
            while True:
                try:
                    conn = self._listener.accept()
                except OSError:
                    return
                loop.call_soon_threadsafe(lambda c=conn: asyncio.ensure_future(self._admit(c)))

        threading.Thread(target=accept, name="engine-accept", daemon=True).start()

    async def _admit(self, conn: Connection) -> None:
        """The first message names the front end's index; its slots are free once its predecessor's are."""
        try:
            kind, index = await asyncio.to_thread(conn.recv)
            if kind != "hello" or not 0 <= index < len(self._pools):
                raise ValueError(f"unexpected first message {kind!r} {index!r}")
        except (EOFError, OSError, ValueError, TypeError) as e:
            log.warning("engine: a connection did not introduce itself: %s", e)
            conn.close()
            return
        previous = self._frontends.get(index)
        if previous is not None:
            previous.link.close()
            self._lost(previous)
            await previous.emptied.wait()
        frontend = _Frontend(index, None, self._pools[index])  # type: ignore[arg-type]
        frontend.link = Link(conn, lambda m: self._on_message(frontend, m), lambda: self._lost(frontend))
        self._frontends[index] = frontend
        frontend.link.start()
        frontend.link.send(("welcome", index))
        log.info("engine: front end %d connected", index)

    def _lost(self, frontend: _Frontend) -> None:
        """A front end went away: drop its queued images; its running batches finish and are not answered."""
        if frontend.gone:
            return
        frontend.gone = True
        if frontend.requests:
            log.warning("engine: front end %d went away with %d requests", frontend.index, len(frontend.requests))
        for request in list(frontend.requests.values()):
            request.cancel()
        for batcher, n in frontend.holds.values():
            batcher.release_hold(n)
        frontend.holds.clear()

    def _on_message(self, frontend: _Frontend, message: tuple) -> None:
        kind = message[0]
        if kind == "submit":
            self._submit(frontend, *message[1:])
        elif kind == "cancel":
            request = frontend.requests.get(message[1])
            if request is not None:
                request.cancel()
        elif kind == "status":
            frontend.link.send(("status", message[1], self.models.statuses_now()))
        elif kind == "hold":
            self._hold(frontend, *message[1:])
        elif kind == "unhold":
            held = frontend.holds.pop(message[1], None)
            if held is not None:
                held[0].release_hold(held[1])
        elif kind in ("load", "unload"):
            task = asyncio.ensure_future(self._control(frontend, kind, *message[1:]))
            self._controls.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._controls.discard)
        else:
            log.warning("engine: unknown message %r from front end %d", kind, frontend.index)

    async def _control(self, frontend: _Frontend, kind: str, request_id: int, name: str) -> None:
        """The repository API's load or unload, answered ("controlled", id, None or the error) when done."""
        try:
            await (self.models.load if kind == "load" else self.models.unload)(name)
            error = None
        except Exception as e:
            if not isinstance(e, ServiceError):
                log.exception("engine: %s of %r failed", kind, name)
                e = InferenceFailed(f"{kind} failed: {type(e).__name__}")
            error = to_wire(e)
        frontend.link.send(("controlled", request_id, error))

    def _hold(self, frontend: _Frontend, request_id: int, name: str, version: int | None, n: int) -> None:
        """Admission before decoding (a model with a latency objective): held until submit or unhold. Every
        hold is answered, held or refused."""
        try:
            batcher = self.models.resolve(name, version).batcher
            batcher.hold(n)
        except Exception as e:
            if not isinstance(e, ServiceError):
                log.exception("engine: hold for %r failed", name)
                e = InferenceFailed(f"{type(e).__name__}")
            frontend.link.send(("refused", request_id, *to_wire(e)))
            return
        frontend.holds[request_id] = (batcher, n)
        frontend.link.send(("held", request_id))

    def _submit(
        self,
        frontend: _Frontend,
        request_id: int,
        name: str,
        version: int | None,
        prepared: int,
        slots: list[int],
        deadline: float,
    ) -> None:
        """Queue the images (decoded for version `prepared`) to `version`, or to the newest ready version."""
        request = _Request(frontend, request_id, slots)
        held = frontend.holds.pop(request_id, None)  # enqueue gives it back, queued or refused
        try:
            model = self.models.loaded_for(name, version, prepared)
            batcher = model.batcher
            spec, out = model.source.config.input, model.source.config.output
            arrays = [frontend.pool.view(slot, spec.shape[1:], spec.dtype) for slot in slots]
            request.output = (tuple(out.shape[1:]), np.dtype(out.dtype))
            n = 0
            if held is not None and held[0] is batcher:
                n = held[1]
            elif held is not None:  # a new version took over while these images decoded
                held[0].release_hold(held[1])
            held = None
            request.futures = batcher.enqueue(arrays, deadline, on_release=request.released, held=n)
        except Exception as e:
            if held is not None:  # failed before enqueue took the hold
                held[0].release_hold(held[1])
            if not isinstance(e, ServiceError):
                log.exception("engine: submit for %r failed", name)
                e = InferenceFailed(f"{type(e).__name__}")
            frontend.link.send(("error", request_id, *to_wire(e)))
            return
        request.held = len(request.futures)
        frontend.requests[request_id] = request
        frontend.emptied.clear()
        for future in request.futures:
            future.add_done_callback(request.outcome)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for frontend in self._frontends.values():
            frontend.link.close()
        for pool in self._pools:
            pool.close()


async def _serve(settings: Settings, address: str, pools: list[PoolSpec]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    metrics = Metrics()
    async with in_process(settings, metrics) as models:
        server = EngineServer(models, pools, address)
        server.start()
        refresh = asyncio.create_task(metrics.refresh_periodically(), name="refresh-gauges")
        await stop.wait()
        log.info("engine: stopping")
        refresh.cancel()
        server.close()
    # Leaving `in_process` drained every batcher and closed every session.


def run_engine(settings: Settings, address: str, pools: list[PoolSpec]) -> None:
    """The engine process's entry point (multiprocessing, spawn). SIGTERM drains and exits; SIGINT (a terminal's
    Ctrl-C reaches the whole group) is the supervisor's to handle: the front ends must drain first."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tuned = tune_process()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s engine[{os.getpid()}] %(name)s: %(message)s"
    )
    log.info("process settings: %s", tuned)
    try:
        import uvloop

        uvloop.run(_serve(settings, address, pools))
    except ImportError:
        asyncio.run(_serve(settings, address, pools))
