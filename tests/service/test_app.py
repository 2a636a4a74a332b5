import asyncio
import os

import pytest
from fastapi.testclient import TestClient

import service.frontend.routes.classify
from service.app import create_app
from service.config import Settings, usable_cores
from tests.service.conftest import image_bytes, wait_ready

PNG = {"content": image_bytes(), "headers": {"content-type": "image/png"}}


def test_unexpected_errors_are_500_without_a_stack_trace(make_client, monkeypatch, caplog):
    client = make_client(raise_server_exceptions=False)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.frontend.routes.classify.Prediction, "top_k", broken)
    response = client.post("/v1/classify?model=tiny_rgb", **PNG)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # logged server-side


def test_unknown_route_and_method_use_the_error_shape(client):
    assert client.get("/v3/nothing").json()["error"]["code"] == "not_found"
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}  # V2's shape under /v2
    response = client.get("/v1/classify?model=tiny_rgb")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_a_cpu_session_runs_one_batch_at_a_time(client):
    assert client.get("/v1/models/tiny_rgb").json()["batching"]["batches_in_flight"] == 1


def test_only_the_configured_models_are_loaded(make_client):
    client = make_client(models=["tiny_gray"])
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == ["tiny_gray"]


def test_shutdown_drains_and_closes(model_repo):
    settings = Settings(
        model_repository=model_repo, providers=["cpu"], intra_op_threads=1, max_queue_delay_ms=60_000, max_batch_size=64
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        state = client.app.state.service
        model = state.models.resolve("tiny_rgb")
        image = state.preprocessor(state.models.statuses()["tiny_rgb"])(image_bytes())
        futures = client.portal.call(_enqueue, model.batcher, image)
        assert not any(f.done() for f in futures)
    # Leaving the block ran the lifespan's shutdown; the 60 s delay did not hold it.
    assert all(f.done() and f.result().batch_size == 3 for f in futures)
    assert all(engine._session is None for engine in model.engine.engines)
    with pytest.raises(RuntimeError):
        state.decode_pool.small.run(print)


async def _enqueue(batcher, array):
    await asyncio.sleep(0)
    return batcher.enqueue([array] * 3)


@pytest.mark.parametrize(("decode_workers", "expected"), [(None, usable_cores()), (3, 3)])
def test_decode_workers_default_to_one_per_usable_core(model_repo, decode_workers, expected):
    settings = Settings(model_repository=model_repo, providers=["cpu"], decode_workers=decode_workers)
    with TestClient(create_app(settings)) as client:
        pool = client.app.state.service.decode_pool
        assert pool.small._executor._max_workers == expected
        assert pool.large._executor._max_workers == max(1, expected // 2)  # at most half the cores for large images
        assert pool.large.max_backlog == 2 * max(1, expected // 2)  # unset: two large images per thread


def test_usable_cores_is_the_affinity_set(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert usable_cores() == 3


def test_create_app_builds_nothing_until_started(tmp_path):
    app = create_app(Settings(model_repository=tmp_path / "missing"))
    assert not hasattr(app.state, "service")
