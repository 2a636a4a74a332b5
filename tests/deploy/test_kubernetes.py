from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.service.conftest import wait_ready, write_rgb

MANIFEST = Path(__file__).resolve().parents[2] / "deploy/kubernetes/cnn-serve.yaml"


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text())}


def test_replicas_with_readiness_on_readyz_and_liveness_on_healthz():
    deployment = documents()["Deployment"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port, grpc = container["ports"]
    assert port["containerPort"] == Settings.model_fields["port"].default
    assert grpc["containerPort"] == Settings.model_fields["grpc_port"].default
    assert all(probe["httpGet"]["port"] == port["name"] for key, probe in container.items() if key.endswith("Probe"))
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_service_selects_the_deployment_pods():
    docs = documents()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_probe_paths_answer_as_the_probes_expect(tmp_path):
    """Liveness 200 at once; readiness 503 before the models are loaded is fine, 200 once they are."""
    write_rgb(tmp_path)
    settings = Settings(model_repository=tmp_path, providers=["cpu"], intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        wait_ready(client)
        assert client.get("/readyz").status_code == 200
