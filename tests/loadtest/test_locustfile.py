"""The locustfile against a live tiny service, in a Locust subprocess (Locust monkey-patches with gevent
on import, which must not leak into the rest of the test session)."""

import csv
import os
import subprocess
import sys

import pytest

from loadtest.server import ROOT, running_service
from tests.service.conftest import write_gray, write_rgb


@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("repository")
    write_rgb(root)
    write_gray(root)
    with running_service(root, ["tiny_rgb", "tiny_gray"]) as (url, _):
        yield url


def run_locust(url: str, prefix, env: dict[str, str], *args: str) -> dict[tuple[str, str], dict]:
    cmd = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--host", url, "--headless"]
    cmd += ["--only-summary", "--exit-code-on-error", "0", "--csv", str(prefix), *args]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


def server_figures(prefix) -> dict[str, dict]:
    with open(f"{prefix}_server.csv", newline="") as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_weighted_mix_records_batch_size_and_queue_time(service_url, tmp_path):
    env = {"LOCUST_MODELS": "tiny_rgb:3,tiny_gray:1", "LOCUST_TOP_K": "2"}
    stats = run_locust(service_url, tmp_path / "mix", env, "-u", "4", "-r", "4", "--run-time", "3s")
    figures = server_figures(tmp_path / "mix")
    for model in ("tiny_rgb", "tiny_gray"):
        post = stats[("POST", model)]
        assert int(post["Request Count"]) > 0 and int(post["Failure Count"]) == 0
        row = figures[model]
        # One figure per good answer. Locust's CSV is the last snapshot of a 1 s writer, so it may trail the figures.
        assert int(row["answers"]) >= int(post["Request Count"])
        assert 1 <= float(row["mean_batch"]) <= float(row["p95_batch"]) <= 8  # tiny_rgb's max_batch_size
        assert 0 <= float(row["p50_queue_ms"]) <= float(row["p95_queue_ms"]) <= float(row["p99_queue_ms"])
    assert int(stats[("POST", "tiny_rgb")]["Request Count"]) > int(stats[("POST", "tiny_gray")]["Request Count"])
    assert int(figures["tiny_rgb"]["answers"]) > int(figures["tiny_gray"]["answers"])
    # Server figures are not requests: Locust's total counts only the POSTs.
    assert {kind for kind, _ in stats} == {"POST", ""}
    total = stats[("", "Aggregated")]["Request Count"]
    assert int(total) == sum(int(row["Request Count"]) for (kind, _), row in stats.items() if kind == "POST")


def test_wrong_answers_fail_and_a_shape_ends_the_run(service_url, tmp_path):
    # "nope" is not in the repository: every answer is a 404, and every request must count as failed.
    env = {"LOCUST_MODELS": "nope", "LOCUST_SHAPE": "spike", "LOCUST_USERS": "4", "LOCUST_DURATION": "3"}
    stats = run_locust(service_url, tmp_path / "spike", env)  # no --run-time: the shape stops it
    post = stats[("POST", "nope")]
    assert int(post["Request Count"]) > 0 and post["Failure Count"] == post["Request Count"]
    assert server_figures(tmp_path / "spike") == {}  # no good answer, no figure
