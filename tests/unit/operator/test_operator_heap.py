"""The operator hands the C heap's free pages back after bulk work, and only then."""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

import pytest

from controller.operator import heap


def test_trim_calls_glibc_here() -> None:
    assert hasattr(ctypes.CDLL(None), "malloc_trim")  # this machine runs glibc
    assert heap.trim() is True


def test_trim_is_a_no_op_without_malloc_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    class Musl:
        pass

    monkeypatch.setattr(heap.ctypes, "CDLL", lambda _: Musl())
    assert heap.trim() is False


class Clock:
    """The task's ticks, one at a time, when the test says so."""

    def __init__(self) -> None:
        self._ticks: asyncio.Queue[None] = asyncio.Queue()
        self.sleeps = 0  # how many times the task went to sleep

    async def sleep(self, _: float) -> None:
        self.sleeps += 1
        await self._ticks.get()

    async def tick(self) -> None:
        """One tick, and wait until the task has handled it (trim included) and sleeps again."""
        await until(lambda: self.sleeps > 0)
        after = self.sleeps + 1
        self._ticks.put_nowait(None)
        await until(lambda: self.sleeps >= after)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.001)


class Replica:
    def __init__(self, **options: int) -> None:
        self.work = 0
        self.trims: list[int] = []
        self.clock = Clock()
        self.task = asyncio.create_task(
            heap.trim_after_work(
                lambda: self.work,
                trim=lambda: self.trims.append(self.work),
                sleep=self.clock.sleep,
                **options,
            )
        )


async def test_trims_once_enough_work_has_paused() -> None:
    r = Replica(at_least=200, busy_for=1_000)
    try:
        for _ in range(3):
            await r.clock.tick()
        assert r.trims == []  # idle: never
        r.work = 150
        await r.clock.tick()
        await r.clock.tick()
        assert r.trims == []  # not enough yet
        for _ in range(20):  # still going: not yet
            r.work += 100
            await r.clock.tick()
        assert r.trims == []
        await r.clock.tick()  # paused: once
        assert r.trims == [2150]
        await r.clock.tick()
        await r.clock.tick()
        assert r.trims == [2150]  # not on every tick after it
        r.work += 150
        await r.clock.tick()
        await r.clock.tick()
        assert r.trims == [2150]  # 150 since the last trim
        r.work += 60
        await r.clock.tick()  # grew on this tick: busy
        await r.clock.tick()
        assert r.trims == [2150, 2360]
    finally:
        r.task.cancel()


async def test_steady_churn_is_trimmed_every_busy_for_ticks() -> None:
    r = Replica(at_least=200, busy_for=5)
    try:
        for _ in range(20):  # never pausing
            r.work += 100
            await r.clock.tick()
        assert r.trims == [500, 1000, 1500, 2000]
    finally:
        r.task.cancel()


async def test_a_failing_trim_does_not_stop_later_ones() -> None:
    work = 0
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise OSError("no")

    clock = Clock()
    task = asyncio.create_task(heap.trim_after_work(lambda: work, trim=failing, sleep=clock.sleep))
    try:
        await until(lambda: clock.sleeps > 0)  # started, having read 0
        work = 200
        await clock.tick()
        await clock.tick()
        assert calls == 1
        work = 400
        await clock.tick()
        await clock.tick()
        assert calls == 2
        assert not task.done()
    finally:
        task.cancel()
