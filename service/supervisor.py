"""`python -m service` with SERVE_WORKERS >= 2: one engine process (service/engine/server.py) and N front-end
processes (service/frontend/worker.py) on one listening socket, which this process binds and hands down.

It creates every shared-memory segment and unlinks them on every way out; children only attach (and share its
resource tracker, which unlinks whatever is left should this process be killed). It restarts a front end that
dies (the engine lets the new one in once no batch reads the old one's slots) and exits 1 if the engine dies,
so that an orchestrator restarts the whole service. SIGTERM or SIGINT drains: the front ends stop accepting and
answer every request they took (the engine still running), then the engine stops, then this process exits 0.
"""

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from modelrepo.layout import model_dir
from modelrepo.read import RepositoryError, configured_models, read_config
from service.config import Settings
from service.engine.server import run_engine
from service.frontend.worker import run_frontend
from service.metrics import MULTIPROCESS_DIR
from service.transport import SlotPool, slot_bytes

log = logging.getLogger(__name__)

ENGINE_STOP_S = 60.0  # the engine's own drain: front ends are gone by then, so only what they left running
FRONTEND_KILL_S = 5.0  # after the engine died, front ends get this long to answer with 503 before SIGKILL
RESTART_BACKOFF_S = 1.0  # a front end that keeps dying is restarted at most this often


def _configs(settings: Settings) -> list:
    """Every configured model's config.json that can be read (the others fail to load, visibly, in the engine);
    every model in the repository where models may be loaded while serving (SERVE_MODEL_CONTROL). A model
    exported later whose images are larger than any of these is refused with 503 until a restart."""
    try:
        names = settings.models if settings.model_control == "none" else []
        names = configured_models(settings.model_repository, names)
    except RepositoryError:
        return []
    configs = []
    for name in names:
        try:
            configs.append(read_config(model_dir(settings.model_repository, name)))
        except RepositoryError:
            continue
    return configs


def check_shared_memory(needed: int, path: str = "/dev/shm") -> None:
    """Fail at start, with the fix, rather than with SIGBUS when a slot is first written: Docker gives a container
    64 MB of /dev/shm unless told otherwise (`shm_size`), and a tmpfs segment larger than its room maps fine."""
    if not os.path.isdir(path):
        return
    stats = os.statvfs(path)
    room = stats.f_bavail * stats.f_frsize
    if needed > room:
        raise SystemExit(
            f"the front ends need {needed / 2**20:.0f} MB of shared memory and {path} has {room / 2**20:.0f} MB free: "
            f"raise it (docker: shm_size; Kubernetes: an emptyDir with medium Memory at /dev/shm), or lower "
            f"SERVE_SHM_SLOTS or SERVE_WORKERS"
        )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(settings: Settings) -> socket.socket:
    sock = socket.socket(_family(settings.host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_grpc_port(settings: Settings) -> None:
    """The front ends share SERVE_GRPC_PORT with SO_REUSEPORT, which would as gladly share it with another
    service of the same user: so the port must be free before they start (a bind without SO_REUSEPORT)."""
    if not settings.grpc_port:
        return
    with socket.socket(_family(settings.host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart while old connections linger
        try:
            probe.bind((settings.host, settings.grpc_port))
        except OSError as e:
            raise SystemExit(f"gRPC port {settings.grpc_port} is taken ({e.strerror}): set SERVE_GRPC_PORT") from e


class Supervisor:
    def __init__(self, settings: Settings, workers: int):
        self.settings, self.workers = settings, workers
        self._spawn = multiprocessing.get_context("spawn")
        self._stopping = False
        self._run_dir = Path(tempfile.mkdtemp(prefix="cnn-serve-"))
        self._pools: list[SlotPool] = []
        self._engine: BaseProcess | None = None
        self._frontends: dict[int, BaseProcess] = {}
        self._started_at: dict[int, float] = {}

    def _stop(self, signum: int, frame: object) -> None:
        if not self._stopping:
            log.info("supervisor: %s, draining", signal.Signals(signum).name)
        self._stopping = True

    def _start_frontend(self, index: int, sock: socket.socket, address: str) -> None:
        process = self._spawn.Process(
            target=run_frontend,
            args=(index, self.settings, sock, address, self._pools[index].spec),
            name=f"frontend-{index}",
        )
        process.start()
        self._frontends[index] = process
        self._started_at[index] = time.monotonic()

    def run(self) -> int:
        """Serve until a signal (0) or the engine's death (1)."""
        metrics_dir = self._run_dir / "metrics"
        metrics_dir.mkdir()
        os.environ[MULTIPROCESS_DIR] = str(metrics_dir)  # before any child starts: they import prometheus_client
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        sock = None
        try:
            size = slot_bytes(_configs(self.settings))
            check_shared_memory(self.workers * self.settings.shm_slots * size)
            self._pools = [SlotPool.create(self.settings.shm_slots, size) for _ in range(self.workers)]
            log.info(
                "supervisor: %d front ends, %d slots of %d bytes each in shared memory",
                self.workers,
                self.settings.shm_slots,
                size,
            )
            sock = bind(self.settings)
            check_grpc_port(self.settings)
            address = str(self._run_dir / "engine.sock")
            self._engine = self._spawn.Process(
                target=run_engine, args=(self.settings, address, [p.spec for p in self._pools]), name="engine"
            )
            self._engine.start()
            for index in range(self.workers):
                self._start_frontend(index, sock, address)
            return self._watch(sock, address, metrics_dir)
        finally:
            for process in [*self._frontends.values(), self._engine]:
                if process is not None and process.is_alive():
                    process.kill()
                    process.join()
            if sock is not None:
                sock.close()
            for pool in self._pools:
                pool.close()
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def _watch(self, sock: socket.socket, address: str, metrics_dir: Path) -> int:
        while not self._stopping:
            wait([self._engine.sentinel, *(p.sentinel for p in self._frontends.values())], timeout=0.2)
            if not self._engine.is_alive():
                log.critical("supervisor: the engine process exited with %s; stopping", self._engine.exitcode)
                self._end_frontends(signal.SIGTERM, FRONTEND_KILL_S)
                return 1
            for index, process in list(self._frontends.items()):
                if process.is_alive() or self._stopping:
                    continue
                log.error("supervisor: front end %d exited with %s; starting another", index, process.exitcode)
                mark_process_dead(process.pid, str(metrics_dir))
                time.sleep(max(0.0, self._started_at[index] + RESTART_BACKOFF_S - time.monotonic()))
                self._start_frontend(index, sock, address)
        self._end_frontends(signal.SIGTERM, None)  # uvicorn drains: every request taken is answered
        self._engine.terminate()  # SIGTERM: drain what is left, close the sessions
        self._engine.join(ENGINE_STOP_S)
        if self._engine.exitcode is None:
            log.error("supervisor: the engine did not stop in %.0f s; killing it", ENGINE_STOP_S)
            return 1
        log.info("supervisor: stopped")
        return 0

    def _end_frontends(self, signum: int, timeout: float | None) -> None:
        for process in self._frontends.values():
            if process.is_alive():
                os.kill(process.pid, signum)
        for process in self._frontends.values():
            process.join(timeout)


def run_supervisor(settings: Settings, workers: int) -> int:
    return Supervisor(settings, workers).run()
