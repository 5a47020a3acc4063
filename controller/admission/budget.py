"""How much memory reviews may hold on one replica, and the thread deep reviews are decided on.

The webhook port takes bodies from whoever can reach it, so what a replica holds for them is
bounded by construction, not by the kindness of callers. Three things hold memory while
reviews are handled:

1. Bodies of small reviews (a Content-Length up to ``small_body_bytes``), while they are read
   and decided, share a byte budget (``small_budget_bytes``). A request that does not fit
   waits its turn, first come first served, for up to ``wait_seconds``, then gets 503.
2. Their parsed objects. A small review is parsed, decided and answered in one synchronous
   stretch on the event loop, so only one of them is ever parsed at a time: at most
   ``small_body_bytes`` x ``codec.MAX_PARSED_BYTES_PER_BODY_BYTE``.
3. One large review at a time: bigger than ``small_body_bytes``, without a Content-Length,
   or nested deeper than the fast parser goes. It is read, then parsed on the ``Worker``
   thread so the event loop keeps answering small reviews; its body plus what parsing it
   can make (``codec.parsed_size_bound``) must fit ``large_budget_bytes``, or it is
   answered 413 without being parsed. Others wait for it as in (1).

With the defaults that is 8 + 9 + 80 = 97 MiB above an idle replica (which holds ~110-120 MiB
with its index and clients), inside the chart's 256 MiB limit with room for connections
(~0.3 MiB each, mostly asyncio's TLS read buffer) and allocator slack. Waiting is preferred to refusing because every review is cheap once read
(~100 us); the waits end before the API server's own timeout (the webhook's
``timeoutSeconds``, 5 s), so the caller hears changegate's reason rather than a timeout.

A review the API server sends is never bigger than ``codec.MAX_BODY_BYTES`` (24 MiB) and its
objects at most 1.5 MiB each before escaping, so every such review fits (3) unless its objects
are mostly JSON punctuation -- e.g. a custom resource that is a 1.5 MiB list of empty
objects, which parses to ~50 MiB of dicts per object -- or a large deep one whose text is not
plain ASCII. Those are refused, failing closed. The largest review of escaped text (24 MiB)
takes ~72 MiB to parse by that bound, which is what sizes ``large_budget_bytes``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Final, TypeVar

from controller.admission import codec

T = TypeVar("T")

#: Thread stack for deep reviews. Parsing and comparing JSON costs ~200 bytes of C stack per
#: level on CPython 3.11 (10,010 levels fit in 2 MiB); 32 MiB of address space leaves ample
#: room for whatever else a decision recurses through. Pages never touched cost no memory.
DEEP_STACK_BYTES: Final = 32 << 20
#: The recursion limit while a deep review is parsed and decided: Kubernetes' deepest JSON
#: plus the frames the parser and the decision themselves stand on.
DEEP_RECURSION_LIMIT: Final = codec.MAX_JSON_DEPTH + 1_000


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """The bounds above; tests shrink them, production uses the defaults."""

    max_body_bytes: int = codec.MAX_BODY_BYTES
    small_body_bytes: int = 256 << 10
    small_budget_bytes: int = 8 << 20
    large_budget_bytes: int = 80 << 20
    wait_seconds: float = 4.0
    read_seconds: float = 4.0

    def __post_init__(self) -> None:
        # Anything admitted must be able to fit on its own, or it would wait forever.
        if self.small_budget_bytes < self.small_body_bytes:
            raise ValueError("small_budget_bytes must hold at least one small body")
        if self.large_budget_bytes < 3 * self.max_body_bytes:
            raise ValueError(
                "large_budget_bytes must hold the parse of a max_body_bytes review of escaped "
                "text (3 bytes for each byte of body)"
            )


class ByteBudget:
    """An asyncio semaphore counted in bytes, granted in arrival order.

    In order, so a large request is not starved by a stream of small ones that keep fitting.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def try_acquire(self, size: int) -> bool:
        """Take ``size`` bytes now if they are free and nobody is waiting; never waits."""
        if size > self.capacity:
            raise ValueError(f"{size} bytes can never fit a budget of {self.capacity}")
        if not self._waiters and self.used + size <= self.capacity:
            self.used += size
            return True
        return False

    async def acquire(self, size: int) -> None:
        if self.try_acquire(size):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as we gave up: hand it on
            else:
                self._waiters.remove(entry)
                self._grant()  # we may have been the head that others queued behind
            raise

    def release(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, waiter = self._waiters.popleft()
            self.used += size
            waiter.set_result(None)


class Gate:
    """The two lanes of the module docstring: ``small(size)`` and ``large()`` reservations."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._small = ByteBudget(limits.small_budget_bytes)
        self._large = asyncio.Semaphore(1)

    @property
    def small_bytes_in_use(self) -> int:
        return self._small.used

    @property
    def large_in_use(self) -> bool:
        return self._large.locked()

    def small(self, size: int) -> _SmallReservation:
        return _SmallReservation(self, size)

    async def _enter_small(self, size: int) -> None:
        # The common case -- room to spare -- costs no timer: this runs for every review.
        if self._small.try_acquire(size):
            return
        try:
            async with asyncio.timeout(self.limits.wait_seconds):
                await self._small.acquire(size)
        except TimeoutError:
            raise codec.Busy(
                "changegate is busy: too many review bytes in flight on this replica; retry"
            ) from None

    def _leave_small(self, size: int) -> None:
        self._small.release(size)

    @contextlib.asynccontextmanager
    async def large(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.limits.wait_seconds):
                await self._large.acquire()
        except TimeoutError:
            raise codec.Busy(
                "changegate is busy: another large review is being decided on this replica; retry"
            ) from None
        try:
            yield
        finally:
            self._large.release()

    def check_fits(self, body: bytes | bytearray, *, deep: bool = False) -> None:
        """Refuse (413) a large review whose parse could exceed ``large_budget_bytes``."""
        need = codec.parsed_size_bound(body, deep=deep)
        if need > self.limits.large_budget_bytes:
            raise codec.BodyTooLarge(
                f"AdmissionReview of {len(body)} bytes could take {need >> 20} MiB to decide, "
                f"more than the {self.limits.large_budget_bytes >> 20} MiB a review may use on "
                "a changegate replica (its objects are mostly JSON punctuation)"
            )


class _SmallReservation:
    """``async with gate.small(size):`` -- room for one small body, given back on exit."""

    __slots__ = ("_gate", "_size")

    def __init__(self, gate: Gate, size: int) -> None:
        self._gate = gate
        self._size = size

    async def __aenter__(self) -> None:
        await self._gate._enter_small(self._size)

    async def __aexit__(self, *_: object) -> None:
        self._gate._leave_small(self._size)


class Worker:
    """The one thread large and deep reviews are parsed on, and deep ones decided on.

    One thread, because the gate lets one large review through at a time; a big stack and a
    raised recursion limit (``deep_recursion``), because the stdlib parser and a decision's
    comparison of ``object`` with ``oldObject`` recurse once per level of JSON.
    """

    def __init__(self) -> None:
        self._executor: futures.ThreadPoolExecutor | None = None

    def _pool(self) -> futures.ThreadPoolExecutor:
        if self._executor is None:
            executor = futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="changegate-large-reviews"
            )
            # threading.stack_size applies to threads started after it, process-wide: set it
            # just around the submit that starts our one thread.
            previous = threading.stack_size(DEEP_STACK_BYTES)
            try:
                executor.submit(lambda: None)
            finally:
                threading.stack_size(previous)
            self._executor = executor
        return self._executor

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread while the event loop goes on."""
        return await asyncio.wrap_future(self._pool().submit(fn))

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread and block the caller (the event loop) until it is done.

        For deciding: a decision reads and fills the snapshot's caches without locks, so one
        must never run while the event loop makes another.
        """
        return self._pool().submit(fn).result()

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


@contextlib.contextmanager
def deep_recursion() -> Iterator[None]:
    """Raise the recursion limit to ``DEEP_RECURSION_LIMIT`` for the duration.

    The limit is the interpreter's, not the thread's: while it is raised, the event loop's
    thread has it too. Nothing there recurses over review content (the fast parser stops at
    ~200 levels by itself), and its 8 MiB stack would hold far more than this limit's frames.

    CPython 3.11 (the image's) counts C recursion -- the json scanner, dict comparison --
    against this limit. 3.12 and 3.13 count it against a fixed C limit instead (3.12.1: ~1,500
    levels; 3.13.0: ~10,000), so there deeper reviews end in RecursionError: a 400, or a
    decision that denies -- closed, never open.
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, DEEP_RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)
