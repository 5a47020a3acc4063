"""``approve`` (a person appends their approval) and ``sign-approval`` (a task-tracking
system's automation appends one it signed)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controller.cli import (
    bodies,
    context,
    flags,
    live,
    render,
)
from controller.cli import kube as kube_mod
from controller.model import crds
from controller.policy import approvals, limits, signatures

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
    window: crds.ChangeWindow, *, objects: live.Live, groups: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...] | None, tuple[str, ...]]:
    """What an approval by a member of ``groups`` records, and what to warn about first.

    Returns (policies it counts under, namespaces it covers or None for a window without a
    selector target, warnings). The webhook checks the same against its own index.
    """
    snap = objects.snapshot()
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


def cmd_approve(c: context.Ctx) -> int:
    a = c.args
    raw = live.get_window(c.kube, a.name)
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
        live.parse_window(raw), objects=live.load_live(c.kube, err=c.err), groups=groups
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
        return context.EXIT_OK
    if not a.yes:
        if not c.stdin.isatty():
            raise flags.UsageError(
                "stdin is not a terminal: pass --yes to approve non-interactively"
            )
        print(f"Approve {a.name} as {user}? [y/N] ", end="", file=c.out, flush=True)
        answer = c.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            print("Not approved.", file=c.out)
            return context.EXIT_ERROR
    entry: dict[str, Any] = {
        "approver": user,
        "specHash": current,
        "approvedAt": crds.rfc3339(c.now),
        "policies": list(under),
    }
    if namespaces is not None:
        entry["namespaces"] = list(namespaces)
    patch = bodies.approval_patch(spec=spec, entry=entry)
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
    return context.EXIT_OK


# -- sign-approval -------------------------------------------------------------------------------


def cmd_sign_approval(c: context.Ctx) -> int:
    """Print the approval entry a task-tracking system appends (``signatures.sign_approval``):
    signed over the live window's name, specHash and ticket, the approver and the time."""
    a = c.args
    raw = live.get_window(c.kube, a.name)
    spec = raw.get("spec") or {}
    try:
        key = Path(a.key).read_bytes()
        at = flags.parse_time(a.approved_at) if a.approved_at else c.now
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
        raise flags.UsageError(f"cannot sign: {e}") from e
    context.dump(entry, "yaml" if c.args.output == "yaml" else "json", c.out)
    if a.append:
        try:
            c.kube.request(
                "PATCH",
                f"{kube_mod.WINDOWS_PATH}/{a.name}",
                body=bodies.approval_patch(spec=spec, entry=entry),
                content_type="application/json-patch+json",
            )
        except kube_mod.Conflict as e:
            raise kube_mod.Conflict(
                f"{a.name} changed since it was read; nothing was appended — sign again"
            ) from e
        except kube_mod.Rejected as e:
            raise kube_mod.Rejected(f"changegate rejected the signed approval: {e}") from e
        print(f"changewindow/{a.name}: approval by {a.approver} appended", file=c.err)
    return context.EXIT_OK
