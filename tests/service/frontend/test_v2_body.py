import gzip
import json
import zlib

import numpy as np
import pytest

from service.errors import BadRequest, InvalidArgument, RequestTooLarge, TooManyImages, UnsupportedMediaType
from service.frontend.tensors import OutputTensor
from service.frontend.v2_body import (
    content_encoding,
    decompressed,
    encode_infer_response,
    is_costly,
    parse_infer_request,
)


def binary(header: dict, *blobs: bytes) -> tuple[bytes, str]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), str(len(text))


def test_json_and_binary_inputs_and_output_flags():
    x = np.arange(4, dtype="<f4")
    header = {
        "id": "7",
        "parameters": {"binary_data_output": True, "timeout": 5000},
        "inputs": [
            {"name": "a", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
            {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["aGk=", "data:image/png;base64,aGk="]},
        ],
        "outputs": [{"name": "logits"}, {"name": "logits", "parameters": {"binary_data": False, "classification": 2}}],
    }
    request = parse_infer_request(*binary(header, x.tobytes()), max_images=8)
    assert request.id == "7" and request.timeout_us == 5000 and request.binary_output
    np.testing.assert_array_equal(request.inputs[0].data, x)
    assert request.inputs[1].data == [b"hi", b"hi"]
    assert [(o.binary, o.classification) for o in request.outputs] == [(True, 0), (False, 2)]


@pytest.mark.parametrize(
    "header,error,fragment",
    [
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]},
            BadRequest,
            "runs past the end of the body",
        ),
        (
            {"inputs": [{"name": "a", "shape": [100], "datatype": "BYTES", "parameters": {"binary_data_size": 0}}]},
            TooManyImages,
            "100 images",
        ),
        ({"inputs": [{"name": "a", "shape": [1.5], "datatype": "FP32", "data": [1]}]}, BadRequest, "list of integers"),
        (
            {
                "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
                "parameters": {"timeout": "soon"},
            },
            InvalidArgument,
            "timeout",
        ),
        (
            {
                "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
                "parameters": {"binary_data_output": 1},
            },
            BadRequest,
            "true or false",
        ),
        (
            {
                "inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [{"name": "o", "parameters": {"classification": -1}}],
            },
            BadRequest,
            "non-negative integer",
        ),
    ],
)
def test_bad_headers(header, error, fragment):
    with pytest.raises(error, match=fragment):
        parse_infer_request(*binary(header), max_images=8)


@pytest.mark.parametrize(
    "body,fragment",
    [
        (
            b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}]}",
            "not valid JSON",
        ),
        (
            b'{"inputs":[{"name":"a","shape":[2],"datatype":"BYTES","data":[["aGk="],"aGk="]}]}',
            "must be a base64 string",
        ),
        (
            b'{"inputs":[{"name":"a","shape":[1],"datatype":"BYTES","data":'
            + b"[" * 100
            + b'"aGk="'
            + b"]" * 100
            + b"}]}",
            "must be a base64 string",
        ),
        (b'{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[[1],2]}]}', "not all FP32"),
        (
            b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":' + b"[" * 100 + b"1" + b"]" * 100 + b"}]}",
            "not all FP32",
        ),
    ],
)
def test_hostile_nesting_is_a_bad_request(body, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_infer_request(body, None, max_images=8)


def test_body_that_is_not_json():
    with pytest.raises(BadRequest, match="not a V2 inference request"):
        parse_infer_request(b"\x00\x01", None, max_images=8)
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length is '-3'"):
        parse_infer_request(b"{}", "-3", max_images=8)


def test_decompression_is_bounded():
    data = b"x" * 1000
    assert decompressed(gzip.compress(data), content_encoding("gzip"), 1000) == data
    assert decompressed(zlib.compress(data), content_encoding("Deflate"), 1000) == data
    assert decompressed(data, content_encoding(None), 10) == data  # identity: the body reader bounded it already
    with pytest.raises(RequestTooLarge, match="inflates"):
        decompressed(gzip.compress(data), "gzip", 999)
    with pytest.raises(UnsupportedMediaType):
        content_encoding("br")


def test_what_is_read_off_the_event_loop():
    assert not is_costly(600_000, "identity", "200")  # a binary tensor: its JSON part is small
    assert is_costly(600_000, "identity", None)  # all JSON
    assert is_costly(2_000, "gzip", None)  # 2 kB may inflate to 16 MB


@pytest.mark.parametrize(
    "body,header_length,error,fragment",
    [
        (b"{}", "\u00b2", BadRequest, "Inference-Header-Content-Length"),  # "²".isdigit() is True
        (b"{}", "9" * 400, BadRequest, "Inference-Header-Content-Length"),
        (
            b'{"inputs":[{"name":"a","shape":[1],"datatype":"INT64","data":[' + b"9" * 5000 + b"]}]}",
            None,
            BadRequest,
            "not valid JSON",
        ),
        (b'{"inputs":[{"name":"a","shape":[1],"datatype":"UINT8","data":[300]}]}', None, BadRequest, "not all UINT8"),
        (
            b'{"inputs":[{"name":"a","shape":[4294967296,4294967296],"datatype":"FP32","data":[]}]}',
            None,
            BadRequest,
            "too large",
        ),
        (
            b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"timeout":NaN}}',
            None,
            InvalidArgument,
            "timeout",
        ),
    ],
)
def test_small_hostile_requests_are_bad_requests(body, header_length, error, fragment):
    with pytest.raises(error, match=fragment):
        parse_infer_request(body, header_length, max_images=8)


def test_response_json_and_binary():
    logits = np.array([[1.5, -2.0]], np.float32)
    classes = np.array([[b"1.500000:0:a"]], dtype=object)
    tensors = [OutputTensor("logits", "FP32", (1, 2), logits), OutputTensor("logits", "BYTES", (1, 1), classes)]
    body, length = encode_infer_response("m", 3, "id-1", tensors, [False, False])
    assert length is None
    assert json.loads(body) == {
        "model_name": "m",
        "model_version": "3",
        "id": "id-1",
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [1, 2], "data": [1.5, -2.0]},
            {"name": "logits", "datatype": "BYTES", "shape": [1, 1], "data": ["1.500000:0:a"]},
        ],
    }
    body, length = encode_infer_response("m", 3, None, tensors, [True, True])
    header = json.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 4 + 12]
    assert np.frombuffer(body[length : length + 8], "<f4").tolist() == [1.5, -2.0]
    assert body[length + 8 :] == b"\x0c\x00\x00\x001.500000:0:a"
