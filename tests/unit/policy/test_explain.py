"""How times read in denials and warnings: wall clock in the reader's zone, then relative."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.policy import explain

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
OPENS = dt.datetime(2026, 12, 1, 13, 0, tzinfo=dt.UTC)
KST = dt.timezone(dt.timedelta(hours=9), "KST")


@pytest.mark.parametrize(
    ("t", "zone", "now", "text"),
    [
        (OPENS, "Asia/Seoul", NOW, "Tue 2026-12-01 22:00 KST (in 4h)"),
        # the same instant for a later request: same wall clock, new relative part
        (
            OPENS,
            "Asia/Seoul",
            NOW + dt.timedelta(minutes=90),
            "Tue 2026-12-01 22:00 KST (in 2h 30m)",
        ),
        (OPENS, "Asia/Seoul", OPENS + dt.timedelta(days=2), "Tue 2026-12-01 22:00 KST (2d ago)"),
        # the same instant written with another offset reads the same in a named zone
        (OPENS.astimezone(KST), "Europe/Berlin", NOW, "Tue 2026-12-01 14:00 CET (in 4h)"),
        (OPENS, "Europe/Berlin", NOW, "Tue 2026-12-01 14:00 CET (in 4h)"),
        # no zone: the instant's own offset and name, which equal instants do not share
        (OPENS, None, NOW, "Tue 2026-12-01 13:00 UTC (in 4h)"),
        (OPENS.astimezone(KST), None, NOW, "Tue 2026-12-01 22:00 KST (in 4h)"),
        # an unknown zone name reads as UTC
        (OPENS, "Mars/Olympus", NOW, "Tue 2026-12-01 13:00 UTC (in 4h)"),
    ],
)
def test_times_read_in_the_readers_zone_with_a_relative_part(
    t: dt.datetime, zone: str | None, now: dt.datetime, text: str
) -> None:
    assert explain.when(t, zone=zone, now=now) == text
    assert explain.when(t, zone=zone, now=now) == text  # asked again (the wall clock is kept)
