"""The Open Inference Protocol's tensors, apart from how they travel (JSON, binary, protobuf): datatypes, BYTES
serialization, a request's input checked against the model, and the outputs (logits, or Triton's
classification extension's "score:index:label" strings).

A model takes one input: either its own tensor (FP32 NCHW, or UINT8 for models exported with `--uint8`),
preprocessed by the client, or a BYTES tensor of encoded images (JPEG, PNG, ...) that the service decodes with
the model's preprocessing, exactly as `/v1/classify` does.
"""

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import BadRequest, InvalidArgument, TooManyImages
from service.status import ModelStatus

# numpy dtype name -> V2 datatype, and back (BYTES is encoded images).
DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8"}
NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
BYTES = "BYTES"
MAX_NAME_SHOWN = 64
MAX_DIMS = 32  # numpy's limit is 64
MAX_DIM = 2**31  # any dimension, and the element count; a body of 16 MB holds far fewer
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class InputTensor:
    """One input as received: `data` is a numeric array of `shape`, or the BYTES elements."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    classification: int = 0  # top-K "score:index:label" strings instead of the tensor
    binary: bool | None = None  # HTTP: in the binary extension's trailer (None: the request's default)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray  # numeric, or an object array of bytes for BYTES


@dataclass(frozen=True)
class ModelSignature:
    """The model's one input and one output as V2 names them."""

    input_name: str
    input_datatype: str
    input_dims: tuple[int, ...]  # without the batch dimension
    output_name: str
    num_classes: int
    labels: tuple[str, ...]

    @classmethod
    def of(cls, status: ModelStatus) -> "ModelSignature":
        config = status.source.config
        return cls(
            input_name=config.input.name,
            input_datatype=DATATYPES[config.input.dtype],
            input_dims=tuple(config.input.shape[1:]),
            output_name=config.output.name,
            num_classes=config.output.shape[-1],
            labels=status.source.labels,
        )


def shown(name: str) -> str:
    return repr(name if len(name) <= MAX_NAME_SHOWN else name[:MAX_NAME_SHOWN] + "...")


def element_count(shape: tuple[int, ...]) -> int:
    """Checked by check_shape: Python ints, so no product wraps around."""
    return math.prod(shape)


def bytes_count(shape: tuple[int, ...], max_images: int) -> int:
    """A BYTES tensor's element count (its images), refused above `max_images` before any element is read:
    16 MB of empty elements would otherwise become four million Python objects."""
    count = element_count(shape)
    if count > max_images:
        raise TooManyImages(f"{count} images in one request, the limit is {max_images}")
    return count


def check_shape(shape: Any) -> tuple[int, ...]:
    """A request's shape: non-negative integers, none so large that the product overflows what numpy indexes."""
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"tensor shape must be a list of integers, got {str(shape)[:100]}")
    if len(shape) > MAX_DIMS or any(not 0 <= d < MAX_DIM for d in shape) or math.prod(shape) >= MAX_DIM:
        raise BadRequest(f"tensor shape {str(list(shape))[:100]} is negative or too large")
    return tuple(shape)


def checked_header(name: str, datatype: str, shape: Any, max_images: int) -> tuple[tuple[int, ...], int]:
    """A request tensor's shape and element count, before any of its data is read: a known datatype, a bounded
    shape, a BYTES input's images counted against `max_images`."""
    shape = check_shape(shape)
    if datatype != BYTES and datatype not in NUMERIC:
        raise BadRequest(f"input {shown(name)}: unknown datatype {shown(datatype)}")
    return shape, bytes_count(shape, max_images) if datatype == BYTES else element_count(shape)


def from_raw(name: str, datatype: str, shape: tuple[int, ...], count: int, raw: bytes | memoryview) -> InputTensor:
    """A tensor from its raw bytes, as the binary extension and gRPC's raw contents both carry it."""
    data = deserialize_bytes(raw, count, name) if datatype == BYTES else numeric_from_raw(raw, datatype, shape, name)
    return InputTensor(name, datatype, shape, data)


def numeric_from_raw(raw: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A tensor from its little-endian bytes (the binary extension, gRPC's raw contents): no copy."""
    dtype = np.dtype(NUMERIC[datatype]).newbyteorder("<")
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"input {shown(name)}: {len(raw)} bytes of data, shape {list(shape)} of {datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def numeric_from_list(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A tensor from JSON `data` (flat or nested, row-major) or protobuf contents."""
    try:
        array = np.asarray(data, dtype=NUMERIC[datatype])
    except (TypeError, ValueError, OverflowError, RecursionError) as e:  # not numbers, out of range, ragged, too deep
        raise BadRequest(f"input {shown(name)}: data is not all {datatype}: {str(e)[:200]}") from e
    if array.size != element_count(shape):
        raise BadRequest(f"input {shown(name)}: {array.size} values, shape {list(shape)} needs {element_count(shape)}")
    return array.reshape(shape)


def deserialize_bytes(raw: bytes | memoryview, count: int, name: str) -> list[bytes]:
    """BYTES elements as the binary extension and gRPC carry them: each a 4-byte little-endian length, then
    the bytes. `count` (the shape's) is checked before anything is copied."""
    view, items, offset = memoryview(raw), [], 0
    while offset < len(view):
        if len(items) == count or offset + 4 > len(view):
            raise BadRequest(f"input {shown(name)}: BYTES data does not match its shape's {count} elements")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise BadRequest(f"input {shown(name)}: BYTES element {len(items)} runs past the end of the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise BadRequest(f"input {shown(name)}: {len(items)} BYTES elements, its shape needs {count}")
    return items


def serialize_bytes(items: np.ndarray) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items.flat)


def model_input(
    signature: ModelSignature, inputs: list[InputTensor], max_images: int
) -> tuple[list[tuple[str, bytes]] | None, np.ndarray | None]:
    """(encoded images, None) for a BYTES input, (None, batch) for the model's own tensor; 400 for anything
    that is neither, 413 for more images than a request may carry."""
    if len(inputs) != 1 or inputs[0].name != signature.input_name:
        names = ", ".join(shown(i.name) for i in inputs[:4]) or "none"
        raise BadRequest(f"the model takes one input named {signature.input_name!r}; the request has {names}")
    tensor = inputs[0]
    if tensor.datatype == BYTES:
        images = [(f"image {i}", data) for i, data in enumerate(tensor.data)]
        if not images:
            raise BadRequest("the request has no images")
        if len(images) > max_images:
            raise TooManyImages(f"{len(images)} images in one request, the limit is {max_images}")
        return images, None
    expected = [-1, *signature.input_dims]
    if tensor.datatype != signature.input_datatype:
        raise BadRequest(
            f"input {signature.input_name!r} is {signature.input_datatype} {expected} (or BYTES of encoded images), "
            f"got {tensor.datatype}"
        )
    if len(tensor.shape) != len(expected) or tuple(tensor.shape[1:]) != signature.input_dims or tensor.shape[0] < 1:
        raise BadRequest(f"input {signature.input_name!r} has shape {expected}, got {list(tensor.shape)}")
    if tensor.shape[0] > max_images:
        raise TooManyImages(f"{tensor.shape[0]} images in one request, the limit is {max_images}")
    return None, np.ascontiguousarray(tensor.data)


def requested_outputs(signature: ModelSignature, outputs: list[RequestedOutput], max_k: int) -> list[RequestedOutput]:
    """The outputs to answer: those asked for, checked; none asked for means the model's output tensor."""
    if not outputs:
        return [RequestedOutput(signature.output_name)]
    for output in outputs:
        if output.name != signature.output_name:
            raise BadRequest(f"the model has one output named {signature.output_name!r}, not {shown(output.name)}")
        if not 0 <= output.classification <= min(max_k, signature.num_classes):
            raise InvalidArgument(
                f"classification must be between 1 and {min(max_k, signature.num_classes)}, got {output.classification}"
            )
    return outputs


def output_tensor(signature: ModelSignature, output: RequestedOutput, logits: np.ndarray) -> OutputTensor:
    """The model's output (N, classes), or with classification K the top K per image as Triton writes them:
    "score:index:label", the score being the output's value (here a logit), highest first."""
    if not output.classification:
        return OutputTensor(output.name, "FP32", logits.shape, logits)
    k = output.classification
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    strings = np.array(
        [
            [f"{row[i]:f}:{i}:{signature.labels[i]}".encode() for i in indices]
            for row, indices in zip(logits, top, strict=True)
        ],
        dtype=object,
    )
    return OutputTensor(output.name, BYTES, (len(logits), k), strings)
