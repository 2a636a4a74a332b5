import asyncio
import os
import sys
import threading
import time

import numpy as np
import pytest

from service.errors import DeadlineExceeded, DecoderBusy, InvalidImage
from service.frontend.decode_pool import LARGE_LANE_NICENESS, DecodePool, Lane
from tests.service.conftest import image_bytes
from tests.service.frontend.test_preprocess import make

FAR = float("inf")


def pool(**overrides) -> DecodePool:
    kwargs = dict(workers=2, large_workers=2, max_backlog=8, large_pixels=1000, max_large_backlog=2)
    return DecodePool(**{**kwargs, **overrides})


class Gate:
    """A preprocessor stand-in whose decoding waits until the test opens the gate."""

    def __init__(self, inner):
        self.inner, self.open_event, self.calls = inner, threading.Event(), []

    def open(self, data):
        return self.inner.open(data)

    def to_pixels(self, image):
        self.calls.append(image.size)
        assert self.open_event.wait(10)
        return self.inner.to_pixels(image)

    def finish(self, pixels, out=None):
        return self.inner.finish(pixels, out)


def test_small_and_large_images_are_decoded_in_their_lanes():
    decode = pool()
    small, large = image_bytes(size=(20, 20)), image_bytes(size=(50, 40))  # 400 and 2,000 pixels
    lanes = []
    original = Lane.run

    def spy(self, fn, *args):
        lanes.append(self.name)
        return original(self, fn, *args)

    Lane.run = spy
    try:
        results = asyncio.run(decode.decode([("a", small), ("b", large)], make(), FAR))
    finally:
        Lane.run = original
    assert lanes == ["small", "small", "large"]  # every header is read in the small lane
    assert [r.array.shape for r in results] == [(3, 16, 16)] * 2
    assert [r.lane for r in results] == ["small", "large"]
    assert all(r.decode_ms > 0 for r in results)
    assert decode.small.backlog == decode.large.backlog == 0
    decode.shutdown()


def test_a_full_lane_refuses_before_decoding_and_an_idle_lane_takes_any_request():
    async def main():
        decode = pool(max_backlog=2)
        gate = Gate(make())
        first = asyncio.ensure_future(decode.decode([("a", image_bytes())] * 2, gate, FAR))
        while len(gate.calls) < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(DecoderBusy) as busy:
            await decode.decode([("b", image_bytes())], gate, FAR)
        assert busy.value.status_code == 429 and busy.value.headers["Retry-After"] == "1"
        gate.open_event.set()
        await first
        assert decode.small.backlog == 0
        many = await decode.decode([("c", image_bytes())] * 5, gate, FAR)  # more than the limit, but idle
        assert len(many) == 5
        decode.shutdown()

    asyncio.run(main())


def test_a_flood_of_large_images_does_not_delay_small_ones():
    async def main():
        decode = pool(max_large_backlog=4)
        gate = Gate(make())
        large = [
            asyncio.ensure_future(decode.decode([("big", image_bytes(size=(50, 40)))], gate, FAR)) for _ in range(4)
        ]
        while len(gate.calls) < 2:  # both large-lane threads are stuck decoding
            await asyncio.sleep(0.01)
        with pytest.raises(DecoderBusy, match="large lane"):
            await decode.decode([("one more big", image_bytes(size=(50, 40)))], gate, FAR)
        small = await asyncio.wait_for(decode.decode([("small", image_bytes(size=(20, 20)))], make(), FAR), 10)
        assert small[0].array.shape == (3, 16, 16)
        gate.open_event.set()
        await asyncio.gather(*large)
        decode.shutdown()

    asyncio.run(main())


def test_the_deadline_is_checked_right_before_decoding():
    async def main():
        decode = pool(workers=1)
        gate = Gate(make())
        blocker = asyncio.ensure_future(decode.decode([("a", image_bytes())], gate, FAR))
        while not gate.calls:
            await asyncio.sleep(0.01)
        expiring = asyncio.ensure_future(decode.decode([("b", image_bytes())], gate, time.monotonic() + 0.05))
        await asyncio.sleep(0.1)
        gate.open_event.set()
        await blocker
        with pytest.raises(DeadlineExceeded, match="b: deadline passed before the image was decoded"):
            await expiring
        assert gate.calls == [(32, 24)]  # only the first image was ever decoded
        decode.shutdown()

    asyncio.run(main())


def test_cancelling_a_request_takes_its_waiting_images_out_of_the_lane():
    async def main():
        decode = pool(workers=1, max_backlog=3)
        gate = Gate(make())
        blocker = asyncio.ensure_future(decode.decode([("a", image_bytes())], gate, FAR))
        while not gate.calls:
            await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(decode.decode([("b", image_bytes())] * 2, gate, FAR))
        await asyncio.sleep(0.05)
        assert decode.small.backlog == 3
        gone.cancel()
        await asyncio.sleep(0.05)
        assert decode.small.backlog == 1  # the two waiting images left without being decoded
        gate.open_event.set()
        await blocker
        assert len(gate.calls) == 1
        decode.shutdown()

    asyncio.run(main())


def test_the_first_bad_image_fails_the_request_by_name():
    decode = pool()
    with pytest.raises(InvalidImage, match="image 1: empty image"):
        asyncio.run(decode.decode([("image 0", image_bytes()), ("image 1", b"")], make(), FAR))
    decode.shutdown()


def test_decoded_arrays_are_the_preprocessors():
    data = image_bytes(color=(10, 200, 30), size=(60, 50))
    (result,) = asyncio.run(pool().decode([("a", data)], make(), FAR))
    np.testing.assert_array_equal(result.array, make()(data))


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
def test_the_large_lane_runs_at_a_lower_priority():
    decode = pool()

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def both() -> tuple[int, int]:
        return await decode.small.run(niceness), await decode.large.run(niceness)

    decode.small.reserve(1)
    decode.large.reserve(1)
    small, large = asyncio.run(both())
    assert large == min(19, small + LARGE_LANE_NICENESS)  # 19 is as nice as Linux goes
    decode.shutdown()
