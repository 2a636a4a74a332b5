"""nginx with the shipped config (deploy/nginx/cnn-serve.conf) in front of services on 127.0.0.1: for the
replica tests and `make attack ATTACK_ARGS=--through-nginx`. Needs the nginx binary (Debian: nginx)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from loadtest.server import ROOT, free_port

SITE_CONFIG = ROOT / "deploy/nginx/cnn-serve.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx")
    return found


def site_config(ports: list[int], listen: int) -> str:
    """The shipped config with these upstream ports in place of the example ones (a replica per line;
    lines beyond len(ports) are dropped)."""
    text = SITE_CONFIG.read_text()
    servers = re.findall(r"^\s*server 127\.0\.0\.1:\d+ .*;\n", text, flags=re.M)
    if len(servers) < len(ports):
        raise ValueError(f"the shipped config lists {len(servers)} replicas, {len(ports)} asked for")
    for i, line in enumerate(servers):
        text = text.replace(line, re.sub(r":\d+", f":{ports[i]}", line, count=1) if i < len(ports) else "")
    return re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", text)


def nginx_conf(folder: Path, ports: list[int], listen: int) -> Path:
    """A main config that keeps pid, logs and temp files in `folder` and includes the site config."""
    (folder / "cnn-serve.conf").write_text(site_config(ports, listen))
    temp = " ".join(f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi"))
    lines = [
        "user root;" if os.geteuid() == 0 else "",  # as root, workers would otherwise run as nobody
        "worker_processes 1;",
        f"pid {folder}/nginx.pid;",
        "events { worker_connections 2048; }",
        f"http {{ access_log off; {temp} scgi_temp_path {folder}/scgi; include {folder}/cnn-serve.conf; }}",
    ]
    path = folder / "nginx.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def running_nginx(
    folder: Path, ports: list[int], probe: str | None = "/readyz", timeout: float = 10.0
) -> Iterator[str]:
    """Yields nginx's URL once `probe` answers 200 through it (None: once it accepts connections); stops it
    gracefully on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    listen = free_port()
    conf = nginx_conf(folder, ports, listen)
    log = folder / "error.log"  # a file, not a pipe: nginx blocks when nobody reads its log
    cmd = [nginx_binary(), "-p", str(folder), "-e", str(log), "-c", str(conf), "-g", "daemon off;"]
    nginx = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if probe is None:
                    socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                    break
                if httpx.get(url + probe, timeout=1).status_code == 200:
                    break
            except (httpx.TransportError, OSError):
                pass
            if nginx.poll() is not None:
                raise RuntimeError(f"nginx exited: {log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers behind {url} after {timeout} s")
            time.sleep(0.1)
        yield url
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
