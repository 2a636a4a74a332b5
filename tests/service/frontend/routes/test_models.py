import numpy as np

from tests.service.conftest import image_bytes, write_model, write_rgb


def test_list_models(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"tiny_gray", "tiny_rgb"}
    assert all(m["state"] == "ready" for m in models.values())


def test_model_detail(make_client):
    client = make_client(
        max_batch_size=4, preferred_batch_sizes=[2, 4, 16], batches_in_flight=3, cuda_graphs=True, latency_slo_ms=150
    )
    info = client.get("/v1/models/tiny_rgb").json()
    assert info["state"] == "ready" and info["reason"] is None
    assert info["version"] == 1 and info["versions"] == [1]
    assert info["card"]["family"] == "tiny"
    assert info["input"] == {"name": "input", "dtype": "float32", "shape": [-1, 3, 16, 16], "layout": "NCHW"}
    assert info["preprocessing"]["crop_size"] == [16, 16]
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["cuda_graph_batch_sizes"] == []  # asked for, but graphs need a GPU session
    assert info["weights"]["source"] == "random"
    # Settings override config.json (max 8, delay 5 ms, queue 64); preferred sizes above the max are dropped.
    assert info["batching"] == {
        "max_batch_size": 4,
        "preferred_batch_sizes": [2, 4],
        "max_queue_delay_ms": 5.0,
        "max_queue_size": 64,
        "batches_in_flight": 3,
        "latency_slo_ms": 150.0,  # config.json has none: the setting turns the objective on
        "instances": 1,
        "intra_op_threads": 1,
    }


def test_unknown_model_is_404(client):
    response = client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_failed_model_shows_its_reason(make_client, tmp_path):
    write_rgb(tmp_path, "good")
    bad = write_rgb(tmp_path, "bad")
    (bad / "1" / "model.onnx").write_bytes(b"tampered")
    client = make_client(tmp_path)
    info = client.get("/v1/models/bad").json()
    assert info["state"] == "failed" and "sha256" in info["reason"]
    assert client.get("/v1/models/good").json()["state"] == "ready"


def test_a_status_larger_than_one_socket_read_is_served(make_client, tmp_path):
    """50,000 labels make the engine's status reply a few hundred kB: in the workers layout it must cross the
    transport whole (a non-blocking read once cut it, and every model read as failed)."""
    classes = 50_000
    weight = np.tile(np.eye(3, dtype=np.float32), (1, classes // 3 + 1))[:, :classes]
    write_model(
        tmp_path, "wide", weight=weight, bias=np.zeros(classes, np.float32), labels=tuple(map(str, range(classes)))
    )
    client = make_client(tmp_path)
    assert client.get("/readyz").json()["ready"] is True
    response = client.post(
        "/v1/classify?model=wide&top_k=1", content=image_bytes(), headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
