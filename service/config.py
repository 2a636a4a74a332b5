"""Service settings, read from the environment (`SERVE_*`) and overridable by `python -m service` flags."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelrepo.versions import VersionPolicy

MiB = 1024 * 1024


def _split(value: object) -> object:
    """Accept "a,b,c" (the environment) as well as a list (Python)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVE_", protected_namespaces=(), frozen=True)

    # Where models come from.
    model_repository: Path = Field(Path("model_repository"), description="Model repository directory.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated model names to serve; empty serves all in the repository."
    )
    model_control: Literal["none", "poll", "explicit"] = Field(
        "none",
        description="none: load at start only; poll: follow the repository every SERVE_POLL_INTERVAL_S; "
        "explicit: load and unload on request (POST /v1/repository/models/NAME/load), SERVE_MODELS at start.",
    )
    poll_interval_s: float = Field(5.0, gt=0, description="How often SERVE_MODEL_CONTROL=poll reads the repository.")
    version_policy: str | None = Field(
        None,
        description="Versions served, overriding config.json's: latest, latest:N, all or specific:V1,V2.",
    )
    repository_token: str | None = Field(
        None,
        description="If set, load and unload need the header 'Authorization: Bearer TOKEN'.",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["tensorrt", "cuda", "cpu"],
        description="ONNX Runtime execution providers in order of preference; those not installed are skipped.",
    )
    device_id: int = Field(0, ge=0, description="GPU index for the CUDA and TensorRT providers.")
    trt_fp16: bool = Field(True, description="Let TensorRT build fp16 kernels.")
    trt_cache_dir: Path = Field(Path(".trt_cache"), description="TensorRT engine and timing cache directory.")
    trt_workspace_mb: int = Field(4096, ge=1, description="TensorRT builder workspace.")
    trt_builder_optimization_level: int = Field(
        3, ge=0, le=5, description="TensorRT builder effort, 0 to 5: higher builds slower, may run faster."
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE", description="How the CUDA provider picks convolution algorithms (once per shape)."
    )
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = Field(
        "kNextPowerOfTwo", description="How the CUDA provider's memory arena grows."
    )
    gpu_mem_limit_mb: int = Field(0, ge=0, description="Cap on the CUDA provider's arena; 0 is no cap.")
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime intra-op threads per session; 0: config.json's instances, else the usable cores "
        "shared between a model's sessions (one session: ONNX Runtime chooses).",
    )
    intra_op_spinning: bool = Field(
        False, description="Let ONNX Runtime's threads busy-wait for work; on a small CPU host it starves decoding."
    )
    io_binding: bool = Field(
        True, description="On a GPU, bind inputs and outputs: pinned staging reused, one copy each way per batch."
    )
    cuda_graphs: bool = Field(
        False,
        description="On a GPU with I/O binding, capture a CUDA graph per warm-up batch size and pad batches up to "
        "the nearest; needs every node on the GPU (else the session starts without).",
    )
    warmup: bool = Field(
        True, description="Before ready, run each model at every batch size it will see (GPU) or at batch 1 (CPU)."
    )

    opentelemetry: bool = Field(
        False,
        description="FastAPI's OpenTelemetry spans and metrics, through the providers configured in the process; "
        "off, no request pays FastAPI's per-request check for them (5% of a refused request's CPU).",
    )

    # Processes (service/supervisor.py).
    workers: int = Field(
        0,
        ge=0,
        description="Front-end processes (HTTP and decoding) in front of one engine process; 1 serves in one "
        "process; 0 chooses from the usable cores (README, Processes).",
    )
    shm_slots: int = Field(
        128,
        ge=1,
        description="Images each front end may have queued or running in the engine (workers >= 2): slots of its "
        "shared-memory segment, each one image of the largest model input; none free gives 429.",
    )

    # HTTP.
    host: str = Field("0.0.0.0", description="Address to bind.")
    port: int = Field(8000, ge=1, le=65535, description="Port to bind.")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="Port of the Open Inference Protocol's gRPC service; 0 turns gRPC off."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins browsers may call the API from (CORS), `*` for any; empty: CORS off.",
    )
    access_log: bool = Field(False, description="Log a line per request; Prometheus metrics count them either way.")
    max_connections: int = Field(
        1024, ge=1, description="Open connections; a new one beyond this gets 503 when its first request arrives."
    )
    max_header_bytes: int = Field(32 * 1024, ge=1024, description="Request line and headers, per request (431 above).")
    max_header_count: int = Field(100, ge=1, description="Headers per request (431 above).")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time for a request's headers to arrive, from connecting or the last answer (408)."
    )
    min_body_rate: float = Field(
        16 * 1024, ge=0, description="Bytes per second a body must average once SERVE_BODY_GRACE_S has passed (408)."
    )
    body_grace_s: float = Field(5.0, ge=0, description="Time a body may take before SERVE_MIN_BODY_RATE applies.")
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="An idle keep-alive connection is closed after this.")
    max_request_bytes: int = Field(16 * MiB, ge=1, description="Largest request body accepted (413 above).")
    max_images_per_request: int = Field(64, ge=1, description="Most images in one request (413 above).")
    default_top_k: int = Field(5, ge=1, description="Classes returned per image when the request has no top_k.")
    max_top_k: int = Field(100, ge=1, description="Largest top_k a request may ask for (422 above).")
    request_timeout_ms: float = Field(30_000, gt=0, description="Default deadline per request; timeout_ms overrides.")
    max_request_timeout_ms: float = Field(120_000, gt=0, description="Largest timeout_ms a request may ask for (422).")

    # Images: every limit is checked from the header, before a pixel is decoded (413 above each).
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest width*height as stored.")
    max_decoded_pixels: int = Field(
        16_777_216,
        ge=1,
        description="Largest width*height as decoded: a JPEG is decoded at 1/2-1/8 scale when large, "
        "PNG, WebP, GIF and BMP always in full.",
    )
    max_image_aspect_ratio: float = Field(20.0, ge=1, description="Largest long side / short side.")
    decode_workers: int | None = Field(
        None,
        ge=1,
        description="Threads decoding small images (large ones get half as many); unset: one per usable core.",
    )
    max_decode_backlog: int = Field(
        256, ge=1, description="Images waiting or decoding in the small-image lane; a request beyond gets 429."
    )
    large_image_pixels: int = Field(
        4_194_304, ge=1, description="Images decoding to more pixels than this use the large-image lane."
    )
    max_large_decode_backlog: int | None = Field(
        None,
        ge=1,
        description="Images waiting or decoding in the large-image lane (429 beyond); unset: 2 per thread.",
    )

    # Dynamic batching: None keeps the value in the model's config.json.
    max_batch_size: int | None = Field(None, ge=1, description="Override config.json's max_batch_size.")
    max_queue_delay_ms: float | None = Field(None, ge=0, description="Override config.json's max_queue_delay_ms.")
    preferred_batch_sizes: Annotated[list[int] | None, NoDecode] = Field(
        None, description="Override config.json's preferred_batch_sizes (comma-separated)."
    )
    max_queue_size: int | None = Field(
        None, ge=1, description="Override config.json's max_queue_size (with an objective: only a hard cap)."
    )
    latency_slo_ms: float | None = Field(
        None,
        ge=0,
        description="Latency objective per image, queued to answered: batch sizes, waits and admission (429 "
        "objective_unreachable) follow from measured batch latencies. Overrides config.json's latency_slo_ms; "
        "0 turns it off (the fixed rules: max_queue_delay_ms, preferred_batch_sizes).",
    )
    batches_in_flight: int | None = Field(
        None,
        ge=1,
        description="Batches per model running at once; unset: one per session on CPU, two on a GPU (one forms "
        "while one runs).",
    )
    instances: int | None = Field(
        None,
        ge=1,
        description="Override config.json's instances: ONNX Runtime sessions per model, each running one batch at "
        "a time on its share of the cores (`make tune` measures which count is best).",
    )

    @field_validator("version_policy")
    @classmethod
    def _version_policy(cls, text: str | None) -> str | None:
        return None if text is None else str(VersionPolicy.parse(text))

    @field_validator("repository_token")
    @classmethod
    def _token(cls, token: str | None) -> str | None:
        return token or None  # SERVE_REPOSITORY_TOKEN= (empty) is no token, not the token ""

    @field_validator("models", "providers", "preferred_batch_sizes", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(size < 1 for size in value):
            raise ValueError(f"preferred_batch_sizes must be positive, got {value}")
        return value


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def settings_markdown() -> str:
    """The README's settings table, generated from the fields so the two cannot disagree."""
    rows = ["| environment variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        if isinstance(default, list):
            default = ",".join(map(str, default))
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `SERVE_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_markdown())
