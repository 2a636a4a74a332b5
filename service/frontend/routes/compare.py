"""`POST /v1/compare?models=a,b,c&top_k=K&timeout_ms=T`: one image, every model asked for (default: every model), one
answer. The image is decoded once per distinct preprocessing, then each model runs it through its own batcher,
batching with everyone else's traffic. A model that is not ready (loading, failed, unloaded) or refuses (429) is
reported in its entry; the request fails only for what would fail /v1/classify for all of them (a bad image, a
body too large) or when no model asked for is ready."""

import asyncio
import functools
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service.errors import ModelNotReady, ServiceError
from service.frontend.inference import decode_images, infer_tensor, top_k_and_deadline, weights_of
from service.frontend.request_body import IMAGE_BODY, is_json, read_images, unless_disconnected
from service.schemas import CompareResponse, CompareResult, ErrorDetail, ErrorResponse, ModelState, Prediction, Timing
from service.state import ServiceState, get_state
from service.status import ModelStatus, not_ready, require

router = APIRouter(tags=["classify"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 408, 413, 415, 422, 431, 503, 504)}


def _wanted(statuses: dict[str, ModelStatus], models: str | None) -> list[ModelStatus]:
    if not models:
        return [s for s in statuses.values() if s.state is not ModelState.UNAVAILABLE]
    names = list(dict.fromkeys(n.strip() for n in models.split(",") if n.strip()))
    return [require(statuses, name, ready=False) for name in names]


@router.post("/v1/compare", response_model=CompareResponse, responses=_ERRORS, openapi_extra=IMAGE_BODY)
async def compare(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    models: Annotated[
        str | None, Query(description="Comma-separated model names; default: every model that is not unloaded.")
    ] = None,
    top_k: Annotated[int | None, Query(ge=1, description="Classes per model; default SERVE_DEFAULT_TOP_K.")] = None,
    timeout_ms: Annotated[
        float | None, Query(gt=0, allow_inf_nan=False, description="Deadline, as classify's.")
    ] = None,
) -> CompareResponse:
    received = time.monotonic()
    settings = state.settings
    k, deadline = top_k_and_deadline(settings, top_k, timeout_ms, received)
    wanted = _wanted(await state.models.fresh_statuses(), models)
    ready = [s for s in wanted if s.state is ModelState.READY]
    if not ready:
        raise ModelNotReady("no model asked for is ready: " + ", ".join(f"{s.name} ({s.state})" for s in wanted))

    images = await read_images(request, max_bytes=settings.max_request_bytes, max_images=1)
    watch = functools.partial(unless_disconnected, request)
    answers = await watch(_run_all(state, ready, images, deadline, is_json(request), k))
    return CompareResponse(
        results=[answers.get(s.name) or _failed(s, not_ready(f"model {s.name!r}", s.state, s.reason)) for s in wanted],
    )


async def _run_all(state: ServiceState, ready: list[ModelStatus], images, deadline: float, embedded: bool, k: int):
    """Decode once per preprocessing (an image that is no image fails the request, as classify's), then run every
    model at once."""
    groups: dict[tuple, list[ModelStatus]] = {}
    for status in ready:
        config = status.source.config
        groups.setdefault((config.preprocessing, config.input.dtype, config.input.shape), []).append(status)
    decoded = await asyncio.gather(
        *(decode_images(state, group[0], images, deadline, embedded) for group in groups.values())
    )
    runs = [
        _run_one(state, status, image.array, image.decode_ms, deadline, k)
        for (image,), group in zip(decoded, groups.values(), strict=True)
        for status in group
    ]
    return {result.model: result for result in await asyncio.gather(*runs)}


async def _run_one(state, status: ModelStatus, array, decode_ms: float, deadline: float, k: int) -> CompareResult:
    try:
        (answer,) = await infer_tensor(state, status, array[None], deadline)
    except ServiceError as e:  # this model's refusal or failure; the others answer
        return _failed(status, e)
    return CompareResult(
        model=status.name,
        state=status.state,
        version=answer.version,
        weights=weights_of(state, status, answer.version),
        predictions=Prediction.top_k(answer.output, status.source.labels, k),
        timing=Timing(decode_ms=decode_ms, queue_ms=answer.queue_ms, inference_ms=answer.inference_ms),
        batch_size=answer.batch_size,
    )


def _failed(status: ModelStatus, error: ServiceError) -> CompareResult:
    return CompareResult(
        model=status.name, state=status.state, error=ErrorDetail(code=error.code, message=error.message)
    )
