"""Start `python -m service` on 127.0.0.1 with a free port, wait until ready, stop it."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (no psutil); 0.0 where /proc is absent."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def descendants(pid: int) -> list[int]:
    """`pid`'s children, their children, ...: a supervisor's engine and front ends (from /proc)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue
            found += kids
            stack += kids
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its living descendants: the whole service, in either process layout."""
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


def _ready(url: str, settled: bool = False) -> bool:
    """/readyz says ready; with `settled`, says that no model is still loading (some may have failed)."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=2)
    except httpx.TransportError:
        return False
    if settled and response.status_code in (200, 503):
        return "loading" not in response.json()["models"].values()
    return response.status_code == 200


@contextmanager
def running_service(
    repository: Path,
    models: list[str],
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    log=None,
    settled: bool = False,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yields (base URL, process) once /readyz says ready (`settled`: once no model is loading); SIGINT, then
    SIGKILL, on the way out. gRPC listens on a free port too, unless `env` names SERVE_GRPC_PORT."""
    port = free_port()
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model-repository", str(repository)]
    full_env = {**os.environ, "SERVE_MODELS": ",".join(models), "SERVE_GRPC_PORT": str(free_port()), **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT if log else None)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _ready(url, settled):
            if proc.poll() is not None:
                raise RuntimeError(f"service exited with {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not ready on {url} after {timeout:.0f} s")
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, timeout: float = 300.0) -> None:
    """Poll `url`/readyz until 200 (for shell scripts that start the service themselves)."""
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"service not ready on {url} after {timeout:.0f} s")
        time.sleep(0.5)


if __name__ == "__main__":
    # python -m loadtest.server URL [TIMEOUT]: wait until the service at URL is ready.
    wait_ready(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 300.0)
