"""A V2 inference request's HTTP body to tensors, and tensors to the response body: JSON, and the binary tensor
data extension (the body is a JSON header of `Inference-Header-Content-Length` bytes, then each tensor with a
`binary_data_size` parameter, in order). BYTES elements in JSON are base64 text (JSON strings cannot carry
an image's bytes); in binary they are raw.
"""

import base64
import binascii
import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from service.errors import BadRequest, InvalidArgument, RequestTooLarge, UnsupportedMediaType, shorten
from service.frontend.request_body import SPLIT_IN_THREAD_BYTES
from service.frontend.tensors import (
    BYTES,
    InputTensor,
    OutputTensor,
    RequestedOutput,
    checked_header,
    from_raw,
    numeric_from_list,
    serialize_bytes,
    shown,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
# Content-Encoding a client may compress the request with (tritonclient's request_compression_algorithm).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    shape: list[Any]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None  # a list, left as json.loads made it: validating 8 million elements copies them all


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    parameters: dict[str, Any] = {}


class _InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    parameters: dict[str, Any] = {}
    inputs: list[_Tensor]
    outputs: list[_Output] = []


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]
    timeout_us: float | None  # Triton's `timeout` parameter
    binary_output: bool  # the default for outputs that do not say (`binary_data_output`)


def content_encoding(header: str | None) -> str:
    """The request's Content-Encoding, checked before the body is read: identity, gzip or deflate, else 415."""
    encoding = (header or "identity").strip().lower()
    if encoding != "identity" and encoding not in _WBITS:
        raise UnsupportedMediaType(f"Content-Encoding {shorten(encoding, 40)!r} is not accepted; use gzip or deflate")
    return encoding


def decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before gzip or deflate, refusing to inflate past `limit` bytes (a 16 MB zip bomb
    inflates to gigabytes)."""
    if encoding == "identity":
        return body
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"body is not valid {encoding}: {e}") from e
    if len(data) > limit:
        raise RequestTooLarge(f"body inflates to over the limit of {limit} bytes")
    return data


def _flag(parameters: dict[str, Any], key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be true or false, got {shorten(str(value), 40)}")
    return value


def _int_parameter(parameters: dict[str, Any], key: str) -> int:
    value = parameters.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"parameter {key!r} must be a non-negative integer, got {shorten(str(value), 40)}")
    return value


def _bytes_from_json(data: list[Any], count: int, name: str) -> list[bytes]:
    flat = np.asarray(data, dtype=object).ravel()  # ragged or too deep: an element is then a list, refused below
    if flat.size != count:
        raise BadRequest(f"input {shown(name)}: {flat.size} BYTES elements, its shape needs {count}")
    items = []
    for i, text in enumerate(flat):
        if not isinstance(text, str):
            raise BadRequest(f"input {shown(name)}: BYTES element {i} must be a base64 string")
        if text.startswith("data:"):
            text = text.partition(",")[2]
        try:
            items.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"input {shown(name)}: BYTES element {i} is not valid base64") from e
    return items


def _input(tensor: _Tensor, binary: memoryview | None, max_images: int) -> InputTensor:
    shape, count = checked_header(tensor.name, tensor.datatype, tensor.shape, max_images)
    if binary is not None:
        return from_raw(tensor.name, tensor.datatype, shape, count, binary)
    if not isinstance(tensor.data, list):
        raise BadRequest(f"input {shown(tensor.name)} has neither data (a list) nor binary_data_size")
    if tensor.datatype == BYTES:
        data = _bytes_from_json(tensor.data, count, tensor.name)
    else:
        data = numeric_from_list(tensor.data, tensor.datatype, shape, tensor.name)
    return InputTensor(tensor.name, tensor.datatype, shape, data)


def json_size(body_length: int, header_length: str | None) -> int | None:
    """How much of the body is JSON: all of it, or `Inference-Header-Content-Length`; None if that is no length
    within the body."""
    if header_length is None:
        return body_length
    if not re.fullmatch(r"[0-9]{1,10}", header_length) or int(header_length) > body_length:
        return None
    return int(header_length)


def is_costly(body_length: int, encoding: str, header_length: str | None) -> bool:
    """Whether reading the request costs enough to be done in a lane, off the event loop: a compressed body
    (16 kB inflate to 16 MB), or a large JSON part (binary tensors cost nothing to read)."""
    return encoding != "identity" or (json_size(body_length, header_length) or 0) > SPLIT_IN_THREAD_BYTES


def read_infer_request(
    body: bytes, encoding: str, header_length: str | None, *, max_bytes: int, max_images: int
) -> InferRequest:
    """The body inflated (`encoding`) under `max_bytes`, then parsed."""
    return parse_infer_request(decompressed(body, encoding, max_bytes), header_length, max_images)


def parse_infer_request(body: bytes, header_length: str | None, max_images: int) -> InferRequest:
    """The request's tensors; BadRequest (400) naming what is wrong, TooManyImages (413) for a BYTES input of more
    than `max_images`. Large bodies: call from a thread."""
    json_length = json_size(len(body), header_length)
    if json_length is None:
        raise BadRequest(f"{HEADER_LENGTH} is {shorten(header_length, 20)!r}, the body has {len(body)} bytes")
    view = memoryview(body)
    header, trailer = bytes(view[:json_length]), view[json_length:]
    try:
        request = _InferRequest.model_validate(json.loads(header))  # stdlib: a fifth of pydantic's peak on big data
    except (ValueError, RecursionError) as e:  # not JSON or UTF-8, a 5,000-digit integer; RecursionError: [[[[...
        raise BadRequest(f"not a V2 inference request: body is not valid JSON ({shorten(str(e), 100)})") from e
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise BadRequest(f"not a V2 inference request: {shorten(problems, 400)}") from e
    inputs, offset = [], 0
    for tensor in request.inputs:
        size = _int_parameter(tensor.parameters, "binary_data_size")
        if "binary_data_size" in tensor.parameters:
            if offset + size > len(trailer):
                raise BadRequest(f"input {shown(tensor.name)}: binary_data_size runs past the end of the body")
            inputs.append(_input(tensor, trailer[offset : offset + size], max_images))
            offset += size
        else:
            inputs.append(_input(tensor, None, max_images))
    if offset != len(trailer):
        raise BadRequest(f"{len(trailer) - offset} bytes of binary data that no input's binary_data_size claims")
    timeout = request.parameters.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout < math.inf  # NaN too
    ):
        raise InvalidArgument(f"parameter 'timeout' must be a positive number of microseconds, got {timeout!r}")
    binary_output = _flag(request.parameters, "binary_data_output", False)
    outputs = [
        RequestedOutput(
            o.name,
            classification=_int_parameter(o.parameters, "classification"),
            binary=_flag(o.parameters, "binary_data", binary_output),
        )
        for o in request.outputs
    ]
    return InferRequest(request.id, inputs, outputs, timeout, binary_output)


def _json_data(tensor: OutputTensor) -> list:
    if tensor.datatype == BYTES:
        return [item.decode("utf-8", "replace") for item in tensor.data.flat]
    return tensor.data.ravel().tolist()


def _binary_data(tensor: OutputTensor) -> bytes:
    if tensor.datatype == BYTES:
        return serialize_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, dtype=tensor.data.dtype.newbyteorder("<")).tobytes()


def encode_infer_response(
    model: str, version: int, request_id: str | None, tensors: list[OutputTensor], binary: list[bool]
) -> tuple[bytes, int | None]:
    """(body, JSON header length when some output is binary, else None)."""
    outputs, trailer = [], []
    for tensor, as_binary in zip(tensors, binary, strict=True):
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if as_binary:
            data = _binary_data(tensor)
            entry["parameters"] = {"binary_data_size": len(data)}
            trailer.append(data)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": outputs}
    if request_id is not None:
        response["id"] = request_id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not trailer:
        return header, None
    return b"".join([header, *trailer]), len(header)
