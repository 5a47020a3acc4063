"""ChangeWindow status: what it should be, which writes and Events that takes -- pure functions.

Every status rule lives here: the phase and conditions (``window_status``), the status of a
window that does not validate (``invalid_status``), when a condition's ``lastTransitionTime``
moves, whether a write is needed at all (``status_differs``) and which Events a change raises
(``transitions``). ``plan_status_writes`` puts them together over a whole snapshot; the
operator's reconciler only performs the writes it returns and sleeps until its
``next_boundary``. Nothing here reads a clock or the API.

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

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controller.model import crds
from controller.policy import approvals, index, limits, matching, schedules

EventType = Literal["Normal", "Warning"]

# Reasons of the Events a status change raises on its window.
APPROVED = "Approved"
APPROVAL_STALE = "ApprovalStale"
OPENED = "Opened"
CLOSED = "Closed"
EXPIRED = "Expired"
EMERGENCY_OPENED = "EmergencyOpened"

_OPEN_PHASES = frozenset({"Active", "ReviewRequired"})


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
    snapshot: index.Snapshot,
    raw_spec: Mapping[str, Any] | None = None,
    now: datetime.datetime,
) -> WindowStatus:
    compiled = snapshot.compiled_windows.get(window.metadata.name)
    if compiled is not None and compiled.window is not window:
        compiled = None  # another version of the window than the snapshot's
    # The snapshot's compiled window has the hash and the timeline already (the operator's
    # case); the CLI's windows are read afresh and get both computed here.
    if compiled is not None:
        spec_hash = compiled.spec_hash
    else:
        spec_hash = approvals.spec_hash(
            raw_spec if raw_spec is not None else approvals.model_spec(window.spec)
        )
    policies = snapshot.policies_for_window(window)
    states = approvals.approval_states(
        window, current_hash=spec_hash, policies=[p.policy for p in policies]
    )
    state = approvals.least_approved(states)

    timeline: schedules.Timeline | index.CachedTimeline
    if compiled is not None:
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
    """A condition whose lastTransitionTime moves only when its status flips (from the
    window's status as read, e.g. by the CLI; the operator merges with ``merge_conditions``)."""
    status = "True" if ok else "False"
    previous = next((c for c in window.status.conditions if c.type == type_), None)
    since = _transition_time(
        previous=(previous.status, previous.last_transition_time) if previous else None,
        status=status,
        now=now,
    )
    return crds.Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=window.metadata.generation,
    )


_T = Any  # a transition time as the status holds it: datetime (model) or str (wire)


def _transition_time(*, previous: tuple[Any, _T] | None, status: str, now: _T) -> _T:
    """The one rule for ``lastTransitionTime``: kept while the condition's status holds."""
    if previous is not None and previous[0] == status and previous[1]:
        return previous[1]
    return now


# -- what to write ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observed:
    """A ChangeWindow as the watch last reported it, for the status it has and should have.

    ``errors``: the window does not validate (it is out of the index; its status says why).
    ``uid`` and ``spec_digest`` (a digest of the whole raw spec, approvals included) let the
    store tell a status-only event from a change without keeping the raw spec.
    """

    status: Mapping[str, Any]
    generation: int | None
    errors: tuple[tuple[str, str], ...] = ()
    uid: str | None = None
    spec_digest: bytes | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """An Event a status change raises on its window."""

    reason: str
    type: EventType
    message: str


@dataclass(frozen=True, slots=True)
class StatusWrite:
    name: str
    status: Mapping[str, Any]  # the whole status the window will have
    transitions: tuple[Transition, ...]
    removed: tuple[str, ...] = ()  # fields the window has and ``status`` no longer sets

    @property
    def patch(self) -> dict[str, Any]:
        """The merge patch for the status subresource: ``{"status": {...}}``, fields no longer
        set sent as null (so they are removed). Built when written, not kept with the plan: a
        plan at start-up holds every window's write for minutes."""
        return {"status": {**dict.fromkeys(self.removed), **self.status}}


@dataclass(frozen=True, slots=True)
class _Known:
    """What the last plan knew of a window: until when its status holds, and the status it
    was compared with (``seen``) and should have (``desired``; the same object as ``seen``
    once the watch has reported our write -- at 10,000 windows a copy each is tens of MB)."""

    compiled: index.CompiledWindow | None  # None: invalid (then ``errors``)
    errors: tuple[tuple[str, str], ...]
    generation: int | None
    boundary: datetime.datetime | None
    emergency: bool
    seen: Mapping[str, Any]
    desired: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class StatusMemo:
    """Handed from one plan to the next: a window whose compiled form, policies and
    namespaces are the same objects as last time, and whose boundary has not passed, keeps its
    computed status; a status we wrote stands until the watch reports a newer one."""

    policies: tuple[index.CompiledPolicy, ...] = ()
    namespaces: Mapping[str, Mapping[str, str]] | None = None
    known: Mapping[str, _Known] | None = None

    def forget(self, names: Iterable[str]) -> StatusMemo:
        """This memo without ``names`` (their planned writes were not made)."""
        dropped = set(names)
        known = {n: k for n, k in (self.known or {}).items() if n not in dropped}
        return StatusMemo(policies=self.policies, namespaces=self.namespaces, known=known)


@dataclass(frozen=True, slots=True)
class StatusPlan:
    writes: tuple[StatusWrite, ...]
    next_boundary: datetime.datetime | None  # the next instant a status changes by time alone
    phases: Mapping[str, int]  # windows per phase once the writes are made ("" unset)
    computed: int  # statuses computed in this plan; the others were still current
    memo: StatusMemo


def plan_status_writes(
    *,
    snapshot: index.Snapshot,
    observed: Mapping[str, Observed],
    now: datetime.datetime,
    memo: StatusMemo | None = None,
) -> StatusPlan:
    """The status writes (and their Events) that bring every observed window up to date.

    ``observed``: every window as last reported (``Store.observed_windows``); a valid one
    whose version is not in ``snapshot`` yet is left for the plan after the next rebuild.
    ``memo``: the previous plan's (``StatusPlan.memo``), so that only windows that changed,
    whose boundary passed, or that cover a relabelled namespace are computed again -- one
    event costs its own window, not 10,000; a change of policies recomputes all of them.
    """
    memo = memo or StatusMemo()
    policies = tuple(snapshot.compiled_policies.values())
    same_policies = len(memo.policies) == len(policies) and all(
        a is b for a, b in zip(memo.policies, policies, strict=True)
    )
    relabelled = _relabelled_windows(memo.namespaces, snapshot) if same_policies else None
    previous = memo.known or {}
    known: dict[str, _Known] = {}
    writes: list[StatusWrite] = []
    computed_count = 0
    for name, obs in observed.items():
        before = previous.get(name)
        compiled: index.CompiledWindow | None = None
        if obs.errors:
            reusable = (
                before is not None
                and before.errors == obs.errors
                and before.generation == obs.generation
            )
        else:
            compiled = snapshot.compiled_windows.get(name)
            if compiled is None:
                continue  # newer than the snapshot: planned after the rebuild it triggers
            reusable = (
                relabelled is not None
                and name not in relabelled
                and before is not None
                and before.compiled is compiled
                and before.generation == obs.generation
                and (before.boundary is None or now < before.boundary)
            )
        if reusable and before is not None:
            if obs.status is before.seen:
                known[name] = before  # nothing changed on either side
                continue
            if obs.status == before.desired:
                # The watch reports what we wrote: keep its copy, not ours.
                known[name] = dataclasses.replace(before, seen=obs.status, desired=obs.status)
                continue
        # Changed, due, or its status edited by someone else: compute it.
        computed_count += 1
        if compiled is None:
            computed, boundary, emergency = invalid_status(obs.errors), None, False
        else:
            ws = window_status(compiled.window, snapshot=snapshot, now=now)
            computed, boundary, emergency = (
                ws.to_patch()["status"],
                ws.next_boundary,
                compiled.emergency,
            )
        # What the object has: what we last wrote, until the watch reports anything newer.
        current = before.desired if before is not None and obs.status is before.seen else obs.status
        desired: Mapping[str, Any] = desired_status(
            computed, current=current, generation=obs.generation, now=now
        )
        if status_differs(current, desired):
            # A merge patch: fields that are no longer set must be sent as null to be removed.
            writes.append(
                StatusWrite(
                    name=name,
                    status=desired,
                    transitions=tuple(transitions(old=current, new=desired, emergency=emergency)),
                    removed=tuple(k for k in current if k not in desired),
                )
            )
        else:
            desired = current  # shared, never mutated
        known[name] = _Known(
            compiled=compiled,
            errors=obs.errors,
            generation=obs.generation,
            boundary=boundary,
            emergency=emergency,
            seen=obs.status,
            desired=desired,
        )
    next_boundary = min(
        (k.boundary for k in known.values() if k.boundary is not None), default=None
    )
    phases: dict[str, int] = {}
    for k in known.values():
        phase = str(k.desired.get("phase") or "")
        phases[phase] = phases.get(phase, 0) + 1
    return StatusPlan(
        writes=tuple(writes),
        next_boundary=next_boundary,
        phases=phases,
        computed=computed_count,
        memo=StatusMemo(policies=policies, namespaces=snapshot.namespaces, known=known),
    )


def _relabelled_windows(
    before: Mapping[str, Mapping[str, str]] | None, snapshot: index.Snapshot
) -> frozenset[str]:
    """Windows whose status may read a namespace's labels that changed since ``before``.

    A status reads namespace labels only through the namespaces a window covers (which
    policies control it, its windowLimits): a changed namespace matters to a window only if it
    is listed by a target, or a target's selector matches it before or after the change.
    Every other window keeps its status, so a relabel does not recompute 10,000 of them (nor
    the thousand that use a selector).
    """
    after = snapshot.namespaces
    if before is after:
        return frozenset()
    if before is None:
        return frozenset(snapshot.compiled_windows)
    changed = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}

    def covers(target: crds.WindowTarget) -> bool:
        """Whether a changed namespace is among the target's, before or after the change."""
        if not changed.isdisjoint(target.namespaces):
            return True
        selector = target.namespace_selector
        return selector is not None and any(
            labels is not None and matching.selector_matches(selector, labels)
            for n in changed
            for labels in (before.get(n), after.get(n))
        )

    return frozenset(
        name
        for name, w in snapshot.compiled_windows.items()
        if any(covers(t) for t in w.window.spec.targets)
    )


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], *, now: datetime.datetime
) -> list[dict[str, Any]]:
    """``new`` with ``lastTransitionTime`` kept from ``old`` while a condition's status holds."""
    previous = {c.get("type"): c for c in old}
    merged: list[dict[str, Any]] = []
    for cond in new:
        out = dict(cond)
        before = previous.get(out.get("type"))
        out["lastTransitionTime"] = _transition_time(
            previous=(before.get("status"), before.get("lastTransitionTime")) if before else None,
            status=str(out.get("status")),
            now=crds.rfc3339(now),
        )
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
) -> list[Transition]:
    """The Events raised by moving from status ``old`` to ``new``."""
    raised: list[Transition] = []
    old_phase, new_phase = old.get("phase"), new.get("phase")
    old_ok, new_ok = bool(old.get("approved")), bool(new.get("approved"))
    message = str(new.get("message") or "")
    if new_ok and not old_ok:
        raised.append(Transition(APPROVED, "Normal", f"approved ({new.get('approvals', '')})"))
    if old_ok and not new_ok:
        raised.append(Transition(APPROVAL_STALE, "Warning", message or "approvals no longer valid"))
    if new_phase in _OPEN_PHASES and old_phase not in _OPEN_PHASES:
        if emergency:
            raised.append(
                Transition(EMERGENCY_OPENED, "Warning", message or "emergency window opened")
            )
        else:
            raised.append(Transition(OPENED, "Normal", message or "window opened"))
    if old_phase in _OPEN_PHASES and new_phase not in _OPEN_PHASES and new_phase != "Expired":
        raised.append(Transition(CLOSED, "Normal", message or "window closed"))
    if new_phase == "Expired" and old_phase not in (None, "Expired"):
        raised.append(Transition(EXPIRED, "Normal", message or "window expired"))
    return raised
