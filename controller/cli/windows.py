"""``list`` and ``describe``: windows as the webhook sees them, in the reader's time zone."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from controller.cli import (
    context,
    live,
    render,
)
from controller.cli import kube as kube_mod
from controller.model import crds
from controller.policy import approvals, index, schedules, status

# -- list --------------------------------------------------------------------------------------


def cmd_list(c: context.Ctx) -> int:
    objects = live.load_live(c.kube, err=c.err)
    snap = objects.snapshot()
    rows = []
    for w in sorted(objects.windows, key=lambda w: w.metadata.name):
        st = live.computed_status(w, objects=objects, snapshot=snap, now=c.now)
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
        context.dump([dataclasses.asdict(r) for r in rows], c.args.output, c.out)
    else:
        print(render.list_table(rows, now=c.now, tz=c.tz, wide=c.args.output == "wide"), file=c.out)
    return context.EXIT_OK


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


def cmd_describe(c: context.Ctx) -> int:
    raw = live.get_window(c.kube, c.args.name)
    objects = live.load_live(c.kube, err=c.err)
    if c.args.name not in objects.raw_windows:
        raise kube_mod.CliError(f"ChangeWindow {c.args.name} is invalid and not used by changegate")
    window = next(w for w in objects.windows if w.metadata.name == c.args.name)
    d = describe_window(window, raw=raw, snapshot=objects.snapshot(), now=c.now)
    if c.args.output in ("json", "yaml"):
        context.dump(d, c.args.output, c.out)
    else:
        print(render.describe_text(d, now=c.now, tz=c.tz), file=c.out)
    return context.EXIT_OK
