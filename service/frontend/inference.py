"""The one path every API's inference takes (REST v1, V2 over HTTP, gRPC): take room for the images before any
is decoded (shed load first), decode them or copy the client's tensors into that room, run them through the
model's batcher, answer per image. So both APIs batch together and refuse, time out and cancel alike."""

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from modelrepo.schema import Weights
from service.config import Settings
from service.errors import DeadlineExceeded, InvalidArgument, InvalidImage, UnsupportedMediaType
from service.frontend.decode_pool import Decoded
from service.state import ServiceState
from service.status import InferenceResult, ModelStatus, Reservation

T = TypeVar("T")
Watch = Callable[[Awaitable[T]], Awaitable[T]]  # e.g. cancel the work if the client leaves


@dataclass(frozen=True)
class Answer:
    """One image's result with the time it spent in each step."""

    output: np.ndarray  # its row of the model's output (logits)
    decode_ms: float
    queue_ms: float
    inference_ms: float
    batch_size: int
    version: int  # the model version that ran it


def top_k_and_deadline(
    settings: Settings, top_k: int | None, timeout_ms: float | None, received: float
) -> tuple[int, float]:
    """A REST request's `top_k` and `timeout_ms` checked against the settings (422), or their defaults."""
    k = settings.default_top_k if top_k is None else top_k
    if k > settings.max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    if timeout_ms is not None and timeout_ms > settings.max_request_timeout_ms:
        raise InvalidArgument(f"timeout_ms must be at most {settings.max_request_timeout_ms:g}, got {timeout_ms:g}")
    return k, received + (timeout_ms or settings.request_timeout_ms) / 1000


async def _unwatched(work: Awaitable[T]) -> T:
    return await work


async def infer_images(
    state: ServiceState,
    status: ModelStatus,
    images: Sequence[tuple[str, bytes]],
    deadline: float,
    *,
    version: int | None = None,
    embedded: bool = False,
    watch: Watch = _unwatched,
) -> list[Answer]:
    """Encoded images (name for errors, bytes) decoded with the model's preprocessing, then run by `version` (or
    the newest ready version). `embedded`: the images came inside a JSON or tensor body, so bytes that are no
    image are the image's fault (400 invalid_image), not the request's media type's (415)."""
    reservation = await state.models.reserve(status, len(images), version)  # shed before decoding
    try:
        return await watch(_decode_and_run(state, status, reservation, images, deadline, embedded))
    finally:
        reservation.release()


async def infer_tensor(
    state: ServiceState,
    status: ModelStatus,
    batch: np.ndarray,
    deadline: float,
    *,
    version: int | None = None,
    watch: Watch = _unwatched,
) -> list[Answer]:
    """Images the client preprocessed itself: `batch` (N, *input shape), of the model's input dtype, already
    checked against the model (service/frontend/tensors.py)."""
    reservation = await state.models.reserve(status, len(batch), version)
    try:
        return await watch(_copy_and_run(state, status, reservation, batch, deadline))
    finally:
        reservation.release()


async def decode_images(
    state: ServiceState,
    status: ModelStatus,
    images: Sequence[tuple[str, bytes]],
    deadline: float,
    embedded: bool,
    out: Sequence[np.ndarray] | None = None,
) -> list[Decoded]:
    """`images` decoded with `status`'s preprocessing (into `out` when given), each timed in /metrics."""
    try:
        decoded = await state.decode_pool.decode(images, state.preprocessor(status), deadline, out)
    except UnsupportedMediaType as e:
        if not embedded:
            raise
        raise InvalidImage(e.message) from e
    for d in decoded:
        state.metrics.decode_time.labels(d.lane).observe(d.decode_ms / 1000)
    return decoded


async def _decode_and_run(
    state: ServiceState,
    status: ModelStatus,
    reservation: Reservation,
    images: Sequence[tuple[str, bytes]],
    deadline: float,
    embedded: bool,
) -> list[Answer]:
    decoded = await decode_images(state, status, images, deadline, embedded, reservation.buffers)
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("deadline passed while decoding")
    results = await state.models.infer(status, reservation, [d.array for d in decoded], deadline)
    return _answers(state, status, results, [d.decode_ms for d in decoded])


async def _copy_and_run(
    state: ServiceState, status: ModelStatus, reservation: Reservation, batch: np.ndarray, deadline: float
) -> list[Answer]:
    if reservation.buffers is None:
        arrays = list(batch)  # rows of one C-contiguous array: contiguous views, no copy
    else:
        arrays = reservation.buffers  # shared-memory slots the engine reads
        for row, slot in zip(batch, arrays, strict=True):
            np.copyto(slot, row)
    results = await state.models.infer(status, reservation, arrays, deadline)
    return _answers(state, status, results, [0.0] * len(results))


def weights_of(state: ServiceState, status: ModelStatus, version: int) -> Weights | None:
    """`version`'s weights as config.json records them: from the statuses as they are now (a version that took over
    while the request ran is listed there once they refresh), else from the request's."""
    for source in (state.models.statuses().get(status.name, status).source, status.source):
        if source is not None and version in source.config.versions:
            return source.config.versions[version].weights
    return None


def _answers(
    state: ServiceState, status: ModelStatus, results: list[InferenceResult], decode_ms: list[float]
) -> list[Answer]:
    queue_time = state.metrics.queue_time.labels(status.name)
    for r in results:
        queue_time.observe(r.queue_ms / 1000)
    return [
        Answer(r.output, d, r.queue_ms, r.inference_ms, r.batch_size, r.version)
        for r, d in zip(results, decode_ms, strict=True)
    ]
