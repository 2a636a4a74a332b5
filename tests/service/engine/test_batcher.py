"""The batcher with a fake engine: timing is controlled by long delays, events and barriers, never measured."""

import asyncio
import threading
import time

import numpy as np
import pytest

import service.engine.batcher
from modelrepo.schema import TensorSpec
from service.engine.batcher import LATENCY_MEMORY_S, LATENCY_SMOOTHING, BatchLatency, DynamicBatcher
from service.engine.session import Engine, ProviderSpec
from service.errors import DeadlineExceeded, InferenceFailed, ModelNotReady, QueueFull


class FakeEngine:
    """Returns 2 * the first element of each item; records batch sizes; can block or fail."""

    def __init__(self, fail_calls=(), drop_row=False):
        self.batches: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.fail_calls = set(fail_calls)
        self.drop_row = drop_row

    def run(self, inputs: list[np.ndarray]) -> np.ndarray:
        batch = np.stack(inputs)
        call = len(self.batches)
        self.batches.append(len(batch))
        self.started.set()
        if not self.release.wait(10):
            raise TimeoutError("test never released the engine")
        if call in self.fail_calls:
            raise RuntimeError("engine exploded")
        out = batch.reshape(len(batch), -1)[:, :1] * 2
        return out[:-1] if self.drop_row else out


def item(value: float) -> np.ndarray:
    return np.full((2,), value, dtype=np.float32)


def batcher(engine, **kwargs) -> DynamicBatcher:
    kwargs.setdefault("max_batch_size", 4)
    kwargs.setdefault("max_queue_delay_ms", 20)
    kwargs.setdefault("max_queue_size", 64)
    b = DynamicBatcher(engine.run, name="fake", **kwargs)
    b.start()
    return b


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_batches_up_to_max_batch_size():
    async def main():
        engine = FakeEngine()
        b = batcher(engine, max_batch_size=4, max_queue_delay_ms=10_000)
        results = await asyncio.gather(*b.enqueue([item(i) for i in range(8)]))
        await b.stop()
        return engine, results

    engine, results = run(main())
    assert engine.batches == [4, 4]  # full batches go at once, without waiting for the 10 s delay
    assert [float(r.output[0]) for r in results] == [2.0 * i for i in range(8)]
    assert all(r.batch_size == 4 and r.queue_ms >= 0 and r.inference_ms >= 0 for r in results)


def test_delay_flushes_a_partial_batch():
    async def main():
        engine = FakeEngine()
        b = batcher(engine, max_batch_size=8, max_queue_delay_ms=20)
        results = await asyncio.gather(*b.enqueue([item(i) for i in range(3)]))
        await b.stop()
        return engine, results

    engine, results = run(main())
    assert engine.batches == [3]
    assert {r.batch_size for r in results} == {3}


def test_preferred_batch_size_dispatches_without_waiting_for_the_delay():
    async def main():
        engine = FakeEngine()
        b = batcher(engine, max_batch_size=8, max_queue_delay_ms=60_000, preferred_batch_sizes=(2, 4))
        futures = b.enqueue([item(i) for i in range(5)])
        results = await asyncio.wait_for(asyncio.gather(*futures[:4]), 5)
        assert not futures[4].done()  # the leftover waits for more items or the delay
        await b.stop()
        return engine, results

    engine, results = run(main())
    assert engine.batches == [4, 1]  # the largest preferred size that fits the 5 waiting; stop() runs the rest
    assert results[0].batch_size == 4


def test_queue_full_raises_with_retry_after():
    async def main():
        engine = FakeEngine()
        engine.release.clear()
        b = batcher(engine, max_batch_size=1, max_queue_size=2, batches_in_flight=1)
        running = b.enqueue([item(0)])
        await asyncio.to_thread(engine.started.wait, 5)  # item 0 left the queue and is running
        queued = b.enqueue([item(1), item(2)])
        with pytest.raises(QueueFull) as excinfo:
            b.enqueue([item(3)])
        with pytest.raises(QueueFull):
            b.enqueue([item(4), item(5), item(6)])  # all or none
        assert b.queue_depth == 2
        engine.release.set()
        await asyncio.gather(*running, *queued)
        await b.stop()
        return excinfo.value

    error = run(main())
    assert isinstance(error.retry_after, int) and 1 <= error.retry_after <= 60
    assert error.headers == {"Retry-After": str(error.retry_after)}


def test_retry_after_comes_from_the_drain_rate():
    class Measured(DynamicBatcher):
        drain_rate = 0.5  # images per second

    async def main():
        b = Measured(FakeEngine().run, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=10)
        b._queue.extend([None] * 10)  # a full queue, without running anything
        return b.retry_after(1), b.retry_after(5)

    assert run(main()) == (2, 10)


def test_expired_items_are_dropped_unexecuted():
    async def main():
        engine = FakeEngine()
        b = batcher(engine)
        (expired,) = b.enqueue([item(1)], deadline=time.monotonic() - 1)
        (alive,) = b.enqueue([item(2)], deadline=time.monotonic() + 60)
        with pytest.raises(DeadlineExceeded):
            await expired
        result = await alive
        await b.stop()
        return engine, result

    engine, result = run(main())
    assert engine.batches == [1]  # only the live item ran
    assert float(result.output[0]) == 4.0


def test_cancelled_future_before_batching_is_skipped():
    async def main():
        engine = FakeEngine()
        b = batcher(engine, max_queue_delay_ms=50)
        futures = b.enqueue([item(i) for i in range(3)])
        futures[1].cancel()  # the client went away
        results = await asyncio.gather(futures[0], futures[2])
        await b.stop()
        return engine, results

    engine, results = run(main())
    assert engine.batches == [2]
    assert [float(r.output[0]) for r in results] == [0.0, 4.0]


def test_cancelled_future_while_running_does_not_break_the_batch():
    async def main():
        engine = FakeEngine()
        engine.release.clear()
        b = batcher(engine, max_queue_delay_ms=0)
        futures = b.enqueue([item(i) for i in range(3)])
        await asyncio.to_thread(engine.started.wait, 5)
        futures[0].cancel()
        engine.release.set()
        results = await asyncio.gather(futures[1], futures[2])
        later = await b.submit(item(7))  # the batcher is still alive
        await b.stop()
        return results, later

    results, later = run(main())
    assert [float(r.output[0]) for r in results] == [2.0, 4.0]
    assert float(later.output[0]) == 14.0


def test_engine_error_fails_only_its_batch():
    async def main():
        engine = FakeEngine(fail_calls={0})
        b = batcher(engine, max_batch_size=2, max_queue_delay_ms=0)
        first = b.enqueue([item(1), item(2)])
        outcomes = await asyncio.gather(*first, return_exceptions=True)
        second = await asyncio.gather(*b.enqueue([item(3), item(4)]))
        await b.stop()
        return outcomes, second

    outcomes, second = run(main())
    assert all(isinstance(o, InferenceFailed) for o in outcomes)
    assert "RuntimeError" in outcomes[0].message
    assert [float(r.output[0]) for r in second] == [6.0, 8.0]


def test_outputs_that_do_not_match_inputs_fail_the_batch():
    async def main():
        b = batcher(FakeEngine(drop_row=True), max_queue_delay_ms=0)
        outcomes = await asyncio.gather(*b.enqueue([item(1), item(2)]), return_exceptions=True)
        await b.stop()
        return outcomes

    outcomes = run(main())
    assert all(isinstance(o, InferenceFailed) and "batch of 2" in o.message for o in outcomes)


def test_batches_in_flight_run_concurrently():
    barrier = threading.Barrier(2, timeout=10)

    def run_together(inputs):
        barrier.wait()  # only passes when two batches are running at the same time
        return np.stack(inputs)[:, :1]

    async def main():
        b = DynamicBatcher(run_together, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=8, batches_in_flight=2)
        b.start()
        results = await asyncio.gather(*b.enqueue([item(1), item(2)]))
        await b.stop()
        return results

    assert [float(r.output[0]) for r in run(main())] == [1.0, 2.0]


def test_stop_drains_the_queue_then_refuses():
    async def main():
        engine = FakeEngine()
        b = batcher(engine, max_batch_size=4, max_queue_delay_ms=60_000)
        futures = b.enqueue([item(i) for i in range(6)])
        await b.stop()  # does not wait for the 60 s delay
        assert all(f.done() for f in futures)
        with pytest.raises(ModelNotReady):
            b.enqueue([item(9)])
        return [f.result() for f in futures]

    results = run(main())
    assert [float(r.output[0]) for r in results] == [2.0 * i for i in range(6)]


def test_batched_results_equal_unbatched(model_repo):
    spec_in = TensorSpec(name="input", dtype="float32", shape=(-1, 3, 16, 16))
    spec_out = TensorSpec(name="logits", dtype="float32", shape=(-1, 4), layout="NC")
    engine = Engine(
        model_repo / "tiny_rgb" / "1" / "model.onnx",
        input_spec=spec_in,
        output_spec=spec_out,
        providers=[ProviderSpec("CPUExecutionProvider")],
        intra_op_threads=1,
    )
    inputs = np.random.default_rng(0).normal(size=(10, 3, 16, 16)).astype(np.float32)
    alone = np.concatenate([engine.run(x[None]) for x in inputs])

    async def main():
        b = DynamicBatcher(engine.run, max_batch_size=8, max_queue_delay_ms=50, max_queue_size=64)
        b.start()
        results = await asyncio.gather(*b.enqueue(list(inputs)))
        await b.stop()
        return results

    results = run(main())
    assert max(r.batch_size for r in results) == 8
    batched = np.stack([r.output for r in results])
    np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=1e-6)


def test_rejects_bad_configuration():
    with pytest.raises(ValueError):
        DynamicBatcher(FakeEngine().run, max_batch_size=0, max_queue_delay_ms=1, max_queue_size=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batch_latency_is_a_low_estimate_that_forgets():
    clock = FakeClock()
    latency = BatchLatency(clock)
    assert latency.expected(8) == 0.0  # nothing known: nothing is refused
    latency.observe(4, 0.4)
    latency.observe(16, 1.0)
    assert latency.expected(4) == latency.expected(8) == pytest.approx(0.4)  # largest size seen up to n
    assert latency.expected(32) == pytest.approx(1.0)
    assert latency.expected(2) == pytest.approx(0.2)  # below every size seen: scaled per image
    latency.observe(4, 0.9)
    assert latency.expected(4) == pytest.approx(0.4 + LATENCY_SMOOTHING * 0.5)
    clock.now += LATENCY_MEMORY_S + 1
    assert latency.expected(8) == 0.0  # one slow spell cannot refuse work forever


def test_items_that_cannot_finish_before_their_deadline_are_not_run():
    async def main():
        engine = FakeEngine()
        b = batcher(engine, max_batch_size=1, max_queue_delay_ms=0)
        b.latency.observe(1, 0.5)  # as if batches of one took half a second
        hopeless = b.enqueue([item(1)], deadline=time.monotonic() + 0.2)
        fine = b.enqueue([item(2)], deadline=time.monotonic() + 30)
        with pytest.raises(DeadlineExceeded, match="a batch takes about 500 ms; not run"):
            await hopeless[0]
        assert float((await fine[0]).output[0]) == 4.0
        await b.stop()
        return engine

    assert run(main()).batches == [1]  # only the item that could finish ran


def test_the_idle_hook_runs_once_a_model_falls_idle_after_batches_larger_than_one(monkeypatch):
    monkeypatch.setattr(service.engine.batcher, "IDLE_TRIM_S", 0.05)

    async def main():
        engine, idled = FakeEngine(), []
        b = batcher(
            engine, max_batch_size=4, max_queue_delay_ms=10_000, on_idle=lambda: idled.append(len(engine.batches))
        )
        await b.submit(item(1))  # a batch of one: nothing grew
        await asyncio.sleep(0.2)
        assert idled == []
        await asyncio.gather(*b.enqueue([item(i) for i in range(4)]))
        await asyncio.sleep(0.2)
        assert idled == [2]  # once, after the batch of four, with nothing running beside it
        await asyncio.sleep(0.2)
        assert idled == [2]
        await b.stop()

    run(main())
