"""A model's `config.json`, as pydantic models: written by export (and `make tune --write`), read by the service.
Every rule that relates two fields is a validator here, so a config that parses is one the service can serve.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelrepo.layout import LABELS_FILE, is_model_name, version_file
from modelrepo.versions import DEFAULT_VERSION_POLICY, VersionPolicy

SCHEMA_VERSION = 1
# Each image's time from queued to answered that the service keeps under, batching and refusing accordingly: an
# interactive answer with room to batch. Export writes it; SERVE_LATENCY_SLO_MS or config.json's value change it.
DEFAULT_LATENCY_SLO_MS = 250.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    dtype: Literal["float32", "float16", "uint8"]
    shape: tuple[int, ...]  # -1 marks the dynamic batch dimension
    layout: Literal["NCHW", "NC"] = "NCHW"


class Preprocessing(_Strict):
    """How an image becomes the input tensor: resize short side, center crop, scale, normalize."""

    color_mode: Literal["RGB", "L"]
    resize_size: int = Field(gt=0)
    crop_size: tuple[int, int]  # (H, W)
    interpolation: Literal["nearest", "bilinear", "bicubic"]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # True when the graph takes uint8 pixels and normalizes itself (the host ships 1/4 of the bytes).
    fused: bool = False

    @model_validator(mode="after")
    def _check(self):
        channels = 3 if self.color_mode == "RGB" else 1
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(f"mean/std need {channels} values for {self.color_mode}")
        if self.resize_size < min(self.crop_size):
            raise ValueError(f"resize_size {self.resize_size} is smaller than crop_size {self.crop_size}")
        return self


class Batching(_Strict):
    """Dynamic-batching defaults; the service's environment may override each."""

    max_batch_size: int = Field(32, ge=1)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ms: float = Field(2.0, ge=0)
    max_queue_size: int = Field(256, ge=1)
    # Each image's time from queued to answered to keep under: batch sizes, waits and admission then follow
    # from measured batch latencies (service/engine/policy.py); None: the fixed rules above.
    latency_slo_ms: float | None = Field(None, gt=0)


class Instances(_Strict):
    """Sessions per model, after Triton's instance_group: up to `count` batches run at once, one per session,
    each session with `intra_op_threads` threads (0: the usable cores shared evenly; one session: ONNX Runtime
    chooses)."""

    count: int = Field(1, ge=1)
    intra_op_threads: int = Field(0, ge=0)


class TuningPoint(_Strict):
    """One configuration as `make tune` ran it: `instances` sessions, each running batches of `batch_size`."""

    batch_size: int
    instances: int
    intra_op_threads: int
    images_per_s: float
    p50_ms: float  # one batch, start to end
    p99_ms: float


class Tuning(_Strict):
    """What `make tune` measured, on which machine and provider, and for which objective it chose
    the batching and instances above; the service warns when it runs on another machine."""

    version: int  # the version measured, and its file's sha256: a re-export (new weights, int8) needs new figures
    sha256: str
    machine: str  # e.g. "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz, 2 cores"
    provider: str  # e.g. "CPUExecutionProvider"
    onnxruntime: str
    measured_at: str  # ISO 8601, UTC
    latency_slo_ms: float
    points: tuple[TuningPoint, ...]


class Weights(_Strict):
    """Where the weights came from, so nobody mistakes random weights for a trained model."""

    source: Literal["imagenet", "checkpoint", "random"]
    uri: str | None = None  # checkpoint URL or path
    sha256: str | None = None
    accuracy: dict[str, float] = {}  # e.g. {"imagenet_top1": 80.858} or {"digits_test": 98.9}


class Parity(_Strict):
    """ONNX Runtime against PyTorch on the same input, measured at export."""

    max_abs_diff_softmax: float
    max_rel_diff_logits: float
    top5_agreement: float
    tolerance: float
    passed: bool


class Quantization(_Strict):
    """How an INT8 version was made, and how closely it agrees with the fp32 graph on inputs held out from
    calibration, measured at export."""

    method: str
    calibration: str  # what it was calibrated on
    calibration_inputs: int  # photos count twice: as they are and mirrored
    held_out_inputs: int
    top1_agreement: float  # the same top class as fp32
    top5_agreement: float  # share of fp32's top 5 that int8's top 5 has
    max_rel_diff_logits: float  # largest ||int8 - fp32|| / ||fp32|| of an input's logits (L2), over the held-out
    accuracy: dict[str, float] = {}  # where the held-out inputs have labels, e.g. {"test_fp32": .., "test_int8": ..}


class Version(_Strict):
    file: str  # relative to the model's folder, e.g. "1/model.onnx"
    sha256: str
    precision: Literal["fp32", "fp16", "int8"]
    weights: Weights
    parity: Parity | None = None  # ONNX Runtime against PyTorch (fp32, fp16)
    quantization: Quantization | None = None  # INT8 against fp32
    opset: int
    exporter: str  # e.g. "torch 2.13.0"
    exported_at: str  # ISO 8601, UTC


class ModelSpec(_Strict):
    """Everything about a model but its versions: what export knows before it writes one."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    card: dict  # models.card.ModelCard as a dict: family, year, paper, ...
    input: TensorSpec
    output: TensorSpec
    preprocessing: Preprocessing
    labels_file: Literal["labels.txt"] = LABELS_FILE
    batching: Batching = Batching()
    instances: Instances = Instances()
    tuning: Tuning | None = None  # set by `make tune ... --write`
    version_policy: str = DEFAULT_VERSION_POLICY  # modelrepo/versions.py; SERVE_VERSION_POLICY overrides

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not is_model_name(name):
            raise ValueError(f"{name!r} is not a valid model name (letters, digits, '_', '-', '.')")
        return name

    @field_validator("version_policy")
    @classmethod
    def _version_policy(cls, text: str) -> str:
        return str(VersionPolicy.parse(text))

    @model_validator(mode="after")
    def _check_tensors(self):
        pre, spec = self.preprocessing, self.input
        expected = (3 if pre.color_mode == "RGB" else 1, *pre.crop_size)
        if len(spec.shape) != 4 or tuple(spec.shape[1:]) != expected:
            raise ValueError(f"input shape {spec.shape} does not match preprocessing (N, {expected})")
        if pre.fused != (spec.dtype == "uint8"):
            raise ValueError(f"preprocessing fused={pre.fused} does not match input dtype {spec.dtype}")
        if len(self.output.shape) != 2 or self.output.shape[1] < 1:
            raise ValueError(f"output shape {self.output.shape} is not (N, num_classes)")
        return self


class ModelConfig(ModelSpec):
    versions: dict[int, Version]

    @model_validator(mode="after")
    def _check_versions(self):
        if not self.versions:
            raise ValueError("lists no versions")
        for number, entry in self.versions.items():
            if number < 1 or entry.file != version_file(number):
                raise ValueError(f"version {number} must be numbered from 1 and live in {number}/model.onnx")
        return self

    @property
    def latest_version(self) -> int:
        return max(self.versions)
