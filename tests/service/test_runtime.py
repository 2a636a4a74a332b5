import asyncio
import platform
import sys

import pytest

import service.runtime as runtime


@pytest.fixture
def restore_switch_interval():
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_tune_process_shortens_the_gil_switch_interval(restore_switch_interval, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # the environment's own setting wins: mallopt is not called
    assert runtime.tune_process() == {"switch_interval_s": runtime.SWITCH_INTERVAL_S}
    assert sys.getswitchinterval() == pytest.approx(runtime.SWITCH_INTERVAL_S)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")
def test_tune_process_limits_malloc_arenas_on_glibc(restore_switch_interval, monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    calls = []

    class FakeLibc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr(runtime, "_glibc", FakeLibc)
    assert runtime.tune_process()["MALLOC_ARENA_MAX"] == runtime.ARENA_MAX
    assert calls == [(runtime.M_ARENA_MAX, runtime.ARENA_MAX)]


def test_trim_runs_periodically_until_cancelled(monkeypatch):
    trims = []
    monkeypatch.setattr(runtime, "trim", lambda: trims.append(1))

    async def main():
        task = asyncio.ensure_future(runtime.trim_periodically(0.01))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        count = len(trims)
        await asyncio.sleep(0.05)
        return count

    count = asyncio.run(main())
    assert count >= 3 and len(trims) == count  # nothing after cancelling
