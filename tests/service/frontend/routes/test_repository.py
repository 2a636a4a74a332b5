"""The repository API and versions in requests, in each process layout: the index, load and unload (off unless
SERVE_MODEL_CONTROL=explicit, restricted by SERVE_REPOSITORY_TOKEN), and every error they answer."""

import pytest

from tests.service.conftest import expected_rgb_logits, image_bytes, write_gray, write_rgb

RED = (255, 0, 0)
TOKEN = "s3cret-token"


def error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def classify(client, query: str = ""):
    return client.post(f"/v1/classify?model=tiny_rgb{query}", content=image_bytes(RED))


@pytest.fixture
def repo(tmp_path):
    write_rgb(tmp_path, versions=(1, 2))
    write_gray(tmp_path)
    return tmp_path


def test_the_index_lists_every_version_with_its_state_and_what_it_holds(make_client, repo):
    client = make_client(repo, version_policy="all")
    entries = {(e["name"], e["version"]): e for e in client.get("/v1/repository/index").json()["models"]}
    assert set(entries) == {("tiny_gray", 1), ("tiny_rgb", 1), ("tiny_rgb", 2)}
    assert {e["state"] for e in entries.values()} == {"ready"}
    assert [k for k, e in entries.items() if e["default"]] == [("tiny_gray", 1), ("tiny_rgb", 2)]
    assert all(e["sessions"] == 1 for e in entries.values())


def test_a_request_may_name_a_version_and_the_answer_says_which_ran(make_client, repo):
    client = make_client(repo, version_policy="all")
    for query, version in (("", 2), ("&version=1", 1), ("&version=2", 2)):
        body = classify(client, query).json()
        assert body["version"] == version and body["weights"]["source"] == "random"
    # Version N of the tiny model scales its weights by N.
    probabilities = {
        v: {p["label"]: p["probability"] for p in classify(client, f"&version={v}").json()["results"][0]["predictions"]}
        for v in (1, 2)
    }
    assert probabilities[1] != probabilities[2]
    assert "no version 3; versions: 1 (ready), 2 (ready)" in error(classify(client, "&version=3"), 404)["message"]
    assert error(classify(client, "&version=0"), 422)["code"] == "validation_error"


def test_v2_paths_name_versions(make_client, repo):
    client = make_client(repo, version_policy="all")
    logits = expected_rgb_logits(RED)
    assert client.get("/v2/models/tiny_rgb").json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/tiny_rgb/versions/1/ready").status_code == 200
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.0] * 768}]}
    answered = client.post("/v2/models/tiny_rgb/versions/1/infer", json=body).json()
    assert answered["model_version"] == "1" and len(logits) == len(answered["outputs"][0]["data"])
    assert client.post("/v2/models/tiny_rgb/infer", json=body).json()["model_version"] == "2"
    missing = client.post("/v2/models/tiny_rgb/versions/7/infer", json=body)
    assert missing.status_code == 404 and "no version 7" in missing.json()["error"]
    index = client.post("/v2/repository/index", json={}).json()
    assert {"name": "tiny_rgb", "version": "1", "state": "READY"} in index


def test_load_and_unload_are_off_unless_explicit(make_client, repo):
    client = make_client(repo)
    for path in ("/v1/repository/models/tiny_rgb/unload", "/v2/repository/models/tiny_rgb/unload"):
        response = client.post(path)
        assert response.status_code == 403 and "SERVE_MODEL_CONTROL=explicit" in response.text
    assert classify(client).status_code == 200


def test_load_and_unload_need_the_token_where_one_is_set(make_client, repo):
    client = make_client(repo, model_control="explicit", models=["tiny_rgb"], repository_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.post("/v1/repository/models/tiny_rgb/unload", headers=headers)
        assert error(response, 401)["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert classify(client).status_code == 200
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/repository/models/tiny_rgb/unload", headers=authorized).status_code == 200
    unloaded = error(classify(client), 503)
    assert unloaded["code"] == "model_not_ready" and "unavailable: unloaded" in unloaded["message"]
    loaded = client.post("/v1/repository/models/tiny_rgb/load", headers=authorized)
    assert loaded.status_code == 200 and loaded.json()["models"][0]["state"] == "ready"
    assert classify(client).json()["version"] == 2


def test_explicit_control_loads_what_is_asked_and_refuses_what_is_not_there(make_client, repo):
    client = make_client(repo, model_control="explicit", models=["tiny_rgb"])
    states = {e["name"]: e["state"] for e in client.get("/v1/repository/index").json()["models"]}
    assert states == {"tiny_gray": "unavailable", "tiny_rgb": "ready"}
    assert client.get("/readyz").status_code == 200  # a model not loaded on purpose keeps nothing from ready
    assert error(client.post("/v1/repository/models/absent/load"), 404)["code"] == "model_not_found"
    assert error(client.post("/v1/repository/models/..hidden/load"), 404)["code"] == "model_not_found"
    assert client.post("/v1/repository/models/tiny_gray/load").status_code == 200
    gray = client.post("/v1/classify?model=tiny_gray", content=image_bytes((255, 255, 255), mode="RGB"))
    assert gray.status_code == 200 and gray.json()["results"][0]["predictions"][0]["label"] == "light"
    assert client.post("/v2/repository/models/tiny_gray/unload").json() == {}
    assert error(client.post("/v1/classify?model=tiny_gray", content=image_bytes()), 503)["code"] == "model_not_ready"


def test_a_load_that_fails_says_why_and_the_old_version_serves_on(make_client, repo):
    client = make_client(repo, model_control="explicit", models=["tiny_rgb"])
    write_rgb(repo, versions=(3,))
    (repo / "tiny_rgb" / "3" / "model.onnx").write_bytes(b"broken")
    failed = error(client.post("/v1/repository/models/tiny_rgb/load"), 400)
    assert failed["code"] == "model_load_failed" and "version 3" in failed["message"] and "sha256" in failed["message"]
    entries = {e["version"]: e for e in client.get("/v1/repository/index").json()["models"] if e["name"] == "tiny_rgb"}
    assert entries[3]["state"] == "failed" and "sha256" in entries[3]["reason"]
    assert entries[2]["state"] == "ready" and entries[2]["default"]
    assert classify(client).json()["version"] == 2
    metrics = client.get("/metrics").text
    assert 'cnnserve_model_load_failures_total{model="tiny_rgb"} 1.0' in metrics
    assert 'cnnserve_model_version_sessions{model="tiny_rgb",version="2"} 1.0' in metrics
