"""Several sessions of one model, after Triton's instance_group: a batch runs on whichever session is free, so up
to `count` batches run at once, each on its own session's threads. On a small CPU, two sessions of one thread
each can beat one session of two threads where a model's operators are too small to split well (`make tune`
measures it); on a GPU, a second session overlaps one batch's host work with another's kernels."""

import logging
import platform
import queue
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from service.config import usable_cores
from service.engine.session import Engine

log = logging.getLogger(__name__)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def this_machine() -> str:
    """What `make tune` records its figures against: the CPU and the cores this process may use."""
    return f"{cpu_model()}, {usable_cores()} cores"


class InstanceGroup:
    """`Engine`'s interface over one or more sessions of the same file, each running up to `runs_each` batches at
    once: one on CPU (a second would compete for its threads), two on a GPU (the host stages one while the device
    runs the other). The batcher runs `batches_in_flight` <= sessions x runs_each at once, so none waits here."""

    def __init__(self, engines: Sequence[Engine], runs_each: int = 1):
        if not engines or runs_each < 1:
            raise ValueError("an instance group needs at least one session, running at least one batch")
        self.engines = list(engines)
        self._free: queue.SimpleQueue[Engine] = queue.SimpleQueue()
        for _ in range(runs_each):
            for engine in self.engines:
                self._free.put(engine)

    @classmethod
    def build(cls, count: int, make: Callable[[], Engine], runs_each: int = 1) -> "InstanceGroup":
        """`count` sessions from `make`, all or none."""
        engines = []
        try:
            for _ in range(count):
                engines.append(make())
        except BaseException:
            for engine in engines:
                engine.close()
            raise
        return cls(engines, runs_each)

    def run(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        engine = self._free.get()
        try:
            return engine.run(images)
        finally:
            self._free.put(engine)

    def warmup(self, batch_sizes: Sequence[int]) -> dict[int, float]:
        """Every session warmed; the first's seconds per size (see Engine.warmup)."""
        first, *others = self.engines
        seconds = first.warmup(batch_sizes)
        for engine in others:
            engine.warmup(batch_sizes)
        return seconds

    def trim_memory(self) -> None:
        for engine in self.engines:
            engine.trim_memory()

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

    @property
    def count(self) -> int:
        return len(self.engines)

    @property
    def providers_in_use(self) -> list[str]:
        return self.engines[0].providers_in_use

    @property
    def bucket_sizes(self) -> list[int]:
        return self.engines[0].bucket_sizes

    @property
    def cuda_graph_batch_sizes(self) -> list[int]:
        return self.engines[0].cuda_graph_batch_sizes

    @property
    def device_error(self) -> str | None:
        return next((e.device_error for e in self.engines if e.device_error), None)
