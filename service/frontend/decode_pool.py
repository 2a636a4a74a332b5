"""Where images are decoded: two lanes of threads with bounded backlogs, so no request costs more than
its share.

Every image starts in the small lane, where its header is read and checked (service/frontend/preprocess.py).
One that decodes to at most `large_pixels` is decoded there and then; a larger one (a 16-megapixel
PNG costs hundreds of milliseconds) moves to the large lane. Each lane has its own threads, the large
lane half as many and at a lower scheduling priority, so a flood of large images takes at most half
the cores, only when nothing else wants them, and never queues in front of small ones. Each lane's
backlog (images waiting or running) is bounded: a request that would overflow it is refused at once
with 429, before any of its images is decoded; a lane that is idle takes a request whatever its size,
so a request the limits allow is never refused for good.

Work for the dead is skipped: each image checks the request's deadline right before it is decoded,
and a request that is cancelled (its client left) takes its waiting images out of the lanes.
"""

import asyncio
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.config import Settings, usable_cores
from service.errors import DeadlineExceeded, DecoderBusy, ServiceError
from service.frontend.preprocess import Preprocessor

LARGE_LANE_NICENESS = 10  # the large lane's threads yield the CPU to the event loop, small images and inference


@dataclass(frozen=True)
class Decoded:
    array: np.ndarray  # the model's input for this image
    decode_ms: float
    lane: str  # "small" or "large"


class Lane:
    """A thread pool whose backlog is counted and bounded (count updated from the threads, under a lock).
    `niceness` lowers its threads' scheduling priority (Linux), so that they use what the CPU has spare."""

    def __init__(self, name: str, workers: int, max_backlog: int, niceness: int = 0):
        if workers < 1 or max_backlog < 1:
            raise ValueError(f"decode lane {name!r}: workers and max_backlog must be >= 1")
        self.name = name
        self.max_backlog = max_backlog
        self._executor = ThreadPoolExecutor(
            workers, thread_name_prefix=f"decode-{name}", initializer=_lower_priority, initargs=(niceness,)
        )
        self._lock = threading.Lock()
        self._backlog = 0

    @property
    def backlog(self) -> int:
        return self._backlog

    def reserve(self, n: int) -> None:
        """Count `n` images in, or raise DecoderBusy; an idle lane takes any `n`."""
        with self._lock:
            if self._backlog and self._backlog + n > self.max_backlog:
                raise DecoderBusy(
                    f"{self._backlog} images are waiting to be decoded in the {self.name} lane "
                    f"(limit {self.max_backlog}); retry shortly"
                )
            self._backlog += n

    def _release(self, _: Future) -> None:
        with self._lock:
            self._backlog -= 1

    def run(self, fn, *args) -> asyncio.Future:
        """Run one reserved image; its count is released when it finishes or is cancelled before it starts."""
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._release)
        return asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _lower_priority(niceness: int) -> None:
    """Runs in each new thread: on Linux a thread has a niceness of its own."""
    if niceness and sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + niceness)


@dataclass(frozen=True)
class _Opened:
    """A large image whose header the small lane read and checked; the large lane decodes it."""

    image: Image.Image
    header_ms: float


def _check_deadline(deadline: float) -> None:
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("deadline passed before the image was decoded")


def _decode(
    preprocessor: Preprocessor,
    image: Image.Image,
    started: float,
    lane: str,
    out: np.ndarray | None,
    header_ms: float = 0.0,
) -> Decoded:
    array = preprocessor.finish(preprocessor.to_pixels(image), out)
    return Decoded(array, (time.perf_counter() - started) * 1000 + header_ms, lane)


def _open_or_decode(
    preprocessor: Preprocessor, data: bytes, deadline: float, large_pixels: int, out: np.ndarray | None
) -> Decoded | _Opened:
    """Small lane: check the header, then decode here unless the image is large."""
    _check_deadline(deadline)
    started = time.perf_counter()
    image = preprocessor.open(data)
    width, height = image.size  # as it will be decoded (a JPEG after DCT scaling)
    if width * height > large_pixels:
        return _Opened(image, (time.perf_counter() - started) * 1000)
    return _decode(preprocessor, image, started, "small", out)


def _decode_opened(preprocessor: Preprocessor, opened: _Opened, deadline: float, out: np.ndarray | None) -> Decoded:
    """Large lane."""
    _check_deadline(deadline)
    return _decode(preprocessor, opened.image, time.perf_counter(), "large", out, opened.header_ms)


class DecodePool:
    def __init__(
        self, *, workers: int, large_workers: int, max_backlog: int, large_pixels: int, max_large_backlog: int
    ):
        self.large_pixels = large_pixels
        self.small = Lane("small", workers, max_backlog)
        self.large = Lane("large", large_workers, max_large_backlog, niceness=LARGE_LANE_NICENESS)

    @classmethod
    def from_settings(cls, settings: Settings) -> "DecodePool":
        workers = settings.decode_workers or usable_cores()
        large_workers = max(1, workers // 2)
        return cls(
            workers=workers,
            large_workers=large_workers,
            max_backlog=settings.max_decode_backlog,
            large_pixels=settings.large_image_pixels,
            max_large_backlog=settings.max_large_decode_backlog or 2 * large_workers,
        )

    async def decode(
        self,
        images: Sequence[tuple[str, bytes]],
        preprocessor: Preprocessor,
        deadline: float,
        out: Sequence[np.ndarray] | None = None,
    ) -> list[Decoded]:
        """Every image of one request decoded, in order; the first bad image fails the request, by name.
        `out`: where to write each image's array (shared-memory slots), else new arrays.
        Cancelling the caller cancels every image not yet started."""
        outs = list(out) if out is not None else [None] * len(images)
        self.small.reserve(len(images))
        results = await _gather(
            images,
            [
                self.small.run(_open_or_decode, preprocessor, d, deadline, self.large_pixels, o)
                for (_, d), o in zip(images, outs, strict=True)
            ],
        )
        large = [i for i, result in enumerate(results) if isinstance(result, _Opened)]
        if large:
            self.large.reserve(len(large))
            decoded = await _gather(
                [images[i] for i in large],
                [self.large.run(_decode_opened, preprocessor, results[i], deadline, outs[i]) for i in large],
            )
            for i, result in zip(large, decoded, strict=True):
                results[i] = result
        return results

    def shutdown(self) -> None:
        self.small.shutdown()
        self.large.shutdown()


async def _gather(images: Sequence[tuple[str, bytes]], futures: list[asyncio.Future]) -> list:
    """All results, or the first failed image's error, named."""
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    for (name, _), outcome in zip(images, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            outcome.message = f"{name}: {outcome.message}"
            raise outcome
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes
