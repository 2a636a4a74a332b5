"""Counting and timing every inference request over HTTP (/v1/classify, V2's infer), by model, status and API,
for /metrics. gRPC's are counted in service/frontend/grpc_server.py."""

import time

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.state import ServiceState

V2_MODELS = "/v2/models/"


def inference_model(scope: Scope) -> tuple[str, str] | None:
    """(model, API) of an inference request; None for every other path."""
    path = scope["path"]
    if path == "/v1/classify":
        return QueryParams(scope["query_string"]).get("model", ""), "v1"
    if path == "/v1/compare":
        return "", "compare"  # several models: counted as "unknown", by API
    if path.startswith(V2_MODELS) and path.endswith("/infer"):
        return path[len(V2_MODELS) :].split("/", 1)[0], "v2"  # ASGI paths are decoded already
    return None


class ObserveInference:
    """Plain ASGI: Starlette's `BaseHTTPMiddleware` costs an extra task and a body stream per request, a fifth
    of the event loop's time on small models."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observed = inference_model(scope) if scope["type"] == "http" else None
        if observed is None:
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
            model, api = observed
            label = model if model in state.models.statuses() else "unknown"  # bounded label values
            state.metrics.requests.labels(label, str(status), api).inc()
            state.metrics.request_latency.labels(label).observe(time.perf_counter() - started)
