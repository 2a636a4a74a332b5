"""Prometheus metrics on a registry per app (tests build many apps; the global registry would collide).

With workers (service/supervisor.py) every process counts into prometheus_client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor before it starts them) and any front end renders the sum of
all of them, so one scrape covers the engine and every front end. Gauges that mirror state (queue depth,
decode backlog) are refreshed by each process from its `watch` callbacks: before rendering, and every
REFRESH_S by `refresh_periodically` where another process renders."""

import asyncio
import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_LATEST
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
IMAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_S = 1.0


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_DIR) or None


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        by_model = ["model"]
        self.requests = Counter(
            "cnnserve_requests",
            "Inference requests by model, HTTP status (gRPC: the status its code stands for) and API (v1, v2, grpc).",
            ["model", "code", "api"],
            registry=r,
        )
        self.request_latency = Histogram(
            "cnnserve_request_duration_seconds",
            "Inference request latency, every API.",
            by_model,
            buckets=SECONDS,
            registry=r,
        )
        self.queue_time = Histogram(
            "cnnserve_queue_duration_seconds",
            "Time an image waited for a batch.",
            by_model,
            buckets=SECONDS,
            registry=r,
        )
        self.inference_time = Histogram(
            "cnnserve_inference_duration_seconds", "Time one batch ran.", by_model, buckets=SECONDS, registry=r
        )
        self.batches = Counter(
            "cnnserve_batches",
            "Batches run, by why they were released: with a latency objective target, objective, quiet, explore, "
            "deadline; with fixed rules full, delay, quiet; shutdown.",
            ["model", "reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "cnnserve_batch_size", "Images per batch run.", by_model, buckets=IMAGES, registry=r
        )
        self.queue_depth = Gauge(
            "cnnserve_queue_depth",
            "Images waiting in a model's queue.",
            by_model,
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.load_time = Gauge(
            "cnnserve_model_load_seconds",
            "Time a model took to load: building its session (TensorRT engines unless cached), then warm-up.",
            ["model", "phase"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.models_ready = Gauge(
            "cnnserve_models_ready",
            "Models loaded, warmed and serving.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.version_sessions = Gauge(
            "cnnserve_model_version_sessions",
            "ONNX Runtime sessions a loaded model version holds (0 once unloaded).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.version_weights = Gauge(
            "cnnserve_model_version_weights_bytes",
            "Weights a loaded model version holds: its ONNX file's size once per session (0 once unloaded).",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.load_failures = Counter(
            "cnnserve_model_load_failures",
            "Versions that failed to load (the reason is in GET /v1/repository/index); what served before serves on.",
            by_model,
            registry=r,
        )
        self.decode_time = Histogram(
            "cnnserve_decode_duration_seconds",
            "Time one image took to decode and preprocess, by lane (small, large).",
            ["lane"],
            buckets=SECONDS,
            registry=r,
        )
        self.decode_backlog = Gauge(
            "cnnserve_decode_backlog",
            "Images waiting or decoding, by lane (small, large).",
            ["lane"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.http_refused = Counter(
            "cnnserve_http_refused",
            "Requests the HTTP server refused before the app saw them whole: headers too large or too many, "
            "headers or body too slow, too many connections, malformed HTTP.",
            ["reason"],
            registry=r,
        )

        self._watchers: list[Callable[[], None]] = []

    def batch_observer(self, model: str) -> Callable[[int, float, str], None]:
        """For DynamicBatcher(on_batch=...): records each batch's size, inference time and why it ran."""
        size, seconds = self.batch_size.labels(model), self.inference_time.labels(model)

        def observe(batch_size: int, inference_s: float, reason: str) -> None:
            size.observe(batch_size)
            seconds.observe(inference_s)
            self.batches.labels(model, reason).inc()

        return observe

    @property
    def multiprocess(self) -> bool:
        return multiprocess_dir() is not None

    def watch(self, refresh: Callable[[], None]) -> None:
        """`refresh` sets gauges from live state; called before each render and by refresh_periodically."""
        self._watchers.append(refresh)

    def refresh(self) -> None:
        for refresh in self._watchers:
            refresh()

    async def refresh_periodically(self) -> None:
        """For a process whose gauges another process renders (workers): until cancelled."""
        while True:
            self.refresh()
            await asyncio.sleep(REFRESH_S)

    def render(self) -> bytes:
        self.refresh()
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path)
        return generate_latest(registry)
