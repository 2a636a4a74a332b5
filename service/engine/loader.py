"""A model made ready to run: its session built on the chosen providers, warmed up, and its batcher started,
as one `LoadedModel`, whole or not at all. The batching policy (config.json's values, the settings' overrides,
what a GPU changes) lives here too."""

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import onnxruntime as ort

from modelrepo.read import ModelSource, load_source
from modelrepo.schema import Batching, Instances, ModelConfig
from service.config import Settings, usable_cores
from service.engine.batcher import BatchObserver, DynamicBatcher
from service.engine.instances import InstanceGroup, this_machine
from service.engine.providers import (
    CPU,
    GpuOptions,
    ProviderSpec,
    preload_gpu_libraries,
    provider_specs,
    resolve_providers,
)
from service.engine.session import Engine
from service.schemas import BatchingInfo

log = logging.getLogger(__name__)

ONE_INSTANCE = Instances()


def effective_batching(
    defaults: Batching, settings: Settings, *, on_gpu: bool = False, instances: Instances = ONE_INSTANCE
) -> BatchingInfo:
    """config.json's batching and instances with each setting that is not None overriding it. Unless set, one
    batch runs at a time per session on CPU (another would only compete for its cores) and two on a GPU, so the
    host forms and copies the next batch while the device runs one. Several sessions share the usable cores."""
    count = settings.instances or instances.count
    # config.json's threads go with its count: SERVE_INSTANCES alone shares the cores anew.
    threads = settings.intra_op_threads or (0 if settings.instances else instances.intra_op_threads)
    if not threads and count > 1:
        threads = max(1, usable_cores() // count)
    max_batch = settings.max_batch_size or defaults.max_batch_size
    preferred = settings.preferred_batch_sizes
    if preferred is None:
        preferred = defaults.preferred_batch_sizes
    delay = defaults.max_queue_delay_ms if settings.max_queue_delay_ms is None else settings.max_queue_delay_ms
    return BatchingInfo(
        max_batch_size=max_batch,
        preferred_batch_sizes=sorted({n for n in preferred if n <= max_batch}),
        max_queue_delay_ms=delay,
        max_queue_size=settings.max_queue_size or defaults.max_queue_size,
        batches_in_flight=settings.batches_in_flight or count * (2 if on_gpu else 1),
        latency_slo_ms=defaults.latency_slo_ms if settings.latency_slo_ms is None else settings.latency_slo_ms or None,
        instances=count,
        intra_op_threads=threads,
    )


def warmup_batch_sizes(batching: BatchingInfo, on_gpu: bool = True) -> list[int]:
    """The batch sizes run before ready. On a GPU these are also the buckets every batch is padded up to
    (service/engine/io_binding.py): 1, the preferred sizes, the powers of two and the max batch size, so
    padding at most doubles a batch while cuDNN's algorithm choices (per shape), TensorRT profiles and CUDA
    graphs are all made before traffic. On CPU batch 1 only: a first run at a new size costs about what later
    ones do, and warming every size delayed resnet50's readiness by 4-6 s on 2 cores (docs/BENCHMARKS.md,
    start-up)."""
    if (
        not on_gpu
    ):  # with an objective, 2 and 4 too: the policy starts from measured latencies (service/engine/policy.py)
        return [n for n in (1, 2, 4) if n <= batching.max_batch_size] if batching.latency_slo_ms else [1]
    powers = (2**i for i in range(batching.max_batch_size.bit_length()))
    return sorted({1, *batching.preferred_batch_sizes, *powers, batching.max_batch_size})


def session_providers(
    config: ModelConfig, settings: Settings, max_batch_size: int, opt_batch_size: int
) -> list[ProviderSpec]:
    """The providers the settings ask for that this ONNX Runtime has, with their options; the GPU
    libraries loaded if one of them needs them."""
    providers = resolve_providers(settings.providers, ort.get_available_providers())
    preload_gpu_libraries(providers)
    return provider_specs(
        providers,
        input_spec=config.input,
        max_batch_size=max_batch_size,
        opt_batch_size=opt_batch_size,
        gpu=GpuOptions.from_settings(settings),
    )


def build_engine(source: ModelSource, settings: Settings, batching: BatchingInfo) -> Engine:
    """One session for one model, with the providers and thread options the settings and batching ask for."""
    config = source.config
    opt_batch = max(batching.preferred_batch_sizes, default=batching.max_batch_size)
    specs = session_providers(config, settings, batching.max_batch_size, opt_batch)
    return Engine(
        source.onnx_path,
        input_spec=config.input,
        output_spec=config.output,
        providers=specs,
        intra_op_threads=batching.intra_op_threads,
        spinning=settings.intra_op_spinning,
        io_binding=settings.io_binding and any(p.name != CPU for p in specs),
        device_id=settings.device_id,
        bucket_sizes=warmup_batch_sizes(batching),
    )


def build_instances(source: ModelSource, settings: Settings, batching: BatchingInfo) -> InstanceGroup:
    """`batching.instances` sessions of one model (service/engine/instances.py), each taking its share of the
    batches in flight."""
    runs_each = math.ceil(batching.batches_in_flight / batching.instances)
    return InstanceGroup.build(batching.instances, lambda: build_engine(source, settings, batching), runs_each)


def check_tuning(source: ModelSource, provider: str) -> None:
    """Warn when config.json's batching was tuned (`make tune --write`) on another machine or provider."""
    tuning = source.config.tuning
    if tuning is None:
        return
    if (tuning.machine, tuning.provider) != (this_machine(), provider):
        where = f"on {tuning.machine} ({tuning.provider}), runs on {this_machine()} ({provider})"
    elif tuning.sha256 != source.config.versions[source.version].sha256:
        where = f"with version {tuning.version}, serves version {source.version}"
    else:
        return
    log.warning("model %r was tuned %s: run `make tune MODEL=%s` again", source.name, where, source.name)


def _build_and_warm(
    name: str, version: int | None, settings: Settings
) -> tuple[ModelSource, BatchingInfo, InstanceGroup, dict[int, float], dict[str, float]]:
    """Blocking (run it in a thread): read the repository, build the sessions, warm them up."""
    source = load_source(settings.model_repository, name, version)
    config = source.config
    batching = effective_batching(config.batching, settings, instances=config.instances)
    started = time.perf_counter()
    engine = build_instances(source, settings, batching)
    built = time.perf_counter()
    on_gpu = engine.providers_in_use[0] != CPU  # what the session really got, after any fallback
    check_tuning(source, engine.providers_in_use[0])
    if on_gpu:
        batching = effective_batching(config.batching, settings, on_gpu=True, instances=config.instances)
    latencies = {}
    try:
        if settings.warmup:
            latencies = engine.warmup(warmup_batch_sizes(batching, on_gpu))
    except BaseException:
        engine.close()
        raise
    return source, batching, engine, latencies, {"session": built - started, "warmup": time.perf_counter() - built}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready to take images: its source on disk, the batching in effect, the sessions, the batcher
    feeding them and the threads running its batches."""

    source: ModelSource
    batching: BatchingInfo
    engine: InstanceGroup
    batcher: DynamicBatcher
    executor: ThreadPoolExecutor
    load_seconds: dict[str, float]  # "session", "warmup"
    # The weights its sessions hold: the ONNX file's, once per session, measured at load (the file may go). On a
    # GPU they are in device memory, which ONNX Runtime does not report.
    weights_bytes: int

    @classmethod
    async def load(
        cls, name: str, settings: Settings, on_batch: BatchObserver | None = None, version: int | None = None
    ) -> "LoadedModel":
        """`version` (default: the latest) built in a thread (reading, sessions, warm-up), then its batcher started
        on this event loop."""
        source, batching, engine, latencies, seconds = await asyncio.to_thread(_build_and_warm, name, version, settings)
        executor = ThreadPoolExecutor(batching.batches_in_flight, thread_name_prefix=f"infer-{name}")
        batcher = DynamicBatcher(
            engine.run,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_size=batching.max_queue_size,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            batches_in_flight=batching.batches_in_flight,
            executor=executor,
            on_batch=on_batch,
            on_idle=engine.trim_memory,
            latency_slo_ms=batching.latency_slo_ms,
            name=name,
            version=source.version,
        )
        batcher.seed_latency(latencies)
        batcher.start()
        return cls(source, batching, engine, batcher, executor, seconds, source.size_bytes * engine.count)

    async def close(self) -> None:
        """Stop taking images, answer every queued one, then free the session."""
        await self.batcher.stop()
        self.executor.shutdown(wait=True)
        self.engine.close()
