"""`GET /v1/models` and `GET /v1/models/{name}`: what is served, how, and in what state."""

from typing import Annotated

from fastapi import APIRouter, Depends

from service.schemas import ErrorResponse, ModelInfo, ModelList
from service.state import ModelEntry, ServiceState, get_state

router = APIRouter(tags=["models"])


def model_info(entry: ModelEntry) -> ModelInfo:
    info = ModelInfo(name=entry.name, state=entry.state, reason=entry.reason)
    if entry.source is not None:
        config = entry.source.config
        info = info.model_copy(
            update={
                "version": entry.source.version,
                "versions": sorted(config.versions),
                "card": config.card,
                "input": config.input,
                "output": config.output,
                "preprocessing": config.preprocessing,
                "batching": entry.batching,
                "weights": config.versions[entry.source.version].weights,
            }
        )
    if entry.engine is not None:
        info.providers = entry.engine.providers_in_use
        info.bucket_sizes = entry.engine.bucket_sizes
        info.cuda_graph_batch_sizes = entry.engine.cuda_graph_batch_sizes
    if entry.batcher is not None:
        info.queue_depth = entry.batcher.queue_depth
    return info


@router.get("/v1/models", response_model=ModelList)
async def list_models(state: Annotated[ServiceState, Depends(get_state)]) -> ModelList:
    return ModelList(models=[model_info(entry) for entry in state.models.values()])


@router.get("/v1/models/{name}", response_model=ModelInfo, responses={404: {"model": ErrorResponse}})
async def get_model(name: str, state: Annotated[ServiceState, Depends(get_state)]) -> ModelInfo:
    return model_info(state.get(name))
