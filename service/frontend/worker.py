"""A front-end process (SERVE_WORKERS >= 2): HTTP, limits, admission and decoding on the supervisor's
listening socket, shared with the other front ends; the models are the engine process's."""

import logging
import os
import socket

from service.app import create_app
from service.config import Settings
from service.frontend.engine_client import remote
from service.frontend.http_server import HttpLimits, serve
from service.metrics import Metrics
from service.runtime import die_with_parent, tune_process
from service.transport import PoolSpec


def run_frontend(index: int, settings: Settings, sock: socket.socket, address: str, pool: PoolSpec) -> None:
    """The entry point (multiprocessing, spawn). SIGTERM or SIGINT: stop accepting, answer every request
    taken, exit."""
    die_with_parent()
    tuned = tune_process()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s frontend-{index}[{os.getpid()}] %(name)s: %(message)s"
    )
    logging.getLogger(__name__).info("process settings: %s", tuned)
    metrics = Metrics()
    limits = HttpLimits.from_settings(settings, on_refused=lambda reason: metrics.http_refused.labels(reason).inc())
    app = create_app(settings, metrics, backend=remote(address, pool, index), shared_grpc_port=True)
    serve(app, settings, limits, sockets=[sock])
