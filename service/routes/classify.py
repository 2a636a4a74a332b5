"""`POST /v1/classify?model=NAME&top_k=K&timeout_ms=T`: read the body, check the queue has room, decode
every image, queue, answer; if the client leaves meanwhile, its work is cancelled.

The body is one raw image (image/* or application/octet-stream), multipart/form-data with one or
more files, or JSON `{"images": ["<base64>", ...]}` (service/request_body.py).
"""

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service.batcher import BatchResult
from service.errors import DeadlineExceeded, InvalidArgument
from service.request_body import read_images, unless_disconnected
from service.schemas import ClassifyResponse, ErrorResponse, ImageResult, Prediction, Timing
from service.state import ModelEntry, ServiceState, get_state

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
    entry = state.ready(model)
    k = settings.default_top_k if top_k is None else top_k
    if k > settings.max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    if timeout_ms is not None and timeout_ms > settings.max_request_timeout_ms:
        raise InvalidArgument(f"timeout_ms must be at most {settings.max_request_timeout_ms:g}, got {timeout_ms:g}")
    deadline = received + (timeout_ms or settings.request_timeout_ms) / 1000

    images = await read_images(
        request, max_bytes=settings.max_request_bytes, max_images=settings.max_images_per_request
    )
    entry.batcher.admit(len(images))  # shed before decoding; enqueue checks again after
    return await unless_disconnected(request, _answer(state, entry, images, deadline, k))


async def _answer(
    state: ServiceState, entry: ModelEntry, images: list[tuple[str, bytes]], deadline: float, k: int
) -> ClassifyResponse:
    decoded = await state.decode_pool.decode(images, entry.preprocessor, deadline)
    for d in decoded:
        state.metrics.decode_time.labels(d.lane).observe(d.decode_ms / 1000)
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("deadline passed while decoding")
    results = await wait_all(entry.batcher.enqueue([d.array for d in decoded], deadline), deadline)

    queue_time = state.metrics.queue_time.labels(entry.name)
    for r in results:
        queue_time.observe(r.queue_ms / 1000)
    source = entry.source
    return ClassifyResponse(
        model=entry.name,
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


async def wait_all(futures: list[asyncio.Future], deadline: float) -> list[BatchResult]:
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
