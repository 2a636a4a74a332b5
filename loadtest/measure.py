"""What bench.py measures: the raw engine in-process (with host copies, and on a GPU with inputs already on
the device), the host's decode ceiling, and the service over HTTP."""

import asyncio
import itertools
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import onnxruntime as ort

from service.engine.io_binding import GRAPH_ID
from service.engine.session import Engine

MAX_STRETCH = 4  # an HTTP point may run up to this many times its budget to reach a steady state


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def process_cpu_s() -> float:
    """This process's user + system CPU seconds (the load generator's own cost)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_runs(run: Callable[[], object], seconds: float) -> tuple[list[float], float]:
    """`run()` back to back for `seconds` (at least 3 times): each run's seconds, and the seconds in all."""
    latencies = []
    start = time.perf_counter()
    while len(latencies) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start


def raw_point(engine: Engine, tensors: list[np.ndarray], batch_size: int, seconds: float) -> dict:
    """`engine.run` back to back on one preprocessed batch for `seconds` (at least 3 runs)."""
    batch = np.stack([tensors[i % len(tensors)] for i in range(batch_size)])  # (N, C, H, W)
    engine.run(batch)
    latencies, elapsed = timed_runs(lambda: engine.run(batch), seconds)
    return {
        "batch_size": batch_size,
        "runs": len(latencies),
        "images_per_s": batch_size * len(latencies) / elapsed,
        **percentiles_ms(latencies),
    }


@dataclass
class Window:
    """Recording starts once every client has had an answer (a steady state), and stops after
    `seconds` and at least one answer per client, or after MAX_STRETCH times `seconds`."""

    concurrency: int
    seconds: float
    begin: float = math.inf
    end: float = math.inf
    answered: set[int] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def update(self, now: float, started: float) -> None:
        cap = self.seconds * MAX_STRETCH
        if self.begin == math.inf and (len(self.answered) == self.concurrency or now - started > cap):
            self.begin = now
        recorded = len(self.latencies) + sum(self.errors.values())
        done = now - self.begin >= self.seconds and recorded >= self.concurrency
        if self.end == math.inf and (done or now - self.begin > cap):
            self.end = now


async def _worker(url: str, images, window: Window, worker: int, started: float) -> None:
    async with httpx.AsyncClient(timeout=300) as client:  # one connection each: a shared pool costs O(clients)
        while window.end == math.inf:
            await _request(client, url, images, window, worker, started)


async def _request(client: httpx.AsyncClient, url: str, images, window: Window, worker: int, started: float) -> None:
    t0 = time.perf_counter()
    response = await client.post(url, content=next(images), headers={"content-type": "image/jpeg"})
    t1 = time.perf_counter()
    window.answered.add(worker)
    if window.begin <= t1 <= window.end:
        if response.status_code == 200:
            (result,) = response.json()["results"]
            window.latencies.append(t1 - t0)
            window.batch_sizes.append(result["batch_size"])
            window.queue_ms.append(result["timing"]["queue_ms"])
        else:
            window.errors[str(response.status_code)] = window.errors.get(str(response.status_code), 0) + 1
    window.update(t1, started)


async def _http_point(base_url: str, model: str, jpegs: list[bytes], concurrency: int, seconds: float) -> Window:
    window = Window(concurrency, seconds)
    url = f"{base_url}/v1/classify?model={model}&top_k=1"
    images = itertools.cycle(jpegs)  # shared by the workers: one event loop, so no lock is needed
    started = time.perf_counter()
    await asyncio.gather(*(_worker(url, images, window, i, started) for i in range(concurrency)))
    return window


def http_point(base_url: str, model: str, jpegs: list[bytes], concurrency: int, seconds: float, server_cpu) -> dict:
    """`concurrency` closed-loop clients, one JPEG per request; figures from the answers inside the
    recorded window (see Window). Requests still in flight at its end drain, unrecorded."""
    cpu0, server0, wall0 = process_cpu_s(), server_cpu(), time.perf_counter()
    window = asyncio.run(_http_point(base_url, model, jpegs, concurrency, seconds))
    wall = time.perf_counter() - wall0
    if not window.latencies:
        raise RuntimeError(f"no successful request at concurrency {concurrency}; errors: {window.errors}")
    return {
        "concurrency": concurrency,
        "requests": len(window.latencies),
        "errors": window.errors,
        "images_per_s": len(window.latencies) / (window.end - window.begin),
        **percentiles_ms(window.latencies),
        "mean_batch_size": float(np.mean(window.batch_sizes)),
        "mean_queue_ms": float(np.mean(window.queue_ms)),
        "loadgen_cpu_cores": (process_cpu_s() - cpu0) / wall,
        "server_cpu_cores": (server_cpu() - server0) / wall,
    }


def device_points(
    session: ort.InferenceSession,
    tensors: list[np.ndarray],
    sizes: list[int],
    seconds: float,
    *,
    output_row_shape: tuple[int, ...],
    output_dtype: np.dtype,
    graphs: bool,
    device: str = "cuda",
    device_id: int = 0,
) -> list[dict]:
    """The accelerator alone: input and output bound to device memory (I/O binding), so no host copy is
    timed. Each size runs plainly (graph id -1) and, if the session was built with CUDA graphs, replaying
    its own captured graph, whose logits must equal the plain run's. One point per (size, graphs)."""
    points = []
    for i, n in enumerate(sizes):
        batch = np.stack([tensors[j % len(tensors)] for j in range(n)])
        x = ort.OrtValue.ortvalue_from_numpy(batch, device, device_id)
        y = ort.OrtValue.ortvalue_from_shape_and_type([n, *output_row_shape], output_dtype, device, device_id)
        binding = session.io_binding()
        binding.bind_ortvalue_input(session.get_inputs()[0].name, x)
        binding.bind_ortvalue_output(session.get_outputs()[0].name, y)
        modes = [(False, "-1")] + ([(True, str(i + 1))] if graphs else [])
        plain_logits = None
        for captured, graph_id in modes:
            options = ort.RunOptions()
            options.add_run_config_entry(GRAPH_ID, graph_id)

            def run(options=options, binding=binding):
                session.run_with_iobinding(binding, options)
                binding.synchronize_outputs()

            for _ in range(3):  # warm-up; with a graph id, ONNX Runtime captures during these
                run()
            logits = y.numpy().astype(np.float32)
            latencies, elapsed = timed_runs(run, seconds)
            point = {
                "batch_size": n,
                "cuda_graph": captured,
                "runs": len(latencies),
                "images_per_s": n * len(latencies) / elapsed,
                **percentiles_ms(latencies),
            }
            if captured:
                point["graph_max_abs_diff"] = float(np.abs(logits - plain_logits).max())
            plain_logits = logits
            points.append(point)
    return points


def _decode_loop(preprocess, jpegs: list[bytes], seconds: float) -> tuple[int, float]:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        preprocess(jpegs[count % len(jpegs)])
        count += 1
    return count, time.perf_counter() - start


def _decode_process(args) -> tuple[int, float]:
    repository, model, jpegs, seconds = args
    from modelrepo.read import load_source
    from service.config import Settings
    from service.frontend.preprocess import Preprocessor, configure_pillow

    configure_pillow()
    config = load_source(repository, model).config
    preprocess = Preprocessor.for_model(config, Settings())
    return _decode_loop(preprocess, jpegs, seconds)


def decode_rates(repository, model: str, jpegs: list[bytes], cores: int, seconds: float) -> dict:
    """The host's decode ceiling with the service's decoder (`Preprocessor`: JPEG decode, resize, crop, to
    the model's input): images/s on one process, on `cores` processes, and on `cores` threads of one process
    (how the service decodes; the GIL is what separates the last two)."""
    from concurrent.futures import ThreadPoolExecutor
    from multiprocessing import get_context

    from modelrepo.read import load_source
    from service.config import Settings
    from service.frontend.preprocess import Preprocessor

    def rate(results) -> float:
        return sum(count / elapsed for count, elapsed in results)

    with get_context("spawn").Pool(cores) as pool:
        one = rate(pool.map(_decode_process, [(repository, model, jpegs, seconds)]))
        every = rate(pool.map(_decode_process, [(repository, model, jpegs, seconds)] * cores, chunksize=1))
    config = load_source(repository, model).config
    preprocess = Preprocessor.for_model(config, Settings())
    with ThreadPoolExecutor(cores) as threads:
        threaded = rate(threads.map(lambda _: _decode_loop(preprocess, jpegs, seconds), range(cores)))
    return {
        "cores": cores,
        "one_core_images_per_s": one,
        "all_cores_processes_images_per_s": every,
        "all_cores_threads_one_process_images_per_s": threaded,
    }
