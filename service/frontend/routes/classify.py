"""`POST /v1/classify?model=NAME&version=V&top_k=K&timeout_ms=T`: read the body, run its images
(service/frontend/inference.py), answer the top classes; if the client leaves meanwhile, its work is cancelled.

The body is one raw image (image/* or application/octet-stream), multipart/form-data with one or
more files, or JSON `{"images": ["<base64>", ...]}` (service/frontend/request_body.py).
"""

import functools
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from service.frontend.inference import infer_images, top_k_and_deadline, weights_of
from service.frontend.request_body import IMAGE_BODY, is_json, read_images, unless_disconnected
from service.schemas import ClassifyResponse, ErrorResponse, ImageResult, Prediction, Timing
from service.state import ServiceState, get_state

router = APIRouter(tags=["classify"])

_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 408, 413, 415, 422, 429, 431, 500, 503, 504)}


@router.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS, openapi_extra=IMAGE_BODY)
async def classify(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    model: Annotated[str, Query(description="Model name, as listed by GET /v1/models.")],
    version: Annotated[
        int | None, Query(ge=1, description="Model version; default: the newest ready (GET /v1/repository/index).")
    ] = None,
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
    status = await state.models.ready(model, version)
    k, deadline = top_k_and_deadline(settings, top_k, timeout_ms, received)

    images = await read_images(
        request, max_bytes=settings.max_request_bytes, max_images=settings.max_images_per_request
    )
    answers = await infer_images(
        state,
        status,
        images,
        deadline,
        version=version,
        embedded=is_json(request),
        watch=functools.partial(unless_disconnected, request),
    )
    answered = answers[0].version
    return ClassifyResponse(
        model=status.name,
        version=answered,
        weights=weights_of(state, status, answered),
        results=[
            ImageResult(
                predictions=Prediction.top_k(a.output, status.source.labels, k),
                timing=Timing(decode_ms=a.decode_ms, queue_ms=a.queue_ms, inference_ms=a.inference_ms),
                batch_size=a.batch_size,
            )
            for a in answers
        ],
    )
