import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
import uvloop

from modelrepo.schema import TensorSpec
from service.transport import SLOT_ALIGN, Link, SlotPool, connect, listen, slot_bytes, tensor_bytes


class Config:
    def __init__(self, input_shape, dtype, classes):
        self.input = TensorSpec(name="input", dtype=dtype, shape=(-1, *input_shape))
        self.output = TensorSpec(name="logits", dtype="float32", shape=(-1, classes), layout="NC")


def test_a_slot_holds_the_largest_input_or_output_of_any_model():
    resnet = Config((3, 224, 224), "float32", 1000)
    fused = Config((3, 299, 299), "uint8", 1000)
    lenet = Config((1, 32, 32), "float32", 10)
    assert tensor_bytes(resnet.input) == 3 * 224 * 224 * 4
    assert slot_bytes([resnet, fused, lenet]) == 3 * 224 * 224 * 4  # 602,112: already aligned
    wide = Config((1, 4, 4), "uint8", 1000)  # 16 input bytes, a 4,000-byte output row
    assert slot_bytes([wide]) == 4032 and slot_bytes([wide]) % SLOT_ALIGN == 0


def test_front_end_and_engine_see_the_same_bytes_and_only_the_creator_unlinks():
    pool = SlotPool.create(slots=4, slot_bytes=64)
    engine_side = SlotPool.attach(pool.spec)
    try:
        slots = pool.take(2)
        pool.view(slots[1], (4, 4), np.float32)[...] = 7.0
        assert np.all(engine_side.view(slots[1], (4, 4), np.float32) == 7.0)
        assert np.all(engine_side.view(slots[0], (4, 4), np.float32) != 7.0) or slots[0] == slots[1]
        with pytest.raises(ValueError, match="outside"):
            engine_side.view(4, (4,), np.float32)
    finally:
        engine_side.close()
        assert Path("/dev/shm", pool.spec.name).exists()
        pool.close()
    assert not Path("/dev/shm", pool.spec.name).exists()


def test_free_slots_are_the_backpressure():
    pool = SlotPool.create(slots=3, slot_bytes=64)
    try:
        first = pool.take(2)
        assert pool.take(2) is None and pool.free == 1  # all or nothing
        pool.give(first)
        assert sorted(pool.take(3)) == [0, 1, 2]
    finally:
        pool.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_link_delivers_whole_messages_and_reports_the_peer_gone(loop, tmp_path):
    """A message larger than one read arrives whole, then the small ones after it, under either event loop."""
    big = ("status", -1, {"labels": ["a label"] * 200_000})

    async def exchange():
        address = str(tmp_path / "engine.sock")
        listener = listen(address)
        ours = await asyncio.to_thread(connect, address)  # as a front end connects to the engine
        theirs = listener.accept()
        received, closed = [], asyncio.Event()
        link = Link(ours, received.append, closed.set)
        link.start()
        sender = threading.Thread(target=lambda: [theirs.send(big), *(theirs.send(("result", i)) for i in range(100))])
        sender.start()
        while len(received) < 101 and not closed.is_set():
            await asyncio.sleep(0.01)
        sender.join()
        theirs.close()
        await asyncio.wait_for(closed.wait(), 5)
        link.send(("cancel", 1))  # to a closed link: dropped, not raised
        return received

    received = uvloop.run(exchange()) if loop == "uvloop" else asyncio.run(exchange())
    assert received == [big, *(("result", i) for i in range(100))]
