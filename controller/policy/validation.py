"""Admission of changegate's own resources: the four-eyes and break-glass rules.

The webhook sees who the API server authenticated, so this is where identity claims in our
CRs are bound to real identities:

- CREATE ChangeWindow: ``spec.requester`` is the caller; no approvals yet; the shape is valid
  (pydantic, with field paths like ``spec.schedule.timeZone``); the ticket matches the
  ``ticketPattern`` of every policy controlling a target; an emergency window is created by a
  break-glass member of a covering policy, is a one-off starting now (within
  ``EMERGENCY_START_SLACK``) and lasts at most the smallest ``maxDuration`` among the policies
  whose break-glass the caller holds.
- UPDATE ChangeWindow: the requester is immutable; existing approvals are unchanged (they may
  be removed); each appended approval is by the caller, who is not the requester, is in an
  approverGroup of a covering policy, and signs the specHash of the *new* spec. A spec change
  is allowed — it makes the old approvals stale — and re-checks the ticket and emergency rules
  so an update cannot smuggle in what a create could not.
- ChangePolicy and AuthorizedIdentity: the model's checks (zones, crons, shapes).
- DELETE: allowed; who may delete is RBAC's job.

Naming an AuthorizedIdentity that does not exist yet is a *warning*, not an error: platform
teams often create the window and the identity in one ``kubectl apply``, in either order, and
a window without a matching identity admits nobody anyway (it fails closed at decision time).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic

from controller.model import crds
from controller.policy import approvals, index

if TYPE_CHECKING:
    from controller.policy.decide import Request

EMERGENCY_START_SLACK = datetime.timedelta(minutes=5)
"""How far an emergency window's start may be from now (clock skew, time to type the command)."""

FieldErrors = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Result:
    errors: FieldErrors = ()
    warnings: tuple[str, ...] = ()


def loc_to_path(loc: Sequence[int | str]) -> str:
    """``("spec", "targets", 0, "resources")`` -> ``spec.targets[0].resources``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def pydantic_errors(error: pydantic.ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in error.errors():
        msg = str(e.get("msg", ""))
        msg = msg.removeprefix("Value error, ")
        out.append((loc_to_path(e.get("loc", ())), msg))
    return out


def parse_window(body: Mapping[str, Any]) -> tuple[crds.ChangeWindow | None, list[tuple[str, str]]]:
    return _parse(crds.ChangeWindow, body)


def validate(request: Request, *, snapshot: index.Snapshot, now: datetime.datetime) -> Result:
    """Field errors and warnings for a request on a ``changegate.io`` resource."""
    if request.operation not in ("CREATE", "UPDATE") or request.subresource:
        return Result()
    body = request.object
    if not isinstance(body, Mapping):
        return Result(errors=(("(root)", "the request carries no object"),))
    if request.resource == "changewindows":
        if request.operation == "CREATE":
            return _window_create(request, body, snapshot=snapshot, now=now)
        return _window_update(request, body, snapshot=snapshot, now=now)
    if request.resource == "changepolicies":
        return Result(errors=tuple(_parse(crds.ChangePolicy, body)[1]))
    if request.resource == "authorizedidentities":
        return Result(errors=tuple(_parse(crds.AuthorizedIdentity, body)[1]))
    return Result()


# -- ChangeWindow -----------------------------------------------------------------------------


def _window_create(
    request: Request, body: Mapping[str, Any], *, snapshot: index.Snapshot, now: datetime.datetime
) -> Result:
    window, errors = parse_window(body)
    if window is None:
        return Result(errors=tuple(errors))
    spec = window.spec
    if spec.requester != request.user:
        errors.append(
            (
                "spec.requester",
                f"must be the authenticated user {request.user!r}, not {spec.requester!r}",
            )
        )
    if spec.approvals:
        errors.append(
            (
                "spec.approvals",
                "must be empty when a window is created; approvers append theirs later",
            )
        )
    policies = snapshot.policies_for_window(window)
    errors.extend(_ticket_errors(window, policies))
    if spec.emergency is not None:
        errors.extend(
            _emergency_errors(window, request=request, policies=policies, now=now, check_start=True)
        )
    return Result(errors=tuple(errors), warnings=_identity_warnings(window, snapshot))


def _window_update(
    request: Request, body: Mapping[str, Any], *, snapshot: index.Snapshot, now: datetime.datetime
) -> Result:
    window, errors = parse_window(body)
    if window is None:
        return Result(errors=tuple(errors))
    new_raw = _raw_spec(body)
    old_raw = _raw_spec(request.old_object)
    if old_raw.get("requester") != new_raw.get("requester"):
        errors.append(("spec.requester", "is immutable: create a new window instead"))

    policies = snapshot.policies_for_window(window)
    new_hash = approvals.spec_hash(new_raw)
    old_entries = [e for e in old_raw.get("approvals") or [] if isinstance(e, Mapping)]
    old_approvers = {e.get("approver") for e in old_entries}
    approver_policies = [p for p in policies if approvals.is_approver(p.policy, request.groups)]
    for i, entry in enumerate(new_raw.get("approvals") or []):
        if entry in old_entries:
            continue  # an existing approval, unchanged
        path = f"spec.approvals[{i}]"
        approver = entry.get("approver") if isinstance(entry, Mapping) else None
        if approver != request.user:
            if approver in old_approvers:
                errors.append((path, "existing approvals cannot be altered (they may be removed)"))
            else:
                errors.append(
                    (
                        f"{path}.approver",
                        f"must be the authenticated user {request.user!r}: approvers append only their own approval",
                    )
                )
            continue
        if approver == window.spec.requester:
            errors.append((f"{path}.approver", "the requester cannot approve their own window"))
            continue
        if not approver_policies:
            groups = sorted({g for p in policies for g in p.policy.spec.approval.approver_groups})
            if policies:
                msg = f"{request.user} is not in an approver group ({', '.join(groups) or 'none configured'}) of policies {', '.join(p.name for p in policies)}"
            else:
                msg = "no ChangePolicy controls this window's targets, so nobody can approve it"
            errors.append((f"{path}.approver", msg))
        if entry.get("specHash") != new_hash:
            errors.append(
                (
                    f"{path}.specHash",
                    f"must be the current specHash {new_hash} (the approval is of another version of the spec)",
                )
            )

    if approvals.spec_hash(old_raw) != new_hash:
        errors.extend(_ticket_errors(window, policies))
        if window.spec.emergency is not None:
            schedule_changed = old_raw.get("schedule") != new_raw.get("schedule")
            errors.extend(
                _emergency_errors(
                    window,
                    request=request,
                    policies=policies,
                    now=now,
                    check_start=schedule_changed,
                )
            )
        return Result(errors=tuple(errors), warnings=_identity_warnings(window, snapshot))
    return Result(errors=tuple(errors))


def _ticket_errors(
    window: crds.ChangeWindow, policies: Sequence[index.CompiledPolicy]
) -> list[tuple[str, str]]:
    # Break-glass windows carry the incident's id, not a change ticket: the policy's
    # ticketPattern describes change tickets, and an incident must not wait for one.
    if window.spec.emergency is not None:
        return []
    ticket = window.spec.ticket
    return [
        (
            "spec.ticket",
            f"{ticket!r} does not match ticketPattern {p.policy.spec.ticket_pattern!r} of policy {p.name}",
        )
        for p in policies
        if not p.ticket_ok(ticket)
    ]


def _emergency_errors(
    window: crds.ChangeWindow,
    *,
    request: Request,
    policies: Sequence[index.CompiledPolicy],
    now: datetime.datetime,
    check_start: bool,
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    emergency = window.spec.emergency
    if emergency is not None and not emergency.reason.strip():
        errors.append(("spec.emergency.reason", "must say why break-glass is needed"))
    offering = [p for p in policies if p.policy.spec.break_glass is not None]
    eligible = [p for p in offering if approvals.is_break_glass_member(p.policy, request.groups)]
    if not offering:
        errors.append(
            ("spec.emergency", "no ChangePolicy controlling these targets offers break-glass")
        )
    elif not eligible:
        groups = sorted(
            {
                g
                for p in offering
                for g in (p.policy.spec.break_glass.groups if p.policy.spec.break_glass else [])
            }
        )
        errors.append(
            (
                "spec.emergency",
                f"{request.user} is not in a breakGlass group ({', '.join(groups) or 'none configured'})",
            )
        )
    one_off = window.spec.schedule.one_off
    if one_off is None:
        errors.append(("spec.schedule", "an emergency window needs a one-off start/end schedule"))
        return errors
    if eligible:
        limit = min(
            p.policy.spec.break_glass.max_duration for p in eligible if p.policy.spec.break_glass
        )
        if one_off.end - one_off.start > limit:
            errors.append(
                (
                    "spec.schedule.end",
                    f"an emergency window lasts at most maxDuration {crds.format_duration(limit)}",
                )
            )
    if check_start and abs(one_off.start - now) > EMERGENCY_START_SLACK:
        errors.append(
            (
                "spec.schedule.start",
                f"an emergency window opens immediately: start must be within {crds.format_duration(EMERGENCY_START_SLACK)} of now ({now.isoformat()})",
            )
        )
    return errors


def _identity_warnings(window: crds.ChangeWindow, snapshot: index.Snapshot) -> tuple[str, ...]:
    missing = [n for n in window.spec.identities if n not in snapshot.identities]
    if not missing:
        return ()
    return (
        f"changegate: AuthorizedIdentity {', '.join(missing)} does not exist (yet); "
        "nobody can act through it until it is created",
    )


def _raw_spec(body: Mapping[str, Any] | None) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        return {}
    spec = body.get("spec")
    return dict(spec) if isinstance(spec, Mapping) else {}


_M = TypeVar("_M", bound=pydantic.BaseModel)


def _parse(model: type[_M], body: Mapping[str, Any]) -> tuple[_M | None, list[tuple[str, str]]]:
    try:
        return model.model_validate(dict(body)), []
    except pydantic.ValidationError as e:
        return None, pydantic_errors(e)
