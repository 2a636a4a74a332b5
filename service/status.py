"""What a front end knows of the engine's models, in either process layout: a `ModelStatus` per model
(picklable, it crosses processes), and the one place that turns "unknown" and "not ready" into errors."""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from modelrepo.read import ModelSource
from service.errors import ModelNotFound, ModelNotReady, shorten
from service.schemas import BatchingInfo, ModelState

MAX_NAME_SHOWN = 64


@dataclass(frozen=True)
class VersionStatus:
    """One version of a model as the engine holds it: for the repository index and for requests naming it."""

    version: int
    state: ModelState
    reason: str | None = None
    sessions: int = 0
    weights_bytes: int = 0  # its ONNX file's size once per session
    source: ModelSource | None = None  # set while it is loaded: what a request naming it is decoded for
    batching: BatchingInfo | None = None


@dataclass(frozen=True)
class ModelStatus:
    """A model as requests naming no version see it: its newest ready version (`source`), or why none is."""

    name: str
    state: ModelState
    reason: str | None = None  # why it failed, or why it is not serving
    source: ModelSource | None = None  # set once loaded
    batching: BatchingInfo | None = None
    providers: tuple[str, ...] = ()
    bucket_sizes: tuple[int, ...] = ()  # on a GPU, the batch sizes batches are padded up to
    cuda_graph_batch_sizes: tuple[int, ...] = ()
    queue_depth: int = 0
    drain_rate: float = 0.0  # images per second finished lately
    device_error: str | None = None  # the GPU failed: only a restart brings it back
    versions: tuple[VersionStatus, ...] = ()  # every version the engine knows of, ready or not
    required: bool = True  # counts for readiness: served from the start, or ready once since

    def version_status(self, version: int) -> VersionStatus | None:
        return next((v for v in self.versions if v.version == version), None)


def require(
    statuses: Mapping[str, ModelStatus], name: str, *, ready: bool = True, version: int | None = None
) -> ModelStatus:
    """`name`'s status; ModelNotFound (404) naming the available models (or versions), or ModelNotReady (503) if
    it (or the `version` asked for) is not ready. With a ready `version`, the status of that version: its source
    and batching are what its requests are decoded and admitted for."""
    status = statuses.get(name)
    if status is None:
        available = ", ".join(sorted(statuses)) or "none"
        shown = shorten(name, MAX_NAME_SHOWN)  # never echo a 60 kB URL
        raise ModelNotFound(f"no model named {shown!r}; available: {available}")
    what, state, reason = f"model {name!r}", status.state, status.reason
    if version is not None:
        found = status.version_status(version)
        if found is None:
            known = ", ".join(f"{v.version} ({v.state.value})" for v in status.versions) or "none"
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {known}")
        what, state, reason = f"{what} version {version}", found.state, found.reason
    if ready and state is not ModelState.READY:
        raise not_ready(what, state, reason)
    if version is not None and found.source is not None:
        return replace(status, source=found.source, batching=found.batching)
    return status


def not_ready(what: str, state: ModelState, reason: str | None) -> ModelNotReady:
    """The 503 for `what` ("model 'x'", "model 'x' version 2") in `state`, with why."""
    return ModelNotReady(f"{what} is {state.value}" + (f": {reason}" if reason else ""))


def all_ready(statuses: Mapping[str, ModelStatus]) -> bool:
    """Every model is ready, or was unloaded on purpose, and no GPU failed. A model that appeared while serving
    (poll, explicit) and has not been ready yet does not count: its loading or failing must not take the replica
    out of its load balancer."""
    return bool(statuses) and all(
        s.state in (ModelState.READY, ModelState.UNAVAILABLE) and not s.device_error
        for s in statuses.values()
        if s.required or s.device_error
    )


def device_errors(statuses: Mapping[str, ModelStatus]) -> dict[str, str]:
    return {name: s.device_error for name, s in statuses.items() if s.device_error}


@dataclass(frozen=True)
class InferenceResult:
    """One image's answer from the engine."""

    output: np.ndarray  # its row of the batch output (logits)
    queue_ms: float
    inference_ms: float
    batch_size: int
    version: int = 0  # the version that ran it


class Reservation(Protocol):
    """Room for a request's images, taken before they are decoded. `buffers`: where each decoded image must be
    written (shared-memory slots), or None where the decoder's own arrays are queued as they are."""

    buffers: list[np.ndarray] | None
    version: int | None  # the version asked for; None: whichever is the newest ready when the images are queued

    def release(self) -> None:
        """Give the room back if the images were never submitted; a no-op once they were."""


class ModelBackend(Protocol):
    """How the front end reaches the models: in process (service/engine/models.py) or in the engine process
    (service/frontend/engine_client.py). Both raise the same errors for the same conditions."""

    def statuses(self) -> Mapping[str, ModelStatus]:
        """The last known statuses (cheap)."""

    async def ready(self, name: str, version: int | None = None) -> ModelStatus:
        """`name`'s status if it (and `version`, if given) is ready, else the 404 or 503 a client gets for it (per
        request: cheap)."""

    async def fresh_statuses(self) -> Mapping[str, ModelStatus]:
        """Statuses as they are now (for the probes and /v1/models)."""

    async def reserve(self, status: ModelStatus, n: int, version: int | None = None) -> Reservation:
        """Room for `n` images of a ready model, or QueueFull / ObjectiveUnreachable (429 with Retry-After)."""

    async def infer(
        self, status: ModelStatus, reservation: Reservation, arrays: list[np.ndarray], deadline: float
    ) -> list[InferenceResult]:
        """Every image's result, in order, or the first error; DeadlineExceeded at `deadline`."""

    async def load(self, name: str) -> None:
        """Load (or reload) `name`'s versions as its policy says (SERVE_MODEL_CONTROL=explicit); the error says why
        one failed."""

    async def unload(self, name: str) -> None:
        """Answer what `name`'s versions accepted, then release them."""
