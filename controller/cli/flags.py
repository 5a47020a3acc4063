"""Command-line input that is not kubectl's: times, periods, and the error that says what to
type instead."""

from __future__ import annotations

import datetime
import re


class UsageError(ValueError):
    """Bad command-line input; the message says what to type instead."""


def parse_time(text: str) -> datetime.datetime:
    """RFC 3339 with an offset or ``Z``; a time without offset is ambiguous, so refused."""
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as e:
        raise UsageError(
            f"invalid time {text!r}: use RFC 3339, e.g. 2026-12-01T22:00:00+09:00"
        ) from e
    if t.tzinfo is None:
        raise UsageError(f"time {text!r} needs an offset or Z, e.g. 2026-12-01T22:00:00+09:00")
    return t


_SINCE_RE = re.compile(r"^(\d+)([smhdw])$")


def parse_since(text: str) -> datetime.timedelta:
    """``30d``, ``12h``, ``2w`` -> timedelta (report periods are coarse; one unit is enough)."""
    m = _SINCE_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid period {text!r}: use forms like 30d, 12h, 2w")
    n, unit = int(m.group(1)), m.group(2)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit]
    return datetime.timedelta(seconds=n * seconds)
