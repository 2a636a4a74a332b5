"""`create_app()`: the FastAPI app, its lifespan (which owns every resource) and its error mapping.

Startup returns at once: models load and warm up in a background task while `/healthz` answers
and `/readyz` says 503. A model that fails to load is marked failed with its reason; the others serve.
"""

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batcher import DynamicBatcher
from service.config import Settings
from service.decode_pool import DecodePool
from service.engine import (
    CPU,
    Engine,
    GpuOptions,
    ProviderSpec,
    preload_gpu_libraries,
    provider_specs,
    resolve_providers,
)
from service.errors import ServiceError, error_body
from service.metrics import Metrics
from service.model_config import Batching, ModelConfig
from service.preprocess import Preprocessor, configure_pillow
from service.repository import ModelSource, RepositoryError, list_models, load_source
from service.routes import classify, health, models
from service.runtime import trim_periodically
from service.schemas import BatchingInfo, ModelState
from service.state import ModelEntry, ServiceState

log = logging.getLogger(__name__)


def effective_batching(defaults: Batching, settings: Settings, *, on_gpu: bool = False) -> BatchingInfo:
    """config.json's batching with each setting that is not None overriding it. Unless set, one batch
    runs at a time on CPU (a second would only compete for the same cores) and two on a GPU, so the
    host forms and copies the next batch while the device runs one."""
    max_batch = settings.max_batch_size or defaults.max_batch_size
    preferred = settings.preferred_batch_sizes
    if preferred is None:
        preferred = defaults.preferred_batch_sizes
    delay = defaults.max_queue_delay_ms if settings.max_queue_delay_ms is None else settings.max_queue_delay_ms
    return BatchingInfo(
        max_batch_size=max_batch,
        preferred_batch_sizes=sorted({n for n in preferred if n <= max_batch}),
        max_queue_delay_ms=delay,
        max_queue_size=settings.max_queue_size or defaults.max_queue_size,
        batches_in_flight=settings.batches_in_flight or (2 if on_gpu else 1),
    )


def gpu_options(settings: Settings) -> GpuOptions:
    return GpuOptions(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(GpuOptions)})


def warmup_batch_sizes(batching: BatchingInfo, on_gpu: bool = True) -> list[int]:
    """The batch sizes run before ready. On a GPU these are also the buckets every batch is padded up to
    (service/io_binding.py): 1, the preferred sizes, the powers of two and the max batch size, so padding
    at most doubles a batch while cuDNN's algorithm choices (per shape), TensorRT profiles and CUDA graphs
    are all made before traffic. On CPU batch 1 only: a first run at a new size costs about what later
    ones do, and warming every size delayed resnet50's readiness by 4-6 s on 2 cores (docs/BENCHMARKS.md,
    start-up)."""
    if not on_gpu:
        return [1]
    powers = (2**i for i in range(batching.max_batch_size.bit_length()))
    return sorted({1, *batching.preferred_batch_sizes, *powers, batching.max_batch_size})


def session_providers(
    config: ModelConfig, settings: Settings, max_batch_size: int, opt_batch_size: int
) -> list[ProviderSpec]:
    """The providers the settings ask for that this ONNX Runtime has, with their options; the GPU
    libraries loaded if one of them needs them."""
    providers = resolve_providers(settings.providers, ort.get_available_providers())
    preload_gpu_libraries(providers)
    return provider_specs(
        providers,
        input_spec=config.input,
        max_batch_size=max_batch_size,
        opt_batch_size=opt_batch_size,
        gpu=gpu_options(settings),
    )


def build_engine(source: ModelSource, settings: Settings, batching: BatchingInfo) -> Engine:
    """The session for one model, with the providers and thread options the settings ask for."""
    config = source.config
    opt_batch = max(batching.preferred_batch_sizes, default=batching.max_batch_size)
    specs = session_providers(config, settings, batching.max_batch_size, opt_batch)
    return Engine(
        source.onnx_path,
        input_spec=config.input,
        output_spec=config.output,
        providers=specs,
        intra_op_threads=settings.intra_op_threads,
        spinning=settings.intra_op_spinning,
        io_binding=settings.io_binding and any(p.name != CPU for p in specs),
        device_id=settings.device_id,
        bucket_sizes=warmup_batch_sizes(batching),
    )


def load_model(entry: ModelEntry, settings: Settings) -> None:
    """Blocking (run it in a thread): read the repository, build the session, warm it up."""
    source = load_source(settings.model_repository, entry.name)
    config = source.config
    batching = effective_batching(config.batching, settings)
    started = time.perf_counter()
    engine = build_engine(source, settings, batching)
    built = time.perf_counter()
    on_gpu = engine.providers_in_use[0] != CPU  # what the session really got, after any fallback
    if on_gpu:
        batching = effective_batching(config.batching, settings, on_gpu=True)
    try:
        if settings.warmup:
            engine.warmup(warmup_batch_sizes(batching, on_gpu))
    except BaseException:
        engine.close()
        raise
    entry.load_seconds = {"session": built - started, "warmup": time.perf_counter() - built}
    entry.source = source
    entry.batching = batching
    entry.preprocessor = Preprocessor.for_model(config, settings)
    entry.engine = engine


async def load_all(state: ServiceState) -> None:
    for entry in state.models.values():
        try:
            await asyncio.to_thread(load_model, entry, state.settings)
        except Exception as e:
            entry.state, entry.reason = ModelState.FAILED, str(e)
            log.error("model %r failed to load: %s", entry.name, e)
            continue
        batching = entry.batching
        entry.executor = ThreadPoolExecutor(batching.batches_in_flight, thread_name_prefix=f"infer-{entry.name}")
        entry.batcher = DynamicBatcher(
            entry.engine.run,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_size=batching.max_queue_size,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            batches_in_flight=batching.batches_in_flight,
            executor=entry.executor,
            on_batch=state.metrics.batch_observer(entry.name),
            on_idle=entry.engine.trim_memory,
            name=entry.name,
        )
        entry.batcher.start()
        entry.state = ModelState.READY
        for phase, seconds in entry.load_seconds.items():
            state.metrics.load_time.labels(entry.name, phase).set(seconds)
        log.info(
            "model %r v%d ready on %s (session %.2f s, warm-up %.2f s)",
            entry.name,
            entry.source.version,
            entry.engine.providers_in_use,
            entry.load_seconds["session"],
            entry.load_seconds["warmup"],
        )


def _watch_metrics(state: ServiceState) -> None:
    metrics = state.metrics
    metrics.models_ready.set_function(lambda: sum(e.state is ModelState.READY for e in state.models.values()))
    for entry in state.models.values():
        metrics.queue_depth.labels(entry.name).set_function(lambda e=entry: e.batcher.queue_depth if e.batcher else 0)
    for lane in (state.decode_pool.small, state.decode_pool.large):
        metrics.decode_backlog.labels(lane.name).set_function(lambda lane=lane: lane.backlog)


async def _shutdown(state: ServiceState, *tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for entry in state.models.values():
        if entry.state is ModelState.READY:
            entry.state, entry.reason = ModelState.LOADING, "shutting down"
        if entry.batcher is not None:
            await entry.batcher.stop()  # drains: queued images still get answers
        if entry.executor is not None:
            entry.executor.shutdown(wait=True)
        if entry.engine is not None:
            entry.engine.close()
    state.decode_pool.shutdown()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _install_error_handlers(app: FastAPI) -> None:
    """The one place errors become responses."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, "validation_error", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal server error")


class ObserveClassify:
    """Counts and times `/v1/classify` by model and status. Plain ASGI: Starlette's `BaseHTTPMiddleware`
    costs an extra task and a body stream per request, a fifth of the event loop's time on small models."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/classify":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            state: ServiceState = scope["app"].state.service
            model = QueryParams(scope["query_string"]).get("model", "")
            label = model if model in state.models else "unknown"  # bounded label values
            state.metrics.requests.labels(label, str(status)).inc()
            state.metrics.request_latency.labels(label).observe(time.perf_counter() - started)


def _telemetry(settings: Settings) -> dict:
    """FastAPI's native OpenTelemetry (newer FastAPI only): on only when asked for, decided once here rather
    than by FastAPI on every request."""
    if settings.opentelemetry or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: Settings | None = None, metrics: Metrics | None = None) -> FastAPI:
    """`metrics`: pass the registry the HTTP server counts its refusals in, so /metrics shows them too."""
    settings = settings or Settings()
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_pillow()
        state = ServiceState(settings=settings, metrics=metrics, decode_pool=DecodePool.from_settings(settings))
        try:
            names = settings.models or list_models(settings.model_repository)
        except RepositoryError as e:
            log.error("%s", e)
            names = []
        state.models = {name: ModelEntry(name) for name in names}
        _watch_metrics(state)
        app.state.service = state
        loader = asyncio.create_task(load_all(state), name="load-models")
        trimmer = asyncio.create_task(trim_periodically(), name="trim-malloc")
        try:
            yield
        finally:
            await _shutdown(state, loader, trimmer)

    app = FastAPI(
        title="cnn-serve",
        summary="ONNX image classifiers with dynamic batching.",
        lifespan=lifespan,
        redirect_slashes=False,  # a 307 to a Location built from the client's Host header helps nobody
        **_telemetry(settings),
    )
    _install_error_handlers(app)

    app.add_middleware(ObserveClassify)
    app.include_router(classify.router)
    app.include_router(models.router)
    app.include_router(health.router)
    return app
