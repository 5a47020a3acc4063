"""The time rules of the spec, pinned one by one (docs/time-semantics.md explains them)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import holidays as holidays_lib
import pytest

from controller.model import crds
from controller.policy import schedules

Z = dt.datetime.fromisoformat


def recurring(cron: str, duration: str, zone: str, **bounds: Any) -> schedules.Timeline:
    return schedules.from_schedule(
        crds.Schedule(cron=cron, duration=duration, time_zone=zone, **bounds)
    )


def hours(zone: str, *ranges: tuple[list[str], str, str]) -> schedules.Timeline:
    return schedules.work_hours(
        crds.WorkHours(
            time_zone=zone,
            weekly=[{"days": d, "start": s, "end": e} for d, s, e in ranges],
        )
    )


def iv(start: str, end: str) -> schedules.Interval:
    return schedules.Interval(Z(start), Z(end))


# -- one-off ---------------------------------------------------------------------------------------

ONE_OFF = schedules.from_schedule(
    crds.Schedule(start="2026-12-01T22:00:00+09:00", end="2026-12-02T00:00:00+09:00")
)


@pytest.mark.parametrize(
    ("t", "open_"),
    [
        ("2026-12-01T12:59:59Z", False),  # just before start
        ("2026-12-01T13:00:00Z", True),  # start is inclusive
        ("2026-12-01T22:00:00+09:00", True),  # the same instant, any offset
        ("2026-12-01T14:59:59.999999Z", True),
        ("2026-12-01T15:00:00Z", False),  # end is exclusive
    ],
)
def test_one_off_is_start_inclusive_end_exclusive(t: str, open_: bool) -> None:
    assert ONE_OFF.is_open(Z(t)) is open_
    expected = iv("2026-12-01T13:00:00Z", "2026-12-01T15:00:00Z") if open_ else None
    assert ONE_OFF.interval_at(Z(t)) == expected


def test_one_off_next_interval_is_only_before_it_starts() -> None:
    window = iv("2026-12-01T13:00:00Z", "2026-12-01T15:00:00Z")
    assert ONE_OFF.next_interval(Z("2026-12-01T12:00:00Z")) == window
    assert ONE_OFF.next_interval(Z("2026-12-01T13:00:00Z")) is None  # start > t, strictly
    assert ONE_OFF.next_interval(Z("2026-12-02T00:00:00Z")) is None


def test_intervals_are_reported_in_utc() -> None:
    got = ONE_OFF.interval_at(Z("2026-12-01T23:00:00+09:00"))
    assert got is not None
    assert got.start.utcoffset() == dt.timedelta(0)
    assert got.end.tzinfo is dt.UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        ONE_OFF.is_open(dt.datetime(2026, 12, 1, 13))


# -- recurring -------------------------------------------------------------------------------------

TUE_THU_22_KST = recurring("0 22 * * 2,4", "2h", "Asia/Seoul")


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        # Tue 2026-12-01 22:00 KST = 13:00Z, 2h, runs past local midnight
        ("2026-12-01T12:59:00Z", None),
        ("2026-12-01T13:00:00Z", ("2026-12-01T13:00:00Z", "2026-12-01T15:00:00Z")),
        ("2026-12-01T23:59:00+09:00", ("2026-12-01T13:00:00Z", "2026-12-01T15:00:00Z")),
        ("2026-12-02T00:00:00+09:00", None),  # duration end is exclusive (local midnight)
        ("2026-12-01T15:00:00Z", None),  # the same instant in UTC
        ("2026-12-02T13:30:00Z", None),  # Wednesday: no occurrence
        ("2026-12-03T14:00:00Z", ("2026-12-03T13:00:00Z", "2026-12-03T15:00:00Z")),
    ],
)
def test_cron_window_is_open_for_duration_after_each_occurrence(
    t: str, expected: tuple[str, str] | None
) -> None:
    assert TUE_THU_22_KST.interval_at(Z(t)) == (iv(*expected) if expected else None)
    assert TUE_THU_22_KST.is_open(Z(t)) is (expected is not None)


@pytest.mark.parametrize(
    ("t", "expected_start"),
    [
        ("2026-11-30T00:00:00Z", "2026-12-01T13:00:00Z"),
        ("2026-12-01T13:00:00Z", "2026-12-03T13:00:00Z"),  # open now: the one after
        ("2026-12-01T14:00:00Z", "2026-12-03T13:00:00Z"),
        ("2026-12-03T15:00:00Z", "2026-12-08T13:00:00Z"),
    ],
)
def test_next_interval_is_the_first_opening_strictly_after_t(t: str, expected_start: str) -> None:
    nxt = TUE_THU_22_KST.next_interval(Z(t))
    assert nxt is not None
    assert nxt.start == Z(expected_start)
    assert nxt.end == nxt.start + dt.timedelta(hours=2)


@pytest.mark.parametrize(
    ("t", "open_"),
    [
        ("2026-12-01T23:00:00+09:00", True),
        ("2026-12-02T00:00:00+09:00", True),  # past local midnight, same occurrence
        ("2026-12-02T01:59:00+09:00", True),
        ("2026-12-02T02:00:00+09:00", False),
        ("2026-12-02T00:30:00+09:00", True),  # Wed 00:30: Tue's occurrence, not Wed's
        ("2026-12-03T00:30:00+09:00", False),  # Thu 00:30: Wed has no occurrence
    ],
)
def test_cron_window_runs_across_local_midnight(t: str, open_: bool) -> None:
    tl = recurring("0 23 * * 2", "3h", "Asia/Seoul")
    assert tl.is_open(Z(t)) is open_


def test_duration_is_elapsed_time_not_wall_clock() -> None:
    # 2026-03-08 00:00 EST + 4h elapsed = 05:00 EDT (the wall clock skipped 02:00-03:00).
    tl = recurring("0 0 8 3 *", "4h", "America/New_York")
    assert tl.interval_at(Z("2026-03-08T06:00:00Z")) == iv(
        "2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z"
    )


def test_overlapping_occurrences_merge_into_one_interval() -> None:
    # Every hour for 90 minutes: 09:00..12:30 is one interval, not four.
    tl = recurring("0 9-11 * * *", "90m", "Asia/Seoul")
    merged = iv("2026-06-01T00:00:00Z", "2026-06-01T03:30:00Z")
    for t in ("2026-06-01T00:00:00Z", "2026-06-01T01:15:00Z", "2026-06-01T03:29:00Z"):
        assert tl.interval_at(Z(t)) == merged
    assert tl.next_interval(Z("2026-05-31T12:00:00Z")) == merged


def test_back_to_back_occurrences_merge() -> None:
    tl = recurring("0 9,10 * * *", "1h", "Asia/Seoul")
    assert tl.interval_at(Z("2026-06-01T00:30:00Z")) == iv(
        "2026-06-01T00:00:00Z", "2026-06-01T02:00:00Z"
    )


BOUNDED = {"not_before": "2026-12-02T00:00:00+09:00", "not_after": "2026-12-03T23:00:00+09:00"}


@pytest.mark.parametrize(
    ("t", "open_", "why"),
    [
        ("2026-12-01T13:30:00Z", False, "occurrence starts before notBefore: not counted"),
        ("2026-12-01T15:00:00Z", False, "at notBefore the earlier occurrence does not count"),
        ("2026-12-03T13:00:00Z", True, "occurrence starts inside the bounds"),
        ("2026-12-03T13:59:59Z", True, "still before notAfter"),
        ("2026-12-03T14:00:00Z", False, "clipped at notAfter (occurrence would run to 15:00Z)"),
        ("2026-12-08T13:30:00Z", False, "after notAfter"),
    ],
)
def test_not_before_bounds_occurrence_starts_and_not_after_clips(
    t: str, open_: bool, why: str
) -> None:
    tl = recurring("0 22 * * 2,4", "2h", "Asia/Seoul", **BOUNDED)
    assert tl.is_open(Z(t)) is open_, why


def test_clipped_interval_ends_at_not_after() -> None:
    tl = recurring("0 22 * * 2,4", "2h", "Asia/Seoul", **BOUNDED)
    assert tl.next_interval(Z("2026-11-30T00:00:00Z")) == iv(
        "2026-12-03T13:00:00Z", "2026-12-03T14:00:00Z"
    )
    assert tl.next_interval(Z("2026-12-03T13:00:00Z")) is None


def test_occurrence_exactly_at_not_before_counts_and_at_not_after_does_not() -> None:
    tl = recurring(
        "0 22 * * *",
        "1h",
        "Asia/Seoul",
        not_before="2026-12-01T22:00:00+09:00",
        not_after="2026-12-02T22:00:00+09:00",
    )
    assert tl.is_open(Z("2026-12-01T13:00:00Z"))
    assert not tl.is_open(Z("2026-12-02T13:00:00Z"))
    assert tl.next_interval(Z("2026-12-01T00:00:00Z")) == iv(
        "2026-12-01T13:00:00Z", "2026-12-01T14:00:00Z"
    )


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_cron_that_never_fires_terminates_and_is_never_open(cron: str) -> None:
    tl = recurring(cron, "1h", "Asia/Seoul")
    assert tl.next_interval(Z("2026-01-01T00:00:00Z")) is None
    assert tl.interval_at(Z("2026-01-01T00:00:00Z")) is None


def test_leap_day_cron_is_found_within_the_search_horizon() -> None:
    tl = recurring("0 0 29 2 *", "1h", "UTC")
    assert tl.next_interval(Z("2026-03-01T00:00:00Z")) == iv(
        "2028-02-29T00:00:00Z", "2028-02-29T01:00:00Z"
    )


def test_always_open_cron_reports_an_open_run_and_no_next_opening() -> None:
    tl = recurring("* * * * *", "1m", "Asia/Seoul")
    now = Z("2026-06-01T00:00:30Z")
    run = tl.interval_at(now)
    assert run is not None and run.start < now < run.end
    assert tl.next_interval(now) is None


def test_random_cron_fields_are_refused_because_the_window_would_move() -> None:
    # The model refuses them first (field spec.schedule.cron); the engine refuses them too, for
    # a value that reached it some other way.
    with pytest.raises(ValueError, match="random"):
        crds.Schedule(cron="R 22 * * *", duration="1h", time_zone="Asia/Seoul")
    unchecked = crds.Schedule.model_construct(
        cron="R 22 * * *", duration=dt.timedelta(hours=1), time_zone="Asia/Seoul"
    )
    with pytest.raises(ValueError, match="random"):  # ScheduleError or the model's own error
        schedules.from_schedule(unchecked)


def test_month_and_day_names_are_not_mistaken_for_random_fields() -> None:
    tl = recurring("0 22 * mar fri", "1h", "Asia/Seoul")
    assert tl.is_open(Z("2026-03-06T13:30:00Z"))  # Fri 2026-03-06 22:30 KST


# -- DST -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "cron", "duration", "after", "start", "end", "rule"),
    [
        (
            "America/New_York",
            "30 2 * * *",
            "1h",
            "2026-03-08T00:00:00Z",
            "2026-03-08T07:00:00Z",  # 03:00 EDT: 02:30 does not exist
            "2026-03-08T08:00:00Z",
            "spring forward: nonexistent time starts at the transition",
        ),
        (
            "America/New_York",
            "30 1 * * *",
            "30m",
            "2026-11-01T00:00:00Z",
            "2026-11-01T05:30:00Z",  # 01:30 EDT, the first of two 01:30s
            "2026-11-01T06:00:00Z",
            "fall back: ambiguous time fires at its first instant",
        ),
        (
            "Europe/Berlin",
            "30 2 * * *",
            "1h",
            "2026-03-28T23:00:00Z",
            "2026-03-29T01:00:00Z",  # 03:00 CEST
            "2026-03-29T02:00:00Z",
            "spring forward in Berlin",
        ),
        (
            "Europe/Berlin",
            "30 2 * * *",
            "1h",
            "2026-10-24T23:00:00Z",
            "2026-10-25T00:30:00Z",  # 02:30 CEST, not 02:30 CET
            "2026-10-25T01:30:00Z",
            "fall back in Berlin",
        ),
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            "1h",
            "2026-10-03T14:00:00Z",
            "2026-10-03T15:30:00Z",  # 02:00 -> 02:30 (+11); 02:15 does not exist
            "2026-10-03T16:30:00Z",
            "Lord Howe's 30-minute spring forward",
        ),
        (
            "Australia/Lord_Howe",
            "45 1 * * *",
            "1h",
            "2026-04-04T13:00:00Z",
            "2026-04-04T14:45:00Z",  # 01:45 +11, the first of two 01:45s
            "2026-04-04T15:45:00Z",
            "Lord Howe's 30-minute fall back",
        ),
        (
            "Asia/Seoul",
            "30 2 * * *",
            "1h",
            "2026-03-07T12:00:00Z",
            "2026-03-07T17:30:00Z",  # no DST: 02:30 KST every day
            "2026-03-07T18:30:00Z",
            "no DST in Seoul",
        ),
    ],
)
def test_dst_rule_for_cron_occurrences(
    zone: str, cron: str, duration: str, after: str, start: str, end: str, rule: str
) -> None:
    assert recurring(cron, duration, zone).next_interval(Z(after)) == iv(start, end), rule


def test_fall_back_fires_once_not_twice() -> None:
    tl = recurring("30 1 * * *", "30m", "America/New_York")
    # The second 01:30 (EST, 06:30Z) is not an occurrence; the next one is the day after.
    assert not tl.is_open(Z("2026-11-01T06:30:00Z"))
    assert tl.next_interval(Z("2026-11-01T05:30:00Z")) == iv(
        "2026-11-02T06:30:00Z", "2026-11-02T07:00:00Z"
    )


def test_nonexistent_occurrences_collapsing_onto_the_transition_count_once() -> None:
    # 02:00, 02:20 and 02:40 all do not exist on 2026-03-08: one occurrence at 03:00 EDT.
    tl = recurring("0,20,40 2 * * *", "10m", "America/New_York")
    first = tl.next_interval(Z("2026-03-08T00:00:00Z"))
    assert first == iv("2026-03-08T07:00:00Z", "2026-03-08T07:10:00Z")
    assert tl.next_interval(first.end) == iv("2026-03-09T06:00:00Z", "2026-03-09T06:10:00Z")


def test_to_instant_applies_the_dst_rule() -> None:
    ny = zoneinfo.ZoneInfo("America/New_York")
    cases = {
        dt.datetime(2026, 3, 8, 2, 30): Z("2026-03-08T07:00:00Z"),  # nonexistent
        dt.datetime(2026, 11, 1, 1, 30): Z("2026-11-01T05:30:00Z"),  # ambiguous: first
        dt.datetime(2026, 7, 1, 12, 0): Z("2026-07-01T16:00:00Z"),  # ordinary
    }
    for wall, instant in cases.items():
        assert schedules.to_instant(wall, ny) == instant, wall


# -- work hours ------------------------------------------------------------------------------------

SEOUL_HOURS = hours(
    "Asia/Seoul",
    (["Mon", "Tue", "Wed", "Thu", "Fri"], "09:00", "18:00"),
    (["Sat"], "22:00", "06:00"),
)


@pytest.mark.parametrize(
    ("t", "expected", "rule"),
    [
        ("2026-12-07T08:59:00+09:00", None, "Mon before 09:00"),
        ("2026-12-07T09:00:00+09:00", ("2026-12-07T00:00Z", "2026-12-07T09:00Z"), "start incl."),
        ("2026-12-07T17:59:00+09:00", ("2026-12-07T00:00Z", "2026-12-07T09:00Z"), "weekday"),
        ("2026-12-07T18:00:00+09:00", None, "end exclusive"),
        ("2026-12-05T21:59:00+09:00", None, "Sat before 22:00"),
        ("2026-12-05T23:00:00+09:00", ("2026-12-05T13:00Z", "2026-12-05T21:00Z"), "Sat night"),
        ("2026-12-06T05:59:00+09:00", ("2026-12-05T13:00Z", "2026-12-05T21:00Z"), "into Sun"),
        ("2026-12-06T06:00:00+09:00", None, "past-midnight range ends Sun 06:00"),
        ("2026-12-06T23:00:00+09:00", None, "Sun night is not Sat's range"),
        ("2026-12-07T05:00:00+09:00", None, "Sat range never reaches Mon"),
    ],
)
def test_work_hours_past_midnight_belong_to_the_day_they_start_on(
    t: str, expected: tuple[str, str] | None, rule: str
) -> None:
    assert SEOUL_HOURS.interval_at(Z(t)) == (iv(*expected) if expected else None), rule
    assert SEOUL_HOURS.is_open(Z(t)) is (expected is not None), rule


def test_sunday_only_past_midnight_range_is_not_open_early_sunday() -> None:
    tl = hours("Asia/Seoul", (["Sun"], "22:00", "06:00"))
    assert not tl.is_open(Z("2026-12-06T03:00:00+09:00"))  # Sun 03:00: Sat's night, not Sun's
    assert tl.is_open(Z("2026-12-07T03:00:00+09:00"))  # Mon 03:00: Sun's night


def test_adjacent_work_hour_ranges_merge_so_end_means_end() -> None:
    tl = hours(
        "Asia/Seoul",
        (["Fri"], "09:00", "18:00"),
        (["Fri"], "18:00", "00:00"),
        (["Sat"], "00:00", "03:00"),
    )
    # Fri 09:00 KST to Sat 03:00 KST, one interval.
    assert tl.interval_at(Z("2026-12-04T10:00:00+09:00")) == iv(
        "2026-12-04T00:00:00Z", "2026-12-04T18:00:00Z"
    )


def test_overlapping_work_hour_ranges_merge() -> None:
    tl = hours("Asia/Seoul", (["Mon"], "09:00", "13:00"), (["Mon"], "12:00", "18:00"))
    assert tl.interval_at(Z("2026-12-07T17:00:00+09:00")) == iv(
        "2026-12-07T00:00:00Z", "2026-12-07T09:00:00Z"
    )


def test_equal_start_and_end_is_a_whole_day_from_start() -> None:
    tl = hours("Asia/Seoul", (["Mon"], "09:00", "09:00"))
    assert tl.interval_at(Z("2026-12-08T08:59:00+09:00")) == iv(
        "2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"
    )


def test_next_work_hours_after_friday_evening_is_saturday_night() -> None:
    assert SEOUL_HOURS.next_interval(Z("2026-12-04T18:00:00+09:00")) == iv(
        "2026-12-05T13:00:00Z", "2026-12-05T21:00:00Z"
    )


def test_round_the_clock_work_hours_are_open_with_no_next_opening() -> None:
    tl = hours("Asia/Seoul", (["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], "00:00", "00:00"))
    now = Z("2026-12-07T12:00:00Z")
    run = tl.interval_at(now)
    assert run is not None and run.end - now >= dt.timedelta(days=30)
    assert tl.next_interval(now) is None


@pytest.mark.parametrize(
    ("zone", "range_", "t", "expected", "rule"),
    [
        (
            "America/New_York",
            ("01:00", "03:00"),
            "2026-03-08T06:30:00Z",
            ("2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"),
            "spring forward: 01:00 EST to 03:00 EDT is one elapsed hour",
        ),
        (
            "America/New_York",
            ("02:30", "04:00"),
            "2026-03-08T07:30:00Z",
            ("2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"),
            "spring forward: a nonexistent start opens at the transition",
        ),
        (
            "America/New_York",
            ("00:00", "01:30"),
            "2026-11-01T05:45:00Z",
            None,
            "fall back: an ambiguous end is its first instant (01:30 EDT)",
        ),
        (
            "America/New_York",
            ("01:30", "03:00"),
            "2026-11-01T05:45:00Z",
            ("2026-11-01T05:30:00Z", "2026-11-01T08:00:00Z"),
            "fall back: an ambiguous start is its first instant",
        ),
    ],
)
def test_dst_rule_for_work_hour_boundaries(
    zone: str, range_: tuple[str, str], t: str, expected: tuple[str, str] | None, rule: str
) -> None:
    tl = hours(zone, (["Sun"], *range_))
    assert tl.interval_at(Z(t)) == (iv(*expected) if expected else None), rule


def test_a_range_wholly_inside_a_dst_gap_is_empty_that_day() -> None:
    tl = hours("America/New_York", (["Sun"], "02:00", "02:30"))
    assert tl.next_interval(Z("2026-03-07T12:00:00Z")) == iv(
        "2026-03-15T06:00:00Z", "2026-03-15T06:30:00Z"
    )


# -- holidays --------------------------------------------------------------------------------------

KR = schedules.holidays(crds.HolidayCalendar(country="KR", time_zone="Asia/Seoul"))


def test_the_library_agrees_2026_12_25_is_a_korean_holiday() -> None:
    assert dt.date(2026, 12, 25) in holidays_lib.country_holidays("KR")


@pytest.mark.parametrize(
    ("t", "expected", "why"),
    [
        ("2026-12-24T23:59:00+09:00", None, "Christmas Eve is a working day"),
        ("2026-12-25T00:00:00+09:00", ("2026-12-24T15:00Z", "2026-12-25T15:00Z"), "Christmas"),
        ("2026-12-25T23:59:59+09:00", ("2026-12-24T15:00Z", "2026-12-25T15:00Z"), "whole day"),
        ("2026-12-26T00:00:00+09:00", None, "next local midnight ends it"),
        ("2026-09-25T12:00:00+09:00", ("2026-09-23T15:00Z", "2026-09-26T15:00Z"), "Chuseok x3"),
    ],
)
def test_holidays_are_whole_local_days_and_consecutive_ones_merge(
    t: str, expected: tuple[str, str] | None, why: str
) -> None:
    assert KR.interval_at(Z(t)) == (iv(*expected) if expected else None), why


def test_next_holiday_after_christmas_is_new_year() -> None:
    assert KR.next_interval(Z("2026-12-25T12:00:00+09:00")) == iv(
        "2026-12-31T15:00:00Z", "2027-01-01T15:00:00Z"
    )


def test_holiday_days_follow_the_calendar_zone_not_utc() -> None:
    us_in_ny = schedules.holidays(crds.HolidayCalendar(country="US", time_zone="America/New_York"))
    # Thanksgiving 2026-11-26 is 00:00-24:00 EST = 05:00Z-05:00Z, not UTC's day.
    assert us_in_ny.interval_at(Z("2026-11-26T12:00:00Z")) == iv(
        "2026-11-26T05:00:00Z", "2026-11-27T05:00:00Z"
    )
    assert not us_in_ny.is_open(Z("2026-11-26T04:59:00Z"))


def test_observed_holidays_count_and_merge_with_the_holiday() -> None:
    # 2026-07-04 is a Saturday; the library observes it on Friday 07-03 as well.
    us_in_ny = schedules.holidays(crds.HolidayCalendar(country="US", time_zone="America/New_York"))
    assert us_in_ny.interval_at(Z("2026-07-04T12:00:00Z")) == iv(
        "2026-07-03T04:00:00Z", "2026-07-05T04:00:00Z"
    )


def test_subdivision_holidays_are_included() -> None:
    bavaria = schedules.holidays(
        crds.HolidayCalendar(country="DE", subdivision="BY", time_zone="Europe/Berlin")
    )
    germany = schedules.holidays(crds.HolidayCalendar(country="DE", time_zone="Europe/Berlin"))
    epiphany = Z("2026-01-06T12:00:00+01:00")  # Heilige Drei Koenige: Bavaria only
    assert bavaria.is_open(epiphany)
    assert not germany.is_open(epiphany)


@pytest.mark.parametrize(("country", "subdivision"), [("XX", None), ("US", "ZZ")])
def test_unknown_calendars_fail_when_built(country: str, subdivision: str | None) -> None:
    # The model refuses them first; the engine refuses a value that reached it some other way.
    with pytest.raises(ValueError, match=r"not known|no holiday calendar"):
        crds.HolidayCalendar(country=country, subdivision=subdivision, time_zone="UTC")
    unchecked = crds.HolidayCalendar.model_construct(
        country=country, subdivision=subdivision, time_zone="UTC"
    )
    with pytest.raises(schedules.ScheduleError, match="holiday calendar"):
        schedules.holidays(unchecked)


# -- blackouts and helpers ------------------------------------------------------------------------


def test_blackout_takes_either_a_schedule_or_a_calendar() -> None:
    freeze = crds.Blackout(
        name="year-end-freeze",
        schedule={"start": "2026-12-24T00:00:00+09:00", "end": "2027-01-02T00:00:00+09:00"},
    )
    kr = crds.Blackout(name="kr", holidays={"country": "KR", "timeZone": "Asia/Seoul"})
    assert schedules.blackout(freeze).is_open(Z("2026-12-31T12:00:00Z"))
    assert not schedules.blackout(freeze).is_open(Z("2027-01-01T15:00:00Z"))
    assert schedules.blackout(kr).is_open(Z("2026-12-25T12:00:00+09:00"))


def test_upcoming_lists_the_open_interval_then_the_next_ones() -> None:
    got = schedules.upcoming(TUE_THU_22_KST, Z("2026-12-01T14:00:00Z"), limit=3)
    assert [i.start for i in got] == [
        Z("2026-12-01T13:00:00Z"),
        Z("2026-12-03T13:00:00Z"),
        Z("2026-12-08T13:00:00Z"),
    ]


def test_every_timeline_satisfies_the_protocol() -> None:
    for tl in (ONE_OFF, TUE_THU_22_KST, SEOUL_HOURS, KR):
        assert isinstance(tl, schedules.Timeline)
        assert schedules.is_open(tl, Z("2026-12-25T12:00:00+09:00")) == (
            tl.interval_at(Z("2026-12-25T12:00:00+09:00")) is not None
        )
