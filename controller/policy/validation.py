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
from typing import Any, TypeVar

import pydantic

from controller.model import crds
from controller.model import errors as model_errors
from controller.policy import approvals, index, limits, matching, signatures
from controller.policy.request import Request

EMERGENCY_START_SLACK = datetime.timedelta(minutes=5)
"""How far an emergency window's start may be from now (clock skew, time to type the command)."""

FieldErrors = tuple[model_errors.FieldError, ...]


@dataclass(frozen=True, slots=True)
class Result:
    errors: FieldErrors = ()
    warnings: tuple[str, ...] = ()


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
        policy, errors = _parse(crds.ChangePolicy, body)
        if policy is None:
            return Result(errors=tuple(errors))
        return Result(warnings=tuple(open_paths(policy)))
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
    errors.extend(_plan_errors(window, policies, snapshot=snapshot))
    warnings = list(_identity_warnings(window, snapshot))
    if spec.emergency is not None:
        errors.extend(
            _emergency_errors(window, request=request, policies=policies, now=now, check_start=True)
        )
        warnings.extend(_emergency_warnings(window, policies))
    return Result(errors=tuple(errors), warnings=tuple(warnings))


def _window_update(
    request: Request, body: Mapping[str, Any], *, snapshot: index.Snapshot, now: datetime.datetime
) -> Result:
    """The plan is the requester's; everyone else may only append their own approval or
    remove approvals (which only narrows what the window admits)."""
    window, errors = parse_window(body)
    if window is None:
        return Result(errors=tuple(errors))
    new_raw = _raw_spec(body)
    old_raw = _raw_spec(request.old_object)
    requester = old_raw.get("requester")
    if requester != new_raw.get("requester"):
        errors.append(("spec.requester", "is immutable: create a new window instead"))

    new_hash = approvals.spec_hash(new_raw)
    plan_changed = approvals.spec_hash(old_raw) != new_hash
    if plan_changed and request.user != requester:
        errors.append(
            (
                "spec",
                f"only the requester {requester} may change this window's plan; {request.user} "
                "may only append their own approval or remove approvals",
            )
        )
    policies = snapshot.policies_for_window(window)
    errors.extend(
        _approval_errors(
            window,
            request=request,
            old_raw=old_raw,
            new_raw=new_raw,
            new_hash=new_hash,
            policies=policies,
            snapshot=snapshot,
            now=now,
        )
    )
    if not plan_changed:
        return Result(errors=tuple(errors))
    errors.extend(_plan_errors(window, policies, snapshot=snapshot))
    warnings = list(_identity_warnings(window, snapshot))
    if window.spec.emergency is not None:
        schedule_changed = old_raw.get("schedule") != new_raw.get("schedule")
        errors.extend(
            _emergency_errors(
                window, request=request, policies=policies, now=now, check_start=schedule_changed
            )
        )
        warnings.extend(_emergency_warnings(window, policies))
    return Result(errors=tuple(errors), warnings=tuple(warnings))


APPROVED_AT_SLACK = datetime.timedelta(minutes=5)
"""How far an appended approval's approvedAt may be from now (clock skew between the approver's
machine and changegate); an approval cannot be back- or forward-dated further."""


def _approval_errors(
    window: crds.ChangeWindow,
    *,
    request: Request,
    old_raw: Mapping[str, Any],
    new_raw: Mapping[str, Any],
    new_hash: str,
    policies: Sequence[index.CompiledPolicy],
    snapshot: index.Snapshot,
    now: datetime.datetime,
) -> list[tuple[str, str]]:
    """Existing approvals are kept unchanged (or removed); new ones come after them, each the
    caller's own, recording what it qualifies for."""
    errors: list[tuple[str, str]] = []
    old_entries = [e for e in old_raw.get("approvals") or [] if isinstance(e, Mapping)]
    old_keys = {(e.get("approver"), e.get("specHash")) for e in old_entries}
    kept_positions: list[int] = []
    appended = False
    for i, entry in enumerate(new_raw.get("approvals") or []):
        path = f"spec.approvals[{i}]"
        if entry in old_entries:
            position = old_entries.index(entry)
            if appended or (kept_positions and position < kept_positions[-1]):
                errors.append(
                    (path, "existing approvals cannot be reordered; new ones are appended last")
                )
            kept_positions.append(position)
            continue
        appended = True
        if not isinstance(entry, Mapping):
            errors.append((path, "must be an object"))
            continue
        if (entry.get("approver"), entry.get("specHash")) in old_keys:
            errors.append((path, "existing approvals cannot be altered (they may be removed)"))
            continue
        errors.extend(
            _new_approval_errors(
                window,
                entry,
                path=path,
                request=request,
                new_hash=new_hash,
                policies=policies,
                snapshot=snapshot,
                now=now,
            )
        )
    return errors


def _new_approval_errors(
    window: crds.ChangeWindow,
    entry: Mapping[str, Any],
    *,
    path: str,
    request: Request,
    new_hash: str,
    policies: Sequence[index.CompiledPolicy],
    snapshot: index.Snapshot,
    now: datetime.datetime,
) -> list[tuple[str, str]]:
    approver = entry.get("approver")
    if entry.get("signature") is not None:
        return _signed_approval_errors(
            window, entry, path=path, new_hash=new_hash, policies=policies, now=now
        )
    if approver != request.user:
        return [
            (
                f"{path}.approver",
                f"must be the authenticated user {request.user!r}: approvers append only their own approval",
            )
        ]
    if approver == window.spec.requester:
        return [(f"{path}.approver", "the requester cannot approve their own window")]
    errors: list[tuple[str, str]] = []
    if entry.get("specHash") != new_hash:
        errors.append(
            (
                f"{path}.specHash",
                f"must be the current specHash {new_hash} (the approval is of another version of the spec)",
            )
        )
    parsed = next(
        (a for a in window.spec.approvals if a.approver == approver and a.spec_hash == new_hash),
        None,
    )
    at = parsed.approved_at if parsed is not None else None
    if at is not None and abs(at - now) > APPROVED_AT_SLACK:
        errors.append(
            (
                f"{path}.approvedAt",
                f"must be the time of approving, within {crds.format_duration(APPROVED_AT_SLACK)} of now ({now.isoformat()})",
            )
        )
    qualifies = [p for p in policies if approvals.is_approver(p.policy, request.groups)]
    if not policies:
        errors.append(
            (
                f"{path}.approver",
                "no ChangePolicy controls this window's targets, so nobody can approve it",
            )
        )
    elif not qualifies:
        groups = sorted({g for p in policies for g in p.policy.spec.approval.approver_groups})
        errors.append(
            (
                f"{path}.approver",
                f"{request.user} is not in an approver group ({', '.join(groups) or 'none configured'}) of policies {', '.join(p.name for p in policies)}",
            )
        )
    errors.extend(_recorded_policies_errors(entry, path=path, request=request, policies=policies))
    errors.extend(_recorded_namespaces_errors(window, entry, path=path, snapshot=snapshot))
    return errors


def _signed_approval_errors(
    window: crds.ChangeWindow,
    entry: Mapping[str, Any],
    *,
    path: str,
    new_hash: str,
    policies: Sequence[index.CompiledPolicy],
    now: datetime.datetime,
) -> list[tuple[str, str]]:
    """An approval signed by a task-tracking system (``signatures``).

    Whoever appends it (the tracker's automation) need not be the approver: the signature
    binds the approver instead. It counts under the policies it lists, each of which must
    trust its issuer; four-eyes holds for the human it names.
    """
    approver = entry.get("approver")
    if approver == window.spec.requester:
        return [
            (
                f"{path}.approver",
                "the requester cannot approve their own window, signed by a tracker or not",
            )
        ]
    parsed = next(
        (a for a in window.spec.approvals if a.approver == approver and a.signature is not None),
        None,
    )
    if parsed is None:  # the model accepted the body, so this entry is among its approvals
        return [(path, "could not read the signed approval")]
    errors: list[tuple[str, str]] = []
    if entry.get("specHash") != new_hash:
        errors.append(
            (
                f"{path}.specHash",
                f"must be the current specHash {new_hash}: the tracker approved another version of the spec",
            )
        )
    if parsed.approved_at is not None and parsed.approved_at - now > APPROVED_AT_SLACK:
        errors.append((f"{path}.approvedAt", f"is in the future (now is {now.isoformat()})"))
    listed = entry.get("policies") or []
    if not listed:
        errors.append(
            (f"{path}.policies", "required: the ChangePolicies this approval counts under")
        )
    covering = {p.name: p for p in policies}
    for j, name in enumerate(listed):
        p = covering.get(name)
        if p is None:
            errors.append(
                (f"{path}.policies[{j}]", f"policy {name} does not control this window's targets")
            )
            continue
        problem = signatures.problem(
            parsed, policy=p.policy, window=window.metadata.name, ticket=window.spec.ticket
        )
        if problem is not None:
            errors.append((f"{path}.signature", problem))
    return errors


def _recorded_policies_errors(
    entry: Mapping[str, Any],
    *,
    path: str,
    request: Request,
    policies: Sequence[index.CompiledPolicy],
) -> list[tuple[str, str]]:
    """``policies`` must name only covering policies whose approverGroups hold the caller."""
    qualifies = sorted(p.name for p in policies if approvals.is_approver(p.policy, request.groups))
    listed = entry.get("policies") or []
    if not listed:
        return [
            (
                f"{path}.policies",
                "required: the ChangePolicies this approval counts under; "
                f"{request.user} may approve under: {', '.join(qualifies) or 'none'}",
            )
        ]
    covering = {p.name: p for p in policies}
    errors: list[tuple[str, str]] = []
    for j, name in enumerate(listed):
        p = covering.get(name)
        if p is None:
            errors.append(
                (f"{path}.policies[{j}]", f"policy {name} does not control this window's targets")
            )
        elif not approvals.is_approver(p.policy, request.groups):
            groups = ", ".join(p.policy.spec.approval.approver_groups) or "none configured"
            errors.append(
                (
                    f"{path}.policies[{j}]",
                    f"{request.user} is not in an approver group of policy {name} ({groups})",
                )
            )
    return errors


def _recorded_namespaces_errors(
    window: crds.ChangeWindow,
    entry: Mapping[str, Any],
    *,
    path: str,
    snapshot: index.Snapshot,
) -> list[tuple[str, str]]:
    """For a selector window, ``namespaces`` records what the approver saw: it is required,
    and may name only namespaces the window covers now."""
    selector = any(t.namespace_selector is not None for t in window.spec.targets)
    listed = entry.get("namespaces")
    covered = snapshot.window_namespaces(window)
    if listed is None:
        if not selector:
            return []
        return [
            (
                f"{path}.namespaces",
                "required for a window with a namespaceSelector target: the namespaces it "
                f"covers now, which this approval is for ({', '.join(sorted(covered)) or 'none'})",
            )
        ]
    unseen = sorted(set(listed) - covered)
    if unseen:
        return [
            (
                f"{path}.namespaces",
                f"{', '.join(unseen)} not covered by this window now (it covers: {', '.join(sorted(covered)) or 'none'})",
            )
        ]
    return []


def _plan_errors(
    window: crds.ChangeWindow,
    policies: Sequence[index.CompiledPolicy],
    *,
    snapshot: index.Snapshot,
) -> list[tuple[str, str]]:
    """What a plan must satisfy under each controlling policy: ticketPattern, windowLimits
    (break-glass windows carry an incident id and answer to breakGlass.maxDuration instead)."""
    if window.spec.emergency is not None:
        return []
    errors = _ticket_errors(window, policies)
    for p in policies:
        limits_ = p.policy.spec.window_limits
        if limits_ is None:
            continue
        for problem in limits.violations(
            limits_, window, covered=lambda: snapshot.window_namespaces(window)
        ):
            errors.append(("spec", f"{problem} (windowLimits of policy {p.name})"))
    return errors


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
    """Break-glass holds per policy: the window names the policies whose break-glass it uses,
    and the caller must be in each one's breakGlass groups (as authenticated now)."""
    errors: list[tuple[str, str]] = []
    emergency = window.spec.emergency
    if emergency is None:
        return errors
    if not emergency.reason.strip():
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
    covering = {p.name: p for p in policies}
    used: list[index.CompiledPolicy] = []
    if offering and eligible and not emergency.policies:
        errors.append(
            (
                "spec.emergency.policies",
                "required: the ChangePolicies whose break-glass you use; "
                f"{request.user} may use: {', '.join(p.name for p in eligible)}",
            )
        )
    for j, name in enumerate(emergency.policies):
        path = f"spec.emergency.policies[{j}]"
        p = covering.get(name)
        if p is None:
            errors.append((path, f"policy {name} does not control this window's targets"))
        elif p.policy.spec.break_glass is None:
            errors.append((path, f"policy {name} offers no break-glass"))
        elif not approvals.is_break_glass_member(p.policy, request.groups):
            allowed = ", ".join(p.policy.spec.break_glass.groups) or "none configured"
            errors.append(
                (
                    path,
                    f"{request.user} is not in the breakGlass groups of policy {name} ({allowed})",
                )
            )
        else:
            used.append(p)
    one_off = window.spec.schedule.one_off
    if one_off is None:
        errors.append(("spec.schedule", "an emergency window needs a one-off start/end schedule"))
        return errors
    if used:
        limit = min(
            p.policy.spec.break_glass.max_duration for p in used if p.policy.spec.break_glass
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


def _emergency_warnings(
    window: crds.ChangeWindow, policies: Sequence[index.CompiledPolicy]
) -> list[str]:
    """Policies the emergency window covers but does not break glass under: say so now, not
    at 3 a.m. when the change there is denied."""
    listed = set(window.spec.emergency.policies) if window.spec.emergency else set()
    others = [p.name for p in policies if p.name not in listed]
    if not others:
        return []
    return [
        f"changegate: this emergency window is not a break-glass window under {', '.join(others)}: "
        "changes controlled by those policies still need an approved window"
    ]


# -- ChangePolicy: paths with a related effect that a policy leaves open ----------------------

WORKLOADS: tuple[tuple[str, str], ...] = (
    ("", "pods"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("", "replicationcontrollers"),
)
"""Every kind a person can use to run containers: controlling some but not all of them
leaves a side door (create a Job instead of updating the Deployment)."""

POD_ACCESS = ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy")
"""CONNECT paths into a running pod: controlling exec but not attach leaves the same door."""

HPA = ("autoscaling", "horizontalpodautoscalers")


def open_paths(policy: crds.ChangePolicy) -> list[str]:
    """Warnings for ``kubectl apply`` of a policy: related API paths it leaves open.

    Paths with the *same* effect (scale, eviction, ephemeral containers, resize) are
    controlled automatically (``matching.effective_rules``); these are the ones a platform
    team must decide on, because changegate cannot tell whether leaving them open is meant.
    """
    rules = [
        matching.CompiledRule.of(r) for r in matching.effective_rules(policy.spec.match.resources)
    ]

    def controls(group: str, resource: str, operation: str) -> bool:
        base, _, sub = resource.partition("/")
        patterns = matching.resource_patterns(base, sub)
        return any(r.covers(api_group=group, patterns=patterns, operation=operation) for r in rules)

    name = policy.metadata.name
    warnings: list[str] = []
    writes = ("CREATE", "UPDATE")
    controlled = [(g, r) for g, r in WORKLOADS if any(controls(g, r, op) for op in writes)]
    if controlled:
        missing = [
            f"{r}.{g}" if g else r
            for g, r in WORKLOADS
            if (g, r) not in controlled or not all(controls(g, r, op) for op in writes)
        ]
        if missing:
            warnings.append(
                f"changegate: policy {name} controls some workloads but not CREATE/UPDATE of "
                f"{', '.join(missing)}: whoever may write those runs containers without a window"
            )
        if not all(controls(HPA[0], HPA[1], op) for op in writes):
            warnings.append(
                f"changegate: policy {name} does not control horizontalpodautoscalers.autoscaling:"
                " an HPA scales a controlled workload through the controller-manager, which is"
                " exempt, so creating one changes the workload without a window"
            )
    access = [p for p in POD_ACCESS if controls("", p, "CONNECT")]
    if access and len(access) < len(POD_ACCESS):
        missing = [p for p in POD_ACCESS if p not in access]
        warnings.append(
            f"changegate: policy {name} controls {', '.join(access)} but not CONNECT to"
            f" {', '.join(missing)}: those reach the same running containers"
        )
    if access and not controls("", "pods/ephemeralcontainers", "UPDATE"):
        warnings.append(
            f"changegate: policy {name} controls access to running pods but not UPDATE of pods"
            " (pods/ephemeralcontainers): `kubectl debug` adds a container to a running pod"
        )
    return warnings


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
        return None, model_errors.field_errors(e)
