"""Two service processes behind nginx (deploy/nginx/cnn-serve.conf) on 127.0.0.1; one is killed mid-run.

Needs the nginx binary (Debian: `apt-get install nginx`; `make test` installs it). Clients keep sending
through the proxy; a request lost when its replica dies can only be one in flight there, so the test
allows at most the number of clients (requests in flight on the killed replica are not retried on the
other: a request that kills one replica must not go on to kill the next), and prints how many were lost.
"""

import contextlib
import signal
import threading
import time

import httpx
import pytest

from loadtest.proxy import running_nginx
from loadtest.server import running_service
from tests.service.conftest import image_bytes, write_rgb

CLIENTS = 8
KILL_AFTER_S, RUN_S = 2.0, 6.0


@pytest.fixture
def proxy(tmp_path):
    """Yields (proxy URL, [replica processes], [replica ports])."""
    repo = tmp_path / "repository"
    write_rgb(repo)
    env = {"SERVE_INTRA_OP_THREADS": "1", "SERVE_PROVIDERS": "cpu"}
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(running_service(repo, ["tiny_rgb"], env=env)) for _ in range(2)]
        ports = [int(url.rsplit(":", 1)[1]) for url, _ in replicas]
        url = stack.enter_context(running_nginx(tmp_path / "nginx", ports))
        yield url, [proc for _, proc in replicas], ports


def test_killing_a_replica_loses_no_more_than_its_requests_in_flight(proxy):
    url, (victim, _), ports = proxy
    body, headers = image_bytes(), {"content-type": "image/png"}
    answers: list[tuple[float, int, str]] = []  # (time sent, status, upstream)
    start = time.monotonic()

    def client(address: str) -> None:
        # Each client from its own loopback address, as distinct clients are: nginx limits each one's rate.
        with httpx.Client(timeout=30, transport=httpx.HTTPTransport(local_address=address)) as http:
            while time.monotonic() - start < RUN_S:
                sent = time.monotonic()
                try:
                    r = http.post(f"{url}/v1/classify?model=tiny_rgb", content=body, headers=headers)
                    answers.append((sent - start, r.status_code, r.headers.get("x-upstream", "")))
                except httpx.TransportError:
                    answers.append((sent - start, 0, ""))

    threads = [threading.Thread(target=client, args=(f"127.0.0.{10 + i}",)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(KILL_AFTER_S)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic() - start
    for t in threads:
        t.join()

    lost = [a for a in answers if a[1] != 200]
    print(f"\n{len(answers)} requests through nginx, replica killed at {killed_at:.1f} s, {len(lost)} lost")
    before = {upstream for sent, status, upstream in answers if sent < killed_at and status == 200}
    after = [a for a in answers if a[0] > killed_at + 0.5]
    assert {f"127.0.0.1:{p}" for p in ports} <= {u for up in before for u in up.split(", ")}  # both served
    assert after and all(status == 200 for _, status, _ in after)  # the survivor takes everything
    assert all(f":{ports[1]}" in upstream.split(", ")[-1] for _, _, upstream in after)
    assert len(lost) <= CLIENTS, lost  # at most the requests that were in flight on the killed replica
