"""``report`` without ``--audit-log``: windows and the decisions still in Events (a lower bound;
the audit log is the durable record, see ``audit``)."""

from __future__ import annotations

from typing import Any

from controller.cli import (
    context,
    flags,
    live,
    render,
)
from controller.cli import kube as kube_mod

# -- report ------------------------------------------------------------------------------------


def cmd_report(c: context.Ctx) -> int:
    if c.args.output == "csv":
        raise flags.UsageError(
            "-o csv needs --audit-log (the Events report prints table, json, yaml)"
        )
    since = c.now - flags.parse_since(c.args.since or "30d")
    objects = live.load_live(c.kube, err=c.err)
    snap = objects.snapshot()
    phases = {
        w.metadata.name: str(
            live.computed_status(w, objects=objects, snapshot=snap, now=c.now).phase
        )
        for w in objects.windows
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
        context.dump(data, c.args.output, c.out)
    else:
        print(render.report_text(data, now=c.now, tz=c.tz), file=c.out)
    return context.EXIT_OK
