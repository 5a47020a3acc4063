"""The admission decision: the spec's rules, in the spec's order, as one pure function.

``decide(request, snapshot=..., now=...)`` answers every request that reaches the webhook.
changegate's own resources go to ``validation``; everything else follows the spec:

1. Status subresources are never gated -- unless the write changes the object's labels,
   annotations, finalizers or owner references, which the API server lets ``/status`` (and a
   namespace's ``/finalize``) do: such a write has the effect of an update and is decided as
   one (the spec's "an API path with the same effect is controlled with it").
2. The controlling policies are those whose ``match`` covers the request; none -> allow.
3. An UPDATE that changes nothing but bookkeeping metadata is allowed (GitOps re-applies).
4. Each controlling policy decides on its own (exemption, emergency window, blackout,
   approved window with a designated identity inside its work hours); the request is allowed
   only if every policy allows it, and among the denying policies the strictest enforcement
   (Enforce > Warn > Audit) decides what the API server is told.

Dry-run requests are decided exactly the same way; ``dry_run`` only rides along so callers can
leave them out of "admitted changes" counts.

When a policy denies, the reason is that of the window that got furthest through the checks
(active -> approved -> designated -> identity valid -> inside work hours): a requester with an
open, approved window who is merely early wants to hear "your work hours start at 09:00", not
"no window". Ranking, lowest first: NoWindow < NotApproved < ApprovalStale < NotDesignated <
IdentityExpired < OutsideWorkHours. A ticket that does not match the policy's ticketPattern
counts as NotApproved: the window is not approved *under this policy's rules*.

Nothing escapes: any exception while deciding becomes a deny (reason Invalid, mode Enforce)
whose message names the error — failing closed, as the spec's failure posture demands.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from controller.model import crds
from controller.policy import approvals, explain, index, matching, schedules, validation
from controller.policy.request import Decision, Reason, Request

__all__ = ["Decision", "Reason", "Request", "decide"]

BUILTIN_EXEMPT_USERS = frozenset({"system:kube-controller-manager", "system:kube-scheduler"})
BUILTIN_EXEMPT_GROUPS = frozenset({"system:nodes", "system:serviceaccounts:kube-system"})
#: Namespaces the webhook never sees (its namespaceSelector), besides changegate's own: what
#: runs the cluster must never wait for a change window.
NEVER_SENT_NAMESPACES = frozenset({"kube-system"})

BOOKKEEPING_METADATA = frozenset({"managedFields", "resourceVersion", "generation"})
"""Metadata the API server or field manager maintains; a change to only these is not a change.

``kubectl.kubernetes.io/last-applied-configuration`` is deliberately *not* here: it is user
data that steers the next ``kubectl apply`` (it decides which fields that apply deletes), so
changing it changes behaviour. A GitOps re-apply of an unchanged manifest leaves it unchanged
anyway, so the re-apply is still a no-op.
"""

_STRICTNESS = {crds.Enforcement.ENFORCE: 2, crds.Enforcement.WARN: 1, crds.Enforcement.AUDIT: 0}


_PROGRESS = {
    Reason.NO_WINDOW: 0,
    Reason.NOT_APPROVED: 1,
    Reason.APPROVAL_STALE: 2,
    Reason.NOT_DESIGNATED: 3,
    Reason.IDENTITY_EXPIRED: 4,
    Reason.OUTSIDE_WORK_HOURS: 5,
}


def decide(
    request: Request,
    *,
    snapshot: index.Snapshot,
    now: datetime.datetime,
    namespace_labels: Mapping[str, str] | None = None,
) -> Decision:
    """Decide one request at ``now``. Never raises: errors become a fail-closed deny.

    ``namespace_labels``: the request namespace's labels as read from the API server, for a
    namespace the snapshot has not seen yet. Without them such a request, when a policy
    picks namespaces by label, is denied as ``UnknownNamespace`` (retry): changegate never
    decides "not controlled" from a view that may be stale.
    """
    try:
        return _decide(request, snapshot=snapshot, now=now, namespace_labels=namespace_labels)
    except Exception as e:  # fail closed, with the cause in the message
        return _decision(
            allowed=False,
            verdict="deny",
            reason=Reason.INVALID,
            mode=crds.Enforcement.ENFORCE,
            message=explain.internal_error(e),
            request=request,
        )


def is_builtin_exempt(*, user: str, groups: tuple[str, ...] | list[str]) -> bool:
    return user in BUILTIN_EXEMPT_USERS or any(g in BUILTIN_EXEMPT_GROUPS for g in groups)


def is_bookkeeping_update(obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None) -> bool:
    """True when ``obj`` and ``old`` differ at most in ``BOOKKEEPING_METADATA``.

    Compared in place, top-level fields other than ``metadata`` first: a real change (spec,
    data) usually differs there, and the answer is then known without copying either object.
    """
    if obj is None or old is None:
        return False
    if obj.keys() != old.keys():
        return False
    for key, value in obj.items():
        if key != "metadata" and value != old[key]:
            return False
    return bool(
        _comparable_metadata(obj.get("metadata")) == _comparable_metadata(old.get("metadata"))
    )


def _comparable_metadata(meta: Any) -> Any:
    if isinstance(meta, Mapping):
        return {k: v for k, v in meta.items() if k not in BOOKKEEPING_METADATA}
    return meta


# -- internals ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verdict:
    """One policy's conclusion about the request."""

    policy: index.CompiledPolicy
    allow: bool
    reason: Reason
    why: str = ""
    next_step: str = ""
    window: index.CompiledWindow | None = None
    identity: str | None = None
    approvers: tuple[str, ...] = ()
    closes: datetime.datetime | None = None


@dataclass(slots=True)
class _Context:
    request: Request
    snapshot: index.Snapshot
    now: datetime.datetime
    name: str
    windows: list[index.CompiledWindow]  # covering the request, open or not (for "Next:")
    open_windows: list[tuple[index.CompiledWindow, schedules.Interval]]  # open at now
    identities: dict[str, index.CompiledIdentity]
    zone: str | None
    _next_hint: str | None = field(default=None)


def _decide(
    request: Request,
    *,
    snapshot: index.Snapshot,
    now: datetime.datetime,
    namespace_labels: Mapping[str, str] | None,
) -> Decision:
    if request.subresource in matching.STATUS_LIKE and not (
        request.operation == "UPDATE"
        and matching.status_write_changes_metadata(request.object, request.old_object)
    ):
        return _decision(
            allowed=True,
            verdict="allow",
            reason=Reason.STATUS_SUBRESOURCE,
            mode=None,
            request=request,
        )
    if request.api_group == crds.GROUP:
        return _validate_own(request, snapshot=snapshot, now=now)

    if (
        namespace_labels is None
        and request.namespace
        and not snapshot.knows_namespace(request.namespace)
        and not _is_namespace_object(request)
        and snapshot.label_scoped(
            api_group=request.api_group,
            resource=request.resource,
            subresource=request.subresource,
            operation=request.operation,
        )
    ):
        return _decision(
            allowed=False,
            verdict="deny",
            reason=Reason.UNKNOWN_NAMESPACE,
            mode=crds.Enforcement.ENFORCE,
            message=explain.unknown_namespace(
                operation=request.operation,
                resource=explain.resource_label(
                    api_group=request.api_group,
                    resource=request.resource,
                    subresource=request.subresource,
                ),
                obj=explain.object_label(
                    namespace=request.namespace,
                    name=matching.request_object_name(name=request.name, obj=request.object),
                ),
                user=request.user,
                namespace=request.namespace,
            ),
            request=request,
        )
    policies = snapshot.controlling_policies(
        api_group=request.api_group,
        resource=request.resource,
        subresource=request.subresource,
        operation=request.operation,
        namespace=request.namespace,
        labels=namespace_labels,
    )
    if _is_namespace_object(request) and request.operation in ("UPDATE", "DELETE"):
        policies = _with_scope_changes(policies, request, snapshot)
    if not policies:
        return _decision(
            allowed=True, verdict="allow", reason=Reason.NOT_CONTROLLED, mode=None, request=request
        )
    if request.operation == "UPDATE" and is_bookkeeping_update(request.object, request.old_object):
        return _decision(
            allowed=True,
            verdict="allow",
            reason=Reason.NO_OP,
            mode=_strictest(policies),
            request=request,
        )

    if _builtin_exempt(request, snapshot):
        # Exempt from every policy alike: no need to look at a single window.
        return _decision(
            allowed=True,
            verdict="allow",
            reason=Reason.EXEMPT,
            mode=_strictest(policies),
            request=request,
            deciding=_Verdict(policy=policies[0], allow=True, reason=Reason.EXEMPT),
        )

    ctx = _context(request, snapshot=snapshot, now=now)
    verdicts = [_evaluate(p, ctx) for p in policies]
    denying = [v for v in verdicts if not v.allow]
    if denying:
        return _deny(denying, ctx)
    return _allow(verdicts, ctx)


def _is_namespace_object(request: Request) -> bool:
    """A write to a Namespace itself (``/status`` and ``/finalize`` can relabel it too)."""
    return (
        request.api_group == ""
        and request.resource == "namespaces"
        and (not request.subresource or request.subresource in matching.STATUS_LIKE)
    )


def _labels_of(obj: Mapping[str, Any] | None) -> Mapping[str, str] | None:
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    labels = meta.get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _with_scope_changes(
    policies: tuple[index.CompiledPolicy, ...], request: Request, snapshot: index.Snapshot
) -> tuple[index.CompiledPolicy, ...]:
    """Add the policies whose scope an UPDATE or DELETE of a Namespace moves.

    Relabelling a namespace out of a label-selected policy (or into one), or deleting a
    namespace a policy covers, changes what that policy controls as surely as changing the
    objects in it: each such policy controls the request, decided by the labels *before*
    the change (``oldObject``; the index's labels if the API server sent none).
    """
    name = request.namespace or request.name
    old = _labels_of(request.old_object)
    if old is None:
        old = snapshot.namespace_labels(name)
    new = _labels_of(request.object) if request.operation == "UPDATE" else None
    if request.operation == "UPDATE" and new is None:
        return policies  # no object to compare: nothing can be said about a scope change
    moved = snapshot.scope_changes(name, old_labels=old, new_labels=new)
    if not moved:
        return policies
    merged = {p.name: p for p in (*policies, *moved)}
    return tuple(merged[n] for n in sorted(merged))


def _strictest(policies: tuple[index.CompiledPolicy, ...]) -> crds.Enforcement:
    """The strictest enforcement among the controlling policies (only allows that no policy
    evaluated need it, so it is not worked out for the requests that are decided in full)."""
    return max((p.policy.spec.enforcement for p in policies), key=_STRICTNESS.__getitem__)


def _context(request: Request, *, snapshot: index.Snapshot, now: datetime.datetime) -> _Context:
    name = matching.request_object_name(name=request.name, obj=request.object)
    windows = snapshot.covering_windows(
        api_group=request.api_group,
        resource=request.resource,
        subresource=request.subresource,
        operation=request.operation,
        namespace=request.namespace,
        name=name,
    )
    identities = {
        i.name: i for i in snapshot.identities_for(user=request.user, groups=request.groups)
    }
    zone = next((i.zone for i in identities.values() if i.zone), None)
    open_windows = []
    for w in windows:
        interval = w.timeline.interval_at(now)
        if interval is not None:
            open_windows.append((w, interval))
    return _Context(
        request=request,
        snapshot=snapshot,
        now=now,
        name=name,
        windows=windows,
        open_windows=open_windows,
        identities=identities,
        zone=zone,
    )


def _builtin_exempt(request: Request, snapshot: index.Snapshot) -> bool:
    """The control plane's identities and changegate's own, unless turned off altogether."""
    if not snapshot.builtin_exemptions:
        return False
    if is_builtin_exempt(user=request.user, groups=request.groups):
        return True
    return snapshot.self_subject is not None and matching.subject_matches(
        snapshot.self_subject, user=request.user, groups=request.groups
    )


def _evaluate(p: index.CompiledPolicy, ctx: _Context) -> _Verdict:
    """One policy's verdict, following the spec's step 2 in order."""
    req, now = ctx.request, ctx.now
    spec = p.policy.spec
    if spec.exempt_subjects and any(
        matching.subject_matches(s, user=req.user, groups=req.groups) for s in spec.exempt_subjects
    ):
        return _Verdict(policy=p, allow=True, reason=Reason.EXEMPT)

    for w, interval in ctx.open_windows:
        if not w.emergency or not approvals.emergency_allowed_by(p.policy, w.window):
            continue
        identity = _names_requester(w, ctx)
        if identity is not None:
            return _Verdict(
                policy=p,
                allow=True,
                reason=Reason.EMERGENCY,
                window=w,
                identity=identity or None,
                closes=interval.end,
            )

    active_blackout = p.active_blackout(now)
    if active_blackout is not None:
        blackout, interval = active_blackout
        until = interval.end
        zone = blackout.holidays.time_zone if blackout.holidays is not None else ctx.zone
        if zone is None and blackout.schedule is not None and blackout.schedule.end is not None:
            until = until.astimezone(blackout.schedule.end.tzinfo)  # as the policy wrote it
        return _Verdict(
            policy=p,
            allow=False,
            reason=Reason.BLACKOUT,
            why=explain.blackout(name=blackout.name, until=until, zone=zone, now=now),
            next_step=explain.next_after_blackout(
                break_glass=bool(p.policy.spec.break_glass and p.policy.spec.break_glass.groups)
            ),
        )

    best: tuple[index.CompiledWindow, schedules.Interval, _Stage] | None = None
    best_rank = 0
    for w, interval in ctx.open_windows:  # a closed window gets no further than NoWindow
        stage = _stage(p, w, ctx)
        if stage.reason is Reason.WINDOW:
            return _through_window(p, w, interval, ctx, stage)
        rank = _PROGRESS[stage.reason]
        if rank > best_rank:  # ties: the first in name order
            best, best_rank = (w, interval, stage), rank
    if best is None:
        return _Verdict(
            policy=p,
            allow=False,
            reason=Reason.NO_WINDOW,
            why=explain.no_window(),
            next_step=_next_window_hint(ctx),
        )
    return _through_window(p, best[0], best[1], ctx, best[2])


def _names_requester(w: index.CompiledWindow, ctx: _Context) -> str | None:
    """For an emergency window: "" if the requester created it, an identity name if one of
    its (valid) identities matches, None otherwise."""
    if w.window.spec.requester == ctx.request.user:
        return ""
    for name in w.window.spec.identities:
        ident = ctx.identities.get(name)
        if ident is not None and not ident.identity.spec.suspended and not ident.expired(ctx.now):
            return name
    return None


class _Stage(NamedTuple):
    """How far one open window got under one policy (``reason`` WINDOW: it admits)."""

    reason: Reason
    approval: approvals.ApprovalState
    designated: list[index.CompiledIdentity]  # the window's identities matching the requester
    last: list[index.CompiledIdentity]  # those that reached the last step checked


def _stage(p: index.CompiledPolicy, w: index.CompiledWindow, ctx: _Context) -> _Stage:
    """How far one open window gets: approved -> designated -> valid -> work hours.

    No messages are built here: with dozens of open windows covering one request, only the
    one that got furthest is worth explaining.
    """
    spec = w.window.spec
    req = ctx.request
    state = w.approval_state(
        p,
        namespace=w.approval_namespace(
            api_group=req.api_group,
            resource=req.resource,
            subresource=req.subresource,
            operation=req.operation,
            namespace=req.namespace,
            name=ctx.name,
        )
        if p.policy.spec.approval.required
        else None,
    )
    if not state.approved:
        return _Stage(Reason.APPROVAL_STALE if state.stale else Reason.NOT_APPROVED, state, [], [])
    if not p.ticket_ok(spec.ticket) or w.limit_violations(p, ctx.snapshot):
        return _Stage(Reason.NOT_APPROVED, state, [], [])
    designated = [ctx.identities[n] for n in spec.identities if n in ctx.identities]
    if not designated:
        return _Stage(Reason.NOT_DESIGNATED, state, designated, [])
    now = ctx.now
    usable = [i for i in designated if not i.identity.spec.suspended and not i.expired(now)]
    if not usable:
        return _Stage(Reason.IDENTITY_EXPIRED, state, designated, [])
    in_hours = [i for i in usable if i.work_hours is None or i.work_hours.is_open(now)]
    if in_hours:
        return _Stage(Reason.WINDOW, state, designated, in_hours)
    return _Stage(Reason.OUTSIDE_WORK_HOURS, state, designated, usable)


def _through_window(
    p: index.CompiledPolicy,
    w: index.CompiledWindow,
    interval: schedules.Interval,
    ctx: _Context,
    stage: _Stage,
) -> _Verdict:
    """The verdict, with its explanation, for one window at the stage it reached."""
    now, req = ctx.now, ctx.request
    spec = w.window.spec
    label = explain.window_label(ticket=spec.ticket, name=w.name)
    reason, state, designated, last = stage

    if reason is Reason.WINDOW:
        return _Verdict(
            policy=p,
            allow=True,
            reason=Reason.WINDOW,
            window=w,
            identity=last[0].name,
            approvers=state.valid,
            closes=interval.end,
        )
    groups = p.policy.spec.approval.approver_groups
    if reason is Reason.APPROVAL_STALE:
        why = explain.approval_stale(
            window=label, valid=len(state.valid), required=state.required, stale=state.stale
        )
        next_step = explain.next_approve(window_name=w.name, groups=groups)
    elif (
        reason is Reason.NOT_APPROVED
        and not state.approved
        and (signed := w.approval_state(p)).approved
    ):
        # Approved, but not for this namespace: the selector picked it up after signing.
        why = explain.namespace_not_signed(
            window=label, namespace=req.namespace, approvers=signed.valid
        )
        next_step = explain.next_reapprove(window_name=w.name, namespace=req.namespace)
    elif reason is Reason.NOT_APPROVED and not state.approved:
        why = explain.not_approved(
            window=label,
            valid=len(state.valid),
            required=state.required,
            approvers=state.valid,
            groups=groups,
        )
        next_step = explain.next_approve(window_name=w.name, groups=groups)
    elif reason is Reason.NOT_APPROVED and not p.ticket_ok(spec.ticket):
        pattern = p.policy.spec.ticket_pattern or ""
        why = explain.ticket_mismatch(window=label, ticket=spec.ticket, pattern=pattern)
        next_step = explain.next_fix_ticket(pattern=pattern)
    elif reason is Reason.NOT_APPROVED:
        why = explain.beyond_limits(
            window=label, policy=p.name, problems=w.limit_violations(p, ctx.snapshot)
        )
        next_step = explain.next_within_limits(policy=p.name)
    elif reason is Reason.NOT_DESIGNATED:
        why = explain.not_designated(window=label, user=req.user, identities=spec.identities)
        next_step = explain.next_designate(identities=spec.identities)
    elif reason is Reason.IDENTITY_EXPIRED:
        first = designated[0]
        until = first.identity.spec.valid_until
        if first.identity.spec.suspended or until is None:
            why = explain.identity_suspended(identity=first.name)
        else:
            why = explain.identity_expired(identity=first.name, at=until, zone=first.zone, now=now)
        return _Verdict(
            policy=p,
            allow=False,
            reason=reason,
            why=why,
            next_step=explain.next_renew_identity(identity=first.name),
            window=w,
            identity=first.name,
        )
    else:  # OUTSIDE_WORK_HOURS
        first = last[0]
        upcoming = first.work_hours.next_interval(now) if first.work_hours is not None else None
        why = explain.outside_work_hours(
            identity=first.name,
            user=req.user,
            next_start=upcoming.start if upcoming is not None else None,
            zone=first.zone,
            now=now,
        )
        return _Verdict(
            policy=p,
            allow=False,
            reason=reason,
            why=why,
            next_step=explain.next_after_hours(),
            window=w,
            identity=first.name,
        )
    return _Verdict(policy=p, allow=False, reason=reason, why=why, next_step=next_step, window=w)


def _next_window_hint(ctx: _Context) -> str:
    """ "Next: window CHG-1234 "..." opens ..." for the earliest covering window to open."""
    if ctx._next_hint is not None:
        return ctx._next_hint
    best: tuple[datetime.datetime, index.CompiledWindow] | None = None
    for w in ctx.windows:
        upcoming = w.timeline.next_interval(ctx.now)
        if upcoming is not None and (best is None or upcoming.start < best[0]):
            best = (upcoming.start, w)
    if best is None:
        hint = "Next: request a change window (kubectl changegate request)."
    else:
        opens, w = best
        spec = w.window.spec
        zone = ctx.zone or spec.schedule.time_zone
        if zone is None and spec.schedule.start is not None:
            opens = opens.astimezone(spec.schedule.start.tzinfo)  # as the window was written
        label = explain.window_label(ticket=spec.ticket, name=w.name, description=spec.description)
        hint = explain.next_window(label=label, opens=opens, zone=zone, now=ctx.now)
    ctx._next_hint = hint
    return hint


def _deny(denying: list[_Verdict], ctx: _Context) -> Decision:
    req = ctx.request
    chosen = max(denying, key=lambda v: _STRICTNESS[v.policy.policy.spec.enforcement])
    spec = chosen.policy.policy.spec
    message = explain.denial(
        operation=req.operation,
        resource=explain.resource_label(
            api_group=req.api_group, resource=req.resource, subresource=req.subresource
        ),
        # A Namespace is its own namespace in a review; "payments", not "payments/payments".
        obj=explain.object_label(
            namespace="" if _is_namespace_object(req) else req.namespace, name=ctx.name
        ),
        user=req.user,
        why=chosen.why,
        policy=chosen.policy.name,
        next_step=chosen.next_step,
        contact=spec.message.contact,
        docs_url=spec.message.docs_url,
    )
    mode = spec.enforcement
    return _decision(
        allowed=mode is not crds.Enforcement.ENFORCE,
        verdict="deny",
        reason=chosen.reason,
        mode=mode,
        message=message,
        request=req,
        deciding=chosen,
        warnings=(message,) if mode is crds.Enforcement.WARN else (),
    )


def _allow(verdicts: list[_Verdict], ctx: _Context) -> Decision:
    chosen = next((v for v in verdicts if v.reason is Reason.EMERGENCY), None)
    chosen = chosen or next((v for v in verdicts if v.reason is Reason.WINDOW), verdicts[0])
    warnings: list[str] = []
    for v in verdicts:
        if v.reason is Reason.EMERGENCY and v.window is not None:
            spec = v.window.window.spec
            text = explain.emergency(
                window=explain.window_label(ticket=spec.ticket, name=v.window.name),
                reason=spec.emergency.reason if spec.emergency else "",
            )
            if text not in warnings:
                warnings.append(text)
    for v in verdicts:
        if (
            v.window is not None
            and v.closes is not None
            and v.closes - ctx.now <= explain.CLOSING_SOON
        ):
            spec = v.window.window.spec
            text = explain.closing_soon(
                window=explain.window_label(ticket=spec.ticket, name=v.window.name),
                closes=v.closes,
                zone=ctx.zone or spec.schedule.time_zone,
                now=ctx.now,
            )
            if text not in warnings:
                warnings.append(text)
    return _decision(
        allowed=True,
        verdict="allow",
        reason=chosen.reason,
        mode=chosen.policy.policy.spec.enforcement,
        request=ctx.request,
        deciding=chosen,
        warnings=tuple(warnings),
    )


def _validate_own(
    request: Request, *, snapshot: index.Snapshot, now: datetime.datetime
) -> Decision:
    result = validation.validate(request, snapshot=snapshot, now=now)
    if result.errors:
        what = explain.object_label(namespace=request.namespace, name=request.name)
        details = "; ".join(f"{path}: {msg}" for path, msg in result.errors)
        return _decision(
            allowed=False,
            verdict="deny",
            reason=Reason.INVALID,
            mode=crds.Enforcement.ENFORCE,
            message=f"changegate denied {request.operation} {request.resource}.{crds.GROUP} {what} for {request.user}: {details}",
            request=request,
            field_errors=result.errors,
        )
    return _decision(
        allowed=True,
        verdict="allow",
        reason=Reason.VALID,
        mode=None,
        request=request,
        warnings=result.warnings,
    )


def _decision(
    *,
    allowed: bool,
    verdict: Literal["allow", "deny"],
    reason: Reason,
    mode: crds.Enforcement | None,
    request: Request,
    message: str = "",
    deciding: _Verdict | None = None,
    warnings: tuple[str, ...] = (),
    field_errors: tuple[tuple[str, str], ...] = (),
) -> Decision:
    w = deciding.window if deciding is not None else None
    policy = deciding.policy.name if deciding is not None else None
    window = w.name if w is not None else None
    ticket = w.window.spec.ticket if w is not None else None
    approvers = deciding.approvers if deciding is not None else ()
    identity = deciding.identity if deciding is not None else None
    emergency = reason is Reason.EMERGENCY
    annotations = {
        "decision": verdict,
        "reason": str(reason),
        "mode": str(mode) if mode is not None else "",
        "policy": policy or "",
        "window": window or "",
        "ticket": ticket or "",
        "approvers": ",".join(approvers),
        "identity": identity or "",
    }
    if emergency:
        annotations["emergency"] = "true"
    if request.dry_run:
        annotations["dryRun"] = "true"
    return Decision(
        allowed=allowed,
        verdict=verdict,
        reason=reason,
        mode=mode,
        message=message,
        policy=policy,
        window=window,
        ticket=ticket,
        approvers=approvers,
        identity=identity,
        emergency=emergency,
        warnings=warnings,
        audit_annotations=annotations,
        field_errors=field_errors,
    )
