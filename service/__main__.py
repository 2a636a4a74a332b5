"""`python -m service [--host H] [--port P] [--model-repository DIR]`; flags override SERVE_* variables."""

import argparse
import logging

from service.app import create_app
from service.config import Settings
from service.frontend.http_server import HttpLimits, serve
from service.metrics import Metrics
from service.runtime import tune_process


def main(argv: list[str] | None = None) -> None:
    tuned = tune_process()  # before any thread exists
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve the model repository over HTTP.")
    parser.add_argument("--host", help="address to bind (SERVE_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (SERVE_PORT)")
    parser.add_argument("--model-repository", help="model repository directory (SERVE_MODEL_REPOSITORY)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(__name__).info("process settings: %s", tuned)
    metrics = Metrics()
    limits = HttpLimits.from_settings(settings, on_refused=lambda reason: metrics.http_refused.labels(reason).inc())
    serve(create_app(settings, metrics), settings, limits)


if __name__ == "__main__":
    main()
