"""The shipped nginx config's defences, through a real nginx (Debian's; `make test` installs it).

A replica that fails mid-request must not get the request retried on the next one when it is a POST
(one image that kills a replica would kill them all), while an idempotent GET still fails over. Oversized
headers and one client's flood are stopped in nginx, before a replica spends anything on them.
"""

import asyncio
import contextlib
import socket
import threading

import httpx
import pytest

from loadtest import hostile
from loadtest.proxy import running_nginx
from loadtest.server import running_service
from tests.service.conftest import image_bytes, write_rgb


class DyingReplica:
    """Accepts connections, reads a request's headers, then closes without answering: a replica that
    crashes mid-request. Records the request lines it saw."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:
                    self.requests.append(data.split(b"\r\n")[0])

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dying(tmp_path):
    """nginx in front of two replicas that both die mid-request: yields (URL, replicas)."""
    replicas = [DyingReplica(), DyingReplica()]
    try:
        with running_nginx(tmp_path / "nginx", [r.port for r in replicas], probe=None) as url:
            yield url, replicas
    finally:
        for replica in replicas:
            replica.close()


def test_a_get_fails_over_to_the_next_replica(dying):
    url, replicas = dying
    assert httpx.get(f"{url}/readyz").status_code == 502
    assert [len(r.requests) for r in replicas] == [1, 1]  # tried on both


def test_a_post_that_kills_its_replica_is_not_sent_to_the_next(dying):
    url, replicas = dying
    response = httpx.post(f"{url}/v1/classify?model=tiny_rgb", content=image_bytes())
    assert response.status_code == 502
    assert sorted(len(r.requests) for r in replicas) == [0, 1]  # one replica saw it, the other never did


@pytest.fixture
def guarded(tmp_path):
    """nginx in front of one real replica: yields (nginx URL, replica URL)."""
    repo = tmp_path / "repository"
    write_rgb(repo)
    env = {"SERVE_INTRA_OP_THREADS": "1", "SERVE_PROVIDERS": "cpu"}
    with running_service(repo, ["tiny_rgb"], env=env) as (replica, _):
        port = int(replica.rsplit(":", 1)[1])
        with running_nginx(tmp_path / "nginx", [port]) as url:
            yield url, replica


def classify_requests(replica: str) -> float:
    text = httpx.get(f"{replica}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("cnnserve_requests_total{"))


def test_oversized_headers_never_reach_a_replica(guarded):
    url, replica = guarded
    before = classify_requests(replica)
    response = httpx.post(f"{url}/v1/classify?model=tiny_rgb", content=image_bytes(), headers={"X-Big": "a" * 100_000})
    assert response.status_code == 400  # nginx: "Request Header Or Cookie Too Large"
    assert classify_requests(replica) == before


def test_one_clients_flood_is_rate_limited_and_another_client_is_not(guarded):
    url, _ = guarded
    host, port = url.removeprefix("http://").split(":")
    tally = hostile.Tally.empty()
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))  # another client address

    async def flood_and_ask() -> list[int]:
        stop = asyncio.Event()
        flooding = asyncio.ensure_future(
            hostile.flood(host, int(port), hostile.request_bytes("GET", "/healthz", {}), 16, stop, tally)
        )
        await asyncio.sleep(1.5)
        statuses = [(await asyncio.to_thread(other.get, f"{url}/healthz")).status_code for _ in range(5)]
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(flooding, 10)
        return statuses

    with other:
        assert asyncio.run(flood_and_ask()) == [200] * 5
    assert tally.statuses[429] > 0 and tally.statuses[200] > 0, tally.statuses
