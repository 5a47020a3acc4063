"""What approvers sign, which approvals count, and the break-glass rules.

Approvals are verified twice, with different knowledge:

- **At append time** (``validation``), the API server has authenticated the approver, so we
  know their username and groups: the approver must be that user, be in an approverGroup of
  a policy covering the window, not be the requester, and sign the current ``specHash``.
- **At decision time** (here), we only have the stored entries. An entry counts when it
  signs the window's current ``specHash`` and its approver is not the requester; each
  approver counts once. Group membership is not re-checked — it cannot be: the decision has
  no way to learn another user's groups, and the append-time check already required it.

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


def approval_state(window: crds.ChangeWindow, *, current_hash: str, required: int) -> ApprovalState:
    """Count the approvals of ``window`` that are valid for ``current_hash``."""
    requester = window.spec.requester
    valid: list[str] = []
    stale: list[str] = []
    selfs: list[str] = []
    for entry in window.spec.approvals:
        if entry.approver == requester:
            if entry.approver not in selfs:
                selfs.append(entry.approver)
        elif entry.spec_hash == current_hash:
            if entry.approver not in valid:
                valid.append(entry.approver)
        elif entry.approver not in stale:
            stale.append(entry.approver)
    stale = [a for a in stale if a not in valid]
    return ApprovalState(
        required=required, valid=tuple(valid), stale=tuple(stale), self_approvals=tuple(selfs)
    )


def required_approvals(policies: Iterable[crds.ChangePolicy]) -> int:
    """A window covered by several policies must satisfy the strictest one.

    No covering policy means nothing is change-controlled there: zero approvals are needed.
    """
    return max((p.spec.approval.required for p in policies), default=0)


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

    The policy must offer break-glass at all, and the window must be a one-off no longer than
    the policy's ``maxDuration``. Who created it was checked when it was admitted.
    """
    bg = policy.spec.break_glass
    if window.spec.emergency is None or bg is None:
        return False
    length = emergency_length(window)
    return length is not None and length <= bg.max_duration
