"""``can-i``: the decision the webhook would make, against the live objects, before trying."""

from __future__ import annotations

import datetime

from controller.cli import (
    context,
    flags,
    kubectl,
    live,
    render,
)
from controller.cli import kube as kube_mod
from controller.policy import decide, index

# -- can-i -------------------------------------------------------------------------------------


def next_window_text(
    request: decide.Request,
    *,
    snapshot: index.Snapshot,
    at: datetime.datetime,
    tz: datetime.tzinfo,
) -> str | None:
    """The covering window open at ``at``, else the first to open after it (relative to ``at``,
    the moment the question is about)."""
    best: tuple[datetime.datetime, datetime.datetime, str, str] | None = None
    for w in snapshot.covering_windows(
        api_group=request.api_group,
        resource=request.resource,
        subresource=request.subresource,
        operation=request.operation,
        namespace=request.namespace,
        name=request.name,
    ):
        iv = w.timeline.interval_at(at) or w.timeline.next_interval(at)
        if iv is not None and (best is None or iv.start < best[0]):
            best = (iv.start, iv.end, w.name, w.window.spec.ticket)
    if best is None:
        return None
    start, end, name, ticket = best
    span = f"{render.local_time(start, tz)} - {render.local_time(end, tz)}"
    if start <= at:
        return f"{name} ({ticket}) open {span} (closes {render.relative(end, at)})"
    return f"{name} ({ticket}) opens {span} ({render.relative(start, at)})"


def cmd_can_i(c: context.Ctx) -> int:
    a = c.args
    at = flags.parse_time(a.at) if a.at else c.now
    catalog = live.resource_catalog(c.kube, err=c.err)
    info, sub_from_token = kubectl.resolve_resource(a.resource, catalog)
    subresource = a.subresource if a.subresource is not None else (sub_from_token or None)
    user, groups = live.caller(c.kube, a)
    namespace = a.namespace or ""
    if info.namespaced and not namespace:
        namespace = kube_mod.context_namespace(c.kube.conn)
    request = kubectl.build_request(
        verb=a.verb,
        resource=info,
        subresource=subresource,
        namespace=namespace,
        name=a.object_name or "",
        user=user,
        groups=groups,
    )
    objects = live.load_live(c.kube, err=c.err)
    snap = objects.snapshot()
    decision = decide.decide(request, snapshot=snap, now=at)
    nxt = next_window_text(request, snapshot=snap, at=at, tz=c.tz)
    if a.output in ("json", "yaml"):
        context.dump(
            {
                "allowed": decision.allowed,
                "verdict": decision.verdict,
                "reason": str(decision.reason),
                "mode": str(decision.mode) if decision.mode else None,
                "message": decision.message,
                "policy": decision.policy,
                "window": decision.window,
                "ticket": decision.ticket,
                "identity": decision.identity,
                "emergency": decision.emergency,
                "warnings": list(decision.warnings),
                "nextWindow": nxt,
                "request": {
                    "user": user,
                    "groups": list(groups),
                    "operation": request.operation,
                    "resource": request.resource,
                    "subresource": request.subresource,
                    "apiGroup": request.api_group,
                    "namespace": request.namespace,
                    "name": request.name,
                    "at": at.isoformat(),
                },
            },
            a.output,
            c.out,
        )
    else:
        print(
            render.can_i_text(
                allowed=decision.allowed,
                reason=str(decision.reason),
                message=decision.message or "; ".join(decision.warnings),
                policy=decision.policy,
                window=decision.window,
                next_window=nxt,
            ),
            file=c.out,
        )
    return context.EXIT_OK if decision.allowed else context.EXIT_DENIED
