"""The one typed object the lifespan keeps on `app.state.service`: every resource the app owns."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import Request

from service.batcher import DynamicBatcher
from service.config import Settings
from service.decode_pool import DecodePool
from service.engine import Engine
from service.errors import ModelNotFound, ModelNotReady, shorten
from service.metrics import Metrics
from service.preprocess import Preprocessor
from service.repository import ModelSource
from service.schemas import BatchingInfo, ModelState

MAX_NAME_SHOWN = 64


@dataclass
class ModelEntry:
    name: str
    state: ModelState = ModelState.LOADING
    reason: str | None = None  # why it failed
    source: ModelSource | None = None
    batching: BatchingInfo | None = None
    preprocessor: Preprocessor | None = None
    engine: Engine | None = None
    batcher: DynamicBatcher | None = None
    executor: ThreadPoolExecutor | None = None  # runs this model's batches
    load_seconds: dict[str, float] = field(default_factory=dict)  # "session", "warmup"


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    decode_pool: DecodePool
    models: dict[str, ModelEntry] = field(default_factory=dict)

    def get(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            available = ", ".join(sorted(self.models)) or "none"
            shown = shorten(name, MAX_NAME_SHOWN)  # never echo a 60 kB URL
            raise ModelNotFound(f"no model named {shown!r}; available: {available}")
        return entry

    def ready(self, name: str) -> ModelEntry:
        entry = self.get(name)
        if entry.state is not ModelState.READY:
            detail = f": {entry.reason}" if entry.reason else ""
            raise ModelNotReady(f"model {name!r} is {entry.state.value}{detail}")
        return entry

    @property
    def all_ready(self) -> bool:
        models = self.models.values()
        return bool(self.models) and all(e.state is ModelState.READY for e in models) and not self.device_errors

    @property
    def device_errors(self) -> dict[str, str]:
        """Models whose GPU failed (service/engine.py, `is_device_failure`): only a restart brings them back."""
        return {name: e.engine.device_error for name, e in self.models.items() if e.engine and e.engine.device_error}


async def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the state the lifespan built. Async, because FastAPI runs a plain `def`
    dependency in its thread pool: a thread hop per request for one attribute lookup."""
    return request.app.state.service
