"""ChangeWindow status writes and transition Events, as pure functions of old and new status.

``policy.status.window_status`` says what the status should be; this module decides whether
that differs from what is on the object (so an unchanged window is never rewritten, and our
own status write does not trigger another), keeps each condition's ``lastTransitionTime``
while its status holds, and names the Events a change of phase or approval raises.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from controller.operator import events

APPROVED = "Approved"
APPROVAL_STALE = "ApprovalStale"
OPENED = "Opened"
CLOSED = "Closed"
EXPIRED = "Expired"
EMERGENCY_OPENED = "EmergencyOpened"

_OPEN_PHASES = frozenset({"Active", "ReviewRequired"})


def _timestamp(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], *, now: datetime.datetime
) -> list[dict[str, Any]]:
    """``new`` with ``lastTransitionTime`` kept from ``old`` while a condition's status holds."""
    previous = {c.get("type"): c for c in old}
    merged: list[dict[str, Any]] = []
    for cond in new:
        out = dict(cond)
        before = previous.get(out.get("type"))
        if before is not None and before.get("status") == out.get("status"):
            out["lastTransitionTime"] = before.get("lastTransitionTime") or _timestamp(now)
        else:
            out["lastTransitionTime"] = _timestamp(now)
        merged.append(out)
    return merged


def desired_status(
    computed: Mapping[str, Any],
    *,
    current: Mapping[str, Any],
    generation: int | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The status to write: computed fields, stable transition times, observedGeneration."""
    status = {k: v for k, v in computed.items() if v is not None}
    status["conditions"] = merge_conditions(
        current.get("conditions") or [], computed.get("conditions") or [], now=now
    )
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def invalid_status(errors: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Status of a window that does not validate: phase Invalid and what is wrong."""
    message = "; ".join(f"{path}: {msg}" for path, msg in errors) or "invalid ChangeWindow"
    return {
        "phase": "Invalid",
        "approved": False,
        "message": message,
        "conditions": [
            {"type": "Valid", "status": "False", "reason": "Invalid", "message": message}
        ],
    }


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in status.items() if v is not None}
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime" and v is not None}
        for c in status.get("conditions") or []
    ]
    return out


def status_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a status write is needed (transition times alone never force one)."""
    return _comparable(current) != _comparable(desired)


def transitions(
    *, old: Mapping[str, Any], new: Mapping[str, Any], emergency: bool
) -> list[tuple[str, events.EventType, str]]:
    """The Events (reason, type, message) raised by moving from status ``old`` to ``new``."""
    raised: list[tuple[str, events.EventType, str]] = []
    old_phase, new_phase = old.get("phase"), new.get("phase")
    old_ok, new_ok = bool(old.get("approved")), bool(new.get("approved"))
    message = str(new.get("message") or "")
    if new_ok and not old_ok:
        raised.append((APPROVED, "Normal", f"approved ({new.get('approvals', '')})"))
    if old_ok and not new_ok:
        raised.append((APPROVAL_STALE, "Warning", message or "approvals no longer valid"))
    if new_phase in _OPEN_PHASES and old_phase not in _OPEN_PHASES:
        if emergency:
            raised.append((EMERGENCY_OPENED, "Warning", message or "emergency window opened"))
        else:
            raised.append((OPENED, "Normal", message or "window opened"))
    if old_phase in _OPEN_PHASES and new_phase not in _OPEN_PHASES and new_phase != "Expired":
        raised.append((CLOSED, "Normal", message or "window closed"))
    if new_phase == "Expired" and old_phase not in (None, "Expired"):
        raised.append((EXPIRED, "Normal", message or "window expired"))
    return raised
