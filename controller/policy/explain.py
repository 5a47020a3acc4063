"""The words a requester reads: denials, warnings, "next window opens ...".

Pure functions of plain values, so the webhook, the CLI (``can-i``) and the tests produce the
same text. Every denial is one line in the spec's shape::

    changegate denied UPDATE deployments.apps payments/web for alice@example.com: no approved
    change window covers this change (policy payments-prod). Next: window CHG-1234 "payments
    v2.3" opens Tue 2026-12-01 22:00 KST (in 13h 2m). Contact #change-management.

Times are shown in the zone the reader works in (their identity's work-hours zone, else the
window's own zone, else UTC) with the zone's abbreviation and a relative "(in 13h 2m)".
"""

from __future__ import annotations

import datetime
import functools
import zoneinfo
from collections.abc import Sequence

CLOSING_SOON = datetime.timedelta(minutes=15)


def relative(delta: datetime.timedelta) -> str:
    """``13h 2m``, ``2d 4h``, ``5m``; whole minutes, rounded down; never negative."""
    minutes = max(0, int(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    return f"{mins}m"


def _zone(name: str) -> datetime.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return datetime.UTC


def when(t: datetime.datetime, *, zone: str | None, now: datetime.datetime) -> str:
    """``Tue 2026-12-01 22:00 KST (in 13h 2m)`` — absolute for the log, relative for humans."""
    # no zone: keep t's own offset (not cached: equal instants with different offsets are
    # equal keys but print differently)
    stamp = _stamp_in(t, zone) if zone else t.strftime(_STAMP)
    delta = t - now
    if delta >= datetime.timedelta(0):
        return f"{stamp} (in {relative(delta)})"
    return f"{stamp} ({relative(-delta)} ago)"


_STAMP = "%a %Y-%m-%d %H:%M %Z"


@functools.lru_cache(maxsize=1024)
def _stamp_in(t: datetime.datetime, zone: str) -> str:
    """``t`` as wall-clock time in ``zone``: the same for every request that names the instant
    (a window's next start, a blackout's end), so worked out once per (instant, zone); only
    the relative part depends on the request's ``now``."""
    return t.astimezone(_zone(zone)).strftime(_STAMP)


def resource_label(*, api_group: str, resource: str, subresource: str) -> str:
    """``deployments.apps``, ``configmaps``, ``pods/exec`` — as kubectl names resources."""
    label = f"{resource}.{api_group}" if api_group else resource
    return f"{label}/{subresource}" if subresource else label


def object_label(*, namespace: str, name: str) -> str:
    """``payments/web``; a cluster-scoped object is its name; an unnamed CREATE is ``*``."""
    shown = name or "*"
    return f"{namespace}/{shown}" if namespace else shown


def window_label(*, ticket: str, name: str, description: str = "") -> str:
    """``CHG-1234 "payments v2.3"`` or ``CHG-1234 (w-name)`` when there is no description."""
    return f'{ticket} "{description}"' if description else f"{ticket} ({name})"


def denial(
    *,
    operation: str,
    resource: str,
    obj: str,
    user: str,
    why: str,
    policy: str,
    next_step: str = "",
    contact: str | None = None,
    docs_url: str | None = None,
) -> str:
    """The one-line denial (also the Warn-mode warning text)."""
    line = f"changegate denied {operation} {resource} {obj} for {user}: {why} (policy {policy})."
    if next_step:
        line += f" {next_step}"
    if contact:
        line += f" Contact {contact}."
    if docs_url:
        line += f" See {docs_url}."
    return line


def next_window(
    *, label: str, opens: datetime.datetime, zone: str | None, now: datetime.datetime
) -> str:
    return f"Next: window {label} opens {when(opens, zone=zone, now=now)}."


def no_window() -> str:
    return "no approved change window covers this change"


def not_approved(
    *, window: str, valid: int, required: int, approvers: Sequence[str], groups: Sequence[str]
) -> str:
    who = ", ".join(approvers) if approvers else "none"
    from_groups = f" from {', '.join(groups)}" if groups else ""
    return (
        f"window {window} is not approved: {valid} of {required} approvals "
        f"(approved by: {who}; needs {required - valid} more{from_groups})"
    )


def approval_stale(*, window: str, valid: int, required: int, stale: Sequence[str]) -> str:
    return (
        f"window {window} changed after it was approved: approvals by {', '.join(stale)} are "
        f"stale ({valid} of {required} valid); ask them to approve the current spec"
    )


def ticket_mismatch(*, window: str, ticket: str, pattern: str) -> str:
    return f"window {window} has ticket {ticket!r}, which does not match the policy's ticketPattern {pattern!r}"


def not_designated(*, window: str, user: str, identities: Sequence[str]) -> str:
    return (
        f"{user} is not designated personnel of window {window} "
        f"(its identities: {', '.join(identities)})"
    )


def identity_expired(
    *, identity: str, at: datetime.datetime, zone: str | None, now: datetime.datetime
) -> str:
    return f"authorized identity {identity} expired {when(at, zone=zone or 'UTC', now=now)}"


def identity_suspended(*, identity: str) -> str:
    return f"authorized identity {identity} is suspended"


def outside_work_hours(
    *,
    identity: str,
    user: str,
    next_start: datetime.datetime | None,
    zone: str | None,
    now: datetime.datetime,
) -> str:
    base = f"{user} is outside the work hours of identity {identity}"
    if next_start is None:
        return base + " (no future work hours)"
    return base + f"; they next start {when(next_start, zone=zone, now=now)}"


def blackout(
    *, name: str, until: datetime.datetime, zone: str | None, now: datetime.datetime
) -> str:
    return f"blackout {name} is in effect until {when(until, zone=zone, now=now)}"


def closing_soon(
    *, window: str, closes: datetime.datetime, zone: str | None, now: datetime.datetime
) -> str:
    return (
        f"changegate: window {window} closes {when(closes, zone=zone, now=now)}; "
        "changes after that will be denied"
    )


def emergency(*, window: str, reason: str) -> str:
    return (
        f"changegate admitted this change via break-glass window {window} ({reason}); "
        "it is recorded and the window requires review"
    )


def unknown_namespace(*, operation: str, resource: str, obj: str, user: str, namespace: str) -> str:
    return (
        f"changegate denied {operation} {resource} {obj} for {user}: changegate has not seen "
        f"namespace {namespace} yet and could not read its labels, so it cannot tell which "
        "policies control it. Next: retry in a few seconds."
    )


def beyond_limits(*, window: str, policy: str, problems: Sequence[str]) -> str:
    return f"window {window} breaks the windowLimits of policy {policy}: {'; '.join(problems)}"


def namespace_not_signed(*, window: str, namespace: str, approvers: Sequence[str]) -> str:
    return (
        f"window {window} was approved by {', '.join(approvers)} before its namespaceSelector "
        f"matched namespace {namespace}, so no approval covers {namespace}"
    )


def internal_error(error: BaseException) -> str:
    return (
        "changegate could not decide this request and denied it to fail closed: "
        f"{type(error).__name__}: {error}"
    )


# -- next steps: what the requester can do about each denial ------------------------------------


def next_approve(*, window_name: str, groups: Sequence[str]) -> str:
    who = f"a member of {', '.join(groups)}" if groups else "an approver"
    return f"Next: ask {who} to run `kubectl changegate approve {window_name}`."


def next_fix_ticket(*, pattern: str) -> str:
    return f"Next: request a window whose ticket matches {pattern!r}."


def next_designate(*, identities: Sequence[str]) -> str:
    return (
        "Next: request a window that names an identity you belong to (kubectl changegate "
        f"request), or ask the platform team to add you to {', '.join(identities)}."
    )


def next_renew_identity(*, identity: str) -> str:
    return f"Next: ask the platform team to renew or unsuspend AuthorizedIdentity {identity}."


def next_within_limits(*, policy: str) -> str:
    return (
        f"Next: request a window within the windowLimits of policy {policy} "
        "(`kubectl get changepolicy " + policy + " -o yaml` shows them)."
    )


def next_reapprove(*, window_name: str, namespace: str) -> str:
    return (
        f"Next: ask an approver to run `kubectl changegate approve {window_name}` again, so "
        f"the approval covers namespace {namespace}."
    )


def next_after_hours() -> str:
    return "Next: make the change within those hours, or ask an on-call identity to make it."


def next_after_blackout(*, break_glass: bool) -> str:
    if break_glass:
        return (
            "Next: wait for the blackout to end; for an incident, open a break-glass window "
            "(kubectl changegate emergency)."
        )
    return "Next: wait for the blackout to end."
