"""`POST /v1/compare` in each process layout: one image through several models, decoded once per preprocessing,
partial readiness reported per model, and classify's errors."""

import re
import threading
import time

import pytest
from fastapi.testclient import TestClient

import service.engine.loader
from service.app import create_app
from service.config import Settings
from tests.service.conftest import image_bytes, write_gray, write_rgb

RED = (255, 0, 0)


@pytest.fixture
def repo(tmp_path):
    write_rgb(tmp_path)
    write_rgb(tmp_path, "tiny_rgb_twin")  # the same preprocessing as tiny_rgb: one decode for both
    write_gray(tmp_path)
    broken = write_rgb(tmp_path, "tiny_broken")
    (broken / "1" / "model.onnx").write_bytes(b"broken")  # fails to load: its checksum does not match
    return tmp_path


def decodes(client) -> float:
    text = client.get("/metrics").text
    return sum(float(v) for v in re.findall(r"^cnnserve_decode_duration_seconds_count\{.*\} (\S+)$", text, re.M))


def test_every_model_answers_in_one_response_and_a_failed_one_is_reported(make_client, repo):
    client = make_client(repo)
    before = decodes(client)
    response = client.post("/v1/compare?top_k=2", content=image_bytes(RED))
    assert response.status_code == 200, response.text
    results = {r["model"]: r for r in response.json()["results"]}
    assert set(results) == {"tiny_rgb", "tiny_rgb_twin", "tiny_gray", "tiny_broken"}
    for name in ("tiny_rgb", "tiny_rgb_twin"):
        assert results[name]["predictions"][0]["label"] == "red"
        assert len(results[name]["predictions"]) == 2 and results[name]["version"] == 1
        assert results[name]["timing"]["decode_ms"] > 0 and results[name]["batch_size"] >= 1
    assert results["tiny_gray"]["predictions"] and results["tiny_gray"]["weights"]["source"] == "random"
    broken = results["tiny_broken"]
    assert broken["state"] == "failed" and broken["predictions"] == []
    assert broken["error"]["code"] == "model_not_ready" and "sha256" in broken["error"]["message"]
    # Two preprocessings (RGB 18/16, gray 8/8): two decodes for three models.
    assert decodes(client) - before == 2


def test_models_named_are_answered_in_the_order_asked(make_client, repo):
    client = make_client(repo)
    response = client.post("/v1/compare?models=tiny_gray,tiny_rgb,tiny_gray", content=image_bytes(RED))
    assert [r["model"] for r in response.json()["results"]] == ["tiny_gray", "tiny_rgb"]


def test_an_unloaded_model_named_is_reported_not_fatal(make_client, repo):
    client = make_client(repo, model_control="explicit", models=["tiny_rgb"])
    body = client.post("/v1/compare?models=tiny_rgb,tiny_gray", content=image_bytes(RED)).json()
    gray = body["results"][1]
    assert gray["state"] == "unavailable" and gray["error"]["code"] == "model_not_ready"
    assert body["results"][0]["predictions"][0]["label"] == "red"
    default = client.post("/v1/compare", content=image_bytes(RED)).json()
    assert [r["model"] for r in default["results"]] == ["tiny_rgb"]  # unloaded models are left out by default


@pytest.mark.parametrize(
    ("query", "body", "content_type"),
    [
        ("", image_bytes()[:60], "image/png"),  # a PNG cut short
        ("", b"not an image", "image/png"),
        ("", b"", "image/png"),
        ("", b"plain text", "text/plain"),
        ("&top_k=0", image_bytes(), "image/png"),
        ("&top_k=1000", image_bytes(), "image/png"),
        ("&timeout_ms=1e9", image_bytes(), "image/png"),
        ("&timeout_ms=nan", image_bytes(), "image/png"),
    ],
)
def test_errors_are_classifys(make_client, repo, query, body, content_type):
    client = make_client(repo)
    headers = {"content-type": content_type}
    classified = client.post(f"/v1/classify?model=tiny_rgb{query}", content=body, headers=headers)
    compared = client.post(f"/v1/compare?models=tiny_rgb,tiny_gray{query}", content=body, headers=headers)
    assert 400 <= compared.status_code < 500 and compared.status_code == classified.status_code, compared.text
    assert compared.json()["error"]["code"] == classified.json()["error"]["code"]


@pytest.mark.parametrize(
    ("models", "status", "code"), [("absent", 404, "model_not_found"), ("tiny_broken", 503, "model_not_ready")]
)
def test_models_that_cannot_answer(make_client, repo, models, status, code):
    response = make_client(repo).post(f"/v1/compare?models={models}", content=image_bytes())
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_two_images_are_one_too_many(make_client, repo):
    client = make_client(repo)
    files = [("file", ("a.png", image_bytes(), "image/png")), ("file", ("b.png", image_bytes(), "image/png"))]
    response = client.post("/v1/compare", files=files)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_images"


def test_openapi_lets_docs_send_a_file_and_names_every_error(client):
    schema = client.get("/openapi.json").json()
    for path in ("/v1/classify", "/v1/compare"):
        post = schema["paths"][path]["post"]
        content = post["requestBody"]["content"]
        assert content["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
        assert content["image/jpeg"]["schema"]["format"] == "binary"
        assert {"400", "404", "413", "415", "422", "503"} <= set(post["responses"])


def test_a_model_still_loading_is_reported_not_fatal(repo, monkeypatch):
    gate = threading.Event()
    load = service.engine.loader._build_and_warm

    def slow_gray(name, *args):
        if name == "tiny_gray":
            gate.wait(30)
        return load(name, *args)

    monkeypatch.setattr(service.engine.loader, "_build_and_warm", slow_gray)
    settings = Settings(model_repository=repo, providers=["cpu"], intra_op_threads=1, models=["tiny_rgb", "tiny_gray"])
    with TestClient(create_app(settings)) as client:
        try:
            deadline = time.monotonic() + 30
            while client.get("/readyz").json()["models"]["tiny_rgb"] != "ready" and time.monotonic() < deadline:
                time.sleep(0.01)
            body = client.post("/v1/compare", content=image_bytes(RED)).json()
            results = {r["model"]: r for r in body["results"]}
            assert results["tiny_rgb"]["predictions"][0]["label"] == "red"
            assert results["tiny_gray"]["state"] == "loading"
            assert results["tiny_gray"]["error"]["code"] == "model_not_ready"
        finally:
            gate.set()
