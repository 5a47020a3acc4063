"""What approvers sign, which approvals count under which policy, and the break-glass rules.

Approvals are verified twice, with different knowledge:

- **At append time** (``validation``), the API server has authenticated the approver, so we
  know their username and groups. The entry must be in the approver's own name, not the
  requester's, sign the current ``specHash``, and *record what it qualifies for*: the
  ``policies`` it counts under (the approver must be in each one's approverGroups) and, for a
  window with a ``namespaceSelector`` target, the ``namespaces`` the window covered when
  signing. Existing entries can never be altered, so that record is fixed from then on.
- **At decision time** (here), only the stored entries are known: the decision cannot learn
  an approver's groups. Under policy P an entry counts when it names P in ``policies``,
  signs the window's current ``specHash``, is not by the requester, and -- when the request
  is covered only through a selector -- lists the request's namespace. Each approver counts
  once; P's own ``required`` applies. An approval for policy A therefore never opens a
  window under policy B, whatever else the window covers.

Changing the spec changes the hash, so every earlier approval becomes *stale*: still listed,
reported as stale, but not counted.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.model import crds
from controller.policy import signatures


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII kept as is, not ``\\u`` escaped)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def spec_hash(raw_spec: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``spec`` without ``approvals``.

    Hash the *raw* spec as stored by the API server (the operator and the CLI have it), so
    the CLI, the webhook and the operator compute the same value byte for byte. Hashing a
    re-serialised model would differ for equivalent spellings (``2h`` vs ``120m``, defaults
    filled in), which would make approvals stale for no reason a human could see.
    """
    body = {k: v for k, v in raw_spec.items() if k != "approvals"}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def model_spec(spec: crds.ChangeWindowSpec) -> dict[str, Any]:
    """The spec as JSON, for when no raw spec is at hand (tests, tools).

    Dumped by alias without ``None`` and without defaults, which is how the CRD stores specs
    (its schema deliberately fills in no defaults). This equals the raw spec when the raw spec
    was written in canonical forms (``2h`` not ``120m``, no explicit ``names: []``); prefer
    raw specs, which are what approvers sign.
    """
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


@dataclass(frozen=True, slots=True)
class ApprovalState:
    """How a window stands under one set of approval rules."""

    required: int
    valid: tuple[str, ...]  # distinct approvers who signed the current spec
    stale: tuple[str, ...]  # approvers whose only signatures are of an older spec
    self_approvals: tuple[str, ...]  # entries by the requester (never counted)

    @property
    def approved(self) -> bool:
        return len(self.valid) >= self.required

    @property
    def missing(self) -> int:
        return max(0, self.required - len(self.valid))

    @property
    def summary(self) -> str:
        """``n/m`` as the printer column shows it."""
        return f"{len(self.valid)}/{self.required}"


def counts_under(
    entry: crds.WindowApproval,
    *,
    policy: crds.ChangePolicy,
    window: crds.ChangeWindow,
    namespace: str | None = None,
) -> bool:
    """Whether ``entry`` qualifies under ``policy`` (and, if given, for ``namespace``).

    A signed entry (a tracker's approval) also needs ``policy`` to trust its issuer and key
    *now* and its signature to verify: removing a key withdraws what it signed.
    """
    if policy.metadata.name not in entry.policies:
        return False
    if namespace is not None and (entry.namespaces is None or namespace not in entry.namespaces):
        return False
    return entry.signature is None or (
        signatures.problem(
            entry, policy=policy, window=window.metadata.name, ticket=window.spec.ticket
        )
        is None
    )


def approval_state(
    window: crds.ChangeWindow,
    *,
    current_hash: str,
    policy: crds.ChangePolicy,
    namespace: str | None = None,
) -> ApprovalState:
    """Count the approvals of ``window`` under ``policy`` that are valid for ``current_hash``.

    ``namespace``: the request's namespace when the window covers it only through a
    ``namespaceSelector`` -- then only approvals whose recorded ``namespaces`` include it
    count (None: no such restriction). Entries that do not qualify under ``policy`` are
    neither valid nor stale here: they are simply not this policy's approvals. The policy's
    own ``approval.required`` applies.
    """
    required = policy.spec.approval.required
    requester = window.spec.requester
    valid: list[str] = []
    stale: list[str] = []
    selfs: list[str] = []
    for entry in window.spec.approvals:
        if entry.approver == requester:
            if entry.approver not in selfs:
                selfs.append(entry.approver)
        elif not counts_under(entry, policy=policy, window=window, namespace=namespace):
            continue
        elif entry.spec_hash == current_hash:
            if entry.approver not in valid:
                valid.append(entry.approver)
        elif entry.approver not in stale:
            stale.append(entry.approver)
    stale = [a for a in stale if a not in valid]
    return ApprovalState(
        required=required, valid=tuple(valid), stale=tuple(stale), self_approvals=tuple(selfs)
    )


def approval_states(
    window: crds.ChangeWindow, *, current_hash: str, policies: Iterable[crds.ChangePolicy]
) -> dict[str, ApprovalState]:
    """The window's approval state under each of ``policies``, by policy name."""
    return {
        p.metadata.name: approval_state(window, current_hash=current_hash, policy=p)
        for p in policies
    }


def least_approved(states: Mapping[str, ApprovalState]) -> ApprovalState:
    """The state that is furthest from approval (what ``n/m`` shows for the whole window).

    No policy: nothing is controlled, so nothing needs approving (0 of 0).
    """
    if not states:
        return ApprovalState(required=0, valid=(), stale=(), self_approvals=())
    return max(states.values(), key=lambda s: (s.missing, s.required))


def is_approver(policy: crds.ChangePolicy, groups: Iterable[str]) -> bool:
    allowed = set(policy.spec.approval.approver_groups)
    return any(g in allowed for g in groups)


def is_break_glass_member(policy: crds.ChangePolicy, groups: Iterable[str]) -> bool:
    bg = policy.spec.break_glass
    if bg is None:
        return False
    allowed = set(bg.groups)
    return any(g in allowed for g in groups)


def emergency_length(window: crds.ChangeWindow) -> datetime.timedelta | None:
    """Length of an emergency window's one-off schedule (None: not a one-off schedule)."""
    one_off = window.spec.schedule.one_off
    if one_off is None:
        return None
    return one_off.end - one_off.start


def emergency_allowed_by(policy: crds.ChangePolicy, window: crds.ChangeWindow) -> bool:
    """Whether ``policy`` honours ``window`` as a break-glass window.

    The window must name the policy in ``spec.emergency.policies`` (which the webhook admits
    only from a member of the policy's breakGlass groups), the policy must offer break-glass,
    and the window must be a one-off no longer than the policy's ``maxDuration``. A window
    that also covers another policy's resources is no emergency window there.
    """
    bg = policy.spec.break_glass
    emergency = window.spec.emergency
    if emergency is None or bg is None or policy.metadata.name not in emergency.policies:
        return False
    length = emergency_length(window)
    return length is not None and length <= bg.max_duration
