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
import datetime
import sys
from collections.abc import Sequence
from typing import TextIO

from controller.cli import (
    approve,
    audit,
    can_i,
    context,
    flags,
    plans,
    render,
    report,
    windows,
)
from controller.cli import kube as kube_mod

# -- parser ------------------------------------------------------------------------------------


def _common_options(outputs: tuple[str, ...] = context.OUTPUTS) -> argparse.ArgumentParser:
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
        help="append the entry to the window too (as the live.caller: the tracker's automation)",
    )

    rp = sub.add_parser(
        "report",
        parents=[_common_options((*context.OUTPUTS, "csv"))],  # -o also takes csv here
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
    "list": windows.cmd_list,
    "describe": windows.cmd_describe,
    "can-i": can_i.cmd_can_i,
    "request": plans.cmd_request,
    "emergency": plans.cmd_emergency,
    "approve": approve.cmd_approve,
    "sign-approval": approve.cmd_sign_approval,
    "report": report.cmd_report,
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
        ctx = context.Ctx(
            args=args,
            kube=kube_mod.Kube(conn),
            now=now or datetime.datetime.now(datetime.UTC),
            tz=tz,
            out=out,
            err=err,
            stdin=stdin or sys.stdin,
        )
        return COMMANDS[args.command](ctx)
    except (kube_mod.CliError, flags.UsageError, ValueError) as e:
        print(f"error: {e}", file=err)
        return context.EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return context.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
