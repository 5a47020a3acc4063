"""ChangeWindow bodies and approval patches built from command-line flags (``request``,
``emergency``, ``approve``): what the CLI sends, as plain functions of the flags."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from controller.cli import flags, kubectl

# -- request / emergency -------------------------------------------------------------------------

ALL_RESOURCES: Mapping[str, Any] = {
    "apiGroups": ["*"],
    "resources": ["*", "*/*"],
    "operations": ["*"],
}


def resource_rules(
    resources: Sequence[tuple[kubectl.ResourceInfo, str]], operations: Sequence[str]
) -> list[dict[str, Any]]:
    """Window target rules, one per API group, in first-seen order."""
    by_group: dict[str, list[str]] = {}
    for info, sub in resources:
        names = by_group.setdefault(info.group, [])
        plural = f"{info.resource}/{sub}" if sub else info.resource
        if plural not in names:
            names.append(plural)
    ops = [o.upper() for o in operations]
    for op in ops:
        if op not in (*kubectl.OPERATIONS, "*"):
            raise flags.UsageError(
                f"unknown operation {op!r}: use CREATE, UPDATE, DELETE or CONNECT"
            )
    return [
        {"apiGroups": [group], "resources": names, "operations": ops}
        for group, names in by_group.items()
    ]


def schedule_from_flags(
    *,
    start: str | None,
    end: str | None,
    cron: str | None,
    duration: str | None,
    time_zone: str | None,
) -> dict[str, Any]:
    """The ``spec.schedule`` for ``--start/--end`` or ``--cron/--duration/--tz`` (not both)."""
    one_off = start is not None or end is not None
    recurring = cron is not None or duration is not None
    if one_off == recurring:
        raise flags.UsageError("give --start and --end, or --cron, --duration and --tz")
    if one_off:
        if start is None or end is None:
            raise flags.UsageError("a one-off window needs both --start and --end")
        s, e = flags.parse_time(start), flags.parse_time(end)
        if e <= s:
            raise flags.UsageError("--end must be after --start")
        return {"start": _rfc3339(s), "end": _rfc3339(e)}
    if cron is None or duration is None or time_zone is None:
        raise flags.UsageError("a recurring window needs --cron, --duration and --tz")
    return {"cron": cron, "duration": duration, "timeZone": time_zone}


def _rfc3339(t: datetime.datetime) -> str:
    # The time as the user gave it, offset kept (the window then reads in their zone), not
    # crds.rfc3339's UTC: the same instant either way, and the webhook parses both.
    return t.isoformat().replace("+00:00", "Z")


def window_body(
    *,
    name: str | None,
    ticket: str,
    description: str,
    requester: str,
    identities: Sequence[str],
    namespaces: Sequence[str],
    rules: Sequence[Mapping[str, Any]],
    object_names: Sequence[str] = (),
    schedule: Mapping[str, Any],
    emergency_reason: str | None = None,
) -> dict[str, Any]:
    """A ChangeWindow manifest. Without ``name``, the API server generates one from the ticket.

    Optional fields are left out rather than written empty: the specHash covers the spec as
    stored, and approvers should sign exactly what the requester wrote.
    """
    target: dict[str, Any] = {"namespaces": list(namespaces), "resources": [dict(r) for r in rules]}
    if object_names:
        target["names"] = list(object_names)
    spec: dict[str, Any] = {
        "ticket": ticket,
        "requester": requester,
        "identities": list(identities),
        "targets": [target],
        "schedule": dict(schedule),
    }
    if description:
        spec["description"] = description
    if emergency_reason is not None:
        spec["emergency"] = {"reason": emergency_reason}
    metadata: dict[str, Any] = {"name": name} if name else {"generateName": _name_prefix(ticket)}
    return {
        "apiVersion": "changegate.io/v1alpha1",
        "kind": "ChangeWindow",
        "metadata": metadata,
        "spec": spec,
    }


def _name_prefix(ticket: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", ticket.lower()).strip("-")[:40] or "window"
    return f"{slug}-"


def approval_patch(*, spec: Mapping[str, Any], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch that appends ``entry`` only if the spec is still the one the approver saw.

    The ``test`` is on the whole spec (approvals included), not on the resourceVersion: the
    approver reviewed the spec, and the controller writing the window's status (it does at
    every schedule boundary) or someone labelling it must not turn an approval into a
    conflict. Any spec edit in between makes the API server refuse the patch (HTTP 422).
    """
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/spec", "value": dict(spec)}]
    if spec.get("approvals") is None:
        ops.append({"op": "add", "path": "/spec/approvals", "value": [dict(entry)]})
    else:
        ops.append({"op": "add", "path": "/spec/approvals/-", "value": dict(entry)})
    return ops
