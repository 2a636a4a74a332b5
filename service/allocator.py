"""glibc malloc settings for a process that decodes images in threads, applied before any thread starts.

Left to its defaults, glibc gives each thread an arena of its own (up to 8 per core) and, once a large
block is freed, raises its mmap threshold to that block's size (up to 32 MB). Image buffers and request
bodies then come from arenas that keep the memory after they are freed: after `make attack` the service
held 1.73x its warm RSS, idle. A fixed threshold sends every allocation above it to mmap, returned to the
system on free; two arenas keep little spare. The environment's own MALLOC_* settings win.
"""

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 * 1024
ARENA_MAX = 2
ENVIRONMENT = {M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", M_ARENA_MAX: "MALLOC_ARENA_MAX"}


def tune_malloc() -> dict[str, int]:
    """Set what the environment has not; returns what was set (nothing off glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    libc = ctypes.CDLL("libc.so.6")
    applied = {}
    for parameter, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_ARENA_MAX, ARENA_MAX)):
        name = ENVIRONMENT[parameter]
        if name in os.environ:
            continue
        if libc.mallopt(parameter, value) != 1:
            log.warning("mallopt(%s=%d) failed; glibc keeps its default", name, value)
            continue
        applied[name] = value
    return applied
