"""The two measurements bench.py compares: the raw engine in-process, and the service over HTTP."""

import asyncio
import itertools
import math
import resource
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from service.engine import Engine

MAX_STRETCH = 4  # an HTTP point may run up to this many times its budget to reach a steady state


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}


def process_cpu_s() -> float:
    """This process's user + system CPU seconds (the load generator's own cost)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw_point(engine: Engine, tensors: list[np.ndarray], batch_size: int, seconds: float) -> dict:
    """`engine.run` back to back on one preprocessed batch for `seconds` (at least 3 runs)."""
    batch = np.stack([tensors[i % len(tensors)] for i in range(batch_size)])  # (N, C, H, W)
    engine.run(batch)
    latencies = []
    start = time.perf_counter()
    while len(latencies) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        engine.run(batch)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    return {
        "batch_size": batch_size,
        "runs": len(latencies),
        "images_per_s": batch_size * len(latencies) / elapsed,
        **percentiles_ms(latencies),
    }


@dataclass
class _Window:
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


async def _worker(url: str, images, window: _Window, worker: int, started: float) -> None:
    async with httpx.AsyncClient(timeout=300) as client:  # one connection each: a shared pool costs O(clients)
        while window.end == math.inf:
            await _request(client, url, images, window, worker, started)


async def _request(client: httpx.AsyncClient, url: str, images, window: _Window, worker: int, started: float) -> None:
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


async def _http_point(base_url: str, model: str, jpegs: list[bytes], concurrency: int, seconds: float) -> _Window:
    window = _Window(concurrency, seconds)
    url = f"{base_url}/v1/classify?model={model}&top_k=1"
    images = itertools.cycle(jpegs)  # shared by the workers: one event loop, so no lock is needed
    started = time.perf_counter()
    await asyncio.gather(*(_worker(url, images, window, i, started) for i in range(concurrency)))
    return window


def http_point(base_url: str, model: str, jpegs: list[bytes], concurrency: int, seconds: float, server_cpu) -> dict:
    """`concurrency` closed-loop clients, one JPEG per request; figures from the answers inside the
    recorded window (see _Window). Requests still in flight at its end drain, unrecorded."""
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
