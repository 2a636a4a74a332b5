import threading
import time

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import service.engine.loader
import service.engine.session
from service.app import create_app
from service.config import Settings
from tests.service.conftest import image_bytes, wait_ready, write_rgb


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_probes_answer_head(client):
    for path in ("/healthz", "/readyz"):
        response = client.head(path)
        assert response.status_code == 200 and response.content == b""


def test_readyz_reports_loading_then_ready(model_repo, monkeypatch):
    gate = threading.Event()
    load = service.engine.loader._build_and_warm

    def slow_load(*args):
        gate.wait(30)
        return load(*args)

    monkeypatch.setattr(service.engine.loader, "_build_and_warm", slow_load)
    settings = Settings(model_repository=model_repo, providers=["cpu"], intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["models"] == {"tiny_gray": "loading", "tiny_rgb": "loading"}
        assert client.get("/healthz").status_code == 200
        not_ready = client.post("/v1/classify?model=tiny_rgb", content=image_bytes())
        assert not_ready.status_code == 503 and not_ready.json()["error"]["code"] == "model_not_ready"
        gate.set()
        wait_ready(client)
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["ready"] is True


def test_readyz_503_when_a_model_failed(make_client, tmp_path):
    write_rgb(tmp_path, "good")
    (write_rgb(tmp_path, "bad") / "config.json").unlink()
    client = make_client(tmp_path)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["models"] == {"bad": "failed", "good": "ready"}
    assert "config.json is missing" in response.json()["reasons"]["bad"]
    error = client.post("/v1/classify?model=bad", content=image_bytes()).json()["error"]
    assert error["code"] == "model_not_ready" and "missing" in error["message"]
    assert client.post("/v1/classify?model=good", content=image_bytes()).status_code == 200


def test_metrics(client):
    client.post("/v1/classify?model=tiny_rgb", content=image_bytes(), headers={"content-type": "image/png"})
    client.post("/v1/classify?model=nope", content=image_bytes())
    text = client.get("/metrics").text
    for name in (
        "cnnserve_requests_total",
        "cnnserve_request_duration_seconds",
        "cnnserve_queue_duration_seconds",
        "cnnserve_inference_duration_seconds",
        "cnnserve_batch_size",
        "cnnserve_queue_depth",
        "cnnserve_models_ready",
    ):
        assert name in text
    assert 'cnnserve_requests_total{api="v1",code="200",model="tiny_rgb"} 1.0' in text
    assert 'cnnserve_requests_total{api="v1",code="404",model="unknown"} 1.0' in text
    assert "cnnserve_models_ready 2.0" in text


def test_model_load_time_is_reported_by_phase(make_local_client, monkeypatch):
    warmup = service.engine.session.Engine.warmup

    def slow_warmup(self, batch_sizes):
        time.sleep(0.3)
        return warmup(self, batch_sizes)

    monkeypatch.setattr(service.engine.session.Engine, "warmup", slow_warmup)
    text = make_local_client().get("/metrics").text
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "cnnserve_model_load_seconds"]
    seconds = {(s.labels["model"], s.labels["phase"]): s.value for s in family.samples}
    assert set(seconds) == {(m, p) for m in ("tiny_gray", "tiny_rgb") for p in ("session", "warmup")}
    assert all(seconds[m, "warmup"] >= 0.3 for m in ("tiny_gray", "tiny_rgb"))
    assert all(0 < seconds[m, "session"] < 30 for m in ("tiny_gray", "tiny_rgb"))


def test_warmup_happens_before_ready(model_repo, monkeypatch):
    """Warm-up is where TensorRT builds (or loads) its engines: all of it happens before /readyz says 200.
    On CPU it is batch 1 only (the sizes a GPU warms are tested in tests/service/test_app.py)."""
    gate, warmed = threading.Event(), []
    warmup = service.engine.session.Engine.warmup

    def gated_warmup(self, batch_sizes):
        gate.wait(30)
        warmed.append(sorted(set(batch_sizes)))
        return warmup(self, batch_sizes)

    monkeypatch.setattr(service.engine.session.Engine, "warmup", gated_warmup)
    settings = Settings(
        model_repository=model_repo,
        models=["tiny_rgb"],
        providers=["cpu"],
        max_batch_size=6,
        preferred_batch_sizes=[2, 4],
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 503
        gate.set()
        wait_ready(client)
        assert client.get("/readyz").status_code == 200
    assert warmed == [[1]]


def test_a_failed_gpu_turns_liveness_and_readiness_to_503(model_repo):
    settings = Settings(model_repository=model_repo, providers=["cpu"], intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        state = client.app.state.service
        session = state.models.resolve("tiny_rgb").engine.engines[0]
        session.device_error = "CUDA failure 715: an illegal instruction was encountered"
        live, ready = client.get("/healthz"), client.get("/readyz")
        assert live.status_code == 503
        assert live.json() == {
            "status": "device_failed",
            "reasons": {"tiny_rgb": "CUDA failure 715: an illegal instruction was encountered"},
        }
        assert ready.status_code == 503 and ready.json()["reasons"]["tiny_rgb"].startswith("CUDA failure 715")
        assert client.get("/healthz").status_code == 503  # it stays failed: only a restart clears it
