"""V2 over HTTP at the wire, in each process layout: bodies written by hand (tritonclient's are in
tests/service/test_inference_clients.py), so that every malformed one can be sent, and the error shape
`{"error": "..."}` checked."""

import base64
import gzip
import json
import struct
import threading

import numpy as np
import pytest

from tests.service.conftest import RGB_LABELS, expected_rgb_logits, image_bytes

INFER = "/v2/models/tiny_rgb/infer"
RED = (255, 0, 0)


def assert_v2_error(response, status: int, fragment: str = "") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert fragment in body["error"], body["error"]
    return body["error"]


def solid(color, size: int = 16) -> np.ndarray:
    pixels = np.broadcast_to(np.array(color, np.float32).reshape(1, 3, 1, 1) / 255, (1, 3, size, size))
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return ((pixels - mean) / std).astype(np.float32)


def json_request(array: np.ndarray, **extra) -> dict:
    tensor = {"name": "input", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def binary_request(header: dict, *blobs: bytes) -> tuple[bytes, dict]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), {"Inference-Header-Content-Length": str(len(text))}


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_server_and_health(client):
    assert client.get("/v2").json()["name"] == "cnn-serve"
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/tiny_rgb/ready").status_code == 200
    assert client.get("/v2/models/tiny_rgb/versions/1/ready").status_code == 200
    assert_v2_error(client.get("/v2/models/tiny_rgb/versions/7/ready"), 404, "no version 7; versions: 1 (ready)")
    assert_v2_error(client.get("/v2/models/nope"), 404, "no model named 'nope'")
    config = client.get("/v2/models/tiny_gray/config").json()
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [1, 8, 8]}]
    assert config["output"][0]["dims"] == [3] and config["max_batch_size"] == 8


def test_json_tensor(client):
    response = client.post(INFER, json=json_request(solid(RED), id="req-7"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "tiny_rgb" and body["model_version"] == "1" and body["id"] == "req-7"
    (output,) = body["outputs"]
    assert output["name"] == "logits" and output["datatype"] == "FP32" and output["shape"] == [1, 4]
    np.testing.assert_allclose(output["data"], expected_rgb_logits(RED), rtol=1e-4, atol=1e-4)


def test_a_large_json_body_is_parsed_off_the_event_loop(client):
    """64 images of JSON numbers (over 256 kB) are parsed in the large-image lane; the answers are the same."""
    colors = [(4 * i, 255 - 4 * i, 128) for i in range(64)]
    body = json.dumps(json_request(np.concatenate([solid(c) for c in colors]))).encode()
    assert len(body) > 256 * 1024
    response = client.post(INFER, content=body)
    assert response.status_code == 200, response.text
    logits = np.asarray(response.json()["outputs"][0]["data"]).reshape(64, 4)
    np.testing.assert_allclose(logits, [expected_rgb_logits(c) for c in colors], rtol=1e-4, atol=1e-4)


def test_nested_json_data_is_row_major(client):
    body = json_request(solid(RED))
    body["inputs"][0]["data"] = solid(RED).tolist()
    np.testing.assert_allclose(
        client.post(INFER, json=body).json()["outputs"][0]["data"], expected_rgb_logits(RED), rtol=1e-4, atol=1e-4
    )


def test_binary_tensor_in_and_out(client):
    array = np.concatenate([solid(RED), solid((0, 0, 255))])
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, 3, 16, 16],
                "datatype": "FP32",
                "parameters": {"binary_data_size": array.nbytes},
            }
        ],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }
    content, headers = binary_request(header, array.tobytes())
    response = client.post("/v2/models/tiny_rgb/versions/1/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:json_length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
    logits = np.frombuffer(response.content[json_length:], "<f4").reshape(2, 4)
    np.testing.assert_allclose(
        logits, [expected_rgb_logits(RED), expected_rgb_logits((0, 0, 255))], rtol=1e-4, atol=1e-4
    )


def test_bytes_images_and_classification(client):
    images = [image_bytes(RED), image_bytes((0, 255, 0), fmt="JPEG", quality=100)]
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(bytes_tensor(*images))},
            }
        ],
        "outputs": [{"name": "logits", "parameters": {"classification": 2}}],
    }
    content, headers = binary_request(header, bytes_tensor(*images))
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    score, index, label = output["data"][0].split(":")  # the first image's best class
    assert (index, label) == ("0", "red")
    assert float(score) == pytest.approx(expected_rgb_logits(RED)[0], abs=1e-4)
    assert output["data"][2].endswith(":green")

    json_body = {
        "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(images[0]).decode()]}]
    }
    np.testing.assert_allclose(
        client.post(INFER, json=json_body).json()["outputs"][0]["data"], expected_rgb_logits(RED), rtol=1e-2, atol=1e-2
    )


def test_a_gzip_body(client):
    content = gzip.compress(json.dumps(json_request(solid(RED))).encode())
    response = client.post(INFER, content=content, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"inputs": "x"}, 400, "not a V2 inference request"),
        (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}]},
            400,
            "one input named 'input'",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}]},
            400,
            "got [1, 3, 8, 8]",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0.0] * 7}]},
            400,
            "7 values",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3, 16, 16], "datatype": "INT8", "data": [0] * 768}]},
            400,
            "got INT8",
        ),
        ({"inputs": [{"name": "input", "shape": [1], "datatype": "FP8", "data": [0]}]}, 400, "unknown datatype"),
        ({"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": ["AA=="]}]}, 400, "needs 2"),
        ({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}, 400, "not valid base64"),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"hello").decode()]}
                ]
            },
            400,
            "not a supported image",
        ),
        (
            {"inputs": [{"name": "input", "shape": [65], "datatype": "BYTES", "data": ["AA=="] * 65}]},
            413,
            "limit is 64",
        ),
        ({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES"}]}, 400, "neither data"),
        (
            {
                "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}],
                "outputs": [{"name": "probs"}],
            },
            400,
            "one output named 'logits'",
        ),
        (
            {
                "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}],
                "outputs": [{"name": "logits", "parameters": {"classification": 5}}],
            },
            422,
            "between 1 and 4",
        ),
        (
            {
                "inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}],
                "parameters": {"timeout": -1},
            },
            422,
            "timeout",
        ),
    ],
)
def test_bad_requests(client, body, status, fragment):
    assert_v2_error(client.post(INFER, json=body), status, fragment)


def test_bad_binary_framing(client):
    header = {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 10}}]}
    content, headers = binary_request(header, b"12345")
    assert_v2_error(client.post(INFER, content=content, headers=headers), 400, "runs past the end")
    content, headers = binary_request(header, bytes_tensor(b"123456") + b"extra")
    assert_v2_error(client.post(INFER, content=content, headers=headers), 400, "no input's binary_data_size claims")
    header["inputs"][0]["parameters"]["binary_data_size"] = 8
    content, headers = binary_request(header, struct.pack("<I", 1000) + b"1234")
    assert_v2_error(client.post(INFER, content=content, headers=headers), 400, "runs past the end of the data")
    assert_v2_error(client.post(INFER, content=b"{}", headers={"Inference-Header-Content-Length": "99"}), 400, "99")
    assert_v2_error(client.post(INFER, content=b"x", headers={"content-encoding": "br"}), 415, "'br'")
    assert_v2_error(client.post(INFER, content=b"not gzip", headers={"content-encoding": "gzip"}), 400, "gzip")


def test_a_gzip_bomb_is_refused_without_inflating_it(make_client):
    client = make_client(max_request_bytes=1 << 20)
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MB in 64 kB
    assert_v2_error(client.post(INFER, content=bomb, headers={"content-encoding": "gzip"}), 413, "inflates")


def test_unknown_version_and_overload(make_client):
    client = make_client(max_queue_size=1)
    assert_v2_error(
        client.post("/v2/models/tiny_rgb/versions/2/infer", json=json_request(solid(RED))), 404, "versions: 1 (ready)"
    )
    response = client.post(INFER, json=json_request(np.concatenate([solid(RED)] * 2)))
    assert_v2_error(response, 429, "queued")
    assert int(response.headers["retry-after"]) >= 1


def test_v1_and_v2_requests_batch_together(make_client):
    client = make_client(max_batch_size=2, preferred_batch_sizes=[2], max_queue_delay_ms=2000)
    answers = {}

    def v1():
        answers["v1"] = client.post(
            "/v1/classify?model=tiny_rgb", content=image_bytes(RED), headers={"content-type": "image/png"}
        )

    threads = [threading.Thread(target=v1)]
    threads[0].start()
    answers["v2"] = client.post(INFER, json=json_request(solid((0, 0, 255))))
    threads[0].join()
    assert answers["v1"].json()["results"][0]["batch_size"] == 2  # it waited for the V2 request, not 2 s
    assert answers["v1"].json()["results"][0]["timing"]["queue_ms"] < 1900
    np.testing.assert_allclose(answers["v2"].json()["outputs"][0]["data"], expected_rgb_logits((0, 0, 255)), atol=1e-4)
    assert RGB_LABELS[int(np.argmax(answers["v2"].json()["outputs"][0]["data"]))] == "blue"


def test_v2_requests_are_counted(client):
    client.post(INFER, json=json_request(solid(RED)))
    client.post("/v2/models/nope/infer", json=json_request(solid(RED)))
    text = client.get("/metrics").text
    assert 'cnnserve_requests_total{api="v2",code="200",model="tiny_rgb"}' in text
    assert 'cnnserve_requests_total{api="v2",code="404",model="unknown"}' in text


def test_cors_is_off_unless_asked_for(make_local_client):
    plain = make_local_client()
    assert "access-control-allow-origin" not in plain.get("/v2", headers={"origin": "https://app.example"}).headers
    client = make_local_client(cors_origins=["https://app.example"])
    preflight = client.options(
        INFER, headers={"origin": "https://app.example", "access-control-request-method": "POST"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    error = client.get("/v2/models/nope", headers={"origin": "https://app.example"})
    assert error.status_code == 404 and error.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in client.get("/v2", headers={"origin": "https://evil.example"}).headers
