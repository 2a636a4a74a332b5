"""What a front end knows of the engine's models, in either process layout: a `ModelStatus` per model
(picklable, it crosses processes), and the one place that turns "unknown" and "not ready" into errors."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from modelrepo.read import ModelSource
from service.errors import ModelNotFound, ModelNotReady, shorten
from service.schemas import BatchingInfo, ModelState

MAX_NAME_SHOWN = 64


@dataclass(frozen=True)
class ModelStatus:
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


def require(statuses: Mapping[str, ModelStatus], name: str, *, ready: bool = True) -> ModelStatus:
    """`name`'s status; ModelNotFound (404) naming the available models, or ModelNotReady (503) if it is not."""
    status = statuses.get(name)
    if status is None:
        available = ", ".join(sorted(statuses)) or "none"
        shown = shorten(name, MAX_NAME_SHOWN)  # never echo a 60 kB URL
        raise ModelNotFound(f"no model named {shown!r}; available: {available}")
    if ready and status.state is not ModelState.READY:
        detail = f": {status.reason}" if status.reason else ""
        raise ModelNotReady(f"model {name!r} is {status.state.value}{detail}")
    return status


def all_ready(statuses: Mapping[str, ModelStatus]) -> bool:
    return bool(statuses) and all(s.state is ModelState.READY and not s.device_error for s in statuses.values())


def device_errors(statuses: Mapping[str, ModelStatus]) -> dict[str, str]:
    return {name: s.device_error for name, s in statuses.items() if s.device_error}


@dataclass(frozen=True)
class InferenceResult:
    """One image's answer from the engine."""

    output: np.ndarray  # its row of the batch output (logits)
    queue_ms: float
    inference_ms: float
    batch_size: int


class Reservation(Protocol):
    """Room for a request's images, taken before they are decoded. `buffers`: where each decoded image must be
    written (shared-memory slots), or None where the decoder's own arrays are queued as they are."""

    buffers: list[np.ndarray] | None

    def release(self) -> None:
        """Give the room back if the images were never submitted; a no-op once they were."""


class ModelBackend(Protocol):
    """How the front end reaches the models: in process (service/engine/models.py) or in the engine process
    (service/frontend/engine_client.py). Both raise the same errors for the same conditions."""

    def statuses(self) -> Mapping[str, ModelStatus]:
        """The last known statuses (cheap)."""

    async def ready(self, name: str) -> ModelStatus:
        """`name`'s status if it is ready, else the 404 or 503 a client gets for it (per request: cheap)."""

    async def fresh_statuses(self) -> Mapping[str, ModelStatus]:
        """Statuses as they are now (for the probes and /v1/models)."""

    async def reserve(self, status: ModelStatus, n: int) -> Reservation:
        """Room for `n` images of a ready model, or QueueFull / ObjectiveUnreachable (429 with Retry-After)."""

    async def infer(
        self, status: ModelStatus, reservation: Reservation, arrays: list[np.ndarray], deadline: float
    ) -> list[InferenceResult]:
        """Every image's result, in order, or the first error; DeadlineExceeded at `deadline`."""
