import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import RGB_LABELS, expected_rgb_logits, image_bytes

COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "dark": (0, 0, 0)}
URL = "/v1/classify?model=tiny_rgb"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    return body["error"]


def top_label(result: dict) -> str:
    return result["predictions"][0]["label"]


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("PNG", None)])
def test_raw_image(client, fmt, content_type):
    headers = {"content-type": content_type} if content_type else {"content-type": "application/octet-stream"}
    response = client.post(URL, content=image_bytes(COLORS["green"], fmt=fmt), headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny_rgb" and body["version"] == 1
    assert body["weights"]["source"] == "random"
    (result,) = body["results"]
    assert top_label(result) == "green"
    assert result["batch_size"] >= 1
    assert set(result["timing"]) == {"decode_ms", "queue_ms", "inference_ms"}


def test_probabilities_are_the_softmax_of_the_logits(client):
    response = client.post(URL + "&top_k=4", content=image_bytes(COLORS["red"]), headers={"content-type": "image/png"})
    predictions = response.json()["results"][0]["predictions"]
    logits = expected_rgb_logits(COLORS["red"]).astype(np.float64)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-softmax)
    assert [p["index"] for p in predictions] == order.tolist()
    assert [p["label"] for p in predictions] == [RGB_LABELS[i] for i in order]
    np.testing.assert_allclose([p["probability"] for p in predictions], softmax[order], rtol=1e-4)


def test_multipart_with_several_files(client):
    files = [("files", (f"{name}.png", image_bytes(color), "image/png")) for name, color in COLORS.items()]
    response = client.post(URL, files=files)
    assert response.status_code == 200, response.text
    assert [top_label(r) for r in response.json()["results"]] == list(COLORS)


def test_json_base64(client):
    images = [base64.b64encode(image_bytes(c, fmt="WEBP", lossless=True)).decode() for c in COLORS.values()]
    images[0] = "data:image/webp;base64," + images[0]
    response = client.post(URL, json={"images": images})
    assert response.status_code == 200, response.text
    assert [top_label(r) for r in response.json()["results"]] == list(COLORS)


def test_json_base64_that_is_no_image_is_an_invalid_image(client):
    """The body's media type (JSON) was right; the image inside it is what is wrong: 400, not 415."""
    images = [base64.b64encode(image_bytes()).decode(), base64.b64encode(b"hello, not an image").decode()]
    error = assert_error(client.post(URL, json={"images": images}), 400, "invalid_image")
    assert error["message"].startswith("image 1: not a supported image")


def test_grayscale_model(client):
    url = "/v1/classify?model=tiny_gray&top_k=1"
    for value, label in ((0, "dark"), (128, "mid"), (255, "light")):
        response = client.post(url, content=image_bytes((value,) * 3), headers={"content-type": "image/png"})
        assert [p["label"] for p in response.json()["results"][0]["predictions"]] == [label]


def test_top_k(client):
    png = {"content": image_bytes(), "headers": {"content-type": "image/png"}}
    assert len(client.post(URL + "&top_k=2", **png).json()["results"][0]["predictions"]) == 2
    assert len(client.post(URL, **png).json()["results"][0]["predictions"]) == 4  # default 5, clamped to 4 classes
    assert "top_k" in assert_error(client.post(URL + "&top_k=0", **png), 422, "validation_error")["message"]
    assert_error(client.post(URL + "&top_k=abc", **png), 422, "validation_error")
    assert "100" in assert_error(client.post(URL + "&top_k=101", **png), 422, "invalid_argument")["message"]


def test_unknown_model_names_the_available_ones(client):
    error = assert_error(client.post("/v1/classify?model=resnet50", content=image_bytes()), 404, "model_not_found")
    assert "tiny_gray" in error["message"] and "tiny_rgb" in error["message"]


def test_missing_model_parameter(client):
    assert_error(client.post("/v1/classify", content=image_bytes()), 422, "validation_error")


def test_curl_default_content_type_is_sniffed(client):
    response = client.post(URL, content=image_bytes(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text


def test_unsupported_media(client):
    assert_error(
        client.post(URL, content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )
    tiff = image_bytes(fmt="TIFF")
    assert_error(client.post(URL, content=tiff, headers={"content-type": "image/png"}), 415, "unsupported_media_type")


def test_bad_image_in_a_batch_is_named(client):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    truncated = buf.getvalue()[:400]
    files = [
        ("files", ("good.png", image_bytes(), "image/png")),
        ("files", ("broken.jpg", truncated, "image/jpeg")),
    ]
    error = assert_error(client.post(URL, files=files), 400, "invalid_image")
    assert "image 1 (broken.jpg)" in error["message"]


def test_bad_base64_and_bad_json(client):
    assert "image 1" in assert_error(client.post(URL, json={"images": ["aGk=", "%%%"]}), 400, "bad_request")["message"]
    assert_error(client.post(URL, content=b"{nope", headers={"content-type": "application/json"}), 400, "bad_request")
    assert_error(client.post(URL, json={"pictures": []}), 422, "validation_error")


def test_empty_body(client):
    assert_error(client.post(URL, content=b"", headers={"content-type": "image/png"}), 400, "invalid_image")


def test_body_over_the_limit(make_client):
    client = make_client(max_request_bytes=1000)
    big = b"\0" * 2000
    assert_error(client.post(URL, content=big, headers={"content-type": "image/png"}), 413, "request_too_large")

    def chunks():  # no Content-Length: the limit is enforced while counting the stream
        for _ in range(20):
            yield b"\0" * 100

    response = client.post(URL, content=chunks(), headers={"content-type": "image/png"})
    assert_error(response, 413, "request_too_large")


def test_too_many_images(make_client):
    client = make_client(max_images_per_request=2)
    files = [("files", (f"{i}.png", image_bytes(), "image/png")) for i in range(3)]
    assert_error(client.post(URL, files=files), 413, "too_many_images")


def test_image_over_the_pixel_limit(make_client):
    client = make_client(max_image_pixels=10_000)
    bomb = image_bytes(color=0, size=(2000, 2000), mode="1")
    error = assert_error(client.post(URL, content=bomb, headers={"content-type": "image/png"}), 413, "image_too_large")
    assert "image 0" in error["message"]


def test_queue_full_has_retry_after(make_client):
    client = make_client(max_queue_size=1)
    files = [("files", (f"{i}.png", image_bytes(), "image/png")) for i in range(2)]
    response = client.post(URL, files=files)
    assert_error(response, 429, "queue_full")
    assert int(response.headers["retry-after"]) >= 1


def test_a_request_the_queue_cannot_take_is_shed_before_decoding(make_client):
    client = make_client(max_queue_size=1)
    files = [("files", ("good.png", image_bytes(), "image/png")), ("files", ("bad.png", b"not an image", "image/png"))]
    assert_error(client.post(URL, files=files), 429, "queue_full")  # not 400: nothing was decoded
    assert_error(client.post(URL, files=files[1:]), 415, "unsupported_media_type")  # room for one: read, refused


def test_deadline(client):
    response = client.post(URL + "&timeout_ms=0.001", content=image_bytes(), headers={"content-type": "image/png"})
    assert_error(response, 504, "deadline_exceeded")


def test_concurrent_requests_are_batched_and_answered_correctly(make_client):
    client = make_client(max_batch_size=8, max_queue_delay_ms=100, decode_workers=2)
    names = list(COLORS) * 8
    start = threading.Barrier(len(names), timeout=30)
    answers: dict[int, dict] = {}

    def send(i: int) -> None:
        start.wait()
        body = image_bytes(COLORS[names[i]])
        answers[i] = client.post(URL, content=body, headers={"content-type": "image/png"}).json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == len(names)
    assert all(top_label(answers[i]["results"][0]) == names[i] for i in range(len(names)))
    sizes = [answers[i]["results"][0]["batch_size"] for i in range(len(names))]
    assert max(sizes) > 1 and max(sizes) <= 8


@pytest.mark.parametrize("timeout", ["inf", "nan", "1e308", "120001"])
def test_timeouts_without_a_real_deadline_are_refused(client, timeout):
    response = client.post(URL + f"&timeout_ms={timeout}", content=image_bytes(), headers={"content-type": "image/png"})
    assert response.status_code == 422, response.text
    assert "timeout_ms" in response.json()["error"]["message"]


def test_an_unknown_model_name_is_not_echoed_whole(client):
    name = "x" * 20_000  # within the request-line limit (a 60 kB one gets 431 from the HTTP server)
    error = assert_error(client.post(f"/v1/classify?model={name}", content=image_bytes()), 404, "model_not_found")
    assert len(error["message"]) < 200 and "tiny_rgb" in error["message"]


def test_a_trailing_slash_is_not_redirected(client):
    response = client.post(URL.replace("classify", "classify/"), content=image_bytes(), follow_redirects=False)
    assert_error(response, 404, "not_found")
    assert "location" not in response.headers


def test_a_full_decode_lane_sheds_with_429(make_local_client):
    client = make_local_client(max_decode_backlog=1)
    pool = client.app.state.service.decode_pool
    pool.small.reserve(1)  # as if another request's image were decoding
    try:
        response = client.post(URL, content=image_bytes(), headers={"content-type": "image/png"})
        assert_error(response, 429, "decode_busy")
        assert response.headers["retry-after"] == "1"
    finally:
        pool.small._release(None)
    assert client.post(URL, content=image_bytes(), headers={"content-type": "image/png"}).status_code == 200


def test_an_elongated_image_gets_413_naming_the_limit(client):
    response = client.post(URL, content=image_bytes(size=(1, 6000)), headers={"content-type": "image/png"})
    error = assert_error(response, 413, "aspect_ratio_too_large")
    assert "image 0" in error["message"] and "20:1" in error["message"]


def _crowd_request(i: int) -> tuple[str, dict]:
    """Request number i of a mixed crowd: two models, raw bodies, multipart with up to three images, base64
    JSON, and truncated images, in a fixed pattern."""
    rng = np.random.default_rng(i)
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    kind = i % 6
    if kind == 0:
        return URL + "&top_k=4", {"content": image_bytes(color), "headers": {"content-type": "image/png"}}
    if kind == 1:
        return "/v1/classify?model=tiny_gray&top_k=3", {"content": image_bytes(color, fmt="JPEG")}
    if kind == 2:
        files = [
            ("file", (f"{j}.png", image_bytes(tuple((c + 40 * j) % 256 for c in color)))) for j in range(1 + i % 3)
        ]
        return URL + "&top_k=4", {"files": files}
    if kind == 3:
        images = [base64.b64encode(image_bytes(color, fmt="BMP")).decode()]
        return "/v1/classify?model=tiny_gray&top_k=3", {"json": {"images": images}}
    if kind == 4:
        return URL, {"content": image_bytes(color)[:40], "headers": {"content-type": "image/png"}}  # truncated
    return URL + "&top_k=4", {"content": image_bytes(color, size=(64, 48), fmt="WEBP")}


def _comparable(response) -> tuple:
    """What must not depend on the crowd: status and error code, or each image's classes and logits."""
    body = response.json()
    if response.status_code != 200:
        return response.status_code, body["error"]["code"]
    return 200, [[(p["label"], round(p["probability"], 6)) for p in r["predictions"]] for r in body["results"]]


def test_a_crowd_of_256_mixed_requests_is_answered_as_each_alone(make_client):
    """Sent one at a time, then all at once from 32 threads: batching and (with workers) the shared-memory
    slots must not change any answer."""
    client = make_client(max_batch_size=8, max_queue_delay_ms=5)
    requests = [_crowd_request(i) for i in range(256)]
    alone = [_comparable(client.post(url, **kwargs)) for url, kwargs in requests]
    assert {a[0] for a in alone} == {200, 415}  # a PNG cut to 40 bytes has no readable header
    with ThreadPoolExecutor(32) as pool:
        together = list(pool.map(lambda r: _comparable(client.post(r[0], **r[1])), requests))
    assert together == alone


def test_with_a_latency_objective_requests_are_admitted_before_decoding_and_answered(make_client):
    """The objective's admission (in the engine process with workers: a hold asked for before decoding, given
    back when an image fails to decode) leaves answers as they are."""
    client = make_client(latency_slo_ms=200)
    assert client.get("/v1/models/tiny_rgb").json()["batching"]["latency_slo_ms"] == 200
    png = {"headers": {"content-type": "image/png"}}
    for _ in range(3):
        assert_error(client.post(URL, content=b"not an image", **png), 415, "unsupported_media_type")
    files = [("files", (f"{name}.png", image_bytes(color), "image/png")) for name, color in COLORS.items()]
    response = client.post(URL, files=files)
    assert response.status_code == 200, response.text
    assert [top_label(r) for r in response.json()["results"]] == list(COLORS)
    text = client.get("/metrics").text
    assert 'cnnserve_batches_total{model="tiny_rgb",reason=' in text
