"""`GET /healthz` (the process is alive and its GPU works), `GET /readyz` (every model is ready), `GET /metrics`.

The probes answer HEAD as well as GET: some load balancers and uptime checkers send HEAD."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from service.metrics import CONTENT_TYPE
from service.schemas import Health, Readiness
from service.state import ServiceState, get_state
from service.status import all_ready, device_errors

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
@router.head("/healthz", include_in_schema=False)
async def healthz(state: Annotated[ServiceState, Depends(get_state)]) -> JSONResponse:
    """200 while the process can serve; 503 once a model's GPU has failed (a lost CUDA context does not come
    back), so that a liveness probe restarts the process instead of letting it answer 500s."""
    failed = device_errors(await state.models.fresh_statuses())
    health = Health(status="device_failed", reasons=failed) if failed else Health(status="ok")
    return JSONResponse(health.model_dump(mode="json", exclude_defaults=True), status_code=503 if failed else 200)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
@router.head("/readyz", include_in_schema=False)
async def readyz(state: Annotated[ServiceState, Depends(get_state)]) -> JSONResponse:
    """200 once every configured model is loaded and warmed; 503 with each model's state until then."""
    statuses = await state.models.fresh_statuses()
    readiness = Readiness(
        ready=all_ready(statuses),
        models={name: s.state for name, s in statuses.items()},
        reasons={name: s.reason for name, s in statuses.items() if s.reason} | device_errors(statuses),
    )
    return JSONResponse(readiness.model_dump(mode="json"), status_code=200 if readiness.ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(state: Annotated[ServiceState, Depends(get_state)]) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
