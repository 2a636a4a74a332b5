"""Which execution providers a session asks for, and with what options: plain data (`ProviderSpec`), so what
the service asks of TensorRT and CUDA is testable on a machine without either."""

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from modelrepo.schema import TensorSpec
from service.config import Settings

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU = PROVIDER_NAMES["cpu"]
# The provider option that captures CUDA graphs; a session refuses it unless every node runs on the GPU.
GRAPH_OPTIONS = {PROVIDER_NAMES["tensorrt"]: "trt_cuda_graph_enable", PROVIDER_NAMES["cuda"]: "enable_cuda_graph"}


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # ONNX Runtime's name, e.g. "CUDAExecutionProvider"
    options: dict[str, str] = field(default_factory=dict)


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """Short names ("tensorrt", "cuda", "cpu") or full names -> the available ones, in the order asked.

    CPU is always the last resort: a service configured for GPUs still starts (and says so) without one.
    """
    resolved = []
    for name in requested:
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full not in PROVIDER_NAMES.values() and full not in available:
            raise ValueError(f"unknown execution provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
        if full in available and full not in resolved:
            resolved.append(full)
    if not resolved:
        log.warning("none of the providers %s is available (have %s); using CPU", list(requested), list(available))
        resolved = [CPU]
    return resolved


@functools.cache
def _preload_cuda() -> None:
    ort.preload_dlls()


def preload_gpu_libraries(providers: Sequence[str]) -> None:
    """Load CUDA and cuDNN from the pip packages that onnxruntime-gpu[cuda,cudnn] installs (nvidia-*), once,
    before the first GPU session: without it the CUDA provider finds no libcudart outside a CUDA image and
    ONNX Runtime falls back to CPU. Harmless where the libraries are on the loader's path already."""
    if any(p != CPU for p in providers) and hasattr(ort, "preload_dlls"):
        _preload_cuda()


def _shape(input_name: str, spec: TensorSpec, batch: int) -> str:
    return f"{input_name}:" + "x".join(str(batch if d == -1 else d) for d in spec.shape)


@dataclass(frozen=True)
class GpuOptions:
    """What the TensorRT and CUDA providers are asked for (Settings validates each; see service/config.py)."""

    device_id: int = 0
    trt_fp16: bool = True
    trt_cache_dir: Path = Path(".trt_cache")
    trt_workspace_mb: int = 4096
    trt_builder_optimization_level: int = 3
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cuda_arena_extend_strategy: str = "kNextPowerOfTwo"
    gpu_mem_limit_mb: int = 0  # 0: no limit
    cuda_graphs: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> "GpuOptions":
        return cls(
            device_id=settings.device_id,
            trt_fp16=settings.trt_fp16,
            trt_cache_dir=settings.trt_cache_dir,
            trt_workspace_mb=settings.trt_workspace_mb,
            trt_builder_optimization_level=settings.trt_builder_optimization_level,
            cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
            cuda_arena_extend_strategy=settings.cuda_arena_extend_strategy,
            gpu_mem_limit_mb=settings.gpu_mem_limit_mb,
            cuda_graphs=settings.cuda_graphs,
        )


def provider_specs(
    providers: Sequence[str],
    *,
    input_spec: TensorSpec,
    max_batch_size: int,
    opt_batch_size: int,
    gpu: GpuOptions = GpuOptions(),
) -> list[ProviderSpec]:
    """The options each provider gets. TensorRT: one optimization profile from batch 1 to max_batch_size,
    tuned for opt_batch_size, with engine and timing caches so a restart loads instead of building."""
    specs = []
    for name in providers:
        if name == PROVIDER_NAMES["tensorrt"]:
            options = {
                "device_id": str(gpu.device_id),
                "trt_fp16_enable": str(gpu.trt_fp16),
                "trt_max_workspace_size": str(gpu.trt_workspace_mb * 1024 * 1024),
                "trt_builder_optimization_level": str(gpu.trt_builder_optimization_level),
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(gpu.trt_cache_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(gpu.trt_cache_dir),
                "trt_profile_min_shapes": _shape(input_spec.name, input_spec, 1),
                "trt_profile_opt_shapes": _shape(input_spec.name, input_spec, opt_batch_size),
                "trt_profile_max_shapes": _shape(input_spec.name, input_spec, max_batch_size),
            }
            if gpu.cuda_graphs:
                options[GRAPH_OPTIONS[name]] = "True"
        elif name == PROVIDER_NAMES["cuda"]:
            options = {
                "device_id": str(gpu.device_id),
                "cudnn_conv_algo_search": gpu.cudnn_conv_algo_search,
                "arena_extend_strategy": gpu.cuda_arena_extend_strategy,
            }
            if gpu.gpu_mem_limit_mb:
                options["gpu_mem_limit"] = str(gpu.gpu_mem_limit_mb * 1024 * 1024)
            if gpu.cuda_graphs:
                options[GRAPH_OPTIONS[name]] = "1"
        else:
            options = {}
        specs.append(ProviderSpec(name, options))
    return specs
