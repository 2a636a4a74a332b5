"""docker-compose.yml, the Dockerfiles, Prometheus and Grafana, checked without a Docker engine: every file
they name exists, ports and volumes line up, and the dashboard asks for metrics the service really exports."""

import json
import re
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.config import Settings
from tests.service.conftest import image_bytes, wait_ready

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def gpu() -> dict:
    return load(ROOT / "docker-compose.gpu.yml")


def dockerfile_stages(path: Path) -> dict[str, list[str]]:
    """Instructions per stage (continuation lines joined), keyed by stage name or index."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    stages: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            parts = line.split()
            current = parts[3] if len(parts) >= 4 and parts[2].upper() == "AS" else str(len(stages))
            stages[current] = []
        if current is not None:
            stages[current].append(line)
    return stages


def test_services_and_profiles(compose):
    services = compose["services"]
    assert set(services) == {"export", "api", "locust-master", "locust-worker", "prometheus", "grafana"}
    assert "profiles" not in services["api"] and "profiles" not in services["export"]  # `docker compose up`
    assert services["locust-master"]["profiles"] == services["locust-worker"]["profiles"] == ["loadtest"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]


def test_every_build_context_and_dockerfile_exists(compose, gpu):
    builds = [s["build"] for s in [*compose["services"].values(), *gpu["services"].values()] if "build" in s]
    assert builds
    for build in builds:
        context = ROOT / build["context"]
        assert context.is_dir()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), dockerfile
        if "target" in build:
            assert build["target"] in dockerfile_stages(dockerfile), f"{dockerfile} has no stage {build['target']}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu", "loadtest/Dockerfile"])
def test_every_copied_path_exists(dockerfile):
    for instructions in dockerfile_stages(ROOT / dockerfile).values():
        for line in instructions:
            if line.upper().startswith("COPY ") and "--from=" not in line:
                *sources, _ = line.split()[1:]
                for source in sources:
                    if not source.startswith("--"):
                        assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}"


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_runtime_stage_is_small_non_root_and_health_checked(dockerfile):
    stages = dockerfile_stages(ROOT / dockerfile)
    runtime = " ".join(stages["runtime"])
    assert "torch" not in runtime  # the service runs without it
    assert "torch" in " ".join(stages["export"])  # the export stage has it
    user = re.search(r"\bUSER (\S+)", runtime)
    assert user and user.group(1) not in {"root", "0"}
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert "EXPOSE 8000" in runtime and "SERVE_PORT=8000" in runtime
    assert "SERVE_MODEL_REPOSITORY=/models" in runtime


def test_gpu_image_uses_cuda_13_with_cudnn_and_caches_tensorrt_engines(gpu):
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert re.search(r"nvidia/cuda:13\.[\d.]+-cudnn-runtime", text)
    assert "'.[gpu]'" in text and "tensorrt" in text
    api = gpu["services"]["api"]
    (device,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    cache = api["environment"]["SERVE_TRT_CACHE_DIR"]
    assert f"trt-cache:{cache}" in api["volumes"] and "trt-cache" in gpu["volumes"]
    assert f'VOLUME ["{cache}"]' in text


def test_the_api_ports_and_model_volume_line_up(compose):
    services = compose["services"]
    api, export = services["api"], services["export"]
    http, grpc = api["ports"]
    assert http.rsplit(":", 1)[1] == str(Settings.model_fields["port"].default)
    assert grpc.rsplit(":", 1)[1] == str(Settings.model_fields["grpc_port"].default)
    repository = api["environment"]["SERVE_MODEL_REPOSITORY"]
    assert f"${{MODEL_REPOSITORY:-model-repository}}:{repository}:ro" in api["volumes"]
    (export_volume,) = export["volumes"]
    assert export_volume.rsplit(":", 1)[1] == repository and "--output" in export["command"]
    assert export["command"][export["command"].index("--output") + 1] == repository
    assert "model-repository" in compose["volumes"]


def test_start_order_waits_for_readiness(compose):
    services = compose["services"]
    assert services["api"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("locust-master", "prometheus"):
        assert services[name]["depends_on"]["api"]["condition"] == "service_healthy"
    assert "http://api:8000" in services["locust-master"]["command"]
    assert services["locust-worker"]["command"][-1] == "locust-master"


def test_every_bind_mount_exists(compose):
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), source


def prometheus_job() -> dict:
    (job,) = load(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    return job


def test_prometheus_scrapes_the_api(compose, exported_metrics):
    (targets,) = [c["targets"] for c in prometheus_job()["static_configs"]]
    assert targets == ["api:8000"]  # the compose service name and the port the api listens on
    assert "cnnserve_requests_total" in exported_metrics  # fetched from the job's metrics_path below


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard(compose):
    (source,) = load(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    (provider,) = load(DEPLOY / "grafana/provisioning/dashboards/cnn-serve.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]


@pytest.fixture(scope="module")
def exported_metrics(tmp_path_factory) -> dict[str, set[str]]:
    """Sample name -> label names, from a real app's /metrics after one classify and one error."""
    from tests.service.conftest import write_rgb

    repo = tmp_path_factory.mktemp("repo")
    write_rgb(repo)
    settings = Settings(model_repository=repo, providers=["cpu"], intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        headers = {"content-type": "image/png"}
        assert client.post("/v1/classify?model=tiny_rgb", content=image_bytes(), headers=headers).status_code == 200
        assert client.post("/v1/classify?model=nope", content=image_bytes(), headers=headers).status_code == 404
        response = client.get(prometheus_job()["metrics_path"])
        assert response.status_code == 200
        text = response.text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_dashboard_queries_only_metrics_the_service_exports(exported_metrics):
    dashboard = json.loads((DEPLOY / "grafana/dashboards/cnn-serve.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Throughput", "Request latency", "Mean batch size", "Queue depth (images waiting)"} <= titles
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    for expr in exprs:
        names = re.findall(r"\bcnnserve_\w+", expr)
        assert names, expr
        for name in names:
            assert name in exported_metrics, f"{name} is not exported; the service has {sorted(exported_metrics)}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            labels = {label.strip() for label in group.split(",")} - {"le"}
            assert all(labels <= exported_metrics[name] for name in names), expr
