"""A classify request's body to its images: read under a byte limit, split with the image count bounded
before any part is kept or any base64 decoded, and off the event loop when the body is large.

The body is one raw image (image/* or application/octet-stream), multipart/form-data with one or
more files, or JSON `{"images": ["<base64>", ...]}`. Also here: noticing that the client has left,
so that its queued work is cancelled rather than run for nobody.
"""

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from service.errors import (
    BadRequest,
    ClientClosedRequest,
    RequestTooLarge,
    TooManyImages,
    UnsupportedMediaType,
    shorten,
)
from service.schemas import Base64Images

T = TypeVar("T")

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
# Splitting a body this large is done in a thread: a 16 MB multipart or JSON body costs tens of milliseconds.
SPLIT_IN_THREAD_BYTES = 256 * 1024
# Multipart parts that are not files (form fields) are allowed beside the images, up to this many.
EXTRA_FORM_FIELDS = 16

Images = list[tuple[str, bytes]]  # (name for error messages, encoded image)

_BINARY = {"schema": {"type": "string", "format": "binary"}}
# The bodies `read_images` takes, for OpenAPI (FastAPI cannot infer them from a raw Request): /docs then offers a
# file upload for multipart and raw images ("Try it out").
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary", "description": "An image."}},
                    "required": ["file"],
                }
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "image/webp": _BINARY,
            "application/octet-stream": _BINARY,
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "byte"}}},
                    "required": ["images"],
                }
            },
        },
    }
}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing more than `limit` bytes: by Content-Length first, then by counting."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(f"body is {length} bytes, the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"body is over the limit of {limit} bytes")
    except ClientDisconnect:
        raise ClientClosedRequest(f"client left after sending {size} bytes of the body") from None
    return b"".join(chunks)  # one copy: a 16 MB body is copied on the event loop, so copies count


async def read_images(request: Request, *, max_bytes: int, max_images: int) -> Images:
    """(name, bytes) per image in the body; at most `max_images` (413 above), at least one (400)."""
    body = await read_body(request, max_bytes)
    content_type = request.headers.get("content-type", "")
    if len(body) > SPLIT_IN_THREAD_BYTES:
        images = await asyncio.to_thread(split_body, body, content_type, max_images)
    else:
        images = split_body(body, content_type, max_images)
    if not images:
        raise BadRequest("the request has no images")
    return images


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def is_json(request: Request) -> bool:
    """The images came base64-encoded in JSON: bytes that decode to no image are then the image's fault."""
    return media_type(request.headers.get("content-type", "")) == "application/json"


def split_body(body: bytes, content_type: str, max_images: int) -> Images:
    kind = media_type(content_type)
    if kind in RAW_TYPES:
        return [("image 0", body)]
    if kind == "multipart/form-data":
        return multipart_images(body, content_type, max_images)
    if kind == "application/json":
        return base64_images(body, max_images)
    raise UnsupportedMediaType(
        f"Content-Type {kind!r} is not accepted; send an image, multipart/form-data or application/json"
    )


def _too_many(max_images: int) -> TooManyImages:
    return TooManyImages(f"more than {max_images} images in one request, the limit is {max_images}")


def multipart_images(body: bytes, content_type: str, max_images: int) -> Images:
    """The file parts of a multipart/form-data body, with python-multipart's streaming parser. It stops at
    the first part beyond the limit, so 10,000 parts cost what `max_images` do."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("malformed multipart body: Content-Type has no boundary")
    parts: list[dict] = []
    max_parts = max_images + EXTRA_FORM_FIELDS

    def on_part_begin() -> None:
        if len(parts) == max_parts:
            raise _too_many(max_images)
        parts.append({"headers": [], "data": bytearray()})

    def on_header_field(data: bytes, start: int, end: int) -> None:
        parts[-1]["headers"].append([data[start:end], b""])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[-1]["headers"][-1][1] += data[start:end]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        parser.write(body)
        parser.finalize()
    except TooManyImages:
        raise
    except Exception as e:  # python-multipart raises its own errors, and ValueError on some malformed bodies
        raise BadRequest(f"malformed multipart body: {e}") from e
    images = []
    for part in parts:
        disposition = next((v for k, v in part["headers"] if k.lower() == b"content-disposition"), b"")
        _, options = parse_options_header(disposition)
        if b"filename" in options:  # a file; other parts are form fields
            name = shorten((options[b"filename"] or options.get(b"name", b"")).decode("utf-8", "replace"), 100)
            images.append((f"image {len(images)} ({name})", bytes(part["data"])))
    if len(images) > max_images:
        raise _too_many(max_images)
    return images


def base64_images(body: bytes, max_images: int) -> Images:
    """JSON `{"images": [...]}`: the count is checked before any string is base64-decoded."""
    try:
        request = Base64Images.model_validate_json(body)
    except ValidationError as e:
        if any(error["type"] == "json_invalid" for error in e.errors()):
            raise BadRequest("body is not valid JSON") from e
        raise RequestValidationError(e.errors()) from e
    if len(request.images) > max_images:
        raise TooManyImages(f"{len(request.images)} images in one request, the limit is {max_images}")
    images = []
    for i, text in enumerate(request.images):
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            images.append((f"image {i}", base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"image {i}: invalid base64") from e
    return images


async def until_disconnected(request: Request) -> None:
    """Returns when the client closes its connection. Call only once the body has been read: it takes
    the ASGI receive channel, where the server says http.disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; if the client leaves first, `work` is cancelled (its images leave the decode lanes
    and the batcher's queue before they run) and ClientClosedRequest is raised."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself was cancelled
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # let the cancellation reach the lanes and the queue before answering
    raise ClientClosedRequest("client left before its answer was ready")
