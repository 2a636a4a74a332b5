"""The dynamic batcher, after Ray Serve's `@serve.batch` and Triton's dynamic batcher.

One `_Pending` item per image waits in a bounded queue. A background task forms a batch when
`max_batch_size` items are waiting, when the oldest has waited `max_queue_delay`, or early at a
preferred batch size once no more items are arriving. With a latency objective (`latency_slo_ms`) the sizes
and waits come instead from the batch latencies measured on this machine (service/engine/policy.py), and a
request the queue cannot answer within the objective is refused at once (429). Batches run in a thread pool, up to
`batches_in_flight` at once, so the next batch forms while one runs. Every future is resolved
exactly once, and only if nobody cancelled it (a client that disconnects cancels its future).

Memory comes back: once no batch has arrived for `IDLE_TRIM_S` after batches larger than one ran, the
`on_idle` hook runs (the engine trims its arena), alone, with every batch slot held.

No work for the dead: an item whose client left is dropped, and so is one that cannot finish before
its deadline, judged from how long batches of that size have taken (`BatchLatency`); it gets its 504
at once instead of after the batch it would have slowed.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from service.engine.policy import Arrivals, BatchPolicy, LatencyTable, Release
from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    ModelNotReady,
    ObjectiveUnreachable,
    QueueFull,
    ServiceError,
)
from service.status import InferenceResult

log = logging.getLogger(__name__)

RunFn = Callable[[list[np.ndarray]], np.ndarray]  # one batch's inputs -> one output row each
BatchObserver = Callable[[int, float, str], None]  # (batch size, inference seconds, why it was released)
DRAIN_WINDOW_S = 10.0
LATENCY_SMOOTHING = 0.2  # weight of the newest batch in the running average of its size's latency
IDLE_TRIM_S = 2.0
LATENCY_MEMORY_S = 10.0  # a size not run for this long is forgotten, so one slow batch cannot refuse work forever


class BatchLatency:
    """Seconds a batch of n images takes, learned from the batches run: a running average per size,
    forgotten when that size has not run for LATENCY_MEMORY_S."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seconds: dict[int, tuple[float, float]] = {}  # size -> (average seconds, last observed)

    def observe(self, n: int, seconds: float) -> None:
        old = self._seconds.get(n)
        average = seconds if old is None else old[0] + LATENCY_SMOOTHING * (seconds - old[0])
        self._seconds[n] = (average, self._clock())

    def expected(self, n: int) -> float:
        """A low estimate, so that nothing that could finish is refused: the latency of the largest size
        seen up to n (a batch is not faster for being larger); below every size seen, the smallest's
        scaled by n / size (per image, small batches cost at least what large ones do). 0 if none is known."""
        now = self._clock()
        known = {size: s for size, (s, seen) in self._seconds.items() if now - seen < LATENCY_MEMORY_S}
        if not known:
            return 0.0
        below = [size for size in known if size <= n]
        if below:
            return known[max(below)]
        smallest = min(known)
        return known[smallest] * n / smallest


@dataclass(eq=False)
class _Pending:
    array: np.ndarray
    future: asyncio.Future
    enqueued_at: float  # time.monotonic()
    deadline: float | None  # time.monotonic(); None waits forever
    on_release: Callable[[], None] | None  # called once the batcher no longer reads `array`


class DynamicBatcher:
    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        preferred_batch_sizes: Sequence[int] = (),
        batches_in_flight: int = 2,
        executor: Executor | None = None,
        on_batch: BatchObserver | None = None,
        on_idle: Callable[[], None] | None = None,
        latency_slo_ms: float | None = None,
        name: str = "",
        version: int = 0,
    ):
        if max_batch_size < 1 or max_queue_size < 1 or batches_in_flight < 1:
            raise ValueError(f"{name}: max_batch_size, max_queue_size and batches_in_flight must be >= 1")
        self.name, self.version = name, version
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000
        self.max_queue_size = max_queue_size
        self.preferred_batch_sizes = tuple(sorted({n for n in preferred_batch_sizes if n <= max_batch_size}))
        self.batches_in_flight = batches_in_flight
        self._run = run
        self._executor = executor
        self._on_batch = on_batch
        self._on_idle = on_idle
        self._grown = False  # a batch larger than one ran since the last on_idle
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(batches_in_flight)
        self._loop_task: asyncio.Task | None = None
        self._stopping = False
        self._completed: deque[tuple[float, int]] = deque()  # (time, items) per finished batch
        self._running_batches: dict[asyncio.Task, tuple[float, int]] = {}  # running batch -> (started, size)
        self._held = 0  # images admitted and decoding, not queued yet (hold)
        self.latency = BatchLatency()
        self.policy = None
        if latency_slo_ms is not None:
            self.policy = BatchPolicy(latency_slo_ms / 1000, max_batch_size, LatencyTable())
        self._arrivals = Arrivals(time.monotonic)

    # -- public -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task; call from the event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")
            self._loop_task.add_done_callback(self._loop_done)

    def _loop_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("model %r: batcher stopped", self.name, exc_info=task.exception())

    def hold(self, n: int) -> None:
        """Admit `n` images now and count them as coming until `enqueue(..., held=n)` or `release_hold(n)`:
        a request is admitted before it is decoded, and those decoding meanwhile are ahead of the next."""
        self.admit(n)
        self._held += n

    def release_hold(self, n: int) -> None:
        self._held -= n

    def admit(self, n: int, deadline: float | None = None, *, held: int = 0) -> None:
        """Raise what enqueueing `n` items now would (not accepting, a full queue, or, with an objective, an
        answer predicted to come after it or after `deadline`), so a request the queue cannot take is refused
        before its images are decoded: under overload, shedding stays cheap. An idle model takes anything.
        `held`: images of this request already counted as coming."""
        if self._stopping or self._loop_task is None:
            raise ModelNotReady(f"model {self.name!r} is not accepting requests")
        if len(self._queue) + n > self.max_queue_size:
            raise QueueFull(
                f"model {self.name!r} has {len(self._queue)} images queued (max {self.max_queue_size})",
                retry_after=self.retry_after(n),
            )
        ahead = len(self._queue) + self._held - held
        if self.policy is None or not (ahead or self._running_batches):
            return
        now = time.monotonic()
        completion = self.policy.completion(ahead, n, self._running_left(now), self.batches_in_flight)
        limit = self.policy.objective if deadline is None else min(self.policy.objective, deadline - now)
        if completion > limit:
            over = completion - self.policy.objective
            raise ObjectiveUnreachable(
                f"model {self.name!r} would answer in about {completion * 1000:.0f} ms with {ahead} images "
                f"ahead; its objective is {self.policy.objective * 1000:.0f} ms",
                retry_after=min(60, max(1, math.ceil(over))),
            )

    def seed_latency(self, seconds: dict[int, float]) -> None:
        """Batch latencies measured before serving (warm-up), so the first batches are already chosen well.
        Only the policy's table: the deadline check's estimate learns from served batches alone."""
        if self.policy is not None:
            for n, s in seconds.items():
                self.policy.latency.observe(n, s)

    @property
    def held(self) -> int:
        """Images admitted and still decoding (hold), not queued yet."""
        return self._held

    def _running_left(self, now: float) -> float:
        """Seconds until the first running batch is predicted to finish; 0 if none runs."""
        if not self._running_batches or self.policy is None:
            return 0.0
        return max(0.0, min(self.policy.latency.predict(n) - (now - t) for t, n in self._running_batches.values()))

    def enqueue(
        self,
        arrays: Sequence[np.ndarray],
        deadline: float | None = None,
        on_release: Callable[[], None] | None = None,
        held: int = 0,
    ) -> list[asyncio.Future]:
        """Queue one item per array, all or none; returns their futures (awaiting gives an InferenceResult).
        `on_release` is called once per item when the batcher is done with its array: after its batch ran,
        or when it was dropped (cancelled, or past its deadline). A cancelled future alone does not say that:
        its item may be in a batch that is running. `held`: how many of them `hold` counted as coming."""
        try:
            self.admit(len(arrays), deadline, held=held)
        finally:
            self._held -= held  # coming no longer: queued now, or refused
        self._arrivals.add(len(arrays))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Pending(a, loop.create_future(), now, deadline, on_release) for a in arrays]
        self._queue.extend(items)
        self._arrived.set()
        return [item.future for item in items]

    async def submit(self, array: np.ndarray, deadline: float | None = None) -> InferenceResult:
        (future,) = self.enqueue([array], deadline)
        return await future

    async def stop(self) -> None:
        """Stop accepting, run everything already queued, wait for running batches."""
        self._stopping = True
        self._arrived.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._running_batches:
            await asyncio.gather(*self._running_batches, return_exceptions=True)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def drain_rate(self) -> float:
        """Images per second finished over the last few seconds; 0.0 before any batch finishes."""
        now = time.monotonic()
        while self._completed and now - self._completed[0][0] > DRAIN_WINDOW_S:
            self._completed.popleft()
        if not self._completed:
            return 0.0
        span = max(now - self._completed[0][0], 1e-3)
        return sum(n for _, n in self._completed) / span

    def retry_after(self, extra: int = 1) -> int:
        """Whole seconds until the queue should have room for `extra` more, from the drain rate (1..60)."""
        rate = self.drain_rate
        if rate <= 0:
            return 1
        must_leave = max(1, len(self._queue) + extra - self.max_queue_size)
        return min(60, max(1, math.ceil(must_leave / rate)))

    # -- the background task ------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            while not self._queue:
                if self._stopping:
                    return
                self._arrived.clear()
                if self._grown and self._on_idle is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), IDLE_TRIM_S)
                    if not self._queue and not self._stopping:
                        await self._idle()
                    continue
                await self._arrived.wait()
            await self._slots.acquire()  # form the batch only when it can run, so it takes the newest items
            try:
                batch, reason = await self._form_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            self._grown |= len(batch) > 1
            task = asyncio.get_running_loop().create_task(self._run_batch(batch, reason))
            self._running_batches[task] = (time.monotonic(), len(batch))
            task.add_done_callback(self._running_batches.pop)

    async def _idle(self) -> None:
        """Run `on_idle` in the executor with every slot held, so that no batch runs beside it."""
        self._grown = False
        for _ in range(self.batches_in_flight):
            await self._slots.acquire()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._on_idle)
        except Exception:
            log.exception("model %r: idle hook failed", self.name)
        finally:
            for _ in range(self.batches_in_flight):
                self._slots.release()

    def _drop_dead(self) -> None:
        """Remove items whose client left (future cancelled), and answer 504 to those whose deadline comes
        before the next batch could finish; none of them is run."""
        now = time.monotonic()
        needs = self.latency.expected(min(len(self._queue), self.max_batch_size))
        alive = deque()
        for item in self._queue:
            if item.future.done():
                _release(item)
                continue
            if item.deadline is not None and now + needs >= item.deadline:
                waited_ms, left_ms = (now - item.enqueued_at) * 1000, (item.deadline - now) * 1000
                message = f"deadline passed after {waited_ms:.0f} ms in the queue"
                if left_ms > 0:
                    message = f"{left_ms:.0f} ms to the deadline and a batch takes about {needs * 1000:.0f} ms"
                item.future.set_exception(DeadlineExceeded(message + "; not run"))
                _release(item)
                continue
            alive.append(item)
        self._queue = alive

    async def _form_batch(self) -> tuple[list[_Pending], str]:
        """The next batch and why it was released, once it is due by the rules in use."""
        while True:
            self._drop_dead()
            n = len(self._queue)
            if n == 0:
                return [], ""
            if self._stopping:
                return self._take(min(n, self.max_batch_size)), "shutdown"
            due = await (self._fixed_rules(n) if self.policy is None else self._objective_rules(n))
            if due is not None:
                size, reason = due
                return self._take(min(n, size)), reason

    async def _fixed_rules(self, n: int) -> tuple[int, str] | None:
        """Full, the oldest waited max_queue_delay, or a preferred size with the queue quiet; None: look again
        (after waiting for an arrival)."""
        if n >= self.max_batch_size:
            return self.max_batch_size, "full"
        remaining = self._queue[0].enqueued_at + self.max_queue_delay - time.monotonic()
        if remaining <= 0:
            return n, "delay"
        if self.preferred_batch_sizes and n >= self.preferred_batch_sizes[0]:
            await asyncio.sleep(0)  # let requests that are arriving right now enqueue
            if len(self._queue) == n:  # the queue is momentarily quiet: dispatch a preferred size
                return max(p for p in self.preferred_batch_sizes if p <= n), "quiet"
            return None
        await self._wait_for_arrival(remaining)
        return None

    async def _objective_rules(self, n: int) -> tuple[int, str] | None:
        """The policy's choice (service/engine/policy.py), or "deadline" when the oldest image's own deadline
        cannot wait for more; None: look again."""
        now = time.monotonic()
        oldest = self._queue[0]
        plan = self.policy.plan(min(n, self.max_batch_size), now - oldest.enqueued_at, self._arrivals.rate())
        if isinstance(plan, Release):
            return plan.size, plan.reason
        wait = plan.seconds
        if oldest.deadline is not None:
            slack = oldest.deadline - now - self.policy.latency.predict(self.policy.target_size())
            if slack <= 0:
                return self.max_batch_size, "deadline"
            wait = min(wait, slack)
        if not await self._wait_for_arrival(wait):  # the arrivals the wait counted on did not come
            return n, "quiet"
        return None

    async def _wait_for_arrival(self, seconds: float) -> bool:
        """Whether something arrived (or the batcher is stopping) within `seconds`."""
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), seconds)
        return self._arrived.is_set()

    def _take(self, n: int) -> list[_Pending]:
        return [self._queue.popleft() for _ in range(n)]

    def _timed_run(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
        started = time.monotonic()
        output = self._run(inputs)
        return output, started, time.monotonic()

    async def _run_batch(self, items: list[_Pending], reason: str) -> None:
        try:
            inputs = [item.array for item in items]  # the engine stacks them where its device wants them
            loop = asyncio.get_running_loop()
            output, started, finished = await loop.run_in_executor(self._executor, self._timed_run, inputs)
            if not isinstance(output, np.ndarray) or output.ndim < 1 or output.shape[0] != len(items):
                shape = getattr(output, "shape", type(output).__name__)
                raise InferenceFailed(f"model returned {shape} for a batch of {len(items)}")
            inference_ms = (finished - started) * 1000
            for item, row in zip(items, output, strict=True):
                if not item.future.done():
                    queue_ms = (started - item.enqueued_at) * 1000
                    item.future.set_result(InferenceResult(row, queue_ms, inference_ms, len(items), self.version))
            self._completed.append((finished, len(items)))
            self.latency.observe(len(items), finished - started)
            if self.policy is not None:
                self.policy.latency.observe(len(items), finished - started)
            if self._on_batch is not None:
                self._on_batch(len(items), finished - started, reason)
        except Exception as e:
            if isinstance(e, ServiceError):
                message = e.message
            else:
                log.exception("model %r: batch of %d failed", self.name, len(items))
                message = f"inference failed for a batch of {len(items)}: {type(e).__name__}"
            for item in items:
                if not item.future.done():
                    item.future.set_exception(InferenceFailed(message))
        except asyncio.CancelledError:
            for item in items:
                if not item.future.done():
                    item.future.set_exception(ModelNotReady(f"model {self.name!r} is shutting down"))
            raise
        finally:
            for item in items:
                _release(item)
            self._slots.release()


def _release(item: _Pending) -> None:
    if item.on_release is not None:
        item.on_release()
