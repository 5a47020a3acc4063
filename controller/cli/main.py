"""``kubectl changegate``: list, describe, can-i, request, approve, emergency, report.

A thin shell: parse flags, read the live objects through :mod:`controller.cli.kube`, call
the same pure core the webhook uses (``index.Snapshot.build``, ``decide.decide``,
``status.window_status``, ``approvals.spec_hash``), and print with
:mod:`controller.cli.render`. The CLI never decides anything the webhook would decide
differently: ``can-i`` is ``decide()`` on the same inputs.

Exit codes: 0 success (``can-i``: allowed), 1 ``can-i`` denied, 2 error (usage, RBAC,
unknown window, unreachable API server, rejected write), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pydantic
import yaml

from controller.cli import audit, render, verbs
from controller.cli import kube as kube_mod
from controller.model import crds, errors
from controller.policy import approvals, decide, index, limits, schedules, signatures, status

EXIT_OK, EXIT_DENIED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUTS = ("table", "wide", "json", "yaml")


# -- live state --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Live:
    """The objects the webhook's index holds, read once from the API server."""

    policies: tuple[crds.ChangePolicy, ...]
    identities: tuple[crds.AuthorizedIdentity, ...]
    windows: tuple[crds.ChangeWindow, ...]
    raw_windows: Mapping[str, Mapping[str, Any]]  # name -> the object as stored
    namespaces: Mapping[str, Mapping[str, str]]
    skipped: tuple[str, ...]  # objects that do not validate (the webhook leaves them out too)

    def snapshot(self) -> index.Snapshot:
        return index.Snapshot.build(
            policies=self.policies,
            identities=self.identities,
            windows=self.windows,
            namespaces=self.namespaces,
            raw_window_specs={n: w.get("spec") or {} for n, w in self.raw_windows.items()},
        )


def _parse_all(
    items: Sequence[Mapping[str, Any]], model: type[pydantic.BaseModel], skipped: list[str]
) -> list[Any]:
    out = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except pydantic.ValidationError as e:
            name = (item.get("metadata") or {}).get("name", "?")
            where, msg = errors.field_errors(e)[0]
            skipped.append(f"{model.__name__} {name}: {where}: {msg}")
    return out


def load_live(k: kube_mod.Kube, *, err: TextIO) -> Live:
    """Read policies, identities, windows and namespace labels, as the webhook's index does."""
    skipped: list[str] = []
    policies = _parse_all(k.list_items(kube_mod.POLICIES_PATH), crds.ChangePolicy, skipped)
    identities = _parse_all(
        k.list_items(kube_mod.IDENTITIES_PATH), crds.AuthorizedIdentity, skipped
    )
    raw_windows = k.list_items(kube_mod.WINDOWS_PATH)
    windows = _parse_all(raw_windows, crds.ChangeWindow, skipped)
    valid = {w.metadata.name for w in windows}
    try:
        namespaces = {
            str(ns["metadata"]["name"]): dict(ns["metadata"].get("labels") or {})
            for ns in k.list_items(kube_mod.NAMESPACES_PATH)
        }
    except kube_mod.Forbidden:
        # Without labels, namespaceSelector-based policies and targets cannot match; say so
        # rather than silently answer differently from the webhook.
        print(
            "warning: cannot list namespaces; policies and windows that select namespaces by"
            " label are not applied",
            file=err,
        )
        namespaces = {}
    for line in skipped:
        print(f"warning: ignoring invalid {line}", file=err)
    return Live(
        policies=tuple(policies),
        identities=tuple(identities),
        windows=tuple(windows),
        raw_windows={
            str(w["metadata"]["name"]): w for w in raw_windows if w["metadata"]["name"] in valid
        },
        namespaces=namespaces,
        skipped=tuple(skipped),
    )


def resource_catalog(k: kube_mod.Kube, *, err: TextIO) -> list[verbs.ResourceInfo]:
    """Discovery's resources; the built-in alias table when discovery is unavailable."""
    try:
        found = verbs.resources_from_discovery(k.discovery())
    except kube_mod.Unreachable:
        raise
    except kube_mod.CliError as e:
        print(f"warning: discovery unavailable ({e}); using the built-in resource table", file=err)
        return list(verbs.BUILTIN_RESOURCES)
    return found or list(verbs.BUILTIN_RESOURCES)


def caller(k: kube_mod.Kube, args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """Who the API server would see: ``--as``/``--as-group``, else SelfSubjectReview."""
    if args.as_user:
        groups = tuple(args.as_group or ())
        # The API server adds system:authenticated to every impersonated non-anonymous user.
        if args.as_user != "system:anonymous" and "system:authenticated" not in groups:
            groups += ("system:authenticated",)
        return args.as_user, groups
    user, groups = k.whoami()
    if not user:
        raise kube_mod.CliError("the API server did not say who you are (SelfSubjectReview)")
    return user, groups


def computed_status(
    window: crds.ChangeWindow, *, live: Live, snapshot: index.Snapshot, now: datetime.datetime
) -> status.WindowStatus:
    raw = live.raw_windows[window.metadata.name].get("spec") or {}
    return status.window_status(window, raw_spec=raw, snapshot=snapshot, now=now)


# -- output helpers ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def dump(data: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        print(json.dumps(_jsonable(data), indent=2, sort_keys=False), file=out)
    else:
        print(yaml.safe_dump(_jsonable(data), sort_keys=False).rstrip(), file=out)


@dataclasses.dataclass(frozen=True, slots=True)
class Ctx:
    """What every command gets: flags, a client, the clock, the zone, and where to print."""

    args: argparse.Namespace
    kube: kube_mod.Kube
    now: datetime.datetime
    tz: datetime.tzinfo
    out: TextIO
    err: TextIO
    stdin: TextIO


# -- list --------------------------------------------------------------------------------------


def cmd_list(c: Ctx) -> int:
    live = load_live(c.kube, err=c.err)
    snap = live.snapshot()
    rows = []
    for w in sorted(live.windows, key=lambda w: w.metadata.name):
        st = computed_status(w, live=live, snapshot=snap, now=c.now)
        rows.append(
            render.WindowRow(
                name=w.metadata.name,
                phase=str(st.phase),
                ticket=w.spec.ticket,
                approvals=st.approvals,
                next_open=st.next_open,
                next_close=st.next_close,
                created=w.metadata.creation_timestamp,
                requester=w.spec.requester,
                emergency=w.spec.emergency is not None,
                spec_hash=st.spec_hash,
            )
        )
    if c.args.output in ("json", "yaml"):
        dump([dataclasses.asdict(r) for r in rows], c.args.output, c.out)
    else:
        print(render.list_table(rows, now=c.now, tz=c.tz, wide=c.args.output == "wide"), file=c.out)
    return EXIT_OK


# -- describe ----------------------------------------------------------------------------------


def describe_window(
    window: crds.ChangeWindow,
    *,
    raw: Mapping[str, Any],
    snapshot: index.Snapshot,
    now: datetime.datetime,
) -> render.Description:
    """Gather what ``describe`` shows; pure given the snapshot."""
    raw_spec = raw.get("spec") or {}
    st = status.window_status(window, raw_spec=raw_spec, snapshot=snapshot, now=now)
    current = approvals.spec_hash(raw_spec)
    policies = snapshot.policies_for_window(window)
    states = approvals.approval_states(
        window, current_hash=current, policies=[p.policy for p in policies]
    )
    state = approvals.least_approved(states)
    valid_anywhere = {a for st_ in states.values() for a in st_.valid}
    stale_anywhere = {a for st_ in states.values() for a in st_.stale} - valid_anywhere

    def lines(names: set[str], *, signed_current: bool) -> tuple[render.ApprovalLine, ...]:
        out = []
        for a in window.spec.approvals:
            if a.approver in names and (a.spec_hash == current) == signed_current:
                out.append(
                    render.ApprovalLine(
                        approver=a.approver,
                        approved_at=a.approved_at,
                        spec_hash=a.spec_hash,
                        policies=tuple(a.policies),
                    )
                )
        return tuple(out)

    idents = []
    for name in window.spec.identities:
        ident = snapshot.identities.get(name)
        if ident is None:
            idents.append(render.IdentityLine(name=name, exists=False))
            continue
        subjects = tuple(
            f"{s.kind} {s.namespace + '/' if s.namespace else ''}{s.name}"
            for s in ident.spec.subjects
        )
        notes = []
        if ident.spec.suspended:
            notes.append("suspended")
        if ident.spec.valid_until is not None:
            verb = "expired" if ident.spec.valid_until <= now else "valid until"
            notes.append(f"{verb} {ident.spec.valid_until.isoformat()}")
        if ident.spec.work_hours is not None:
            wh = ident.spec.work_hours
            ranges = "; ".join(
                f"{','.join(str(d) for d in r.days)} {r.start:%H:%M}-{r.end:%H:%M}"
                for r in wh.weekly
            )
            notes.append(f"work hours {ranges} {wh.time_zone}")
        idents.append(
            render.IdentityLine(name=name, exists=True, subjects=subjects, notes=tuple(notes))
        )

    timeline = snapshot.compiled_windows[window.metadata.name].timeline
    occurrences = [(iv.start, iv.end) for iv in schedules.upcoming(timeline, now, limit=3)]

    return render.Description(
        name=window.metadata.name,
        ticket=window.spec.ticket,
        description=window.spec.description,
        requester=window.spec.requester,
        phase=str(st.phase),
        message=st.message,
        emergency_reason=window.spec.emergency.reason if window.spec.emergency else None,
        schedule=render.schedule_text(raw_spec.get("schedule") or {}),
        occurrences=tuple(occurrences),
        targets=tuple(render.target_text(t) for t in raw_spec.get("targets") or ()),
        identities=tuple(idents),
        spec_hash=current,
        stored_hash=window.status.spec_hash,
        policies=tuple(
            render.PolicyLine(
                name=p.policy.metadata.name,
                required=p.policy.spec.approval.required,
                approver_groups=tuple(p.policy.spec.approval.approver_groups),
                enforcement=str(p.policy.spec.enforcement),
                approvals=states[p.name].summary,
            )
            for p in policies
        ),
        required=state.required,
        valid=lines(valid_anywhere, signed_current=True),
        stale=lines(stale_anywhere, signed_current=False),
        self_approvals=state.self_approvals,
    )


def get_window(k: kube_mod.Kube, name: str) -> Mapping[str, Any]:
    try:
        obj: Mapping[str, Any] = k.request("GET", f"{kube_mod.WINDOWS_PATH}/{name}")
    except kube_mod.NotFound as e:
        raise kube_mod.NotFound(f"no ChangeWindow named {name}") from e
    return obj


def parse_window(raw: Mapping[str, Any]) -> crds.ChangeWindow:
    try:
        return crds.ChangeWindow.model_validate(raw)
    except pydantic.ValidationError as e:
        name = (raw.get("metadata") or {}).get("name", "?")
        raise kube_mod.CliError(f"ChangeWindow {name} is invalid: {e}") from e


def cmd_describe(c: Ctx) -> int:
    raw = get_window(c.kube, c.args.name)
    live = load_live(c.kube, err=c.err)
    if c.args.name not in live.raw_windows:
        raise kube_mod.CliError(f"ChangeWindow {c.args.name} is invalid and not used by changegate")
    window = next(w for w in live.windows if w.metadata.name == c.args.name)
    d = describe_window(window, raw=raw, snapshot=live.snapshot(), now=c.now)
    if c.args.output in ("json", "yaml"):
        dump(d, c.args.output, c.out)
    else:
        print(render.describe_text(d, now=c.now, tz=c.tz), file=c.out)
    return EXIT_OK


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


def cmd_can_i(c: Ctx) -> int:
    a = c.args
    at = verbs.parse_time(a.at) if a.at else c.now
    catalog = resource_catalog(c.kube, err=c.err)
    info, sub_from_token = verbs.resolve_resource(a.resource, catalog)
    subresource = a.subresource if a.subresource is not None else (sub_from_token or None)
    user, groups = caller(c.kube, a)
    namespace = a.namespace or ""
    if info.namespaced and not namespace:
        namespace = kube_mod.context_namespace(c.kube.conn)
    request = verbs.build_request(
        verb=a.verb,
        resource=info,
        subresource=subresource,
        namespace=namespace,
        name=a.object_name or "",
        user=user,
        groups=groups,
    )
    live = load_live(c.kube, err=c.err)
    snap = live.snapshot()
    decision = decide.decide(request, snapshot=snap, now=at)
    nxt = next_window_text(request, snapshot=snap, at=at, tz=c.tz)
    if a.output in ("json", "yaml"):
        dump(
            {
                "allowed": decision.allowed,
                "outcome": decision.outcome,
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
    return EXIT_OK if decision.allowed else EXIT_DENIED


# -- request / emergency -----------------------------------------------------------------------


def _validate_locally(body: Mapping[str, Any]) -> None:
    """Check the manifest with the same models the webhook uses, before sending it."""
    probe = {**body, "metadata": {"name": body["metadata"].get("name") or "probe"}}
    try:
        crds.ChangeWindow.model_validate(probe)
    except pydantic.ValidationError as e:
        problems = errors.one_line(errors.field_errors(e))
        raise verbs.UsageError(f"the window would be invalid: {problems}") from e


def _resolve_targets(c: Ctx, tokens: Sequence[str]) -> list[tuple[verbs.ResourceInfo, str]]:
    catalog = resource_catalog(c.kube, err=c.err)
    return [verbs.resolve_resource(t, catalog) for t in tokens]


def _create_window(c: Ctx, body: Mapping[str, Any]) -> int:
    _validate_locally(body)
    created: Mapping[str, Any] = c.kube.request("POST", kube_mod.WINDOWS_PATH, body=body)
    spec_hash = approvals.spec_hash(created.get("spec") or {})
    if c.args.output in ("json", "yaml"):
        dump({"window": created, "specHash": spec_hash}, c.args.output, c.out)
    else:
        name = created["metadata"]["name"]
        print(f"changewindow/{name} created", file=c.out)
        print(yaml.safe_dump({"spec": created.get("spec")}, sort_keys=False).rstrip(), file=c.out)
        print(f"specHash: {spec_hash}", file=c.out)
    return EXIT_OK


def cmd_request(c: Ctx) -> int:
    a = c.args
    if not a.namespace:
        raise verbs.UsageError("request needs -n/--namespace (the namespace the change is in)")
    schedule = verbs.schedule_from_flags(
        start=a.start, end=a.end, cron=a.cron, duration=a.duration, time_zone=a.schedule_tz
    )
    rules = verbs.resource_rules(_resolve_targets(c, a.resource), a.operation or ["UPDATE"])
    requester, _ = c.kube.whoami()
    body = verbs.window_body(
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


def cmd_emergency(c: Ctx) -> int:
    a = c.args
    if not a.namespace:
        raise verbs.UsageError("emergency needs -n/--namespace")
    if not a.reason.strip():
        raise verbs.UsageError("--reason must say why (an incident id and what is broken)")
    try:
        length = crds.parse_duration(a.duration)
    except ValueError as e:
        raise verbs.UsageError(str(e)) from e
    requester, groups = c.kube.whoami()
    identities = list(a.identity or ())
    if not identities:
        # Default to the AuthorizedIdentities that name the caller: break-glass is for the
        # people on call, and they should not have to look up their identity's name at 3 a.m.
        items = c.kube.list_items(kube_mod.IDENTITIES_PATH)
        mine = _parse_all(items, crds.AuthorizedIdentity, [])
        snap = index.Snapshot.build(policies=(), identities=mine, windows=(), namespaces={})
        identities = [i.name for i in snap.identities_for(user=requester, groups=groups)]
        if not identities:
            raise verbs.UsageError(f"no AuthorizedIdentity names {requester}; pass --identity NAME")
    if a.resource:
        rules = verbs.resource_rules(_resolve_targets(c, a.resource), a.operation or ["*"])
    else:
        rules = [dict(verbs.ALL_RESOURCES)]
    start = c.now.astimezone(datetime.UTC).replace(microsecond=0)
    schedule = {
        "start": start.isoformat().replace("+00:00", "Z"),
        "end": (start + length).isoformat().replace("+00:00", "Z"),
    }
    body = verbs.window_body(
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
    # Break-glass holds per policy: name the policies whose break-glass the caller holds.
    probe = parse_window({**body, "metadata": {"name": body["metadata"].get("name") or "probe"}})
    covering = load_live(c.kube, err=c.err).snapshot().policies_for_window(probe)
    usable = [p.name for p in covering if approvals.is_break_glass_member(p.policy, groups)]
    if not usable:
        raise verbs.UsageError(
            "you are not in the breakGlass groups of any policy controlling this change"
            f" ({', '.join(p.name for p in covering) or 'none'})"
        )
    body["spec"]["emergency"]["policies"] = usable
    if not a.name_window:
        body["metadata"] = {"generateName": "emergency-"}
    return _create_window(c, body)


# -- approve -----------------------------------------------------------------------------------


def approval_summary(raw: Mapping[str, Any], *, spec_hash: str) -> str:
    """What the approver signs, in the words they will be held to."""
    spec = raw.get("spec") or {}
    lines = [
        f"ChangeWindow: {raw['metadata']['name']}",
        f"Ticket:       {spec.get('ticket', '')}",
        f"Description:  {spec.get('description') or '-'}",
        f"Requester:    {spec.get('requester', '')}",
        f"Schedule:     {render.schedule_text(spec.get('schedule') or {})}",
        f"Identities:   {', '.join(spec.get('identities') or ())}",
        "Targets:",
        *(f"  {render.target_text(t)}" for t in spec.get("targets") or ()),
    ]
    if spec.get("emergency"):
        lines.append(f"Emergency:    {spec['emergency'].get('reason', '')}")
    existing = spec.get("approvals") or ()
    if existing:
        lines.append("Existing approvals:")
        lines += [
            f"  {e.get('approver')} ({'current' if e.get('specHash') == spec_hash else 'stale'})"
            for e in existing
        ]
    lines.append(f"Spec hash:    {spec_hash}")
    return "\n".join(lines)


BROAD_DURATION = datetime.timedelta(hours=24)
BROAD_NAMESPACES = 5


def approval_scope(
    window: crds.ChangeWindow, *, live: Live, groups: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]:
    """What an approval by a member of ``groups`` records, and what to warn about first.

    Returns (policies it counts under, namespaces it covers or None for a window without a
    selector target, warnings). The webhook checks the same against its own index.
    """
    snap = live.snapshot()
    covering = snap.policies_for_window(window)
    under = tuple(p.name for p in covering if approvals.is_approver(p.policy, groups))
    if not under:
        names = ", ".join(p.name for p in covering) or "none"
        wanted = sorted({g for p in covering for g in p.policy.spec.approval.approver_groups})
        raise kube_mod.Rejected(
            f"you are not in an approver group ({', '.join(wanted) or 'none configured'}) of"
            f" the policies controlling this window ({names}); nothing was approved"
        )
    selector = any(t.namespace_selector is not None for t in window.spec.targets)
    covered = tuple(sorted(snap.window_namespaces(window)))
    warnings = [f"broad window: {w}" for w in limits.wildcards(window)]
    longest = limits.longest_stretch(window)
    if longest is None or longest > BROAD_DURATION:
        shown = "without end" if longest is None else crds.format_duration(longest)
        warnings.append(f"long window: it stays open {shown} at a stretch")
    if len(covered) > BROAD_NAMESPACES:
        warnings.append(f"broad window: it covers {len(covered)} namespaces")
    others = [p.name for p in covering if p.name not in under]
    if others:
        warnings.append(
            f"your approval does not count under {', '.join(others)} (not an approver there):"
            " changes those policies control need their own approvers"
        )
    return under, (covered if selector else None), tuple(warnings)


def cmd_approve(c: Ctx) -> int:
    a = c.args
    raw = get_window(c.kube, a.name)
    spec = raw.get("spec") or {}
    current = approvals.spec_hash(spec)
    print(approval_summary(raw, spec_hash=current), file=c.out)
    stored = (raw.get("status") or {}).get("specHash")
    if stored and stored != current:
        print(
            f"warning: status.specHash is {stored} but the spec hashes to {current}; the"
            " controller has not caught up — approving the spec shown above",
            file=c.err,
        )
    user, groups = c.kube.whoami()
    if user == spec.get("requester"):
        raise kube_mod.Rejected(
            f"you ({user}) requested this window; four-eyes rule: someone else must approve it"
        )
    under, namespaces, warnings = approval_scope(
        parse_window(raw), live=load_live(c.kube, err=c.err), groups=groups
    )
    print(f"Approving under: {', '.join(under)}", file=c.out)
    if namespaces is not None:
        print(
            f"Namespaces:   {', '.join(namespaces) or 'none'} (what the selector covers now)",
            file=c.out,
        )
    for line in warnings:
        print(f"warning: {line}", file=c.err)
    if any(
        e.get("approver") == user and e.get("specHash") == current
        for e in spec.get("approvals") or ()
    ):
        print(f"{user} has already approved this version of the window.", file=c.out)
        return EXIT_OK
    if not a.yes:
        if not c.stdin.isatty():
            raise verbs.UsageError(
                "stdin is not a terminal: pass --yes to approve non-interactively"
            )
        print(f"Approve {a.name} as {user}? [y/N] ", end="", file=c.out, flush=True)
        answer = c.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("Not approved.", file=c.out)
            return EXIT_ERROR
    entry: dict[str, Any] = {
        "approver": user,
        "specHash": current,
        "approvedAt": c.now.astimezone(datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z"),
        "policies": list(under),
    }
    if namespaces is not None:
        entry["namespaces"] = list(namespaces)
    patch = verbs.approval_patch(spec=spec, entry=entry)
    try:
        c.kube.request(
            "PATCH",
            f"{kube_mod.WINDOWS_PATH}/{a.name}",
            body=patch,
            content_type="application/json-patch+json",
        )
    except kube_mod.Conflict as e:
        raise kube_mod.Conflict(
            f"{a.name} changed while you were reviewing it; nothing was approved — run approve"
            " again to review the new version"
        ) from e
    except kube_mod.Rejected as e:
        raise kube_mod.Rejected(f"changegate rejected the approval: {e}") from e
    print(f"changewindow/{a.name} approved by {user} ({current})", file=c.out)
    return EXIT_OK


# -- sign-approval -------------------------------------------------------------------------------


def cmd_sign_approval(c: Ctx) -> int:
    """Print the approval entry a task-tracking system appends (``signatures.sign_approval``):
    signed over the live window's name, specHash and ticket, the approver and the time."""
    a = c.args
    raw = get_window(c.kube, a.name)
    spec = raw.get("spec") or {}
    try:
        key = Path(a.key).read_bytes()
        at = verbs.parse_time(a.approved_at) if a.approved_at else c.now
        entry = signatures.sign_approval(
            private_key_pem=key,
            issuer=a.issuer,
            key_id=a.key_id,
            window=a.name,
            spec_hash=approvals.spec_hash(spec),
            ticket=str(spec.get("ticket", "")),
            approver=a.approver,
            policies=list(a.policy),
            approved_at=at,
        )
    except (OSError, ValueError) as e:
        raise verbs.UsageError(f"cannot sign: {e}") from e
    dump(entry, "yaml" if c.args.output == "yaml" else "json", c.out)
    if a.append:
        try:
            c.kube.request(
                "PATCH",
                f"{kube_mod.WINDOWS_PATH}/{a.name}",
                body=verbs.approval_patch(spec=spec, entry=entry),
                content_type="application/json-patch+json",
            )
        except kube_mod.Conflict as e:
            raise kube_mod.Conflict(
                f"{a.name} changed since it was read; nothing was appended — sign again"
            ) from e
        except kube_mod.Rejected as e:
            raise kube_mod.Rejected(f"changegate rejected the signed approval: {e}") from e
        print(f"changewindow/{a.name}: approval by {a.approver} appended", file=c.err)
    return EXIT_OK


# -- report ------------------------------------------------------------------------------------


def cmd_report(c: Ctx) -> int:
    if c.args.output == "csv":
        raise verbs.UsageError(
            "-o csv needs --audit-log (the Events report prints table, json, yaml)"
        )
    since = c.now - verbs.parse_since(c.args.since or "30d")
    live = load_live(c.kube, err=c.err)
    snap = live.snapshot()
    phases = {
        w.metadata.name: str(computed_status(w, live=live, snapshot=snap, now=c.now).phase)
        for w in live.windows
    }
    raw_all = c.kube.list_items(kube_mod.WINDOWS_PATH)
    events: list[Any] | None
    try:
        events = c.kube.list_items(kube_mod.EVENTS_PATH)
    except kube_mod.Forbidden as e:
        print(f"warning: decision counts unavailable: {e}", file=c.err)
        events = None
    data = render.report_data(windows=raw_all, events=events, since=since, now=c.now, phases=phases)
    if c.args.output in ("json", "yaml"):
        dump(data, c.args.output, c.out)
    else:
        print(render.report_text(data, now=c.now, tz=c.tz), file=c.out)
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------------


def _common_options(outputs: tuple[str, ...] = OUTPUTS) -> argparse.ArgumentParser:
    """kubectl's options, as a parent parser. One per distinct ``-o`` choice list: a parent's
    actions are shared by reference, so a subcommand must never redefine one of them."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("kubectl options")
    g.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")
    g.add_argument("--context", help="kubeconfig context to use")
    g.add_argument(
        "--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    g.add_argument(
        "--as", dest="as_user", metavar="USER", help="impersonate USER for every API call"
    )
    g.add_argument(
        "--as-group",
        action="append",
        metavar="GROUP",
        help="impersonate GROUP (repeatable; needs --as)",
    )
    g.add_argument("-o", "--output", choices=outputs, default="table", help="output format")
    g.add_argument("--tz", help="show times in this IANA zone (default: $TZ, else the system zone)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()

    p = argparse.ArgumentParser(
        prog="kubectl changegate",
        description="Change windows for Kubernetes: list, request, approve, and check before you change.",
        epilog="Exit codes: 0 ok (can-i: allowed), 1 can-i denied, 2 error.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "list", parents=[common], help="windows with phase, ticket, approvals, next open/close"
    )

    d = sub.add_parser(
        "describe", parents=[common], help="coverage, identities, occurrences, approvals"
    )
    d.add_argument("name", metavar="NAME")

    ci = sub.add_parser("can-i", parents=[common], help="would changegate admit this change?")
    ci.add_argument(
        "verb", metavar="VERB", help="create, update, patch, apply, scale, delete, exec, ..."
    )
    ci.add_argument(
        "resource", metavar="RESOURCE", help="deployments, deployments.apps, deploy, ..."
    )
    ci.add_argument("object_name", metavar="NAME", nargs="?", default="")
    ci.add_argument("--at", metavar="TIME", help="decide at this RFC 3339 time instead of now")
    ci.add_argument("--subresource", metavar="S", help="subresource (e.g. scale, exec)")

    r = sub.add_parser("request", parents=[common], help="create a ChangeWindow")
    r.add_argument("--ticket", required=True)
    r.add_argument("--description", default="")
    r.add_argument(
        "--identity",
        action="append",
        required=True,
        metavar="NAME",
        help="AuthorizedIdentity allowed to act (repeatable)",
    )
    r.add_argument(
        "--resource",
        action="append",
        required=True,
        metavar="RESOURCE",
        help="resource to change, e.g. deployments.apps (repeatable)",
    )
    r.add_argument(
        "--operation",
        action="append",
        metavar="OP",
        help="CREATE, UPDATE, DELETE or CONNECT (repeatable; default UPDATE)",
    )
    r.add_argument(
        "--name",
        dest="object_names",
        action="append",
        metavar="NAME",
        help="only these objects (repeatable)",
    )
    r.add_argument("--start", help="one-off start (RFC 3339)")
    r.add_argument("--end", help="one-off end (RFC 3339, exclusive)")
    r.add_argument("--cron", help='recurring: 5-field cron, e.g. "0 22 * * 2,4"')
    r.add_argument("--duration", help="recurring: length of each occurrence, e.g. 2h")
    r.add_argument(
        "--schedule-tz",
        "--cron-tz",
        dest="schedule_tz",
        metavar="ZONE",
        help="recurring: IANA zone the cron runs in (or give --tz)",
    )
    r.add_argument(
        "--name-window", metavar="NAME", help="window name (default: generated from the ticket)"
    )

    e = sub.add_parser("emergency", parents=[common], help="open a break-glass window now")
    e.add_argument("--reason", required=True)
    e.add_argument("--duration", required=True, help="e.g. 1h (at most the policy's maxDuration)")
    e.add_argument("--ticket", default="EMERGENCY")
    e.add_argument("--description", default="")
    e.add_argument(
        "--identity",
        action="append",
        metavar="NAME",
        help="AuthorizedIdentity (default: those naming you)",
    )
    e.add_argument(
        "--resource",
        action="append",
        metavar="RESOURCE",
        help="limit to these resources (default: everything in the namespace)",
    )
    e.add_argument("--operation", action="append", metavar="OP")
    e.add_argument("--name-window", metavar="NAME")

    ap = sub.add_parser("approve", parents=[common], help="approve a window someone else requested")
    ap.add_argument("name", metavar="NAME")
    ap.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    sp = sub.add_parser(
        "sign-approval",
        parents=[common],
        help="print a tracker-signed approval entry to append to a window (for integrations)",
    )
    sp.add_argument("name", metavar="WINDOW")
    sp.add_argument("--key", required=True, help="the issuer's private key, PEM (Ed25519 or P-256)")
    sp.add_argument("--key-id", required=True, help="the key's id, as the policy lists it")
    sp.add_argument("--issuer", required=True, help="the issuer's name, as the policy trusts it")
    sp.add_argument("--approver", required=True, help="the human who approved (not the requester)")
    sp.add_argument(
        "--policy",
        action="append",
        required=True,
        help="a ChangePolicy the approval counts under (repeatable; each must trust the issuer)",
    )
    sp.add_argument("--approved-at", help="when the approver approved, RFC 3339 (default: now)")
    sp.add_argument(
        "--append",
        action="store_true",
        help="append the entry to the window too (as the caller: the tracker's automation)",
    )

    rp = sub.add_parser(
        "report",
        parents=[_common_options((*OUTPUTS, "csv"))],  # -o also takes csv here
        help="controlled changes and exceptions from the audit log (or windows and Event counts)",
    )
    rp.add_argument(
        "--since",
        help="from this long ago (30d, 12h, 2w) or this RFC 3339 time"
        " (default: 30d; with --audit-log, the start of the log)",
    )
    audit.add_arguments(rp)
    return p


COMMANDS = {
    "list": cmd_list,
    "describe": cmd_describe,
    "can-i": cmd_can_i,
    "request": cmd_request,
    "emergency": cmd_emergency,
    "approve": cmd_approve,
    "sign-approval": cmd_sign_approval,
    "report": cmd_report,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
    now: datetime.datetime | None = None,
) -> int:
    """Entry point of ``kubectl-changegate``; streams and clock are injectable for tests."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "request" and args.cron and not args.schedule_tz:
        args.schedule_tz = args.tz
    try:
        tz = render.local_zone(args.tz)
        if args.command == "report" and args.audit_log:
            # The audit log is all it needs: no kubeconfig, no API server.
            return audit.command(
                args,
                now=now or datetime.datetime.now(datetime.UTC),
                tz=tz,
                out=out,
                err=err,
                stdin=getattr(stdin or sys.stdin, "buffer", None),
            )
        conn = kube_mod.Connection(
            kubeconfig=args.kubeconfig,
            context=args.context,
            as_user=args.as_user,
            as_groups=tuple(args.as_group or ()),
        )
        ctx = Ctx(
            args=args,
            kube=kube_mod.Kube(conn),
            now=now or datetime.datetime.now(datetime.UTC),
            tz=tz,
            out=out,
            err=err,
            stdin=stdin or sys.stdin,
        )
        return COMMANDS[args.command](ctx)
    except (kube_mod.CliError, verbs.UsageError, ValueError) as e:
        print(f"error: {e}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
