"""`python -m service [--host H] [--port P] [--model-repository DIR] [--workers N]`; flags override SERVE_*
variables. One process (workers = 1), or a supervisor with an engine process and N front ends (N >= 2)."""

import argparse
import logging
import sys

from service.app import create_app
from service.config import Settings, usable_cores
from service.frontend.http_server import HttpLimits, serve
from service.metrics import Metrics
from service.runtime import tune_process
from service.supervisor import run_supervisor


def workers_for(cores: int) -> int:
    """SERVE_WORKERS=0: the front ends for this many usable cores. On 2 cores, 2 front ends and the engine served
    lenet5 at 1.75x one process and resnet50 alike (docs/BENCHMARKS.md, "Processes"); above that one core is left
    to the engine (not yet measured on a larger host). One core: one process."""
    return 1 if cores < 2 else max(2, cores - 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the model repository over HTTP.")
    parser.add_argument("--host", help="address to bind (SERVE_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (SERVE_PORT)")
    parser.add_argument("--model-repository", help="model repository directory (SERVE_MODEL_REPOSITORY)")
    parser.add_argument("--workers", type=int, help="front-end processes; 1: one process (SERVE_WORKERS)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workers = settings.workers or workers_for(usable_cores())
    if workers >= 2:
        sys.exit(run_supervisor(settings, workers))
    tuned = tune_process()  # before any thread exists
    logging.getLogger(__name__).info("one process; process settings: %s", tuned)
    metrics = Metrics()
    limits = HttpLimits.from_settings(settings, on_refused=lambda reason: metrics.http_refused.labels(reason).inc())
    serve(create_app(settings, metrics), settings, limits)


if __name__ == "__main__":
    main()
