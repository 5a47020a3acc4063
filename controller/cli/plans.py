"""``request`` and ``emergency``: create a window from flags, the requester being the live.caller."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic
import yaml

from controller.cli import (
    bodies,
    context,
    flags,
    kubectl,
    live,
)
from controller.cli import kube as kube_mod
from controller.model import crds, errors
from controller.policy import approvals, index

# -- request / emergency -----------------------------------------------------------------------


def _validate_locally(body: Mapping[str, Any]) -> None:
    """Check the manifest with the same models the webhook uses, before sending it."""
    probe = {**body, "metadata": {"name": body["metadata"].get("name") or "probe"}}
    try:
        crds.ChangeWindow.model_validate(probe)
    except pydantic.ValidationError as e:
        problems = errors.one_line(errors.field_errors(e))
        raise flags.UsageError(f"the window would be invalid: {problems}") from e


def _resolve_targets(
    c: context.Ctx, tokens: Sequence[str]
) -> list[tuple[kubectl.ResourceInfo, str]]:
    catalog = live.resource_catalog(c.kube, err=c.err)
    return [kubectl.resolve_resource(t, catalog) for t in tokens]


def _create_window(c: context.Ctx, body: Mapping[str, Any]) -> int:
    _validate_locally(body)
    created: Mapping[str, Any] = c.kube.request("POST", kube_mod.WINDOWS_PATH, body=body)
    spec_hash = approvals.spec_hash(created.get("spec") or {})
    if c.args.output in ("json", "yaml"):
        context.dump({"window": created, "specHash": spec_hash}, c.args.output, c.out)
    else:
        name = created["metadata"]["name"]
        print(f"changewindow/{name} created", file=c.out)
        print(yaml.safe_dump({"spec": created.get("spec")}, sort_keys=False).rstrip(), file=c.out)
        print(f"specHash: {spec_hash}", file=c.out)
    return context.EXIT_OK


def cmd_request(c: context.Ctx) -> int:
    a = c.args
    if not a.namespace:
        raise flags.UsageError("request needs -n/--namespace (the namespace the change is in)")
    schedule = bodies.schedule_from_flags(
        start=a.start, end=a.end, cron=a.cron, duration=a.duration, time_zone=a.schedule_tz
    )
    rules = bodies.resource_rules(_resolve_targets(c, a.resource), a.operation or ["UPDATE"])
    requester, _ = c.kube.whoami()
    body = bodies.window_body(
        name=a.name_window,
        ticket=a.ticket,
        description=a.description or "",
        requester=requester,
        identities=a.identity,
        namespaces=[a.namespace],
        rules=rules,
        object_names=a.object_names or (),
        schedule=schedule,
    )
    return _create_window(c, body)


def cmd_emergency(c: context.Ctx) -> int:
    a = c.args
    if not a.namespace:
        raise flags.UsageError("emergency needs -n/--namespace")
    if not a.reason.strip():
        raise flags.UsageError("--reason must say why (an incident id and what is broken)")
    try:
        length = crds.parse_duration(a.duration)
    except ValueError as e:
        raise flags.UsageError(str(e)) from e
    requester, groups = c.kube.whoami()
    identities = list(a.identity or ())
    if not identities:
        # Default to the AuthorizedIdentities that name the live.caller: break-glass is for the
        # people on call, and they should not have to look up their identity's name at 3 a.m.
        items = c.kube.list_items(kube_mod.IDENTITIES_PATH)
        mine = live.parse_all(items, crds.AuthorizedIdentity, [])
        snap = index.Snapshot.build(policies=(), identities=mine, windows=(), namespaces={})
        identities = [i.name for i in snap.identities_for(user=requester, groups=groups)]
        if not identities:
            raise flags.UsageError(f"no AuthorizedIdentity names {requester}; pass --identity NAME")
    if a.resource:
        rules = bodies.resource_rules(_resolve_targets(c, a.resource), a.operation or ["*"])
    else:
        rules = [dict(bodies.ALL_RESOURCES)]
    start = c.now.astimezone(datetime.UTC).replace(microsecond=0)
    schedule = {"start": crds.rfc3339(start), "end": crds.rfc3339(start + length)}
    body = bodies.window_body(
        name=a.name_window,
        ticket=a.ticket,
        description=a.description or f"Emergency: {a.reason}",
        requester=requester,
        identities=identities,
        namespaces=[a.namespace],
        rules=rules,
        schedule=schedule,
        emergency_reason=a.reason,
    )
    # Break-glass holds per policy: name the policies whose break-glass the live.caller holds.
    probe = live.parse_window(
        {**body, "metadata": {"name": body["metadata"].get("name") or "probe"}}
    )
    covering = live.load_live(c.kube, err=c.err).snapshot().policies_for_window(probe)
    usable = [p.name for p in covering if approvals.is_break_glass_member(p.policy, groups)]
    if not usable:
        raise flags.UsageError(
            "you are not in the breakGlass groups of any policy controlling this change"
            f" ({', '.join(p.name for p in covering) or 'none'})"
        )
    body["spec"]["emergency"]["policies"] = usable
    if not a.name_window:
        body["metadata"] = {"generateName": "emergency-"}
    return _create_window(c, body)
