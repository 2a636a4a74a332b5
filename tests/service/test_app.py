import asyncio
import dataclasses
import os

import pytest
from fastapi.testclient import TestClient

import service.routes.classify
from service.app import create_app, effective_batching, gpu_options, warmup_batch_sizes
from service.config import Settings, usable_cores
from service.engine import GpuOptions
from service.model_config import Batching
from tests.service.conftest import image_bytes, wait_ready

PNG = {"content": image_bytes(), "headers": {"content-type": "image/png"}}


def test_unexpected_errors_are_500_without_a_stack_trace(make_client, monkeypatch, caplog):
    client = make_client(raise_server_exceptions=False)

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.routes.classify.Prediction, "top_k", broken)
    response = client.post("/v1/classify?model=tiny_rgb", **PNG)
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # logged server-side


def test_unknown_route_and_method_use_the_error_shape(client):
    assert client.get("/v2/nothing").json()["error"]["code"] == "not_found"
    response = client.get("/v1/classify?model=tiny_rgb")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_settings_override_config_batching():
    defaults = Batching(max_batch_size=32, preferred_batch_sizes=(8, 16), max_queue_delay_ms=2, max_queue_size=256)
    same = effective_batching(defaults, Settings())
    assert (same.max_batch_size, same.preferred_batch_sizes, same.max_queue_delay_ms) == (32, [8, 16], 2)
    s = Settings(max_batch_size=8, preferred_batch_sizes=[], max_queue_delay_ms=0, max_queue_size=10)
    custom = effective_batching(defaults, s)
    assert (custom.max_batch_size, custom.preferred_batch_sizes, custom.max_queue_delay_ms) == (8, [], 0)
    assert custom.max_queue_size == 10


def test_gpu_options_come_from_settings():
    settings = Settings(device_id=2, trt_fp16=False, trt_builder_optimization_level=1, gpu_mem_limit_mb=100)
    gpu = gpu_options(settings)
    assert (gpu.device_id, gpu.trt_fp16, gpu.trt_builder_optimization_level, gpu.gpu_mem_limit_mb) == (2, False, 1, 100)
    assert gpu.cudnn_conv_algo_search == settings.cudnn_conv_algo_search == "EXHAUSTIVE"
    assert gpu_options(Settings(cuda_graphs=True)).cuda_graphs


def test_gpu_options_defaults_match_the_settings():
    """GpuOptions keeps the engine usable without Settings; its defaults must not drift from them."""
    for field in dataclasses.fields(GpuOptions):
        assert field.default == Settings.model_fields[field.name].default, field.name


def test_a_gpu_warms_powers_of_two_the_preferred_sizes_and_the_max_a_cpu_only_one():
    defaults = Batching(max_batch_size=32, preferred_batch_sizes=(16, 8), max_queue_delay_ms=2, max_queue_size=256)
    batching = effective_batching(defaults, Settings(), on_gpu=True)
    assert warmup_batch_sizes(batching) == warmup_batch_sizes(batching, on_gpu=True) == [1, 2, 4, 8, 16, 32]
    # A max batch size raised past config.json's preferred sizes still pads to at most twice a batch.
    raised = effective_batching(defaults, Settings(max_batch_size=200, preferred_batch_sizes=[24]), on_gpu=True)
    assert warmup_batch_sizes(raised) == [1, 2, 4, 8, 16, 24, 32, 64, 128, 200]
    assert warmup_batch_sizes(effective_batching(defaults, Settings(max_batch_size=1))) == [1]
    assert warmup_batch_sizes(effective_batching(defaults, Settings()), on_gpu=False) == [1]


def test_batches_in_flight_follow_the_device_unless_set():
    defaults = Batching(max_batch_size=32, preferred_batch_sizes=(8, 16), max_queue_delay_ms=2, max_queue_size=256)
    assert effective_batching(defaults, Settings()).batches_in_flight == 1
    assert effective_batching(defaults, Settings(), on_gpu=True).batches_in_flight == 2
    assert effective_batching(defaults, Settings(batches_in_flight=3), on_gpu=False).batches_in_flight == 3


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
        entry = state.models["tiny_rgb"]
        futures = client.portal.call(_enqueue, entry.batcher, entry.preprocessor(image_bytes()))
        assert not any(f.done() for f in futures)
    # Leaving the block ran the lifespan's shutdown; the 60 s delay did not hold it.
    assert all(f.done() and f.result().batch_size == 3 for f in futures)
    assert entry.engine._session is None
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
