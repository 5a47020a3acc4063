"""Presentation: local times, relative times, tables and the describe/report layouts.

Pure functions of their inputs (``now`` and the zone are parameters), so every line a user
reads is pinned by a unit test without a cluster or a clock.
"""

from __future__ import annotations

import datetime
import os
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def local_zone(flag: str | None, *, env: Mapping[str, str] | None = None) -> datetime.tzinfo:
    """``--tz``, else ``$TZ``, else the system zone — the zone times are shown in.

    ``$TZ`` may carry a leading ``:`` (glibc's "zone file" form); POSIX rule strings that are
    no IANA name fall through to the system zone rather than failing the command.
    """
    if flag:
        try:
            return zoneinfo.ZoneInfo(flag)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {flag!r}: use an IANA name like Asia/Seoul") from e
    tz_env = (env if env is not None else os.environ).get("TZ", "").lstrip(":")
    if tz_env:
        try:
            return zoneinfo.ZoneInfo(tz_env)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    system = datetime.datetime.now().astimezone().tzinfo
    return system if system is not None else datetime.UTC


def relative(t: datetime.datetime, now: datetime.datetime) -> str:
    """``in 2h 10m`` / ``3h ago`` / ``now``: the two largest units, zero units dropped."""
    seconds = int((t - now).total_seconds())
    if abs(seconds) < 1:
        return "now"
    text = span(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def span(seconds: int) -> str:
    """``1d 2h``, ``2h 10m``, ``3h``, ``45m``, ``30s`` — a coarse length for humans."""
    parts: list[tuple[int, str]] = []
    rest = seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n or parts:
            parts.append((n, unit))
        if len(parts) == 2:
            break
    shown = [f"{n}{u}" for n, u in parts if n]
    return " ".join(shown) or "0s"


def local_time(t: datetime.datetime, tz: datetime.tzinfo) -> str:
    """``Tue 2026-12-01 22:00 KST`` — weekday first, because windows are planned by weekday."""
    local = t.astimezone(tz)
    abbrev = local.tzname() or local.strftime("%z")
    return f"{local:%a %Y-%m-%d %H:%M} {abbrev}"


def when(t: datetime.datetime | None, *, now: datetime.datetime, tz: datetime.tzinfo) -> str:
    """``Tue 2026-12-01 22:00 KST (in 13h 2m)``, or ``-`` when there is no such time."""
    if t is None:
        return "-"
    return f"{local_time(t, tz)} ({relative(t, now)})"


def age(created: datetime.datetime | None, now: datetime.datetime) -> str:
    """kubectl's AGE column: the largest unit or two, no "ago"."""
    if created is None:
        return "-"
    return span(max(0, int((now - created).total_seconds()))).replace(" ", "")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl-style columns: upper-case headers, left-aligned, three spaces apart."""
    cells = [[h.upper() for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


# -- list ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One line of ``list``: what a requester needs to know about a window at a glance."""

    name: str
    phase: str
    ticket: str
    approvals: str  # "n/m"
    next_open: datetime.datetime | None
    next_close: datetime.datetime | None
    created: datetime.datetime | None
    requester: str = ""
    emergency: bool = False
    spec_hash: str = ""


def list_table(
    rows: Sequence[WindowRow], *, now: datetime.datetime, tz: datetime.tzinfo, wide: bool = False
) -> str:
    """The ``list`` table; ``wide`` adds requester, emergency flag and specHash."""
    if not rows:
        return "No ChangeWindows found."
    headers = ["name", "phase", "ticket", "approvals", "next open", "next close", "age"]
    if wide:
        headers += ["requester", "emergency", "spec hash"]
    out = []
    for r in rows:
        line = [
            r.name,
            r.phase or "-",
            r.ticket,
            r.approvals or "-",
            when(r.next_open, now=now, tz=tz),
            when(r.next_close, now=now, tz=tz),
            age(r.created, now),
        ]
        if wide:
            line += [r.requester, "yes" if r.emergency else "no", r.spec_hash[:19] or "-"]
        out.append(line)
    return table(headers, out)


# -- describe --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentityLine:
    name: str
    exists: bool
    subjects: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # "suspended", "expired 2026-...", "work hours Mon-Fri ..."


@dataclass(frozen=True, slots=True)
class ApprovalLine:
    approver: str
    approved_at: datetime.datetime | None
    spec_hash: str
    policies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyLine:
    name: str
    required: int
    approver_groups: tuple[str, ...]
    enforcement: str
    approvals: str = ""  # "n/m" under this policy alone


@dataclass(frozen=True, slots=True)
class Description:
    """Everything ``describe`` shows, gathered by the command from the live objects."""

    name: str
    ticket: str
    description: str
    requester: str
    phase: str
    message: str
    emergency_reason: str | None
    schedule: str
    occurrences: tuple[tuple[datetime.datetime, datetime.datetime], ...]
    targets: tuple[str, ...]
    identities: tuple[IdentityLine, ...]
    spec_hash: str
    stored_hash: str | None
    policies: tuple[PolicyLine, ...]
    required: int
    valid: tuple[ApprovalLine, ...]
    stale: tuple[ApprovalLine, ...]
    self_approvals: tuple[str, ...] = field(default=())

    @property
    def missing(self) -> int:
        return max(0, self.required - len(self.valid))


def describe_text(d: Description, *, now: datetime.datetime, tz: datetime.tzinfo) -> str:
    """The ``describe`` page: coverage, identities, next occurrences, approval state."""
    lines = [
        f"Name:         {d.name}",
        f"Ticket:       {d.ticket}",
        f"Description:  {d.description or '-'}",
        f"Requester:    {d.requester}",
        f"Phase:        {d.phase or '-'}"
        + (f" ({d.message})" if d.message and d.message != d.phase else ""),
    ]
    if d.emergency_reason is not None:
        lines.append(f"Emergency:    yes — {d.emergency_reason}")
    lines.append(f"Schedule:     {d.schedule}")
    lines.append("Next occurrences:")
    if d.occurrences:
        for start, end in d.occurrences:
            state = "open now, " if start <= now < end else ""
            lines.append(
                f"  {local_time(start, tz)} - {local_time(end, tz)}"
                f" ({state}{'closes ' + relative(end, now) if state else relative(start, now)})"
            )
    else:
        lines.append("  none (the schedule has no future occurrence)")
    lines.append("Coverage:")
    lines += [f"  {t}" for t in d.targets]
    lines.append("Identities:")
    for ident in d.identities:
        if not ident.exists:
            lines.append(f"  {ident.name}: MISSING (no AuthorizedIdentity by that name)")
            continue
        detail = ", ".join(ident.subjects) or "no subjects"
        notes = f" [{'; '.join(ident.notes)}]" if ident.notes else ""
        lines.append(f"  {ident.name}: {detail}{notes}")
    lines.append("Approvals:")
    lines.append(f"  Spec hash:  {d.spec_hash}")
    if d.stored_hash and d.stored_hash != d.spec_hash:
        lines.append(
            f"  WARNING: status.specHash is {d.stored_hash}; the controller has not caught up"
            " with the current spec"
        )
    if d.policies:
        for p in d.policies:
            groups = ", ".join(p.approver_groups) or "no approver groups"
            counted = f" — {p.approvals} approved" if p.approvals else ""
            lines.append(
                f"  Policy {p.name} ({p.enforcement}): {p.required} required from {groups}{counted}"
            )
    else:
        lines.append("  No ChangePolicy controls these targets: no approval needed")
    lines.append(f"  Valid ({len(d.valid)}/{d.required}):")
    lines += [f"    {a.approver} at {_at(a.approved_at, now, tz)}{_under(a)}" for a in d.valid] or [
        "    none"
    ]
    if d.stale:
        lines.append("  Stale (signed an earlier spec; approve again):")
        lines += [
            f"    {a.approver} at {_at(a.approved_at, now, tz)} (signed {a.spec_hash[:19]}…)"
            for a in d.stale
        ]
    if d.self_approvals:
        lines.append(f"  Ignored self-approvals: {', '.join(d.self_approvals)}")
    lines.append(f"  Missing: {d.missing}")
    return "\n".join(lines)


def _under(a: ApprovalLine) -> str:
    return f" (counts under {', '.join(a.policies)})" if a.policies else " (counts under no policy)"


def _at(t: datetime.datetime | None, now: datetime.datetime, tz: datetime.tzinfo) -> str:
    return when(t, now=now, tz=tz) if t is not None else "unknown time"


def target_text(target: Mapping[str, Any]) -> str:
    """One window target as a sentence: namespaces, resources with operations, names."""
    where = ", ".join(target.get("namespaces") or ())
    if target.get("namespaceSelector"):
        sel = target["namespaceSelector"].get("matchLabels") or {}
        labels = ",".join(f"{k}={v}" for k, v in sel.items()) or "expressions"
        where = f"{where} + selector {labels}" if where else f"selector {labels}"
    what = []
    for rule in target.get("resources") or ():
        groups = rule.get("apiGroups") or [""]
        for res in rule.get("resources") or ():
            for g in groups:
                what.append(f"{res}.{g}" if g else res)
        what[-1] += f" [{','.join(rule.get('operations') or ())}]" if what else ""
    names = target.get("names") or ()
    text = f"namespaces {where or '-'}: {'; '.join(what)}"
    return text + (f" (only {', '.join(names)})" if names else "")


def schedule_text(schedule: Mapping[str, Any]) -> str:
    if "cron" in schedule:
        text = f'cron "{schedule["cron"]}" for {schedule.get("duration")} in {schedule.get("timeZone")}'
        if schedule.get("notBefore"):
            text += f", not before {schedule['notBefore']}"
        if schedule.get("notAfter"):
            text += f", not after {schedule['notAfter']}"
        return text
    return f"one-off {schedule.get('start')} until {schedule.get('end')}"


# -- can-i -------------------------------------------------------------------------------------


def can_i_text(
    *,
    allowed: bool,
    reason: str,
    message: str,
    policy: str | None,
    window: str | None,
    next_window: str | None,
) -> str:
    """``yes``/``no`` first (scripts read the first line), then why, then what to do."""
    lines = ["yes" if allowed else "no", f"reason: {reason}"]
    if policy:
        lines.append(f"policy: {policy}")
    if window:
        lines.append(f"window: {window}")
    if message:
        lines.append(f"message: {message}")
    if next_window:
        lines.append(f"next window: {next_window}")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------------

# What `report` counts from Events. ChangeDenied and EmergencyChange are posted on the object
# the user touched and aggregated by the operator (so `count` is summed, not the number of
# Event objects); the window transitions are posted on ChangeWindows.
WINDOW_EVENT_REASONS = (
    "Approved",
    "ApprovalStale",
    "Opened",
    "Closed",
    "Expired",
    "EmergencyOpened",
)
DENIED_REASON = "ChangeDenied"
EMERGENCY_CHANGE_REASON = "EmergencyChange"


def event_count(event: Mapping[str, Any]) -> int:
    """How many occurrences one Event stands for (core ``count`` or ``series.count``)."""
    series = event.get("series") or {}
    n = series.get("count") or event.get("count") or 1
    return int(n) if isinstance(n, int | str) and str(n).isdigit() else 1


def event_time(event: Mapping[str, Any]) -> datetime.datetime | None:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = event.get(key) or (
            (event.get("series") or {}).get("lastObservedTime") if key == "eventTime" else None
        )
        if value:
            try:
                return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                continue
    meta = event.get("metadata") or {}
    created = meta.get("creationTimestamp")
    return datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else None


def report_data(
    *,
    windows: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]] | None,
    since: datetime.datetime,
    now: datetime.datetime,
    phases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The auditor's report as plain data (``-o json|yaml`` prints it as is).

    Windows are those *created* since ``since``. Decision counts come from Events whose last
    occurrence is since ``since``; ``events=None`` means Events could not be read.
    """
    rows = []
    for w in windows:
        meta, spec, status = w.get("metadata") or {}, w.get("spec") or {}, w.get("status") or {}
        created = meta.get("creationTimestamp")
        created_at = (
            datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
            if created
            else None
        )
        # No upper bound: the API server's clock, not ours, stamps creation; a window created
        # "after now" by a skewed client clock still belongs in the report.
        if created_at is None or created_at < since:
            continue
        name = str(meta.get("name", ""))
        rows.append(
            {
                "name": name,
                "ticket": spec.get("ticket", ""),
                "requester": spec.get("requester", ""),
                "approvers": [a.get("approver", "") for a in spec.get("approvals") or ()],
                "phase": (phases or {}).get(name) or status.get("phase") or "",
                "emergency": spec.get("emergency") is not None,
                "emergencyReason": (spec.get("emergency") or {}).get("reason"),
                "created": created,
            }
        )
    rows.sort(key=lambda r: str(r["created"]))
    data: dict[str, Any] = {
        "since": since.isoformat(),
        "until": now.isoformat(),
        "windows": rows,
    }
    if events is None:
        data["decisions"] = None
        return data
    denied = 0
    by_reason: dict[str, int] = dict.fromkeys(WINDOW_EVENT_REASONS, 0)
    emergency_changes = 0
    for ev in events:
        t = event_time(ev)
        if t is None or t < since:
            continue
        reason = str(ev.get("reason", ""))
        involved = ev.get("involvedObject") or ev.get("regarding") or {}
        if reason == DENIED_REASON:
            denied += event_count(ev)
        elif reason == EMERGENCY_CHANGE_REASON:
            emergency_changes += event_count(ev)
        elif involved.get("kind") == "ChangeWindow" and reason in by_reason:
            by_reason[reason] += event_count(ev)
    data["decisions"] = {
        "changeDenied": denied,
        "windowEvents": by_reason,
        "emergencyChanges": emergency_changes,
    }
    return data


def report_text(data: Mapping[str, Any], *, now: datetime.datetime, tz: datetime.tzinfo) -> str:
    since = datetime.datetime.fromisoformat(data["since"])
    lines = [f"ChangeWindows created since {local_time(since, tz)}:"]
    rows = [
        [
            w["name"],
            w["ticket"],
            w["requester"],
            ",".join(w["approvers"]) or "-",
            w["phase"] or "-",
            "yes" if w["emergency"] else "no",
            age(datetime.datetime.fromisoformat(str(w["created"]).replace("Z", "+00:00")), now),
        ]
        for w in data["windows"]
    ]
    lines.append(
        table(["name", "ticket", "requester", "approvers", "phase", "emergency", "age"], rows)
        if rows
        else "  none"
    )
    decisions = data.get("decisions")
    lines.append("")
    if decisions is None:
        lines.append("Decisions: Events could not be read (no permission to list events).")
    else:
        lines.append("Decisions (from Events still retained by the API server):")
        lines.append(f"  denied changes (ChangeDenied): {decisions['changeDenied']}")
        lines.append(f"  changes through emergency windows: {decisions['emergencyChanges']}")
        for reason, n in decisions["windowEvents"].items():
            lines.append(f"  window {reason}: {n}")
    return "\n".join(lines)
