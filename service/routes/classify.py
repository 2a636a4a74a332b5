"""`POST /v1/classify?model=NAME&top_k=K&timeout_ms=T`: read the body, check the queue has room, decode
every image, queue, answer.

The body is one raw image (image/* or application/octet-stream), multipart/form-data with one or
more files, or JSON `{"images": ["<base64>", ...]}`.
"""

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.batcher import BatchResult
from service.config import Settings
from service.errors import (
    BadRequest,
    DeadlineExceeded,
    InvalidArgument,
    RequestTooLarge,
    ServiceError,
    TooManyImages,
    UnsupportedMediaType,
)
from service.preprocess import Preprocessor
from service.schemas import Base64Images, ClassifyResponse, ErrorResponse, ImageResult, Prediction, Timing
from service.state import ServiceState, get_state

router = APIRouter(tags=["classify"])

# Raw bodies are sniffed, not trusted by type. x-www-form-urlencoded is what `curl --data-binary` sends by default.
RAW_TYPES = {
    "image/jpeg",
    "image/jpg",
    "image/png",
    "image/webp",
    "image/bmp",
    "image/x-ms-bmp",
    "image/gif",
    "application/octet-stream",
    "application/x-www-form-urlencoded",
    "",
}
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 429, 500, 503, 504)}


@router.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS)
async def classify(
    request: Request,
    state: Annotated[ServiceState, Depends(get_state)],
    model: Annotated[str, Query(description="Model name, as listed by GET /v1/models.")],
    top_k: Annotated[int | None, Query(ge=1, description="Classes per image; default SERVE_DEFAULT_TOP_K.")] = None,
    timeout_ms: Annotated[float | None, Query(gt=0, description="Deadline; default SERVE_REQUEST_TIMEOUT_MS.")] = None,
) -> ClassifyResponse:
    received = time.monotonic()
    settings = state.settings
    entry = state.ready(model)
    k = settings.default_top_k if top_k is None else top_k
    if k > settings.max_top_k:
        raise InvalidArgument(f"top_k must be between 1 and {settings.max_top_k}, got {k}")
    deadline = received + (timeout_ms or settings.request_timeout_ms) / 1000

    images = await read_images(request, settings)
    entry.batcher.admit(len(images))  # shed before decoding; enqueue checks again after
    decoded = await decode_images(images, entry.preprocessor, state.decode_executor)
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("deadline passed while decoding")
    results = await wait_all(entry.batcher.enqueue([array for array, _ in decoded], deadline), deadline)

    queue_time = state.metrics.queue_time.labels(model)
    for r in results:
        queue_time.observe(r.queue_ms / 1000)
    source = entry.source
    return ClassifyResponse(
        model=model,
        version=source.version,
        weights=source.config.versions[source.version].weights,
        results=[
            ImageResult(
                predictions=Prediction.top_k(r.output, source.labels, k),
                timing=Timing(decode_ms=decode_ms, queue_ms=r.queue_ms, inference_ms=r.inference_ms),
                batch_size=r.batch_size,
            )
            for r, (_, decode_ms) in zip(results, decoded, strict=True)
        ],
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes: by Content-Length first, then by counting."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(f"body is {length} bytes, the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestTooLarge(f"body is over the limit of {limit} bytes")
    return bytes(body)


async def read_images(request: Request, settings: Settings) -> list[tuple[str, bytes]]:
    """(name, bytes) per image in the body, named for error messages."""
    body = await read_body(request, settings.max_request_bytes)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type in RAW_TYPES:
        images = [("image 0", body)]
    elif media_type == "multipart/form-data":
        images = await _multipart_images(request, body)
    elif media_type == "application/json":
        images = _base64_images(body)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media_type!r} is not accepted; send an image, multipart/form-data or application/json"
        )
    if not images:
        raise BadRequest("the request has no images")
    if len(images) > settings.max_images_per_request:
        raise TooManyImages(f"{len(images)} images in one request, the limit is {settings.max_images_per_request}")
    return images


async def _multipart_images(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=10_000, max_fields=1000).parse()
    except MultiPartException as e:
        raise BadRequest(f"malformed multipart body: {e.message}") from e
    images = []
    try:
        for field, value in form.multi_items():
            if isinstance(value, UploadFile):
                images.append((f"image {len(images)} ({value.filename or field})", await value.read()))
    finally:
        await form.close()
    return images


def _base64_images(body: bytes) -> list[tuple[str, bytes]]:
    try:
        request = Base64Images.model_validate_json(body)
    except ValidationError as e:
        if any(error["type"] == "json_invalid" for error in e.errors()):
            raise BadRequest("body is not valid JSON") from e
        raise RequestValidationError(e.errors()) from e
    images = []
    for i, text in enumerate(request.images):
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            images.append((f"image {i}", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"image {i}: invalid base64") from e
    return images


def _timed(preprocessor: Preprocessor, data: bytes) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    array = preprocessor(data)
    return array, (time.perf_counter() - started) * 1000


async def decode_images(
    images: Sequence[tuple[str, bytes]], preprocessor: Preprocessor, executor: Executor
) -> list[tuple[np.ndarray, float]]:
    """(array, decode_ms) per image, decoded in the pool; the first bad image fails the request, by name."""
    loop = asyncio.get_running_loop()
    outcomes = await asyncio.gather(
        *(loop.run_in_executor(executor, _timed, preprocessor, data) for _, data in images), return_exceptions=True
    )
    for (name, _), outcome in zip(images, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            outcome.message = f"{name}: {outcome.message}"
            raise outcome
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


async def wait_all(futures: list[asyncio.Future], deadline: float) -> list[BatchResult]:
    """Every result, or the first error; on any way out, unfinished futures are cancelled (the batcher skips them)."""
    try:
        return await asyncio.wait_for(asyncio.gather(*futures), max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise DeadlineExceeded("deadline passed before the results were ready") from None
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # mark as retrieved: no "exception was never retrieved" noise
