"""`POST /v1/classify?model=NAME&top_k=K&timeout_ms=T`: read the body, reserve room for its images, decode
them, hand them to the models, answer; if the client leaves meanwhile, its work is cancelled.

The body is one raw image (image/* or application/octet-stream), multipart/form-data with one or
more files, or JSON `{"images": ["<base64>", ...]}` (service/frontend/request_body.py).
"""

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service.errors import DeadlineExceeded, InvalidArgument
from service.frontend.request_body import read_images, unless_disconnected
from service.schemas import ClassifyResponse, ErrorResponse, ImageResult, Prediction, Timing
from service.state import ServiceState, get_state
from service.status import ModelStatus, Reservation

router = APIRouter(tags=["classify"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 408, 413, 415, 422, 429, 431, 500, 503, 504)}


@router.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS)
async def classify(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    model: Annotated[str, Query(description="Model name, as listed by GET /v1/models.")],
    top_k: Annotated[int | None, Query(ge=1, description="Classes per image; default SERVE_DEFAULT_TOP_K.")] = None,
    timeout_ms: Annotated[
        float | None,
        Query(
            gt=0,
            allow_inf_nan=False,
            description="Deadline; default SERVE_REQUEST_TIMEOUT_MS, at most SERVE_MAX_REQUEST_TIMEOUT_MS.",
        ),
    ] = None,
) -> ClassifyResponse:
    received = time.monotonic()
    settings = state.settings
    status = await state.models.ready(model)
    k = settings.default_top_k if top_k is None else top_k
    if k > settings.max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    if timeout_ms is not None and timeout_ms > settings.max_request_timeout_ms:
        raise InvalidArgument(f"timeout_ms must be at most {settings.max_request_timeout_ms:g}, got {timeout_ms:g}")
    deadline = received + (timeout_ms or settings.request_timeout_ms) / 1000

    images = await read_images(
        request, max_bytes=settings.max_request_bytes, max_images=settings.max_images_per_request
    )
    reservation = state.models.reserve(status, len(images))  # shed before decoding
    try:
        return await unless_disconnected(request, _answer(state, status, reservation, images, deadline, k))
    finally:
        reservation.release()


async def _answer(
    state: ServiceState,
    status: ModelStatus,
    reservation: Reservation,
    images: list[tuple[str, bytes]],
    deadline: float,
    k: int,
) -> ClassifyResponse:
    decoded = await state.decode_pool.decode(images, state.preprocessor(status), deadline, reservation.buffers)
    for d in decoded:
        state.metrics.decode_time.labels(d.lane).observe(d.decode_ms / 1000)
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("deadline passed while decoding")
    results = await state.models.infer(status, reservation, [d.array for d in decoded], deadline)

    queue_time = state.metrics.queue_time.labels(status.name)
    for r in results:
        queue_time.observe(r.queue_ms / 1000)
    source = status.source
    return ClassifyResponse(
        model=status.name,
        version=source.version,
        weights=source.config.versions[source.version].weights,
        results=[
            ImageResult(
                predictions=Prediction.top_k(r.output, source.labels, k),
                timing=Timing(decode_ms=d.decode_ms, queue_ms=r.queue_ms, inference_ms=r.inference_ms),
                batch_size=r.batch_size,
            )
            for r, d in zip(results, decoded, strict=True)
        ],
    )
