"""`create_app()`: the front end's FastAPI app. It only wires: routes (REST v1, V2), error handlers, the metrics
and CORS middleware, and a lifespan that owns the decode pool, the model backend (the models in this process,
or the engine process's, service/frontend/engine_client.py) and the gRPC server.

Startup returns at once: models load and warm up in the background while `/healthz` answers and `/readyz`
says 503. A model that fails to load is marked failed with its reason; the others serve.
"""

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from service.config import Settings
from service.engine.models import in_process
from service.frontend.decode_pool import DecodePool
from service.frontend.error_handlers import install_error_handlers
from service.frontend.observe import ObserveInference
from service.frontend.preprocess import configure_pillow
from service.frontend.routes import classify, compare, health, models, page, repository, v2
from service.frontend.v2_body import HEADER_LENGTH
from service.metrics import Metrics
from service.runtime import trim_periodically
from service.state import ServiceState
from service.status import ModelBackend

Backend = Callable[[Settings, Metrics], AbstractAsyncContextManager[ModelBackend]]


def _telemetry(settings: Settings) -> dict:
    """FastAPI's native OpenTelemetry (newer FastAPI only): on only when asked for, decided once here rather
    than by FastAPI on every request."""
    if settings.opentelemetry or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _watch_decode_backlog(metrics: Metrics, pool: DecodePool) -> None:
    def refresh() -> None:
        for lane in (pool.small, pool.large):
            metrics.decode_backlog.labels(lane.name).set(lane.backlog)

    metrics.watch(refresh)


def create_app(
    settings: Settings | None = None,
    metrics: Metrics | None = None,
    backend: Backend = in_process,
    *,
    shared_grpc_port: bool = False,
) -> FastAPI:
    """`metrics`: pass the registry the HTTP server counts its refusals in, so /metrics shows them too.
    `shared_grpc_port`: other front ends listen on SERVE_GRPC_PORT too (workers)."""
    settings = settings or Settings()
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_pillow()
        decode_pool = DecodePool.from_settings(settings)
        _watch_decode_backlog(metrics, decode_pool)
        tasks = [asyncio.create_task(trim_periodically(), name="trim-malloc")]
        try:
            async with backend(settings, metrics) as model_backend:
                app.state.service = state = ServiceState(settings, metrics, decode_pool, model_backend)
                if metrics.multiprocess:
                    tasks.append(asyncio.create_task(metrics.refresh_periodically(), name="refresh-gauges"))
                grpc_server = None
                if settings.grpc_port:
                    from service.frontend.grpc_server import start_grpc  # grpcio and the protos: only when on

                    grpc_server = await start_grpc(settings, state, shared_port=shared_grpc_port)
                try:
                    yield
                finally:
                    if grpc_server is not None:  # no new calls; those running get until the longest deadline
                        await grpc_server.stop(settings.max_request_timeout_ms / 1000)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            decode_pool.shutdown()

    app = FastAPIOffline(
        title="cnn-serve",
        summary="ONNX image classifiers with dynamic batching.",
        lifespan=lifespan,
        redirect_slashes=False,  # a 307 to a Location built from the client's Host header helps nobody
        **_telemetry(settings),
    )
    install_error_handlers(app)
    app.add_middleware(ObserveInference)
    if settings.cors_origins:  # outside the routes, so that their errors carry CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "HEAD"],
            allow_headers=["*"],
            expose_headers=[HEADER_LENGTH, "Retry-After"],
            max_age=600,
        )
    app.include_router(classify.router)
    app.include_router(compare.router)
    app.include_router(v2.router)
    app.include_router(models.router)
    app.include_router(repository.router)
    app.include_router(health.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")
    return app
