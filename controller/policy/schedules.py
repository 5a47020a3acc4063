"""The time engine: one-off windows, cron windows, work hours and holiday calendars as timelines.

Every schedule becomes a :class:`Timeline`: a set of half-open intervals ``[start, end)`` of
UTC instants, of which callers ask two questions -- "which interval contains ``t``?" and
"which interval starts next after ``t``?". Everything about wall clocks, time zones and DST
is settled here, once, so the decision and explanation layers only ever compare instants.

The rules are the product's (docs/time-semantics.md explains them to users):

* A wall-clock time maps to an instant by one **DST rule**, used for cron occurrences, work
  hour boundaries and holiday midnights alike: a local time that does not exist (spring
  forward) means the first valid instant after it -- the transition instant; an ambiguous
  local time (fall back) means its first instant (``fold=0``). Equivalently: *the first
  instant at which the local clock shows that time or a later one*.
* Intervals of one timeline that overlap or touch are merged, so :meth:`Timeline.interval_at`
  returns the maximal interval and ``.end`` really is "when it closes".

Search bounds (so that a cron that never fires, such as ``0 0 30 2 *``, cannot hang the
webhook): :meth:`Timeline.next_interval` looks at most :data:`SEARCH_HORIZON` ahead; a run of
back-to-back occurrences is followed for at most :data:`MAX_MERGED_OCCURRENCES` occurrences
(cron) or :data:`MAX_RUN_DAYS` days (work hours, holidays) in each direction from ``t``.
Beyond that a run is reported cut short: ``is_open`` stays exact, only ``.start``/``.end`` of
such a pathological always-open schedule are lower bounds of the truth.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import croniter as croniter_lib
import holidays as holidays_lib

from controller.model import crds

UTC = dt.UTC

SEARCH_HORIZON = dt.timedelta(days=5 * 366)
"""How far ahead ``next_interval`` searches: covers leap-day crons (``0 0 29 2 *``) in all
but the 2096 -> 2104 gap, and bounds the cost of crons that never fire."""

MAX_MERGED_OCCURRENCES = 500
"""How many back-to-back cron occurrences are merged into one interval in each direction.
Bounds the cost of always-open crons (``* * * * *`` with ``duration: 1m``)."""

MAX_RUN_DAYS = 35
"""How many local days either side of ``t`` are merged for work hours and holidays."""

_MINUTE = dt.timedelta(minutes=1)
_DAY = dt.timedelta(days=1)
_TICK = dt.timedelta(microseconds=1)


class ScheduleError(ValueError):
    """A schedule the models accepted but the engine cannot evaluate deterministically.

    Raised only when a timeline is built (never while it is asked about a time), for inputs
    that validation should reject: random (``R``) cron fields and holiday calendars the
    ``holidays`` library does not know.
    """


@dataclass(frozen=True, slots=True)
class Interval:
    """``[start, end)``, both aware datetimes in UTC."""

    start: dt.datetime
    end: dt.datetime

    def contains(self, t: dt.datetime) -> bool:
        return self.start <= t < self.end


@runtime_checkable
class Timeline(Protocol):
    """A set of disjoint, non-touching intervals; ``t`` may be any aware datetime."""

    def interval_at(self, t: dt.datetime) -> Interval | None:
        """The maximal interval containing ``t``, or None when closed at ``t``."""
        ...

    def next_interval(self, t: dt.datetime) -> Interval | None:
        """The first interval with ``start > t`` (within :data:`SEARCH_HORIZON`), or None."""
        ...

    def is_open(self, t: dt.datetime) -> bool:
        """``interval_at(t) is not None``, possibly cheaper."""
        ...


def is_open(timeline: Timeline, t: dt.datetime) -> bool:
    """Convenience for callers holding any Timeline: is it open at ``t``?"""
    return timeline.is_open(t)


def upcoming(timeline: Timeline, t: dt.datetime, *, limit: int) -> list[Interval]:
    """The interval open at ``t`` (if any) followed by the next ones, at most ``limit``.

    For listings ("next occurrences") in status, ``describe`` and denial messages.
    """
    out: list[Interval] = []
    current = timeline.interval_at(t)
    if current is not None:
        out.append(current)
    cursor = _utc(t)
    while len(out) < limit:
        nxt = timeline.next_interval(out[-1].end if out else cursor)
        if nxt is None:
            break
        out.append(nxt)
    return out


# -- public constructors --------------------------------------------------------------------------


def from_schedule(s: crds.Schedule | crds.OneOffSchedule | crds.RecurringSchedule) -> Timeline:
    """A window's (or a blackout's) schedule: one-off ``[start, end)`` or recurring cron."""
    if isinstance(s, crds.Schedule):
        one_off, recurring = s.one_off, s.recurring
    elif isinstance(s, crds.OneOffSchedule):
        one_off, recurring = s, None
    else:
        one_off, recurring = None, s
    if one_off is not None:
        return OneOff(Interval(_utc(one_off.start), _utc(one_off.end)))
    assert recurring is not None, "crds.Schedule guarantees exactly one form"
    if any(part.strip().upper().startswith("R") for part in re.split(r"[\s,]+", recurring.cron)):
        # croniter expands R to a fresh random value on every parse: the window would move.
        raise ScheduleError(f"cron {recurring.cron!r}: random (R) fields are not supported")
    return Recurring(
        cron=recurring.cron,
        duration=recurring.duration,
        zone=zoneinfo.ZoneInfo(recurring.time_zone),
        not_before=_utc(recurring.not_before) if recurring.not_before else None,
        not_after=_utc(recurring.not_after) if recurring.not_after else None,
    )


def work_hours(w: crds.WorkHours) -> Timeline:
    """An identity's weekly work hours; a range with ``end <= start`` runs past midnight."""
    return WeeklyHours(
        zone=zoneinfo.ZoneInfo(w.time_zone),
        ranges=tuple(
            _WeeklySpan(
                weekdays=frozenset(d.index for d in r.days),
                start=r.start,
                end=r.end,
            )
            for r in w.weekly
        ),
    )


def holidays(h: crds.HolidayCalendar) -> Timeline:
    """Public holidays of a country (and subdivision), each the whole local day in its zone."""
    _calendar(h.country, h.subdivision)  # fail at build time, not at decision time
    return HolidayDays(
        zone=zoneinfo.ZoneInfo(h.time_zone),
        country=h.country,
        subdivision=h.subdivision,
    )


def blackout(b: crds.Blackout) -> Timeline:
    """A policy blackout: a schedule or a holiday calendar."""
    if b.schedule is not None:
        return from_schedule(b.schedule)
    assert b.holidays is not None, "crds.Blackout guarantees exactly one form"
    return holidays(b.holidays)


# -- wall clock <-> instant ------------------------------------------------------------------------


def _utc(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t!r}: the engine compares instants only")
    return t.astimezone(UTC)


def to_instant(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The UTC instant a naive local wall-clock time stands for, under the DST rule.

    Ambiguous times take their first instant (``fold=0``); nonexistent times take the
    transition instant that skipped them. The mapping is monotone (non-decreasing) in the
    wall-clock time, which is what lets the cron search walk wall clocks in order.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    return _transition_through(wall, zone)


@functools.lru_cache(maxsize=4096)
def _transition_through(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The transition instant that skips the nonexistent ``wall``.

    PEP 495: for a gap, ``fold=1`` applies the offset after the transition (an instant
    before it) and ``fold=0`` the offset before (an instant after it); the transition lies in
    between. zoneinfo does not expose transitions, so bisect on whole seconds (tzdata's
    transitions are whole seconds).
    """
    lo = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    hi = int(wall.replace(tzinfo=zone, fold=0).astimezone(UTC).timestamp())
    before = _offset_at(lo, zone)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(mid, zone) == before:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, UTC)


def _offset_at(ts: int, zone: zoneinfo.ZoneInfo) -> dt.timedelta | None:
    return dt.datetime.fromtimestamp(ts, UTC).astimezone(zone).utcoffset()


def _wall(t: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return t.astimezone(zone).replace(tzinfo=None)


def _latest_wall(t: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """An upper bound of the wall-clock times whose instant is at or before ``t``.

    Usually ``t``'s own wall time; but in the repeated hour after a fall back (``fold=1``)
    the later wall times of that hour already happened, at their first instant.
    """
    local = t.astimezone(zone)
    wall = local.replace(tzinfo=None)
    if local.fold:
        first = local.replace(fold=0).utcoffset()
        second = local.utcoffset()
        if first is not None and second is not None:
            return wall + (first - second)
    return wall


def _floor_minute(wall: dt.datetime) -> dt.datetime:
    return wall.replace(second=0, microsecond=0)


def _merge_run(raws: Iterable[Interval], t: dt.datetime) -> Interval | None:
    """The run of overlapping or touching intervals that contains ``t``."""
    run: Interval | None = None
    for iv in sorted(raws, key=lambda i: (i.start, i.end)):
        if run is not None and iv.start <= run.end:
            run = Interval(run.start, max(run.end, iv.end))
            continue
        if run is not None and run.contains(t):
            return run  # iv starts after a gap: the run containing t is complete
        if iv.start > t:
            return None
        run = iv
    return run if run is not None and run.contains(t) else None


# -- timelines --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OneOff:
    """A single interval ``[start, end)``."""

    interval: Interval

    def interval_at(self, t: dt.datetime) -> Interval | None:
        return self.interval if self.interval.contains(_utc(t)) else None

    def next_interval(self, t: dt.datetime) -> Interval | None:
        return self.interval if self.interval.start > _utc(t) else None

    def is_open(self, t: dt.datetime) -> bool:
        return self.interval_at(t) is not None


@dataclass(frozen=True, slots=True)
class Recurring:
    """Cron occurrences in a zone's wall clock, each open for ``duration`` of elapsed time.

    An occurrence counts when its instant ``o`` satisfies ``not_before <= o < not_after``;
    it is open over ``[o, min(o + duration, not_after))``. croniter enumerates matches on
    naive wall-clock datetimes (every wall-clock minute visited once, no DST arithmetic in
    croniter); :func:`to_instant` then applies the DST rule, and equal instants (several
    nonexistent times collapsing onto one transition) count once.
    """

    cron: str
    duration: dt.timedelta
    zone: zoneinfo.ZoneInfo
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    def is_open(self, t: dt.datetime) -> bool:
        return self._latest_open(_utc(t)) is not None

    def interval_at(self, t: dt.datetime) -> Interval | None:
        t = _utc(t)
        latest = self._latest_open(t)
        if latest is None:
            return None
        start = latest
        for o in itertools.islice(self._at_or_before(t), 1, MAX_MERGED_OCCURRENCES):
            if o + self.duration < start:
                break  # older occurrences end earlier still: the run starts at `start`
            start = o
        end, _ = self._extend(self._end_of(latest), after=t)
        return Interval(start, end)

    def next_interval(self, t: dt.datetime) -> Interval | None:
        t = _utc(t)
        anchor = t
        if (latest := self._latest_open(t)) is not None:
            anchor, complete = self._extend(self._end_of(latest), after=t)
            if not complete:
                return None  # an always-open run: no opening is known within the bounds
        first = next(self._after(anchor), None)
        if first is None or first > t + SEARCH_HORIZON:
            return None
        end, _ = self._extend(self._end_of(first), after=first)
        return Interval(first, end)

    # The three building blocks. Occurrences are only ever looked at from `t` outwards, so
    # the cost is the number of occurrences within one duration (plus the merged run).

    def _latest_open(self, t: dt.datetime) -> dt.datetime | None:
        """The latest occurrence at or before ``t`` whose interval still contains ``t``."""
        if self.not_after is not None and t >= self.not_after:
            return None
        latest = next(self._at_or_before(t), None)
        if latest is None or latest + self.duration <= t:
            return None
        return latest

    def _end_of(self, o: dt.datetime) -> dt.datetime:
        end = o + self.duration
        return min(end, self.not_after) if self.not_after is not None else end

    def _extend(self, end: dt.datetime, *, after: dt.datetime) -> tuple[dt.datetime, bool]:
        """Follow occurrences after ``after`` that start at or before the run's end.

        Returns the run's end and whether it is really the end (False: the merge limit cut
        it short).
        """
        for n, o in enumerate(self._after(after)):
            if o > end:
                return end, True
            if n == MAX_MERGED_OCCURRENCES:
                return end, False
            end = max(end, self._end_of(o))
        return end, True

    def _after(self, t: dt.datetime) -> Iterator[dt.datetime]:
        """Occurrence instants ``o > t`` ascending, up to ``t + SEARCH_HORIZON``, within
        ``[not_before, not_after)``; callers stop consuming when they have what they need."""
        if self.not_before is not None and self.not_before > t:
            t = self.not_before - _TICK
        # Wall times earlier than t's own wall time map to instants <= t (see to_instant).
        it = self._croniter(_floor_minute(_wall(t, self.zone)) - _MINUTE)
        horizon = t + SEARCH_HORIZON
        previous: dt.datetime | None = None
        while True:
            try:
                wall = it.get_next(dt.datetime)
            except croniter_lib.CroniterBadDateError:
                return  # no match within croniter's own bound: a cron that never fires
            o = to_instant(wall, self.zone)
            if o <= t or o == previous:
                continue
            if o > horizon or (self.not_after is not None and o >= self.not_after):
                return
            previous = o
            yield o

    def _at_or_before(self, t: dt.datetime) -> Iterator[dt.datetime]:
        """Occurrence instants ``o <= t`` descending, down to ``not_before``."""
        it = self._croniter(_floor_minute(_latest_wall(t, self.zone)) + _MINUTE)
        horizon = t - SEARCH_HORIZON
        previous: dt.datetime | None = None
        while True:
            try:
                wall = it.get_prev(dt.datetime)
            except croniter_lib.CroniterBadDateError:
                return
            o = to_instant(wall, self.zone)
            if o > t or o == previous:
                continue
            if o < horizon or (self.not_before is not None and o < self.not_before):
                return
            previous = o
            yield o

    def _croniter(self, wall: dt.datetime) -> croniter_lib.croniter:
        # Naive start -> croniter does plain calendar arithmetic, no DST of its own.
        return croniter_lib.croniter(
            self.cron,
            wall,
            max_years_between_matches=SEARCH_HORIZON.days // 365 + 1,
        )


class _ByLocalDay:
    """Shared logic for timelines made of intervals that belong to local calendar days.

    A subclass says which raw intervals start on a given local day; this class merges them
    into maximal runs. A raw interval lasts at most a day plus a DST shift, so the intervals
    that can contain ``t`` start at most two local days before ``t``'s own.
    """

    __slots__ = ()
    zone: zoneinfo.ZoneInfo

    def _day_intervals(self, day: dt.date) -> Sequence[Interval]:
        raise NotImplementedError

    def _midnight(self, day: dt.date) -> dt.datetime:
        return to_instant(dt.datetime.combine(day, dt.time()), self.zone)

    def is_open(self, t: dt.datetime) -> bool:
        t = _utc(t)
        day = t.astimezone(self.zone).date()
        return any(
            iv.contains(t)
            for d in range(-2, 2)
            for iv in self._day_intervals(day + dt.timedelta(days=d))
        )

    def interval_at(self, t: dt.datetime) -> Interval | None:
        return self._run(_utc(t))[0]

    def next_interval(self, t: dt.datetime) -> Interval | None:
        t = _utc(t)
        current, complete = self._run(t)
        if not complete:
            return None  # an always-open run (24/7 work hours): no opening within the bounds
        anchor = current.end if current is not None else t
        day = anchor.astimezone(self.zone).date() - 2 * _DAY
        last = (t + SEARCH_HORIZON).astimezone(self.zone).date()
        while day <= last:
            for iv in sorted(self._day_intervals(day), key=lambda i: i.start):
                if iv.start > anchor:
                    if iv.start > t + SEARCH_HORIZON:
                        return None
                    run, _ = self._run(iv.start)
                    return Interval(iv.start, run.end if run is not None else iv.end)
            day += _DAY
        return None

    def _run(self, t: dt.datetime) -> tuple[Interval | None, bool]:
        """The maximal run containing ``t``, and whether its end is the real end (False: cut
        at :data:`MAX_RUN_DAYS`). Widens the day range while the run touches its edges."""
        day0 = t.astimezone(self.zone).date()
        back, ahead = 2, 1
        while True:
            lo, hi = day0 - back * _DAY, day0 + ahead * _DAY
            raws = [
                iv for n in range((hi - lo).days + 1) for iv in self._day_intervals(lo + n * _DAY)
            ]
            run = _merge_run(raws, t)
            if run is None:
                return None, True
            # Raw intervals of earlier days end by midnight(lo + 1); of later days start at
            # midnight(hi + 1) or after. Only a run reaching those points can grow.
            grow_back = back < MAX_RUN_DAYS and run.start <= self._midnight(lo + _DAY)
            grow_ahead = ahead < MAX_RUN_DAYS and run.end >= self._midnight(hi + _DAY)
            if not (grow_back or grow_ahead):
                return run, run.end < self._midnight(hi + _DAY)
            if grow_back:
                back = min(back * 2 + 7, MAX_RUN_DAYS)
            if grow_ahead:
                ahead = min(ahead * 2 + 7, MAX_RUN_DAYS)


@dataclass(frozen=True, slots=True)
class _WeeklySpan:
    weekdays: frozenset[int]  # Monday = 0
    start: dt.time
    end: dt.time  # <= start: runs past midnight, into the next day


@dataclass(frozen=True, slots=True)
class WeeklyHours(_ByLocalDay):
    """Weekly work hours; each span belongs to the day it starts on."""

    zone: zoneinfo.ZoneInfo
    ranges: tuple[_WeeklySpan, ...]

    def _day_intervals(self, day: dt.date) -> Sequence[Interval]:
        out: list[Interval] = []
        for span in self.ranges:
            if day.weekday() not in span.weekdays:
                continue
            end_day = day if span.end > span.start else day + _DAY
            start = to_instant(dt.datetime.combine(day, span.start), self.zone)
            end = to_instant(dt.datetime.combine(end_day, span.end), self.zone)
            if start < end:  # a span lying wholly in a DST gap is empty that day
                out.append(Interval(start, end))
        return out


@dataclass(frozen=True, slots=True)
class HolidayDays(_ByLocalDay):
    """Public holidays (observed days included), each ``[00:00, next 00:00)`` locally."""

    zone: zoneinfo.ZoneInfo
    country: str
    subdivision: str | None = None

    def _day_intervals(self, day: dt.date) -> Sequence[Interval]:
        if day not in _calendar(self.country, self.subdivision):
            return ()
        return (Interval(self._midnight(day), self._midnight(day + _DAY)),)

    def name(self, day: dt.date) -> str | None:
        """The holiday's name on a local date (for messages), or None."""
        found = _calendar(self.country, self.subdivision).get(day)
        return str(found) if found is not None else None


@functools.lru_cache(maxsize=64)
def _calendar(country: str, subdivision: str | None) -> holidays_lib.HolidayBase:
    """One lazily-expanding calendar per (country, subdivision): years load on first use."""
    try:
        return holidays_lib.country_holidays(country, subdiv=subdivision)
    except NotImplementedError as e:
        raise ScheduleError(f"holiday calendar {country}/{subdivision or '-'}: {e}") from e
