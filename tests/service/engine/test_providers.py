from pathlib import Path

import onnxruntime as ort
import pytest

from modelrepo.schema import TensorSpec
from service.config import Settings
from service.engine import providers as providers_module
from service.engine.providers import (
    CPU,
    GpuOptions,
    ProviderSpec,
    preload_gpu_libraries,
    provider_specs,
    resolve_providers,
)

TRT, CUDA = "TensorrtExecutionProvider", "CUDAExecutionProvider"
INPUT = TensorSpec(name="input", dtype="float32", shape=(-1, 3, 16, 16))


def test_gpu_options_come_from_settings_and_default_alike():
    """GpuOptions keeps the engine usable without Settings; each field is read from the setting of its name."""
    assert GpuOptions.from_settings(Settings()) == GpuOptions()
    changed = GpuOptions.from_settings(Settings(device_id=3, cuda_graphs=True, gpu_mem_limit_mb=512))
    assert (changed.device_id, changed.cuda_graphs, changed.gpu_mem_limit_mb) == (3, True, 512)


def test_resolve_keeps_available_providers_in_order():
    assert resolve_providers(["tensorrt", "cuda", "cpu"], [CPU]) == [CPU]
    assert resolve_providers(["cuda", "tensorrt", "cpu"], [TRT, CUDA, CPU]) == [CUDA, TRT, CPU]
    assert resolve_providers(["CUDAExecutionProvider", "cpu"], [CUDA, CPU]) == [CUDA, CPU]


def test_resolve_falls_back_to_cpu_when_nothing_asked_for_is_installed():
    assert resolve_providers(["tensorrt", "cuda"], [CPU]) == [CPU]


def test_resolve_rejects_unknown_names():
    with pytest.raises(ValueError, match="tpu"):
        resolve_providers(["tpu"], [CPU])


def test_provider_options_are_data():
    gpu = GpuOptions(device_id=1, trt_cache_dir=Path("/cache"), trt_workspace_mb=2, trt_builder_optimization_level=5)
    trt, cuda, cpu = provider_specs([TRT, CUDA, CPU], input_spec=INPUT, max_batch_size=32, opt_batch_size=8, gpu=gpu)
    assert trt.name == TRT
    assert trt.options["trt_fp16_enable"] == "True"
    assert trt.options["trt_max_workspace_size"] == str(2 * 1024 * 1024)
    assert trt.options["trt_builder_optimization_level"] == "5"
    assert trt.options["trt_engine_cache_enable"] == "True"
    assert trt.options["trt_engine_cache_path"] == trt.options["trt_timing_cache_path"] == "/cache"
    assert trt.options["trt_profile_min_shapes"] == "input:1x3x16x16"
    assert trt.options["trt_profile_opt_shapes"] == "input:8x3x16x16"
    assert trt.options["trt_profile_max_shapes"] == "input:32x3x16x16"
    assert trt.options["device_id"] == "1"
    assert cuda == ProviderSpec(
        CUDA, {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE", "arena_extend_strategy": "kNextPowerOfTwo"}
    )
    assert cpu == ProviderSpec(CPU, {})


def test_cuda_memory_cap_only_when_set():
    (capped,) = provider_specs(
        [CUDA], input_spec=INPUT, max_batch_size=4, opt_batch_size=4, gpu=GpuOptions(gpu_mem_limit_mb=512)
    )
    assert capped.options["gpu_mem_limit"] == str(512 * 1024 * 1024)
    (uncapped,) = provider_specs([CUDA], input_spec=INPUT, max_batch_size=4, opt_batch_size=4)
    assert "gpu_mem_limit" not in uncapped.options


def test_cuda_graphs_are_asked_of_both_gpu_providers_only_when_set():
    on = GpuOptions(cuda_graphs=True)
    trt, cuda = provider_specs([TRT, CUDA], input_spec=INPUT, max_batch_size=4, opt_batch_size=4, gpu=on)
    assert trt.options["trt_cuda_graph_enable"] == "True" and cuda.options["enable_cuda_graph"] == "1"
    for spec in provider_specs([TRT, CUDA], input_spec=INPUT, max_batch_size=4, opt_batch_size=4):
        assert not spec.options.keys() & {"trt_cuda_graph_enable", "enable_cuda_graph"}


@pytest.mark.parametrize(("providers", "loads"), [([CUDA, CPU], 1), ([TRT], 1), ([CPU], 0)])
def test_gpu_libraries_are_preloaded_once_and_only_for_a_gpu_provider(monkeypatch, providers, loads):
    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    providers_module._preload_cuda.cache_clear()
    preload_gpu_libraries(providers)
    preload_gpu_libraries(providers)
    providers_module._preload_cuda.cache_clear()
    assert len(calls) == loads
