import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.engine.instances import InstanceGroup, this_machine


class FakeEngine:
    """Records which thread ran it; `gate` holds every run until set."""

    def __init__(self, name: str, gate: threading.Event | None = None, device_error: str | None = None):
        self.name, self.gate, self.device_error = name, gate, device_error
        self.runs, self.closed, self.trimmed, self.warmed = 0, False, 0, []
        self.running = threading.Event()

    def run(self, images):
        self.running.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        self.runs += 1
        return np.full((len(images), 2), float(ord(self.name)), dtype=np.float32)

    def warmup(self, sizes):
        self.warmed.append(list(sizes))
        return {n: ord(self.name) / 1000 for n in sizes}

    def trim_memory(self):
        self.trimmed += 1

    def close(self):
        self.closed = True

    providers_in_use = ["CPUExecutionProvider"]
    bucket_sizes: list[int] = []
    cuda_graph_batch_sizes: list[int] = []


def test_batches_at_once_run_on_different_sessions():
    gate = threading.Event()
    a, b = FakeEngine("a", gate), FakeEngine("b", gate)
    group = InstanceGroup([a, b])
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(group.run, [np.zeros(1)])
        second = pool.submit(group.run, [np.zeros(1)])
        assert a.running.wait(5) and b.running.wait(5)  # both run at once: neither waits for the other
        gate.set()
        outputs = {first.result()[0, 0], second.result()[0, 0]}
    assert outputs == {ord("a"), ord("b")} and a.runs == b.runs == 1
    # Run one after another, a session is given back each time and reused.
    for _ in range(4):
        group.run([np.zeros(1)])
    assert a.runs + b.runs == 6


def test_on_a_gpu_each_session_runs_two_batches_at_once():
    gate = threading.Event()
    a = FakeEngine("a", gate)
    group = InstanceGroup([a], runs_each=2)
    started = threading.Semaphore(0)
    a.run = lambda images, run=a.run: (started.release(), run(images))[1]
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(group.run, [np.zeros(1)]) for _ in range(2)]
        assert started.acquire(timeout=5) and started.acquire(timeout=5)  # the second did not wait for the first
        gate.set()
        assert [r.result().shape for r in runs] == [(1, 2), (1, 2)]
    with pytest.raises(ValueError):
        InstanceGroup([a], runs_each=0)


def test_a_session_that_fails_is_given_back():
    class Failing(FakeEngine):
        def run(self, images):
            raise RuntimeError("bad batch")

    group = InstanceGroup([Failing("a")])
    for _ in range(2):  # the second run would block forever if the first kept the session
        with pytest.raises(RuntimeError, match="bad batch"):
            group.run([np.zeros(1)])


def test_build_is_all_or_none():
    built = []

    def make():
        if len(built) == 2:
            raise RuntimeError("out of memory")
        built.append(FakeEngine(str(len(built))))
        return built[-1]

    with pytest.raises(RuntimeError, match="out of memory"):
        InstanceGroup.build(3, make)
    assert len(built) == 2 and all(engine.closed for engine in built)
    with pytest.raises(ValueError):
        InstanceGroup([])


def test_every_session_is_warmed_trimmed_and_closed_and_any_device_error_shows():
    a, b = FakeEngine("a"), FakeEngine("b", device_error="CUDA failure 715")
    group = InstanceGroup([a, b])
    assert group.warmup([1, 4]) == {1: ord("a") / 1000, 4: ord("a") / 1000}  # the first session's seconds
    assert a.warmed == b.warmed == [[1, 4]]
    group.trim_memory()
    group.close()
    assert (a.trimmed, b.trimmed, a.closed, b.closed) == (1, 1, True, True)
    assert group.count == 2 and group.device_error == "CUDA failure 715"
    assert InstanceGroup([FakeEngine("c")]).device_error is None


def test_this_machine_names_the_cpu_and_usable_cores(monkeypatch):
    import service.engine.instances as instances

    monkeypatch.setattr(instances, "usable_cores", lambda: 3)
    monkeypatch.setattr(instances, "cpu_model", lambda: "Some CPU @ 2.0GHz")
    assert this_machine() == "Some CPU @ 2.0GHz, 3 cores"
