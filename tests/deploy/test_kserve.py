"""deploy/kserve/ against the service as it is: the environment it sets are settings, the ports it declares are the
ones those settings make the service listen on, and its probes answer as KServe expects. (No cluster here:
KServe itself is not run.)"""

from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtest.server import free_port, running_service
from service.config import Settings
from tests.service.conftest import write_rgb

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "kserve" / name).read_text())


@pytest.fixture(scope="module")
def runtime() -> dict:
    return load("servingruntime.yaml")


@pytest.fixture(scope="module")
def container(runtime) -> dict:
    (container,) = runtime["spec"]["containers"]
    return container


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_runtime_speaks_v2_on_both_ports(runtime, container):
    assert {"v2", "grpc-v2"} <= set(runtime["spec"]["protocolVersions"])
    assert container["name"] == "kserve-container"  # the name KServe merges the predictor's settings into
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    settings = Settings(**{k.removeprefix("SERVE_").lower(): v for k, v in env(container).items()})
    assert ports == {"http1": settings.port, "h2c": settings.grpc_port}
    assert settings.model_repository == Path("/mnt/models")  # where KServe's storage initializer puts models


def test_every_variable_is_a_setting(container):
    for name in env(container):
        assert name.startswith("SERVE_") and name.removeprefix("SERVE_").lower() in Settings.model_fields, name


def test_image_is_the_one_compose_builds(container):
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    assert container["image"] == compose["services"]["api"]["image"]


def test_inference_service_uses_the_runtime(runtime):
    service = load("inferenceservice.yaml")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_probes_and_ports_answer_as_declared(tmp_path, container):
    """The service started with the runtime's environment (ports swapped for free ones): the probes' paths answer
    200 on the HTTP port once ready, and the gRPC port speaks V2."""
    write_rgb(tmp_path)
    grpc_port = free_port()
    variables = env(container) | {
        "SERVE_MODEL_REPOSITORY": str(tmp_path),
        "SERVE_PROVIDERS": "cpu",
        "SERVE_GRPC_PORT": str(grpc_port),
    }
    with running_service(tmp_path, [], env={k: v for k, v in variables.items() if k != "SERVE_PORT"}) as (url, _):
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] == int(env(container)["SERVE_PORT"])
            assert httpx.get(url + container[probe]["httpGet"]["path"]).status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready
