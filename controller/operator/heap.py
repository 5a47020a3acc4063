"""Hand the C allocator's free pages back to the OS after bulk work (glibc's ``malloc_trim``).

CPython keeps small objects in its own arenas and returns an arena once it is empty;
everything larger (dict tables, list buffers, API responses) comes from the C library's
malloc, which keeps freed pages in its heap for reuse. After the bulk work of a start (the
initial list, kopf's re-list, a status write for every window), a replica at 10,000 windows
held ~6 MB of such free pages: trimming them took its settled RSS from 241 to 235 MB, and
from 225 to 220 MB after a restart (measured in a replica, calling ``malloc_trim`` from gdb).

A trim walks the heap while holding its lock (0.1 ms for a 10,000-window index in process;
tens of ms for a badly fragmented heap of several hundred MB), so it runs in a worker
thread, and only once enough work was done to have left free pages behind and that work
has paused: never while the replica idles.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


def trim() -> bool:
    """Return the C heap's free pages to the OS; False where the C library has no
    ``malloc_trim`` (it is glibc's; musl has none), which changes nothing."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    malloc_trim(0)
    return True


async def trim_after_work(
    work: Callable[[], int],
    *,
    every: float = 5.0,
    at_least: int = 200,
    busy_for: int = 12,
    trim: Callable[[], object] = trim,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Trim once ``work()`` (a running count: events applied, statuses written) has grown by
    ``at_least`` since the last trim and then stopped growing for a tick of ``every``
    seconds -- or has kept growing for ``busy_for`` ticks (a minute of steady churn). Trimming
    while the work goes on would only hand back pages it is about to take again. Runs until
    cancelled."""
    done = last = work()
    ticks = 0
    while True:
        await sleep(every)
        now = work()
        busy, last = now != last, now
        ticks += 1
        if now - done < at_least or (busy and ticks < busy_for):
            continue
        done, ticks = now, 0
        try:
            await asyncio.to_thread(trim)
        except Exception:  # memory hygiene only: never worth stopping for
            logger.exception("could not trim the C heap")
