"""The repository API, after Triton's model repository extension: `GET /v1/repository/index` lists every model
and version with its state, reason, sessions and weights held; `POST /v1/repository/models/{name}/load` and `/unload`
change what is served. V2's paths answer the same: `POST /v2/repository/index`,
`POST /v2/repository/models/{name}/load` and `/unload`.

Load and unload change the server over the network, so they are off unless SERVE_MODEL_CONTROL=explicit (403),
and where SERVE_REPOSITORY_TOKEN is set they need `Authorization: Bearer TOKEN` (401), as Triton's restricted APIs.
A name is checked before it becomes a path (modelrepo/layout.py)."""

import hmac
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from modelrepo.layout import is_model_name
from service.config import Settings
from service.errors import ModelControlDisabled, ModelNotFound, Unauthorized, shorten
from service.schemas import ErrorResponse, ModelState, RepositoryEntry, RepositoryIndex
from service.state import ServiceState, get_state
from service.status import MAX_NAME_SHOWN, ModelStatus

router = APIRouter(tags=["repository"])
State = Annotated[ServiceState, Depends(get_state)]
_CONTROL_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 503)}


def index_entries(statuses: Mapping[str, ModelStatus]) -> list[RepositoryEntry]:
    """One entry per version; a model with none yet (loading, failed, unloaded) has one with no version."""
    entries = []
    for name, status in sorted(statuses.items()):
        default = status.source.version if status.source is not None else None
        if not status.versions:
            entries.append(RepositoryEntry(name=name, state=status.state, reason=status.reason))
        for v in status.versions:
            entries.append(
                RepositoryEntry(
                    name=name,
                    version=v.version,
                    state=v.state,
                    reason=v.reason,
                    default=v.version == default,
                    sessions=v.sessions,
                    weights_bytes=v.weights_bytes,
                )
            )
    return entries


def check_control(settings: Settings, authorization: str | None) -> None:
    """Load and unload (HTTP and gRPC): explicit model control, and the token where one is set."""
    if settings.model_control != "explicit":
        raise ModelControlDisabled(
            f"loading and unloading need SERVE_MODEL_CONTROL=explicit (this service: {settings.model_control})"
        )
    token = settings.repository_token
    if token is not None and not hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode()):
        raise Unauthorized("load and unload need the header 'Authorization: Bearer <SERVE_REPOSITORY_TOKEN>'")


async def control_allowed(request: Request, state: State) -> None:
    """FastAPI dependency of load and unload."""
    check_control(state.settings, request.headers.get("authorization"))


def model_name(name: str) -> str:
    """`name` if it may name a model (it becomes a path), else the 404."""
    if not is_model_name(name):
        raise ModelNotFound(f"no model named {shorten(name, MAX_NAME_SHOWN)!r}")
    return name


Control = Depends(control_allowed)
_TRITON_STATE = {state: state.upper() for state in ModelState} | {ModelState.FAILED: "UNAVAILABLE"}


@router.get("/v1/repository/index", response_model=RepositoryIndex)
async def index(state: State) -> RepositoryIndex:
    return RepositoryIndex(models=index_entries(await state.models.fresh_statuses()))


@router.post("/v1/repository/models/{name}/load", responses=_CONTROL_ERRORS, dependencies=[Control])
async def load(name: str, state: State) -> RepositoryIndex:
    """Load the versions the model's policy asks for (again, if their files changed): returns once they are ready,
    or 400 with why one failed (what served before serves on)."""
    await state.models.load(model_name(name))
    return RepositoryIndex(models=index_entries({name: (await state.models.fresh_statuses())[name]}))


@router.post("/v1/repository/models/{name}/unload", responses=_CONTROL_ERRORS, dependencies=[Control])
async def unload(name: str, state: State) -> RepositoryIndex:
    """Answer what the model's versions accepted, then release them; its requests get 503 until it is loaded."""
    await state.models.unload(model_name(name))
    return RepositoryIndex(models=index_entries({name: (await state.models.fresh_statuses())[name]}))


@router.post("/v2/repository/index", tags=["v2"])
async def v2_index(state: State, body: Annotated[dict | None, Body()] = None) -> list[dict]:
    """Triton's index: `{"ready": true}` lists only the ready versions."""
    return v2_index_entries(await state.models.fresh_statuses(), isinstance(body, dict) and bool(body.get("ready")))


def v2_index_entries(statuses: Mapping[str, ModelStatus], ready_only: bool) -> list[dict]:
    """Triton's index entries (HTTP's JSON, gRPC's ModelIndex): a version that failed is UNAVAILABLE, with why."""
    return [
        {"name": e.name, "version": "" if e.version is None else str(e.version), "state": _TRITON_STATE[e.state]}
        | ({"reason": e.reason} if e.reason else {})
        for e in index_entries(statuses)
        if e.state is ModelState.READY or not ready_only
    ]


@router.post("/v2/repository/models/{name}/load", tags=["v2"], dependencies=[Control])
async def v2_load(name: str, state: State) -> dict:
    await state.models.load(model_name(name))
    return {}


@router.post("/v2/repository/models/{name}/unload", tags=["v2"], dependencies=[Control])
async def v2_unload(name: str, state: State) -> dict:
    await state.models.unload(model_name(name))
    return {}
