"""Request and response bodies (pydantic models only)."""

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field

from modelrepo.schema import Preprocessing, TensorSpec, Weights


class Base64Images(BaseModel):
    """`POST /v1/classify` with Content-Type application/json."""

    images: list[str] = Field(min_length=1, description="Images as base64 (a data: URL prefix is accepted).")


class Prediction(BaseModel):
    index: int
    label: str
    probability: float

    @classmethod
    def top_k(cls, logits: np.ndarray, labels: Sequence[str], k: int) -> list["Prediction"]:
        """Softmax over one row of logits (shifted by its max, so it cannot overflow), highest k first."""
        z = logits.astype(np.float64) - np.max(logits)
        p = np.exp(z)
        p /= p.sum()
        k = min(k, p.size)
        top = np.argpartition(-p, k - 1)[:k]
        top = top[np.argsort(-p[top], kind="stable")]
        return [cls(index=int(i), label=labels[i], probability=float(p[i])) for i in top]


class Timing(BaseModel):
    decode_ms: float
    queue_ms: float
    inference_ms: float


class ImageResult(BaseModel):
    predictions: list[Prediction]
    timing: Timing
    batch_size: int = Field(description="Images in the batch this one ran in.")


class ClassifyResponse(BaseModel):
    model: str
    version: int = Field(description="The version that answered.")
    weights: Weights | None = Field(description="Its weights' provenance (null the instant a new version takes over).")
    results: list[ImageResult]


class ModelState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"  # a version answering what it accepted before it is released
    UNAVAILABLE = "unavailable"  # unloaded, or not in the version policy
    FAILED = "failed"


class BatchingInfo(BaseModel):
    """Batching in effect: config.json's values with the environment's overrides applied."""

    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_ms: float
    max_queue_size: int
    batches_in_flight: int
    latency_slo_ms: float | None = None  # the objective; None: fixed batching rules
    instances: int = 1  # ONNX Runtime sessions, each running one batch at a time
    intra_op_threads: int = 0  # per session; 0: ONNX Runtime's choice


class ModelInfo(BaseModel):
    name: str
    state: ModelState
    reason: str | None = None
    version: int | None = None
    versions: list[int] = []
    card: dict | None = None
    input: TensorSpec | None = None
    output: TensorSpec | None = None
    preprocessing: Preprocessing | None = None
    batching: BatchingInfo | None = None
    providers: list[str] = []
    bucket_sizes: list[int] = []  # on a GPU, the batch sizes batches are padded up to (all warmed up)
    cuda_graph_batch_sizes: list[int] = []  # buckets replayed from a captured CUDA graph
    weights: Weights | None = None
    queue_depth: int = 0


class RepositoryEntry(BaseModel):
    """One version of one model in `GET /v1/repository/index` (a model with no version yet: version null)."""

    name: str
    version: int | None = None
    state: ModelState
    reason: str | None = None
    default: bool = Field(False, description="Answers requests that name no version: the newest ready one.")
    sessions: int = Field(0, description="ONNX Runtime sessions it holds.")
    weights_bytes: int = Field(0, description="Weights it holds: its ONNX file's size once per session.")


class RepositoryIndex(BaseModel):
    models: list[RepositoryEntry]


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: str  # "ok", or "device_failed" (503): the process must be restarted
    reasons: dict[str, str] = {}


class Readiness(BaseModel):
    ready: bool
    models: dict[str, ModelState]
    reasons: dict[str, str] = {}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class CompareResult(BaseModel):
    """One model's answer to `POST /v1/compare`: its predictions, or why it has none (`error`)."""

    model: str
    state: ModelState
    version: int | None = None
    weights: Weights | None = None
    predictions: list[Prediction] = []
    timing: Timing | None = None
    batch_size: int | None = None
    error: ErrorDetail | None = None


class CompareResponse(BaseModel):
    results: list[CompareResult]
