"""Process-wide settings of the interpreter and the C library, applied once as `python -m service` starts.

The GIL: decode threads run Python between their C calls, and a thread that wants the GIL waits up to
the switch interval for it (5 ms by default). The event loop is such a thread: under a flood of bad
images, at 1 ms the well-behaved client's p99 fell from 70 to 58 ms, and from 65 to 42 ms under a flood
of /healthz (`make attack`, docs/BENCHMARKS.md), for a little more switching.

glibc malloc: fewer arenas from the start, and freed memory handed back to the system every few seconds.

Left to its defaults, glibc gives each thread an arena of its own (up to 8 per core) and keeps what is
freed in it for reuse: after `make attack` (16-megapixel PNGs, 15 MB bodies, decoded in threads) the
service held 1.73x its warm RSS, idle, for good. Two arenas keep less spare, and `malloc_trim(0)`
returns the free pages of every arena. A fixed mmap threshold (MALLOC_MMAP_THRESHOLD_) would return
large blocks at once instead, but the page faults it causes tripled the time pydantic takes to parse a
15 MB JSON body (3.5 -> 12-15 ms, with the GIL held). The environment's own MALLOC_ARENA_MAX wins.
"""

import asyncio
import ctypes
import functools
import logging
import os
import platform
import signal
import sys

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.001
M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
ARENA_MAX = 2
TRIM_INTERVAL_S = 5.0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, found once: `platform.libc_ver()` reads the interpreter's binary to tell."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL("libc.so.6")


def tune_process() -> dict[str, float]:
    """Call before any thread starts. Returns what was set (malloc: nothing off glibc, or where the
    environment already says)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    applied: dict[str, float] = {"switch_interval_s": SWITCH_INTERVAL_S}
    libc = _glibc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return applied
    if libc.mallopt(M_ARENA_MAX, ARENA_MAX) != 1:
        log.warning("mallopt(M_ARENA_MAX=%d) failed; glibc keeps its default", ARENA_MAX)
        return applied
    return {**applied, "MALLOC_ARENA_MAX": ARENA_MAX}


def trim() -> bool:
    """Return the free memory of every arena to the system; True if any was."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


PR_SET_PDEATHSIG = 1  # prctl option, from linux/prctl.h


def die_with_parent() -> None:
    """For a process the supervisor started: the kernel kills it the moment the supervisor dies, so a supervisor
    killed with SIGKILL takes the whole service with it, as one process would (Linux; a no-op elsewhere)."""
    libc = _glibc()
    if libc is None:
        return
    parent = os.getppid()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the request was made
        os._exit(1)


async def trim_periodically(interval_s: float = TRIM_INTERVAL_S) -> None:
    """For the lifespan: `trim` every `interval_s` in a thread (it walks every arena) until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(trim)
