"""Locust users that POST real photos to `/v1/classify` and check every answer.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 16 -r 4 --run-time 60s

Environment:
    LOCUST_MODELS    "resnet50" or a weighted mix "resnet50:3,mobilenet_v2:1" (default resnet50)
    LOCUST_TOP_K     classes asked for per image (default 5)
    LOCUST_SHAPE     steady | ramp | spike: drive the user count from a LoadTestShape (else -u/-r)
    LOCUST_USERS     the shape's peak user count (default 16)
    LOCUST_DURATION  the shape's length in seconds (default 60)

The server reports, per answer, the size of the batch the image ran in and how long it queued. Those
are kept apart from Locust's request statistics (which would count them as requests) and written at
the end, per model, to `<csv prefix>_server.csv` and the log: answers, mean and p95 batch size,
p50/p95/p99 queue time (workers send theirs to the master). A 429 (queue full) is shed load, not a
failure: it is reported under `SHED`. A wrong status or a body that breaks the schema is a failure.
"""

import logging
import os
import random
from itertools import accumulate

from locust import FastHttpUser, LoadTestShape, events, task
from locust.runners import WorkerRunner

from loadtest.figures import ServerFigures
from loadtest.images import photo_jpegs

PHOTOS = list(photo_jpegs().items())  # encoded once per Locust process


def parse_models(spec: str) -> list[tuple[str, int]]:
    """`"resnet50:3,mobilenet_v2"` -> [("resnet50", 3), ("mobilenet_v2", 1)]."""
    models = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition(":")
        if weight and (not weight.isdigit() or int(weight) < 1):
            raise ValueError(f"LOCUST_MODELS: weight of {name!r} must be a positive integer, got {weight!r}")
        models.append((name, int(weight or 1)))
    if not models:
        raise ValueError(f"LOCUST_MODELS names no model: {spec!r}")
    return models


def check_body(body: object, model: str, top_k: int) -> str | None:
    """What is wrong with a 200 response's JSON, or None."""
    if not isinstance(body, dict) or body.get("model") != model:
        return f"answer is not for {model}"
    results = body.get("results")
    if not isinstance(results, list) or len(results) != 1:
        return "expected exactly one result"
    (result,) = results
    predictions = result.get("predictions")
    if not isinstance(predictions, list) or not 1 <= len(predictions) <= top_k:
        return f"expected 1..{top_k} predictions"
    probabilities = [p.get("probability") for p in predictions]
    if not all(isinstance(p, float) and 0 <= p <= 1 for p in probabilities) or probabilities != sorted(
        probabilities, reverse=True
    ):
        return f"probabilities not in [0, 1] and descending: {probabilities}"
    if not isinstance(result.get("batch_size"), int) or result["batch_size"] < 1:
        return "batch_size missing"
    if not isinstance(result.get("timing", {}).get("queue_ms"), float | int):
        return "timing.queue_ms missing"
    return None


FIGURES = ServerFigures()


@events.report_to_master.add_listener
def _send_figures(client_id: str, data: dict) -> None:
    data["server_figures"] = FIGURES.drain()


@events.worker_report.add_listener
def _receive_figures(client_id: str, data: dict) -> None:
    FIGURES.merge(data.get("server_figures", {}))


@events.test_stop.add_listener
def _report_figures(environment, **kwargs) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    for row in FIGURES.rows():
        logging.info(
            "server figures %(model)s: %(answers)d answers, mean batch %(mean_batch).2f (p95 %(p95_batch).0f), "
            "queue p50/p95/p99 %(p50_queue_ms).1f/%(p95_queue_ms).1f/%(p99_queue_ms).1f ms",
            row,
        )
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        FIGURES.write(f"{prefix}_server.csv")


class ClassifyUser(FastHttpUser):
    """One image per request, model drawn by weight, photo and size drawn at random."""

    models = parse_models(os.environ.get("LOCUST_MODELS", "resnet50"))
    top_k = int(os.environ.get("LOCUST_TOP_K", "5"))
    _names = [name for name, _ in models]
    _cumulative = list(accumulate(weight for _, weight in models))

    @task
    def classify(self) -> None:
        model = random.choices(self._names, cum_weights=self._cumulative)[0]
        photo, data = random.choice(PHOTOS)
        url = f"/v1/classify?model={model}&top_k={self.top_k}"
        headers = {"content-type": "image/jpeg"}
        with self.client.post(url, data=data, headers=headers, name=model, catch_response=True) as response:
            if response.status_code == 429:
                response.request_meta["request_type"] = "SHED"
                response.success()
                return
            if response.status_code != 200:
                response.failure(f"{photo}: status {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                body = response.json()
            except ValueError:
                response.failure(f"{photo}: body is not JSON")
                return
            if problem := check_body(body, model, self.top_k):
                response.failure(f"{photo}: {problem}")
                return
        (result,) = body["results"]
        FIGURES.add(model, result["batch_size"], result["timing"]["queue_ms"])


class _Shape(LoadTestShape):
    """Stages of (until second, users, spawn rate); hidden from Locust unless LOCUST_SHAPE picks it."""

    abstract = True

    def __init__(self):
        super().__init__()
        self.users = int(os.environ.get("LOCUST_USERS", "16"))
        self.duration = float(os.environ.get("LOCUST_DURATION", "60"))

    def stages(self) -> list[tuple[float, int, float]]:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        for until, users, rate in self.stages():
            if elapsed < until:
                return max(users, 1), rate
        return None


class SteadyShape(_Shape):
    """Reach the peak in a tenth of the run, hold it."""

    abstract = True

    def stages(self):
        return [(self.duration, self.users, max(1.0, self.users / (0.1 * self.duration)))]


class RampShape(_Shape):
    """From one user to the peak in ten equal steps over the run: where does latency bend?"""

    abstract = True

    def stages(self):
        step = self.duration / 10
        return [(step * (i + 1), round(self.users * (i + 1) / 10), float(self.users)) for i in range(10)]


class SpikeShape(_Shape):
    """A quarter of the peak, then the full peak at once for a fifth of the run, then back."""

    abstract = True

    def stages(self):
        d, base = self.duration, self.users // 4
        return [(0.4 * d, base, float(self.users)), (0.6 * d, self.users, 1000.0), (d, base, 1000.0)]


SHAPES = {"steady": SteadyShape, "ramp": RampShape, "spike": SpikeShape}
if shape := os.environ.get("LOCUST_SHAPE"):
    if shape not in SHAPES:
        raise ValueError(f"LOCUST_SHAPE must be one of {', '.join(SHAPES)}, got {shape!r}")
    LoadShape = type("LoadShape", (SHAPES[shape],), {"abstract": False})
