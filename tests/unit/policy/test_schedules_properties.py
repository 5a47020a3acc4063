"""Property tests: the time engine against a deliberately naive minute-by-minute oracle.

The oracle shares nothing with the engine but zoneinfo's tz database. It walks UTC minutes
around a real DST transition, reads the local wall clock at each, and applies the DST rule
in its plainest form -- *a wall-clock time happens the first time the local clock shows it
or a later time* -- which covers ordinary, nonexistent (spring forward) and ambiguous (fall
back) times alike. Cron fields are checked by a tiny matcher written here for a restricted
alphabet (numbers, lists, ranges, steps, ``*``), not by croniter.

Everything is on whole minutes (cron, durations, work-hour boundaries, tz transitions), so
open/closed is constant within each UTC minute and minute indices are exact.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import zoneinfo
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.model import crds
from controller.policy import schedules

MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)
ZONES = ("America/New_York", "Europe/Berlin", "Asia/Seoul", "Australia/Lord_Howe")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- where to look: the 2026 transitions of each zone (Seoul has none: two plain dates) ----------


def _offset(zone: zoneinfo.ZoneInfo, t: dt.datetime) -> dt.timedelta:
    offset = t.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def transitions_2026(name: str) -> list[dt.datetime]:
    """Instants in 2026 at which the zone's UTC offset changes, to the minute."""
    zone = zoneinfo.ZoneInfo(name)
    found = []
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    while t.year == 2026:
        nxt = t + dt.timedelta(hours=1)
        if _offset(zone, t) != _offset(zone, nxt):
            m = t
            while _offset(zone, m) == _offset(zone, t):
                m += MINUTE
            found.append(m)
        t = nxt
    return found


ANCHORS: list[tuple[str, dt.datetime]] = []
for _name in ZONES:
    _found = transitions_2026(_name)
    assert len(_found) in (0, 2), (_name, _found)
    _points = _found or [
        dt.datetime(2026, 3, 8, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    ]
    ANCHORS.extend((_name, p) for p in _points)


# -- the oracle's view of the clock ----------------------------------------------------------------


@dataclass(frozen=True)
class Walk:
    """Every UTC minute from ``anchor - 3 days`` to ``anchor + 3 days`` with its local wall."""

    zone: str
    first: dt.datetime
    walls: tuple[dt.datetime, ...]  # naive local wall clock at each minute
    reached: tuple[dt.datetime, ...]  # the latest wall clock shown so far (running maximum)

    def instant(self, i: int) -> dt.datetime:
        return self.first + i * MINUTE

    def index(self, t: dt.datetime) -> int:
        return int((t - self.first) // MINUTE)

    def reach(self, wall: dt.datetime) -> int:
        """Minute index of the first instant the local clock shows ``wall`` or later.

        0 if that happened at or before the walk began; len(walls) if after it ends.
        """
        return bisect.bisect_left(self.reached, wall)


@functools.cache
def walk(zone: str, anchor: dt.datetime) -> Walk:
    tz = zoneinfo.ZoneInfo(zone)
    first = anchor - 3 * DAY
    walls = []
    reached = []
    top = dt.datetime.min
    for i in range(6 * 24 * 60 + 1):
        wall = (first + i * MINUTE).astimezone(tz).replace(tzinfo=None)
        top = max(top, wall)
        walls.append(wall)
        reached.append(top)
    return Walk(zone, first, tuple(walls), tuple(reached))


def coverage(w: Walk, intervals: list[tuple[int, int]]) -> list[bool]:
    """Open/closed per minute index, from [start, end) index pairs."""
    n = len(w.walls)
    delta = [0] * (n + 1)
    for start, end in intervals:
        start, end = max(start, 0), min(end, n)
        if start < end:
            delta[start] += 1
            delta[end] -= 1
    out, running = [], 0
    for i in range(n):
        running += delta[i]
        out.append(running > 0)
    return out


def first_opening_after(open_: list[bool], i: int) -> int | None:
    for j in range(i + 1, len(open_)):
        if open_[j] and not open_[j - 1]:
            return j
    return None


# -- a tiny cron matcher for a restricted alphabet ---------------------------------------------------


def field_values(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        if body == "*":
            a, b = low, high
        elif "-" in body:
            a, b = (int(x) for x in body.split("-"))
        else:
            a = b = int(body)
        values.update(range(a, b + 1, int(step) if step else 1))
    return values


def cron_matches(cron: str, wall: dt.datetime) -> bool:
    minute, hour, dom, month, dow = cron.split()
    weekday = (wall.weekday() + 1) % 7  # cron: Sunday = 0 (and 7)
    dows = {d % 7 for d in field_values(dow, 0, 7)}
    dom_ok = wall.day in field_values(dom, 1, 31)
    dow_ok = weekday in dows
    # Vixie cron: when both day fields are restricted, either may match.
    day_ok = (dom_ok or dow_ok) if dom != "*" and dow != "*" else (dom_ok and dow_ok)
    return (
        wall.minute in field_values(minute, 0, 59)
        and wall.hour in field_values(hour, 0, 23)
        and wall.month in field_values(month, 1, 12)
        and day_ok
    )


def oracle_recurring(
    w: Walk, cron: str, duration_min: int, bounds: tuple[int, int] | None
) -> list[bool]:
    starts = set()
    wall = w.walls[0].replace(second=0) + MINUTE  # walls <= the first one happened earlier
    while wall <= w.reached[-1]:
        if cron_matches(cron, wall):
            starts.add(w.reach(wall))
        wall += MINUTE
    lo, hi = bounds if bounds else (0, len(w.walls) + 1)
    return coverage(w, [(s, min(s + duration_min, hi)) for s in sorted(starts) if lo <= s < hi])


def oracle_work_hours(w: Walk, ranges: list[tuple[list[str], dt.time, dt.time]]) -> list[bool]:
    intervals = []
    day = w.walls[0].date() - DAY
    while day <= w.reached[-1].date():
        for days, start, end in ranges:
            if WEEKDAYS[day.weekday()] in days:
                end_day = day if end > start else day + DAY
                intervals.append(
                    (
                        w.reach(dt.datetime.combine(day, start)),
                        w.reach(dt.datetime.combine(end_day, end)),
                    )
                )
        day += DAY
    return coverage(w, intervals)


# -- strategies --------------------------------------------------------------------------------------

anchors = st.sampled_from(ANCHORS)
# Minutes into the 4 days centred on the transition, plus a few seconds past the minute.
offsets = st.tuples(st.integers(-2 * 24 * 60, 2 * 24 * 60), st.integers(0, 59))

minute_fields = st.one_of(
    st.sampled_from(["0", "30", "15", "45", "0,30", "*/15", "*/30", "10,40", "0-59/20"]),
    st.integers(0, 59).map(str),
)
hour_fields = st.one_of(
    st.sampled_from(["*", "1", "2", "3", "1-3", "0-4/2", "*/3", "22", "23", "0", "1,2,3"]),
    st.integers(0, 23).map(str),
)
dom_fields = st.sampled_from(["*", "*", "*", "1,15", "8", "25,29", "4,5", "31"])
dow_fields = st.sampled_from(["*", "*", "*", "0", "0,6", "1-5", "7", "6"])
crons = st.builds(
    lambda mi, h, dom, dow: f"{mi} {h} {dom} * {dow}",
    minute_fields,
    hour_fields,
    dom_fields,
    dow_fields,
)
durations = st.sampled_from([1, 15, 30, 45, 60, 90, 120, 180, 360, 1440])
bounds = st.one_of(
    st.none(),
    st.tuples(st.integers(-2 * 24 * 60, 2 * 24 * 60), st.integers(1, 2 * 24 * 60)),
)

clock_times = st.builds(
    dt.time,
    st.sampled_from([0, 1, 2, 3, 4, 9, 18, 22, 23]),
    st.sampled_from([0, 15, 30, 45]),
)
day_sets = st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)
weekly = st.lists(st.tuples(day_sets, clock_times, clock_times), min_size=1, max_size=3)


# -- properties -------------------------------------------------------------------------------------


def check_against_oracle(
    timeline: schedules.Timeline, w: Walk, open_: list[bool], t: dt.datetime
) -> None:
    i = w.index(t)
    assert timeline.is_open(t) is open_[i]
    assert (timeline.interval_at(t) is not None) is open_[i]

    current = timeline.interval_at(t)
    if current is not None:
        assert current.start <= t < current.end
        # A maximal interval: closed just before it and at its end (when inside the walk).
        s, e = w.index(current.start), w.index(current.end)
        if s > 0:
            assert not open_[s - 1] and all(open_[s : min(e, len(open_))])
        if e < len(open_):
            assert not open_[e]

    expected = first_opening_after(open_, i)
    nxt = timeline.next_interval(t)
    if expected is not None:
        assert nxt is not None
        assert nxt.start == w.instant(expected)
    else:
        assert nxt is None or nxt.start > w.instant(len(open_) - 1)


@PROPERTY_SETTINGS
@given(anchors, offsets, crons, durations, bounds)
def test_recurring_schedule_matches_the_minute_oracle(
    anchor: tuple[str, dt.datetime],
    offset: tuple[int, int],
    cron: str,
    duration_min: int,
    bound: tuple[int, int] | None,
) -> None:
    zone, point = anchor
    w = walk(zone, point)
    t = point + offset[0] * MINUTE + offset[1] * dt.timedelta(seconds=1)
    fields: dict[str, object] = {}
    index_bounds = None
    if bound is not None:
        not_before = point + bound[0] * MINUTE
        not_after = not_before + bound[1] * MINUTE
        fields = {"not_before": not_before, "not_after": not_after}
        index_bounds = (w.index(not_before), w.index(not_after))
    timeline = schedules.from_schedule(
        crds.Schedule(cron=cron, duration=f"{duration_min}m", time_zone=zone, **fields)
    )
    open_ = oracle_recurring(w, cron, duration_min, index_bounds)
    check_against_oracle(timeline, w, open_, t)


@PROPERTY_SETTINGS
@given(anchors, offsets, weekly)
def test_work_hours_match_the_minute_oracle(
    anchor: tuple[str, dt.datetime],
    offset: tuple[int, int],
    ranges: list[tuple[list[str], dt.time, dt.time]],
) -> None:
    zone, point = anchor
    w = walk(zone, point)
    t = point + offset[0] * MINUTE + offset[1] * dt.timedelta(seconds=1)
    timeline = schedules.work_hours(
        crds.WorkHours(
            time_zone=zone,
            weekly=[{"days": d, "start": s, "end": e} for d, s, e in ranges],
        )
    )
    open_ = oracle_work_hours(w, ranges)
    check_against_oracle(timeline, w, open_, t)


def test_the_oracle_walks_real_dst_transitions() -> None:
    """The walks must straddle a real offset change, or the properties prove little."""
    for zone, point in ANCHORS:
        tz = zoneinfo.ZoneInfo(zone)
        before = _offset(tz, point - MINUTE)
        after = _offset(tz, point)
        assert (before != after) is (zone != "Asia/Seoul"), zone
    lord_howe = zoneinfo.ZoneInfo("Australia/Lord_Howe")
    shifts = {
        _offset(lord_howe, p) - _offset(lord_howe, p - MINUTE)
        for zone, p in ANCHORS
        if zone == "Australia/Lord_Howe"
    }
    assert shifts == {dt.timedelta(minutes=30), dt.timedelta(minutes=-30)}
