"""The Open Inference Protocol (KServe V2) over HTTP, as Triton speaks it: health, server and model metadata,
Triton's model configuration, and `POST /v2/models/{name}[/versions/{v}]/infer` with JSON or binary tensors and
the classification extension. Inference takes the same path as /v1/classify (service/frontend/inference.py), so
both APIs batch together; errors have V2's shape, `{"error": "..."}` (service/frontend/error_handlers.py).
"""

import functools
import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from service.errors import InvalidArgument
from service.frontend.inference import infer_images, infer_tensor
from service.frontend.model_metadata import model_config, model_metadata, server_metadata, version_number
from service.frontend.request_body import read_body, unless_disconnected
from service.frontend.tensors import ModelSignature, model_input, output_tensor, requested_outputs
from service.frontend.v2_body import (
    HEADER_LENGTH,
    content_encoding,
    encode_infer_response,
    is_costly,
    read_infer_request,
)
from service.schemas import ModelState
from service.state import ServiceState, get_state
from service.status import all_ready, require

PREFIX = "/v2"
router = APIRouter(prefix=PREFIX, tags=["v2"])
State = Annotated[ServiceState, Depends(get_state)]
_ERRORS = {
    code: {"content": {"application/json": {"example": {"error": "message"}}}}
    for code in (400, 404, 413, 415, 422, 429, 503, 504)
}


@router.get("")
async def server() -> dict:
    return server_metadata()


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", responses={503: {}})
async def ready(state: State) -> JSONResponse:
    is_ready = all_ready(await state.models.fresh_statuses())
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}", responses=_ERRORS)
async def metadata(name: str, state: State, version: str | None = None) -> dict:
    status = require(await state.models.fresh_statuses(), name, version=version_number(name, version))
    return model_metadata(status)


@router.get("/models/{name}/ready", responses={404: {}, 503: {}})
@router.get("/models/{name}/versions/{version}/ready", responses={404: {}, 503: {}})
async def model_ready(name: str, state: State, version: str | None = None) -> JSONResponse:
    number = version_number(name, version)
    status = require(await state.models.fresh_statuses(), name, ready=False, version=number)
    is_ready = status.state is ModelState.READY
    if number is not None:
        is_ready = status.version_status(number).state is ModelState.READY
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}/config", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}/config", responses=_ERRORS)
async def config(name: str, state: State, version: str | None = None) -> dict:
    status = require(await state.models.fresh_statuses(), name, version=version_number(name, version))
    return model_config(status, state.settings.version_policy)


@router.post("/models/{name}/infer", responses=_ERRORS)
@router.post("/models/{name}/versions/{version}/infer", responses=_ERRORS)
async def infer(request: Request, name: str, state: State, version: str | None = None) -> Response:
    """Inputs: the model's tensor, or BYTES of encoded images; outputs: the logits, or with the parameter
    `classification: K` the top K as "score:index:label" strings."""
    received = time.monotonic()
    settings = state.settings
    number = version_number(name, version)
    status = await state.models.ready(name, number)
    signature = ModelSignature.of(status)

    encoding = content_encoding(request.headers.get("content-encoding"))
    header_length = request.headers.get(HEADER_LENGTH)
    body = await read_body(request, settings.max_request_bytes)
    max_images = settings.max_images_per_request
    read = functools.partial(read_infer_request, max_bytes=settings.max_request_bytes, max_images=max_images)
    if is_costly(len(body), encoding, header_length):
        # In the large-image lane, counted in its backlog (429 when full): N clients sending 16 MB of JSON
        # numbers (0.5 s and 90 MB each to parse) queue there instead of parsing N at once.
        large = state.decode_pool.large
        large.reserve(1)
        parsed = await large.run(read, body, encoding, header_length)
    else:
        parsed = read(body, encoding, header_length)
    outputs = requested_outputs(signature, parsed.outputs, settings.max_top_k)
    timeout_ms = settings.request_timeout_ms if parsed.timeout_us is None else parsed.timeout_us / 1000
    if timeout_ms > settings.max_request_timeout_ms:
        raise InvalidArgument(f"timeout must be at most {settings.max_request_timeout_ms * 1000:g} microseconds")
    deadline = received + timeout_ms / 1000

    images, batch = model_input(signature, parsed.inputs, max_images)
    watch = functools.partial(unless_disconnected, request)
    if images is not None:
        answers = await infer_images(state, status, images, deadline, version=number, embedded=True, watch=watch)
    else:
        answers = await infer_tensor(state, status, batch, deadline, version=number, watch=watch)

    logits = np.stack([a.output for a in answers])
    tensors = [output_tensor(signature, o, logits) for o in outputs]
    binary = [parsed.binary_output if o.binary is None else o.binary for o in outputs]
    content, json_length = encode_infer_response(status.name, answers[0].version, parsed.id, tensors, binary)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})
