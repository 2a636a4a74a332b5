"""Two service processes behind nginx (deploy/nginx/cnn-serve.conf) on 127.0.0.1; one is killed mid-run.

Needs the nginx binary (Debian: `apt-get install nginx`; .ci/run installs it). Clients keep sending
through the proxy; a request lost when its replica dies can only be one in flight there, so the test
allows at most the number of clients, and prints how many were lost (with retries on, none should be).
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from loadtest.server import free_port, running_service
from tests.service.conftest import image_bytes, write_rgb

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 8
KILL_AFTER_S, RUN_S = 2.0, 6.0


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx (the two-replica test needs it)")
    return found


def site_config(ports: list[int], listen: int) -> str:
    """The shipped config with this test's ports in place of the example ones."""
    text = (ROOT / "deploy/nginx/cnn-serve.conf").read_text()
    servers = re.findall(r"^\s*server 127\.0\.0\.1:\d+ .*;$", text, flags=re.M)
    assert len(servers) == len(ports), "the shipped config should list one server per replica"
    for line, port in zip(servers, ports, strict=True):
        text = text.replace(line, re.sub(r":\d+", f":{port}", line, count=1))
    return re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", text)


def nginx_conf(tmp_path: Path, ports: list[int], listen: int) -> Path:
    """A main config that keeps pid, logs and temp files in tmp_path and includes the site config."""
    (tmp_path / "cnn-serve.conf").write_text(site_config(ports, listen))
    temp = " ".join(f"{kind}_temp_path {tmp_path}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi"))
    lines = [
        "user root;" if os.geteuid() == 0 else "",  # as root, workers would otherwise run as nobody
        "worker_processes 1;",
        f"pid {tmp_path}/nginx.pid;",
        "events { worker_connections 512; }",
        f"http {{ access_log off; {temp} scgi_temp_path {tmp_path}/scgi; include {tmp_path}/cnn-serve.conf; }}",
    ]
    path = tmp_path / "nginx.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(url: str, nginx: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if nginx.poll() is not None:
            raise RuntimeError(f"nginx exited: {nginx.stderr.read()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing ready behind {url} after {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def proxy(tmp_path):
    """Yields (proxy URL, [replica processes], [replica ports])."""
    repo = tmp_path / "repository"
    write_rgb(repo)
    env = {"SERVE_INTRA_OP_THREADS": "1", "SERVE_PROVIDERS": "cpu"}
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(running_service(repo, ["tiny_rgb"], env=env)) for _ in range(2)]
        ports = [int(url.rsplit(":", 1)[1]) for url, _ in replicas]
        listen = free_port()
        conf = nginx_conf(tmp_path, ports, listen)
        cmd = [nginx_binary(), "-p", str(tmp_path), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"]
        nginx = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{listen}"
            wait_for(url, nginx)
            yield url, [proc for _, proc in replicas], ports
        finally:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()


def test_killing_a_replica_loses_no_more_than_its_requests_in_flight(proxy):
    url, (victim, _), ports = proxy
    body, headers = image_bytes(), {"content-type": "image/png"}
    answers: list[tuple[float, int, str]] = []  # (time sent, status, upstream)
    start = time.monotonic()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() - start < RUN_S:
                sent = time.monotonic()
                try:
                    r = http.post(f"{url}/v1/classify?model=tiny_rgb", content=body, headers=headers)
                    answers.append((sent - start, r.status_code, r.headers.get("x-upstream", "")))
                except httpx.TransportError:
                    answers.append((sent - start, 0, ""))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
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
