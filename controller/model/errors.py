"""One way to say what is wrong with a field: ``spec.targets[0].resources: <message>``.

Every place that reports a pydantic validation error -- the webhook's field errors, the
window's ``Invalid`` status, the store's log line, the CLI -- formats it here, so the same bad
field reads the same everywhere (``spec.targets[0]``, not ``spec.targets.0`` in one place and
``spec.targets[0]`` in another).
"""

from __future__ import annotations

from collections.abc import Sequence

import pydantic

FieldError = tuple[str, str]
"""(path, message), e.g. ("spec.schedule.timeZone", "unknown time zone 'Mars/Olympus'...")."""


def path(loc: Sequence[int | str]) -> str:
    """``("spec", "targets", 0, "resources")`` -> ``spec.targets[0].resources``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def field_errors(error: pydantic.ValidationError) -> list[FieldError]:
    """Each error as (path, message), without pydantic's "Value error, " prefix and without
    the input value (it can be megabytes of someone's Secret)."""
    return [
        (path(e.get("loc", ())), str(e.get("msg", "")).removeprefix("Value error, "))
        for e in error.errors(include_url=False, include_input=False)
    ]


def one_line(errors: Sequence[FieldError]) -> str:
    """``path: message; path: message`` for a log line or a CLI error."""
    return "; ".join(f"{where}: {msg}" for where, msg in errors)
