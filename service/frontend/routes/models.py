"""`GET /v1/models` and `GET /v1/models/{name}`: what is served, how, and in what state."""

from typing import Annotated

from fastapi import APIRouter, Depends

from service.schemas import ErrorResponse, ModelInfo, ModelList
from service.state import ServiceState, get_state
from service.status import ModelStatus, require

router = APIRouter(tags=["models"])


def model_info(status: ModelStatus) -> ModelInfo:
    info = ModelInfo(
        name=status.name,
        state=status.state,
        reason=status.reason,
        batching=status.batching,
        providers=list(status.providers),
        bucket_sizes=list(status.bucket_sizes),
        cuda_graph_batch_sizes=list(status.cuda_graph_batch_sizes),
        queue_depth=status.queue_depth,
    )
    if status.source is not None:
        config = status.source.config
        info = info.model_copy(
            update={
                "version": status.source.version,
                "versions": sorted(config.versions),
                "card": config.card,
                "input": config.input,
                "output": config.output,
                "preprocessing": config.preprocessing,
                "weights": config.versions[status.source.version].weights,
            }
        )
    return info


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: Annotated[ServiceState, Depends(get_state)]) -> ModelList:
    return ModelList(models=[model_info(s) for s in (await state.models.fresh_statuses()).values()])


@router.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
async def get_model(name: str, state: Annotated[ServiceState, Depends(get_state)]) -> ModelInfo:
    return model_info(require(await state.models.fresh_statuses(), name, ready=False))
