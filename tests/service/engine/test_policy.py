"""The batching policy against scripted batch latencies: flat per image (batching does not pay), flat per batch
(it pays all the way), and linear with an overhead; then in the batcher with an engine that takes that long."""

import asyncio
import math
import threading
import time

import numpy as np
import pytest

from service.engine.batcher import DynamicBatcher
from service.engine.policy import BatchPolicy, LatencyTable, Release, Wait
from service.errors import ObjectiveUnreachable

SIZES = (1, 2, 4, 8, 16, 32)
PER_IMAGE = lambda n: 0.040 * n  # noqa: E731  batch 1 is best: a batch costs what its images cost alone
PER_BATCH = lambda n: 0.020  # noqa: E731  batching pays all the way
LINEAR = lambda n: 0.010 + 0.002 * n  # noqa: E731  an overhead per batch, then a cost per image


def table(latency, sizes=SIZES) -> LatencyTable:
    t = LatencyTable()
    for n in sizes:
        t.observe(n, latency(n))
    return t


def policy(latency, objective_s=0.25, max_batch=32, sizes=SIZES) -> BatchPolicy:
    return BatchPolicy(objective_s, max_batch, table(latency, sizes))


@pytest.mark.parametrize(
    "latency,objective,target",
    [
        (PER_IMAGE, 0.25, 1),  # no size is faster per image: batch 1
        (PER_BATCH, 0.25, 32),  # every size fits its 125 ms, the largest is the fastest
        (LINEAR, 0.25, 32),  # 32 takes 74 ms, and gives the most images per second
        (LINEAR, 0.08, 8),  # 40 ms to spend: 16 (42 ms) does not fit, 8 (26 ms) is the best that does
    ],
)
def test_target_size_follows_the_latencies_and_the_objective(latency, objective, target):
    assert policy(latency, objective).target_size() == target


def test_a_slower_batch_slows_every_size():
    t = table(LINEAR, sizes=(1, 8))
    t.observe(1, 2 * LINEAR(1))  # twice as slow as its average: the machine slowed down
    assert t.predict(1) == pytest.approx(LINEAR(1) * 1.2) and t.predict(8) == pytest.approx(LINEAR(8) * 1.2)


def test_latency_table_interpolates_and_assumes_no_gain_beyond_what_it_saw():
    t = table(LINEAR, sizes=(1, 4))
    assert t.predict(4) == pytest.approx(LINEAR(4))
    assert t.predict(2) == pytest.approx(LINEAR(1) + (LINEAR(4) - LINEAR(1)) / 3)
    assert t.predict(8) == pytest.approx(LINEAR(4) * 2)  # per image as at 4
    assert LatencyTable().predict(3) == 0.0


def test_plan_releases_waits_or_explores():
    p = policy(LINEAR, 0.25)  # target 32
    assert p.plan(32, 0.0, 0.0) == Release(32, "target")
    assert p.plan(5, 0.0, 0.0) == Release(5, "quiet")  # nothing arriving: waiting would not fill it
    wait = p.plan(5, 0.0, 10_000.0)  # 27 more arrive in 2.7 ms
    assert isinstance(wait, Wait) and wait.seconds == pytest.approx(27 / 10_000)
    assert p.plan(5, 0.24, 10_000.0) == Release(5, "objective")  # the oldest has no time left to wait
    # 27 more would come in 0.1 s, within the objective; but 32 after a 0.1 s wait are slower than these 5 now.
    assert p.plan(5, 0.0, 270.0) == Release(5, "quiet")
    learning = policy(LINEAR, 0.25, sizes=(1, 2, 4))  # warm-up measured up to 4
    assert learning.plan(8, 0.0, 0.0) == Release(8, "explore")


def test_completion_counts_the_batches_ahead():
    p = policy(PER_IMAGE, 0.25)  # target 1, 40 ms a batch
    assert p.completion(ahead=0, n=1, running_left=0.01, in_flight=1) == pytest.approx(0.05)
    assert p.completion(ahead=5, n=2, running_left=0.0, in_flight=1) == pytest.approx(7 * 0.04)
    assert p.completion(ahead=5, n=2, running_left=0.0, in_flight=2) == pytest.approx(4 * 0.04)


class TimedEngine:
    """Takes `latency(n)` seconds for a batch of n (scripted, changeable mid-run); records the sizes."""

    def __init__(self, latency):
        self.latency = latency
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def run(self, inputs: list[np.ndarray]) -> np.ndarray:
        with self.lock:
            self.batches.append(len(inputs))
        time.sleep(self.latency(len(inputs)))
        return np.stack(inputs).reshape(len(inputs), -1)[:, :1]


def objective_batcher(engine: TimedEngine, objective_ms: float, **kwargs) -> tuple[DynamicBatcher, list]:
    reasons = []
    b = DynamicBatcher(
        engine.run,
        max_batch_size=kwargs.pop("max_batch_size", 16),
        max_queue_delay_ms=0,
        max_queue_size=kwargs.pop("max_queue_size", 1000),
        latency_slo_ms=objective_ms,
        batches_in_flight=kwargs.pop("batches_in_flight", 1),  # as on a CPU
        on_batch=lambda n, s, reason: reasons.append(reason),
        name="fake",
        **kwargs,
    )
    b.seed_latency({n: engine.latency(n) for n in (1, 2, 4)})
    b.start()
    return b, reasons


async def offer(b: DynamicBatcher, count: int) -> tuple[list[asyncio.Future], list[ObjectiveUnreachable]]:
    admitted, refused = [], []
    for i in range(count):
        try:
            admitted += b.enqueue([np.full((1,), i, np.float32)])
        except ObjectiveUnreachable as e:
            refused.append(e)
    return admitted, refused


def test_admits_what_the_objective_allows_and_refuses_the_rest_with_retry_after():
    async def main():
        engine = TimedEngine(lambda n: 0.05 * n)  # batch 1 is best; 50 ms an image
        b, reasons = objective_batcher(engine, 250)
        admitted, refused = await offer(b, 30)
        # The first runs at once; then each queued image adds 50 ms: about 4 fit in 250 ms.
        assert 3 <= len(admitted) <= 6 and len(refused) == 30 - len(admitted)
        assert all(e.retry_after >= 1 and e.headers["Retry-After"] == str(e.retry_after) for e in refused)
        assert "objective is 250 ms" in refused[0].message
        started = time.monotonic()
        await asyncio.gather(*admitted)
        assert time.monotonic() - started < 0.5  # every admitted image answered, well within 2x the objective
        assert set(engine.batches) == {1} and set(reasons) == {"target"}
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_batches_where_batching_pays():
    async def main():
        engine = TimedEngine(lambda n: 0.02)  # a batch of any size takes 20 ms
        b, reasons = objective_batcher(engine, 500, max_batch_size=8)
        admitted, refused = await offer(b, 40)
        assert not refused
        await asyncio.gather(*admitted)
        assert max(engine.batches) == 8  # learned 8 by exploring past the 4 measured at warm-up
        assert "explore" in reasons and "target" in reasons
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_the_objective_holds_when_the_engine_slows_down():
    async def main():
        slow = False
        engine = TimedEngine(lambda n: (0.1 if slow else 0.01) * n)
        b, _ = objective_batcher(engine, 250)
        fast_admitted, _ = await offer(b, 30)
        await asyncio.gather(*fast_admitted)
        slow = True
        for _ in range(8):  # the running averages learn the new speed from the batches run
            await asyncio.gather(*b.enqueue([np.zeros((1,), np.float32)]))
        slow_admitted, refused = await offer(b, 30)
        assert len(fast_admitted) > 2 * len(slow_admitted) and refused
        started = time.monotonic()
        await asyncio.gather(*slow_admitted)
        assert time.monotonic() - started < 0.25 * 1.5 + 0.1
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_partial_batch_waits_once_for_arrivals_that_do_not_come():
    async def main():
        engine = TimedEngine(lambda n: 0.005)  # batching pays: a batch of any size takes 5 ms
        b, reasons = objective_batcher(engine, 2000, max_batch_size=16)
        burst, _ = await offer(b, 32)  # the arrival rate says more will come
        await asyncio.gather(*burst)
        started = time.monotonic()
        await asyncio.gather(*b.enqueue([np.zeros((1,), np.float32)] * 3))
        assert time.monotonic() - started < 1.0  # one wait for the arrivals the rate promised, not the objective
        assert reasons[-1] == "quiet"
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_request_that_would_miss_its_own_deadline_is_refused_before_queueing():
    async def main():
        engine = TimedEngine(lambda n: 0.05 * n)
        b, _ = objective_batcher(engine, 10_000)  # the objective is no limit here
        admitted, _ = await offer(b, 3)
        with pytest.raises(ObjectiveUnreachable):
            b.enqueue([np.zeros((1,), np.float32)], deadline=time.monotonic() + 0.08)
        assert b.queue_depth == len(admitted) == 3  # the refused one was never queued
        await asyncio.gather(*admitted)
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_an_idle_model_takes_any_request_even_one_slower_than_its_objective():
    async def main():
        engine = TimedEngine(lambda n: 0.05 * n)
        b, _ = objective_batcher(engine, 10)  # no batch can meet 10 ms
        (future,) = b.enqueue([np.zeros((1,), np.float32)])
        assert math.isfinite(float((await future).output[0]))
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_images_still_decoding_count_as_ahead_until_queued_or_given_back():
    async def main():
        engine = TimedEngine(lambda n: 0.05 * n)
        b, _ = objective_batcher(engine, 250)
        for _ in range(5):  # the 5th would be answered at 250 ms
            b.hold(1)
        with pytest.raises(ObjectiveUnreachable, match="5 images ahead"):
            b.hold(1)  # nothing is queued yet: the five decoding are what is ahead
        b.release_hold(2)  # two failed to decode
        b.hold(1)
        futures = b.enqueue([np.zeros((1,), np.float32)] * 4, held=4)
        assert b.queue_depth == 4
        await asyncio.gather(*futures)
        b.hold(1)  # the one left held and this one: nothing else ahead
        b.release_hold(1)
        assert b.held == 0
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
