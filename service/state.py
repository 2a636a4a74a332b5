"""The one typed object the lifespan keeps on `app.state.service`: every resource the front end uses."""

from dataclasses import dataclass, field

from fastapi import Request

from service.config import Settings
from service.frontend.decode_pool import DecodePool
from service.frontend.preprocess import Preprocessor
from service.metrics import Metrics
from service.status import ModelBackend, ModelStatus


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    decode_pool: DecodePool
    models: ModelBackend  # in this process, or the engine process's
    _preprocessors: dict[tuple[str, int], Preprocessor] = field(default_factory=dict)

    def preprocessor(self, status: ModelStatus) -> Preprocessor:
        """The decoder for a ready model's version, made once from its config."""
        key = (status.name, status.source.version)
        if key not in self._preprocessors:
            self._preprocessors[key] = Preprocessor.for_model(status.source.config, self.settings)
        return self._preprocessors[key]


async def get_state(request: Request) -> ServiceState:
    """FastAPI dependency: the state the lifespan built. Async, because FastAPI runs a plain `def`
    dependency in its thread pool: a thread hop per request for one attribute lookup."""
    return request.app.state.service
