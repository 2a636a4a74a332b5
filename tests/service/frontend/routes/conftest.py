"""The API's tests run against each process layout: one process (a TestClient around the app) and workers
(`python -m service` with SERVE_WORKERS=2: a supervisor, an engine process and two front ends, over HTTP)."""

from pathlib import Path

import httpx
import pytest

LAYOUTS = ("one process", "workers")


@pytest.fixture(params=LAYOUTS)
def make_client(request, make_local_client, worker_services, model_repo):
    """make_client(repo=None, **settings) -> a client of a ready service in the layout under test."""
    clients = []

    def make(repo: Path | None = None, *, raise_server_exceptions: bool = True, **overrides):
        if request.param == "one process":
            return make_local_client(repo, raise_server_exceptions=raise_server_exceptions, **overrides)
        overrides.setdefault("providers", ["cpu"])
        overrides.setdefault("intra_op_threads", 1)
        client = httpx.Client(base_url=worker_services(repo or model_repo, overrides), timeout=60)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client):
    return make_client()
