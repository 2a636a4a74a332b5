"""Every model one process serves, by version. In the single-process layout the front end calls this directly (it
is a `ModelBackend`); with workers, the engine process serves it to the front ends (service/engine/server.py).

Which versions are loaded follows the repository and the model's version policy (modelrepo/versions.py): at start,
then, by SERVE_MODEL_CONTROL, never again (none), on every poll (poll), or on request (explicit, the repository
API). A version is READY, LOADING, FAILED with its reason, UNLOADING (answering what it accepted) or UNAVAILABLE.

A swap costs no request: the new version is loaded and warmed beside the old one; from the moment it is ready,
requests that name no version go to it (resolved when their images are queued, so one decoded while the old
version served runs on the new one); then the old version answers what it had queued and is released. A version
that fails to load leaves what served before serving, and says why (the index, `cnnserve_model_load_failures`).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from modelrepo.layout import CONFIG_FILE, RepositoryError, is_model_name, model_dir
from modelrepo.read import ModelSource, available_versions, configured_models, list_models
from modelrepo.versions import VersionPolicy
from service.config import Settings
from service.engine.batcher import DynamicBatcher
from service.engine.loader import LoadedModel
from service.errors import DeadlineExceeded, ModelLoadFailed, ModelNotFound, ModelNotReady
from service.metrics import Metrics
from service.schemas import ModelState
from service.status import InferenceResult, ModelStatus, VersionStatus, require

log = logging.getLogger(__name__)

READY, LOADING, UNLOADING, UNAVAILABLE, FAILED = (
    ModelState.READY,
    ModelState.LOADING,
    ModelState.UNLOADING,
    ModelState.UNAVAILABLE,
    ModelState.FAILED,
)


@dataclass(eq=False)
class _Version:
    number: int
    state: ModelState
    reason: str | None = None
    # Of the files it was loaded from, or failed on (not tried again until they change).
    fingerprint: tuple | None = None
    loaded: LoadedModel | None = None


@dataclass(eq=False)
class _Model:
    versions: dict[int, _Version] = field(default_factory=dict)
    state: ModelState | None = None  # the model's own state while no version is ready or loading (or at start)
    reason: str | None = None
    required: bool = False  # counts for readiness: served from the start, or ready once since

    def default(self) -> _Version | None:
        """The version requests naming none go to: the newest ready."""
        return max((v for v in self.versions.values() if v.state is READY), key=lambda v: v.number, default=None)

    @property
    def queue_depth(self) -> int:
        """Images queued for any of its versions (one draining included)."""
        return sum(v.loaded.batcher.queue_depth for v in self.versions.values() if v.loaded)


class _InProcess:
    """A Reservation when images are queued as the decoder made them: the batcher counts them as coming (so
    that requests admitted while others decode are not all admitted on the same queue) until they are queued
    or given back. They are queued to whichever version serves when they are decoded."""

    buffers: None = None

    def __init__(self, models: "Models", status: ModelStatus, version: int | None, batcher: DynamicBatcher, n: int):
        self._models, self._status, self.version = models, status, version
        self._batcher, self._n = batcher, n

    def submit(self, arrays: list[np.ndarray], deadline: float) -> list[asyncio.Future]:
        batcher = self._models.loaded_for(self._status.name, self.version, self._status.source).batcher
        n, self._n = self._n, 0
        if batcher is not self._batcher:  # a new version took over while these images decoded
            self._batcher.release_hold(n)
            n = 0
        return batcher.enqueue(arrays, deadline, held=n)

    def release(self) -> None:
        if self._n:
            self._batcher.release_hold(self._n)
            self._n = 0


class Models:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self._models: dict[str, _Model] = {}
        self._sources: dict[tuple[str, int], ModelSource] = {}  # every version ever loaded: what its images are
        self._closing: dict[LoadedModel, asyncio.Task] = {}  # versions answering what they accepted
        self._requested: set[asyncio.Task] = set()  # loads and unloads the repository API asked for
        self._stopping = False
        self._statuses: dict[str, ModelStatus] = {}  # remade with each change
        self._lock = asyncio.Lock()  # one change of the loaded versions at a time
        self._control: asyncio.Task | None = None
        try:
            for name in self._at_start():
                self._models[name] = _Model(state=LOADING, required=True)
            if settings.model_control == "explicit":
                for name in list_models(settings.model_repository):
                    self._models.setdefault(
                        name, _Model(state=UNAVAILABLE, reason="not loaded (SERVE_MODEL_CONTROL=explicit)")
                    )
        except RepositoryError as e:
            log.error("%s", e)
        for name in self._models:
            self._changed(name)
        metrics.watch(self.refresh_gauges)

    def _at_start(self) -> list[str]:
        if self.settings.model_control == "explicit":
            return list(self.settings.models)
        return configured_models(self.settings.model_repository, self.settings.models)

    async def start(self) -> None:
        """Begin loading in the background (and polling, with SERVE_MODEL_CONTROL=poll); returns at once."""
        self._control = asyncio.create_task(self._run(), name="model-control")

    async def _run(self) -> None:
        for name in [n for n, model in self._models.items() if model.state is LOADING]:
            async with self._lock:
                await self._reconcile(name)
        while self.settings.model_control == "poll":
            await asyncio.sleep(self.settings.poll_interval_s)
            await self.poll()

    async def poll(self) -> None:
        """Follow the repository once: load new or changed versions, release those gone, models too. A new folder
        is a model once its config.json is there (export writes that last)."""
        root = self.settings.model_repository
        try:
            names = set(configured_models(root, self.settings.models))
        except RepositoryError as e:
            log.warning("poll: %s", e)
            return
        for name in sorted(names | set(self._models)):
            if name not in self._models and not (model_dir(root, name) / CONFIG_FILE).is_file():
                continue
            try:
                async with self._lock:
                    await self._reconcile(name)
            except Exception:  # one unreadable model must not stop the others, or the polling
                log.exception("poll: model %r", name)

    async def stop(self) -> None:
        """Stop loading, stop taking images, answer every queued image, free the sessions."""
        self._stopping = True
        changes = [t for t in (self._control, *self._requested) if t is not None]
        for task in changes:
            task.cancel()
        for task in changes:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for name, model in self._models.items():
            if model.state is LOADING:
                model.reason = "shutting down"
            for version in model.versions.values():
                if version.loaded is not None:
                    version.state, version.reason = UNLOADING, "shutting down"
                    self._close(version.loaded)
            self._changed(name)
        for failed in await asyncio.gather(*self._closing.values(), return_exceptions=True):
            if isinstance(failed, BaseException):
                log.error("closing a model failed: %r", failed)

    # -- changing what is loaded (under the lock) ----------------------------------------------------

    async def _reconcile(self, name: str, retry_failed: bool = False) -> list[str]:
        """Load the versions the repository and the policy ask for, newest first, then release the others once
        one of those asked for is ready. Returns why any failed to load. A version that failed is tried again
        when its files change, or when `retry_failed`."""
        model = self._models.setdefault(name, _Model())
        try:
            config, available = available_versions(self.settings.model_repository, name)
        except RepositoryError as e:
            if any(v.loaded for v in model.versions.values()):
                await self._release_all(name, "removed from the repository")
                model.state, model.reason = UNAVAILABLE, str(e)
            elif model.state is not UNAVAILABLE and (model.state, model.reason) != (FAILED, str(e)):
                model.state, model.reason = FAILED, str(e)
                self.metrics.load_failures.labels(name).inc()
            self._changed(name)
            return [str(e)]
        policy = VersionPolicy.parse(self.settings.version_policy or config.version_policy)
        wanted = {number: available[number] for number in policy.select(available)}
        model.state, model.reason = (None, None) if wanted else (UNAVAILABLE, f"no version to serve ({policy})")
        failures = []
        for number in sorted(wanted, reverse=True):
            failure = await self._load(name, number, wanted[number], retry_failed)
            if failure:
                failures.append(failure)
        if any(model.versions[n].state is READY for n in wanted):  # else what serves goes on serving
            for number, version in list(model.versions.items()):
                if number not in wanted and version.state in (READY, FAILED):
                    gone = "removed from the repository" if number not in available else f"not in the policy {policy}"
                    await self._release(name, version, gone)
        self._changed(name)
        return failures

    async def _load(self, name: str, number: int, fingerprint: tuple, retry_failed: bool) -> str | None:
        """Load `number` beside whatever serves (a ready version whose files changed keeps serving until its
        reload is ready); None, or why it failed."""
        model = self._models[name]
        version = model.versions.get(number)
        same_files = version is not None and version.fingerprint == fingerprint
        if same_files and (version.state is READY or (version.state is FAILED and not retry_failed)):
            return None  # loaded from these very files, or failed on them
        replacing = version.loaded if version is not None and version.state is READY else None
        if replacing is None:
            version = model.versions[number] = _Version(number, LOADING, fingerprint=fingerprint)
        else:
            version.reason = "its files changed: reloading"
        self._changed(name)
        try:
            loaded = await LoadedModel.load(name, self.settings, self.metrics.batch_observer(name), version=number)
        except Exception as e:
            version.fingerprint = fingerprint
            if replacing is None:
                version.state, version.reason = FAILED, str(e)
            else:
                version.reason = f"its new files failed to load, the old ones serve: {e}"
            self.metrics.load_failures.labels(name).inc()
            log.error("model %r version %d failed to load: %s", name, number, e)
            self._changed(name)
            return f"version {number}: {e}"
        version.state, version.reason, version.fingerprint, version.loaded = READY, None, fingerprint, loaded
        model.required = True
        self._sources[name, number] = loaded.source
        self._changed(name)
        for phase, seconds in loaded.load_seconds.items():
            self.metrics.load_time.labels(name, phase).set(seconds)
        log.info(
            "model %r v%d ready on %s (session %.2f s, warm-up %.2f s)",
            name,
            number,
            loaded.engine.providers_in_use,
            loaded.load_seconds["session"],
            loaded.load_seconds["warmup"],
        )
        if replacing is not None:
            await self._close(replacing)
        return None

    async def _release(self, name: str, version: _Version, reason: str) -> None:
        """No new images for `version`; it answers those it has, then its sessions are freed."""
        version.state, version.reason = (UNLOADING if version.loaded else UNAVAILABLE), reason
        self._changed(name)
        if version.loaded is not None:
            await self._close(version.loaded)
            version.loaded, version.state = None, UNAVAILABLE
            self._changed(name)
            log.info("model %r v%d released: %s", name, version.number, reason)

    async def _release_all(self, name: str, reason: str) -> None:
        for version in list(self._models[name].versions.values()):
            if version.state in (READY, FAILED):
                await self._release(name, version, reason)

    def _close(self, loaded: LoadedModel) -> asyncio.Future:
        """Close `loaded` once (its queue answered, its sessions freed), in a task of its own: stopping the
        model-control task must not stop a batcher half-way; `stop` waits for every close."""
        if loaded not in self._closing:
            task = asyncio.create_task(loaded.close(), name=f"close-{loaded.source.name}")
            task.add_done_callback(lambda _: self._closing.pop(loaded, None))
            self._closing[loaded] = task
        return asyncio.shield(self._closing[loaded])

    # -- the repository API (SERVE_MODEL_CONTROL=explicit) ----------------------------------------------

    def _known(self, name: str) -> None:
        if not is_model_name(name):
            raise ModelNotFound(f"{name[:64]!r} is not a model name")
        if name not in self._models and not model_dir(self.settings.model_repository, name).is_dir():
            raise ModelNotFound(f"no model named {name!r} in the repository")

    async def load(self, name: str) -> None:
        """Load `name`'s versions as its policy says (again, if their files changed); ModelLoadFailed says why
        one did not load. It goes on if the caller goes away."""
        failures = await self._requested_change(name, self._load_requested)
        if failures:
            raise ModelLoadFailed(f"model {name!r}: " + "; ".join(failures))

    async def unload(self, name: str) -> None:
        """Answer what `name`'s versions accepted, then release them; new requests get 503 (unavailable)."""
        await self._requested_change(name, self._unload_requested)

    async def _requested_change(self, name: str, change) -> list[str] | None:
        """Run `change(name)` under the lock in a task of its own: a client that leaves (or a gRPC deadline) must
        not stop a load or unload half-way; `stop` cancels it."""
        self._known(name)
        if self._stopping:
            raise ModelNotReady("the service is shutting down")
        task = asyncio.create_task(change(name), name=f"control-{name}")
        self._requested.add(task)
        task.add_done_callback(self._requested.discard)
        return await asyncio.shield(task)

    async def _load_requested(self, name: str) -> list[str]:
        async with self._lock:
            return await self._reconcile(name, retry_failed=True)

    async def _unload_requested(self, name: str) -> None:
        async with self._lock:
            model = self._models.setdefault(name, _Model())
            await self._release_all(name, "unloaded")
            model.state, model.reason = UNAVAILABLE, "unloaded"
            self._changed(name)

    # -- what the front end asks ----------------------------------------------------------------

    def _changed(self, name: str) -> None:
        self._statuses[name] = self._status(name)
        self.refresh_gauges()  # at once, not at the next scrape's refresh: another process renders them (workers)

    def _status(self, name: str) -> ModelStatus:
        model = self._models[name]
        versions = tuple(
            VersionStatus(
                v.number,
                v.state,
                v.reason,
                sessions=v.loaded.engine.count if v.loaded else 0,
                weights_bytes=v.loaded.weights_bytes if v.loaded else 0,
                source=v.loaded.source if v.state is READY else None,
                batching=v.loaded.batching if v.state is READY else None,
            )
            for v in sorted(model.versions.values(), key=lambda v: v.number)
        )
        default = model.default()
        if default is None:
            states = {v.state for v in model.versions.values()}
            newest_failure = next((v.reason for v in reversed(versions) if v.state is FAILED), None)
            if LOADING in states or model.state is LOADING:
                state, reason = LOADING, model.reason
            elif model.state is not None:
                state, reason = model.state, model.reason
            elif FAILED in states:
                state, reason = FAILED, newest_failure
            else:
                state, reason = UNAVAILABLE, "no version is loaded"
            return ModelStatus(name, state, reason, versions=versions, required=model.required)
        loaded = default.loaded
        engine, batcher = loaded.engine, loaded.batcher
        return ModelStatus(
            name,
            READY,
            None,
            source=loaded.source,
            batching=loaded.batching,
            providers=tuple(engine.providers_in_use),
            bucket_sizes=tuple(engine.bucket_sizes),
            cuda_graph_batch_sizes=tuple(engine.cuda_graph_batch_sizes),
            queue_depth=model.queue_depth,
            drain_rate=batcher.drain_rate,
            device_error=engine.device_error,
            versions=versions,
            required=model.required,
        )

    def statuses(self) -> dict[str, ModelStatus]:
        """As of the last change of state (queue depth and device errors as they were then)."""
        return self._statuses

    def statuses_now(self) -> dict[str, ModelStatus]:
        """With the queue depth, drain rate and device errors of this moment."""
        return {name: self._status(name) for name in self._models}

    async def fresh_statuses(self) -> dict[str, ModelStatus]:
        return self.statuses_now()

    def resolve(self, name: str, version: int | None = None) -> LoadedModel:
        """The loaded version a request's images go to: `version`, or the newest ready; else the 404/503 a client
        gets for it."""
        require(self._statuses, name, version=version)
        model = self._models[name]
        return (model.default() if version is None else model.versions[version]).loaded

    def loaded_for(self, name: str, version: int | None, prepared: ModelSource | int) -> LoadedModel:
        """Where images decoded for `prepared` (a version, or its number) go now: the version asked for or the
        newest ready, provided it takes the same images and answers with the same classes."""
        loaded = self.resolve(name, version)
        earlier = self._sources.get((name, prepared)) if isinstance(prepared, int) else prepared
        if loaded.source is not earlier and not same_contract(loaded.source, earlier):
            raise ModelNotReady(f"model {name!r} changed its input or classes while the request ran; send it again")
        return loaded

    async def ready(self, name: str, version: int | None = None) -> ModelStatus:
        return require(self._statuses, name, version=version)

    async def reserve(self, status: ModelStatus, n: int, version: int | None = None) -> _InProcess:
        batcher = self.resolve(status.name, version).batcher
        batcher.hold(n)  # shed before decoding; enqueue checks again after, with the deadline
        return _InProcess(self, status, version, batcher, n)

    async def infer(
        self, status: ModelStatus, reservation: _InProcess, arrays: list[np.ndarray], deadline: float
    ) -> list[InferenceResult]:
        return await wait_all(reservation.submit(arrays, deadline), deadline)

    def refresh_gauges(self) -> None:
        self.metrics.models_ready.set(sum(s.state is READY for s in self._statuses.values()))
        for name, model in self._models.items():
            self.metrics.queue_depth.labels(name).set(model.queue_depth)
            for v in model.versions.values():
                labels = (name, str(v.number))
                self.metrics.version_sessions.labels(*labels).set(v.loaded.engine.count if v.loaded else 0)
                self.metrics.version_weights.labels(*labels).set(v.loaded.weights_bytes if v.loaded else 0)


def same_contract(a: ModelSource, b: ModelSource | None) -> bool:
    """Images decoded for one version may run on the other, and its answer read as the other's."""
    return b is not None and (a.config.input, a.config.output, a.config.preprocessing, a.labels) == (
        b.config.input,
        b.config.output,
        b.config.preprocessing,
        b.labels,
    )


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
