"""Batching from a latency objective: how large a batch to run, when waiting for more images pays, and whether a
request can still be answered in time, all from how long batches of each size take on this machine.

The batch latencies are measured at warm-up and kept current from every batch run (`LatencyTable`). The target
size is the smallest whose throughput is within `PAYS` of the best size that fits half the objective (the other
half is for queueing): batch 1 where batching does not pay (resnet50 on a 2-core CPU), larger where it does. A
partial batch waits for more images only while the arrivals would fill it before the oldest image's objective runs
out, and only as long as the full batch would still beat running these now; otherwise it runs as it is.
"""

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SMOOTHING = 0.2  # weight of the newest batch in a size's running average
PAYS = 0.95  # a larger batch is worth its latency only if it brings at least 1/0.95 the throughput
QUEUEING_SHARE = 0.5  # the part of the objective a batch may take; the rest is for waiting in the queue
ARRIVAL_WINDOW_S = 1.0  # arrivals counted over this long, to tell whether waiting will fill a batch
MIN_WAIT_S = 0.001  # shorter waits are not worth a wake-up (and round to zero on some event loops)


class LatencyTable:
    """Seconds a batch of n takes: a running average per size measured, interpolated between sizes, and
    beyond the largest measured assumed to cost as much per image (no gain that was not seen). A batch slower
    or faster than its size's average moves every size by the same factor: a machine that slows down (a noisy
    neighbour, a hotter GPU) slows at every size, including those not run lately. So the ratios between sizes
    come from warm-up (a second, warm run of each) and from each size's own runs."""

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}

    def observe(self, n: int, seconds: float) -> None:
        old = self._seconds.get(n)
        if old is None or old <= 0:
            self._seconds[n] = seconds
            return
        factor = 1 + SMOOTHING * (seconds / old - 1)  # for size n itself: old + SMOOTHING * (seconds - old)
        for size in self._seconds:
            self._seconds[size] *= factor

    @property
    def sizes(self) -> list[int]:
        return sorted(self._seconds)

    def predict(self, n: int) -> float:
        """0.0 while nothing is measured."""
        if not self._seconds:
            return 0.0
        if n in self._seconds:
            return self._seconds[n]
        sizes = self.sizes
        if n < sizes[0]:
            return self._seconds[sizes[0]]  # a smaller batch is not slower
        if n > sizes[-1]:
            return self._seconds[sizes[-1]] * n / sizes[-1]
        upper = next(s for s in sizes if s > n)
        lower = max(s for s in sizes if s < n)
        share = (n - lower) / (upper - lower)
        return self._seconds[lower] + share * (self._seconds[upper] - self._seconds[lower])


class Arrivals:
    """Images per second arriving lately."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._seen: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        self._seen.append((self._clock(), n))

    def rate(self) -> float:
        now = self._clock()
        while self._seen and now - self._seen[0][0] > ARRIVAL_WINDOW_S:
            self._seen.popleft()
        return sum(n for _, n in self._seen) / ARRIVAL_WINDOW_S


@dataclass(frozen=True)
class Release:
    """Run a batch of `size` now, for `reason` (a metric label)."""

    size: int
    reason: str  # "target": the target size is waiting; "objective": the oldest cannot wait longer;
    # "quiet": arrivals would not fill the batch in time; "explore": a size not measured yet


@dataclass(frozen=True)
class Wait:
    seconds: float  # at most this long, or until the next arrival


class BatchPolicy:
    def __init__(self, objective_s: float, max_batch_size: int, latency: LatencyTable):
        self.objective = objective_s
        self.max_batch_size = max_batch_size
        self.latency = latency

    def target_size(self) -> int:
        """The smallest size within PAYS of the best throughput among those that fit their share of the
        objective (at least 1), from the sizes measured."""
        fits = [n for n in self.latency.sizes if n <= self.max_batch_size]
        fits = [n for n in fits if self.latency.predict(n) <= self.objective * QUEUEING_SHARE] or fits[:1]
        if not fits:
            return 1
        throughput = {n: n / max(self.latency.predict(n), 1e-9) for n in fits}
        best = max(throughput.values())
        return min(n for n in fits if throughput[n] >= PAYS * best)

    def _unexplored(self, waiting: int) -> int | None:
        """Twice the largest size measured, once that many are waiting and it is predicted to fit: how the
        table learns sizes that warm-up did not run."""
        sizes = self.latency.sizes
        if not sizes:
            return None
        larger = min(2 * sizes[-1], self.max_batch_size)
        if larger > sizes[-1] and waiting >= larger and self.latency.predict(larger) <= self.objective * QUEUEING_SHARE:
            return larger
        return None

    def plan(self, waiting: int, oldest_age: float, arrival_rate: float) -> Release | Wait:
        """What to do with `waiting` images, the oldest queued `oldest_age` seconds ago."""
        explore = self._unexplored(waiting)
        if explore is not None:
            return Release(explore, "explore")
        target = self.target_size()
        if waiting >= target:
            return Release(target, "target")
        slack = self.objective - oldest_age - self.latency.predict(target)
        if slack <= 0:
            return Release(waiting, "objective")
        fill = (target - waiting) / arrival_rate if arrival_rate > 0 else math.inf
        # Waiting idles the engine: worth it only while the full batch still beats running these now
        # (target / (wait + latency(target)) > waiting / latency(waiting)). Closed-loop clients, whose next
        # request waits for this answer, make the arrival rate promise more than comes: this bounds the cost.
        worth = target * self.latency.predict(waiting) / waiting - self.latency.predict(target)
        if fill > min(slack, worth):
            return Release(waiting, "quiet")
        return Wait(max(MIN_WAIT_S, fill))

    def completion(self, ahead: int, n: int, running_left: float, in_flight: int) -> float:
        """Seconds until `n` new images would be answered behind `ahead` queued ones, batches running
        `in_flight` at a time at the target size, the current batch done in `running_left`."""
        target = self.target_size()
        batches = math.ceil((ahead + n) / target)
        return running_left + math.ceil(batches / in_flight) * self.latency.predict(target)
