"""Every model one process serves: loaded in the background at start-up, each then READY or FAILED with its
reason, all drained and closed on shutdown. In the single-process layout the front end calls this directly
(it is a `ModelBackend`); with workers, the engine process serves it to the front ends
(service/engine/server.py)."""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from modelrepo.read import RepositoryError, configured_models
from service.config import Settings
from service.engine.batcher import DynamicBatcher
from service.engine.loader import LoadedModel
from service.errors import DeadlineExceeded
from service.metrics import Metrics
from service.schemas import ModelState
from service.status import InferenceResult, ModelStatus, require

log = logging.getLogger(__name__)


@dataclass
class _InProcess:
    """A Reservation when images are queued as the decoder made them: the batcher counts them as coming (so
    that requests admitted while others decode are not all admitted on the same queue) until they are queued
    or given back."""

    buffers: None = None

    def __init__(self, batcher: DynamicBatcher, n: int):
        self._batcher, self._n = batcher, n

    def submit(self, arrays: list[np.ndarray], deadline: float) -> list[asyncio.Future]:
        n, self._n = self._n, 0
        return self._batcher.enqueue(arrays, deadline, held=n)

    def release(self) -> None:
        if self._n:
            self._batcher.release_hold(self._n)
            self._n = 0


class Models:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        try:
            names = configured_models(settings.model_repository, settings.models)
        except RepositoryError as e:
            log.error("%s", e)
            names = []
        self.loaded: dict[str, LoadedModel] = {}
        self._statuses = {name: ModelStatus(name, ModelState.LOADING) for name in names}  # remade with each state
        self._loader: asyncio.Task | None = None
        metrics.watch(self.refresh_gauges)

    async def start(self) -> None:
        """Begin loading every model in the background; returns at once."""
        self._loader = asyncio.create_task(self._load_all(), name="load-models")

    async def _load_all(self) -> None:
        for name in self._statuses:
            try:
                model = await LoadedModel.load(name, self.settings, self.metrics.batch_observer(name))
            except Exception as e:
                self._set_state(name, ModelState.FAILED, str(e))
                log.error("model %r failed to load: %s", name, e)
                continue
            self.loaded[name] = model
            self._set_state(name, ModelState.READY)
            for phase, seconds in model.load_seconds.items():
                self.metrics.load_time.labels(name, phase).set(seconds)
            log.info(
                "model %r v%d ready on %s (session %.2f s, warm-up %.2f s)",
                name,
                model.source.version,
                model.engine.providers_in_use,
                model.load_seconds["session"],
                model.load_seconds["warmup"],
            )

    async def stop(self) -> None:
        """Stop loading, stop taking images, answer every queued image, free the sessions."""
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        for name, status in self._statuses.items():
            if status.state is not ModelState.FAILED:
                self._set_state(name, ModelState.LOADING, "shutting down")
        for model in self.loaded.values():
            await model.close()

    def _set_state(self, name: str, state: ModelState, reason: str | None = None) -> None:
        self._statuses[name] = self._status(name, state, reason)

    # -- what the front end asks ----------------------------------------------------------------

    def _status(self, name: str, state: ModelState, reason: str | None) -> ModelStatus:
        model = self.loaded.get(name)
        if model is None:
            return ModelStatus(name, state, reason)
        engine, batcher = model.engine, model.batcher
        return ModelStatus(
            name,
            state,
            reason,
            source=model.source,
            batching=model.batching,
            providers=tuple(engine.providers_in_use),
            bucket_sizes=tuple(engine.bucket_sizes),
            cuda_graph_batch_sizes=tuple(engine.cuda_graph_batch_sizes),
            queue_depth=batcher.queue_depth,
            drain_rate=batcher.drain_rate,
            device_error=engine.device_error,
        )

    def statuses(self) -> dict[str, ModelStatus]:
        """As of the last change of state (queue depth and device errors as they were then)."""
        return self._statuses

    def statuses_now(self) -> dict[str, ModelStatus]:
        """With the queue depth, drain rate and device errors of this moment."""
        return {name: self._status(name, s.state, s.reason) for name, s in self._statuses.items()}

    async def fresh_statuses(self) -> dict[str, ModelStatus]:
        return self.statuses_now()

    def loaded_model(self, name: str) -> LoadedModel:
        """The loaded model, or the 404/503 a client gets for it."""
        require(self._statuses, name)
        return self.loaded[name]

    async def ready(self, name: str) -> ModelStatus:
        return require(self._statuses, name)

    async def reserve(self, status: ModelStatus, n: int) -> _InProcess:
        batcher = self.loaded_model(status.name).batcher
        batcher.hold(n)  # shed before decoding; enqueue checks again after, with the deadline
        return _InProcess(batcher, n)

    async def infer(
        self, status: ModelStatus, reservation: _InProcess, arrays: list[np.ndarray], deadline: float
    ) -> list[InferenceResult]:
        return await wait_all(reservation.submit(arrays, deadline), deadline)

    def refresh_gauges(self) -> None:
        self.metrics.models_ready.set(sum(s.state is ModelState.READY for s in self._statuses.values()))
        for name in self._statuses:
            model = self.loaded.get(name)
            self.metrics.queue_depth.labels(name).set(model.batcher.queue_depth if model else 0)


async def wait_all(futures: list[asyncio.Future], deadline: float) -> list[InferenceResult]:
    """Every result, or the first error; on any way out (a cancelled request too), unfinished futures are
    cancelled and the batcher skips them. `asyncio.wait`, not `wait_for(gather(...))`: cancelled, the latter
    leaves a gather whose CancelledError nobody retrieves, and asyncio logs it as an error."""
    try:
        timeout = max(0.0, deadline - time.monotonic())
        done, pending = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()
        if pending:
            raise DeadlineExceeded("deadline passed before the results were ready")
        return [f.result() for f in futures]
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # mark as retrieved: no "exception was never retrieved" noise


@contextlib.asynccontextmanager
async def in_process(settings: Settings, metrics: Metrics) -> AsyncIterator[Models]:
    """The single-process layout's backend: the models loaded in this process, stopped on the way out."""
    models = Models(settings, metrics)
    await models.start()
    try:
        yield models
    finally:
        await models.stop()
