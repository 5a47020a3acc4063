"""ChangeWindow status as a pure function of (window, raw spec, snapshot, now).

The operator writes what this returns and sleeps until ``next_boundary``; nothing here reads a
clock or the API.

Phase, first match wins:

1. ``Invalid`` — the window cannot work under the policies that control it (ticket does not
   match a ``ticketPattern``; emergency window no covering policy would honour).
2. ``ReviewRequired`` — an emergency window not yet approved, open or not: break-glass use
   stays visible to auditors until someone reviews it.
3. ``Expired`` — no current and no future interval.
4. ``PendingApproval`` — fewer valid approvals than required.
5. ``Active`` / ``Scheduled`` — open now / opens later.

Which approval rules apply: those of every policy controlling a target of the window, each
counted on its own (an approval counts only under the policies it recorded, see
``approvals``): the window is approved when it is approved under every one of them, and
``n/m`` shows the policy furthest from approval. A window whose targets no policy controls
needs 0 approvals — nothing it covers is change-controlled, so there is nothing to approve;
its phase follows the schedule alone. ``Invalid`` also covers a window that breaks a policy's
``windowLimits``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.model import crds
from controller.policy import approvals, index, limits, schedules


@dataclass(frozen=True)
class WindowStatus:
    phase: crds.Phase
    spec_hash: str
    approved: bool
    approvals: str  # "n/m"
    next_open: datetime.datetime | None
    next_close: datetime.datetime | None
    conditions: tuple[crds.Condition, ...]
    message: str
    next_boundary: datetime.datetime | None  # when this status next changes by time alone

    def to_patch(self) -> dict[str, Any]:
        """``{"status": {...}}`` camelCase and JSON-ready, for a merge patch."""
        status = crds.ChangeWindowStatus(
            phase=self.phase,
            spec_hash=self.spec_hash,
            approved=self.approved,
            approvals=self.approvals,
            next_open=self.next_open,
            next_close=self.next_close,
            message=self.message,
            conditions=list(self.conditions),
        )
        body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        # A field that became None must be cleared, not left stale: a merge patch needs null.
        body.setdefault("nextOpen", None)
        body.setdefault("nextClose", None)
        return {"status": body}


def window_status(
    window: crds.ChangeWindow,
    *,
    raw_spec: Mapping[str, Any],
    snapshot: index.Snapshot,
    now: datetime.datetime,
) -> WindowStatus:
    spec_hash = approvals.spec_hash(raw_spec)
    policies = snapshot.policies_for_window(window)
    states = approvals.approval_states(
        window, current_hash=spec_hash, policies=[p.policy for p in policies]
    )
    state = approvals.least_approved(states)

    compiled = snapshot.compiled_windows.get(window.metadata.name)
    timeline: schedules.Timeline | index.CachedTimeline
    if compiled is not None and compiled.window is window:
        timeline = compiled.timeline
    else:
        timeline = schedules.from_schedule(window.spec.schedule)
    current = timeline.interval_at(now)
    upcoming = timeline.next_interval(now)

    problems = _problems(window, policies, snapshot=snapshot)
    emergency = window.spec.emergency is not None

    if problems:
        phase = crds.Phase.INVALID
    elif emergency and not (state.approved and state.valid):
        phase = crds.Phase.REVIEW_REQUIRED
    elif current is None and upcoming is None:
        phase = crds.Phase.EXPIRED
    elif not state.approved:
        phase = crds.Phase.PENDING_APPROVAL
    elif current is not None:
        phase = crds.Phase.ACTIVE
    else:
        phase = crds.Phase.SCHEDULED

    next_open = upcoming.start if upcoming is not None else None
    next_close = current.end if current is not None else (upcoming.end if upcoming else None)
    if current is not None:
        next_boundary: datetime.datetime | None = current.end
    else:
        next_boundary = next_open

    approved = state.approved and not problems and (not emergency or bool(state.valid))
    # Open and usable: approved, or an emergency window (open before review by design).
    active = current is not None and phase in (crds.Phase.ACTIVE, crds.Phase.REVIEW_REQUIRED)
    conditions = (
        _condition(
            window,
            now,
            "Approved",
            approved,
            *_approved_reason(states, state, emergency=emergency, approved=approved),
        ),
        _condition(window, now, "Active", active, *_active_reason(current, upcoming)),
        _condition(
            window,
            now,
            "Valid",
            not problems,
            "Invalid" if problems else "Valid",
            "; ".join(problems) if problems else "the window is valid under its policies",
        ),
    )
    message = "; ".join(problems) if problems else _message(phase, state)
    return WindowStatus(
        phase=phase,
        spec_hash=spec_hash,
        approved=approved,
        approvals=state.summary,
        next_open=next_open,
        next_close=next_close,
        conditions=conditions,
        message=message,
        next_boundary=next_boundary,
    )


def _problems(
    window: crds.ChangeWindow,
    policies: tuple[index.CompiledPolicy, ...],
    *,
    snapshot: index.Snapshot,
) -> list[str]:
    emergency = window.spec.emergency
    problems = [
        f"ticket {window.spec.ticket!r} does not match ticketPattern {p.policy.spec.ticket_pattern!r} of policy {p.name}"
        for p in policies
        if emergency is None and not p.ticket_ok(window.spec.ticket)
    ]
    if emergency is None:
        compiled = snapshot.compiled_windows.get(window.metadata.name)
        for p in policies:
            limits_ = p.policy.spec.window_limits
            if limits_ is None:
                continue
            if compiled is not None and compiled.window is window:
                broken: Sequence[str] = compiled.limit_violations(p, snapshot)
            else:
                broken = limits.violations(
                    limits_, window, covered=lambda: snapshot.window_namespaces(window)
                )
            if broken:
                problems.append(f"breaks the windowLimits of policy {p.name}: {'; '.join(broken)}")
    if (
        emergency is not None
        and policies
        and not any(approvals.emergency_allowed_by(p.policy, window) for p in policies)
    ):
        problems.append(
            "no covering policy honours this emergency window (not named in"
            " spec.emergency.policies, no breakGlass, longer than maxDuration, or not one-off)"
        )
    return problems


def _approved_reason(
    states: Mapping[str, approvals.ApprovalState],
    state: approvals.ApprovalState,
    *,
    emergency: bool,
    approved: bool,
) -> tuple[str, str]:
    if approved:
        if state.required == 0 and not state.valid:
            return "NotRequired", "no approval is required by the covering policies"
        return "Approved", "approved " + _per_policy(states)
    if emergency:
        return (
            "ReviewRequired",
            f"emergency window: needs approval after the fact ({_per_policy(states)})",
        )
    if state.stale:
        return "ApprovalStale", (
            f"the spec changed after approval by {', '.join(state.stale)}; {_per_policy(states)}"
        )
    return "NotApproved", _per_policy(states)


def _per_policy(states: Mapping[str, approvals.ApprovalState]) -> str:
    """``under payments-prod by bob (1/1); under ledger-prod 0/1`` -- each policy counts alone."""
    parts = []
    for name, st in sorted(states.items()):
        by = f" by {', '.join(st.valid)}" if st.valid else ""
        parts.append(f"under {name}{by} ({st.summary})")
    return "; ".join(parts) or "no policy controls this window"


def _active_reason(
    current: schedules.Interval | None, upcoming: schedules.Interval | None
) -> tuple[str, str]:
    if current is not None:
        return "Open", f"open until {current.end.isoformat()}"
    if upcoming is not None:
        return "Closed", f"opens {upcoming.start.isoformat()}"
    return "Expired", "no future occurrence"


def _message(phase: crds.Phase, state: approvals.ApprovalState) -> str:
    if phase is crds.Phase.PENDING_APPROVAL:
        return f"waiting for approval ({state.summary})"
    if phase is crds.Phase.REVIEW_REQUIRED:
        return f"emergency window: review required ({state.summary})"
    return str(phase)


def _condition(
    window: crds.ChangeWindow,
    now: datetime.datetime,
    type_: str,
    ok: bool,
    reason: str,
    message: str,
) -> crds.Condition:
    """A condition whose lastTransitionTime moves only when its status flips."""
    status = "True" if ok else "False"
    previous = next((c for c in window.status.conditions if c.type == type_), None)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status == status and previous.last_transition_time
        else now
    )
    return crds.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=window.metadata.generation,
    )
