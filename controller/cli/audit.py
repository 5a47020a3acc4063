"""``kubectl changegate report --audit-log FILE...``: the durable record, from the audit log alone.

The API server's audit log outlives Events (an hour), ChangeWindows (until someone deletes
them) and changegate itself. With the recommended audit policy (docs/audit-policy.yaml) it
holds, for every request changegate answered, the answer's audit annotations
(``controlled.changegate.io/decision``, ``reason``, ``mode``, ``policy``, ``window``,
``ticket``, ``approvers``, ``identity``, ``emergency``, ``dryRun``), and for changegate's own
objects their bodies. This module turns that into what an auditor asks for:

1. one row per **controlled change** in the period (admitted or denied), and
2. the **exceptions**, each admitted change in at most one list:

   - *admitted without a window*: Warn/Audit mode let a denied change through, a policy's
     exemption, or **no changegate decision at all** (the webhook was not called: its
     configuration was missing or changed);
   - *emergency changes whose window was never reviewed* (no approval under the policy the
     change went through, anywhere in the log);
   - *outside work hours*, admitted in Warn/Audit mode;

3. each window's **history** (created, approved by whom under which policies, edited,
   approvals gone stale, refused attempts, deleted), and the changes to change control
   itself (policies, identities, the webhook configuration).

**What is "controlled", from the log alone.** A request changegate decided says so itself: a
``policy`` annotation (or a ``NoOp`` verdict, which only controlled requests get). A request
with no annotation is the hard case — it is a gap only if changegate *should* have been asked.
The report learns the controlled scope from changegate's own verdicts: the resources
(group, resource, subresource, namespace) that carried a verdict naming a policy anywhere in
the log, each for as long as one of those policies existed (a policy's ``create`` and
``delete`` are in the log; one created before the log began counts from the start). An
unannotated, admitted, non-dry-run write to such a resource is a gap — unless it was made by
an identity or in a namespace changegate's webhook skips by design (the built-in exemptions,
``kube-system``, changegate's own namespace and service account; ``--exempt-user`` and
``--exempt-namespace`` add more), or to a status/finalize subresource, which the webhook
receives only when metadata changes. Why not the policies' bodies: a policy selecting
namespaces by label would need every namespace's labels over time, and the verdicts already
carry changegate's own answer. The cost: a resource no verdict ever named in the log cannot
be recognised, and a policy narrowed by an edit keeps its earlier resources until deleted
(more rows for a human to look at, never fewer).

**Streaming, constant memory.** The log is read twice (:mod:`controller.cli.auditlog`): a
cheap first pass over the few lines that mention changegate learns the scope and each file's
first timestamp; the second pass merges the files in time order and classifies each request
once. Rows go to a temporary spool file as they are found and are printed from it, so memory
holds the scope, a minute or two of auditIDs and the windows' histories (one entry per window
write: it grows with the windows, not with the events) — never the events.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import datetime
import enum
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, BinaryIO, Final, TextIO

import msgspec

from controller.cli import auditlog, flags
from controller.model import crds
from controller.policy import approvals as approvals_mod
from controller.policy import decide, explain

#: The webhooks' names, as the API server prefixes their annotations (kept equal to
#: ``controller.operator.webhook``'s by a test: the CLI does not import the operator).
CONTROLLED_WEBHOOK: Final = "controlled.changegate.io"
CRDS_WEBHOOK: Final = "crds.changegate.io"
WEBHOOK_CONFIGURATION: Final = "changegate"
_P: Final = CONTROLLED_WEBHOOK + "/"
_C: Final = CRDS_WEBHOOK + "/"

WRITE_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
#: Subresources whose every request is a CONNECT (``kubectl exec`` over WebSocket is a GET).
CONNECT_SUBRESOURCES: Final = frozenset({"exec", "attach", "portforward", "proxy"})
#: The webhook's matchConditions send these only when metadata changes: no annotation is normal.
CONTENT_FILTERED_SUBRESOURCES: Final = frozenset({"status", "finalize"})
#: Verdicts that are not about a controlled change.
_NOT_CONTROLLED: Final = frozenset({"NotControlled", "StatusSubresource"})

DEFAULT_CHANGEGATE_NAMESPACE: Final = "changegate-system"


class ExceptionKind(enum.StrEnum):
    """The exception lists an admitted change can be in (at most one)."""

    WITHOUT_WINDOW = "without-window"
    UNREVIEWED_EMERGENCY = "unreviewed-emergency"
    OUTSIDE_WORK_HOURS = "outside-work-hours"


WITHOUT_WINDOW: Final = ExceptionKind.WITHOUT_WINDOW
UNREVIEWED_EMERGENCY: Final = ExceptionKind.UNREVIEWED_EMERGENCY
OUTSIDE_WORK_HOURS: Final = ExceptionKind.OUTSIDE_WORK_HOURS
EXCEPTIONS: Final = tuple(ExceptionKind)
_EXCEPTION_TITLES: Final = {
    WITHOUT_WINDOW: "Admitted without a window (Warn/Audit mode, exemptions, no changegate decision)",
    UNREVIEWED_EMERGENCY: "Emergency changes whose window was never reviewed",
    OUTSIDE_WORK_HOURS: "Changes outside work hours (admitted in Warn/Audit mode)",
}
_JSON_EXCEPTION_KEYS: Final = {
    WITHOUT_WINDOW: "withoutWindow",
    UNREVIEWED_EMERGENCY: "unreviewedEmergency",
    OUTSIDE_WORK_HOURS: "outsideWorkHours",
}

Key = tuple[str, str, str, str]  # apiGroup, resource, subresource, namespace


# -- time ------------------------------------------------------------------------------------


def log_time(t: datetime.datetime) -> str:
    """``t`` as the audit log writes times (UTC, microseconds, ``Z``): comparable as text."""
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_log_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- what the report is asked --------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Options:
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    exempt_users: frozenset[str] = frozenset()
    exempt_groups: frozenset[str] = frozenset()
    exempt_namespaces: frozenset[str] = frozenset()

    @classmethod
    def make(
        cls,
        *,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        exempt_users: Sequence[str] = (),
        exempt_namespaces: Sequence[str] = (),
        changegate_namespace: str = DEFAULT_CHANGEGATE_NAMESPACE,
    ) -> Options:
        """The built-in exemptions of the webhook plus changegate's namespace and account."""
        return cls(
            since=since,
            until=until,
            exempt_users=frozenset(
                {
                    *decide.BUILTIN_EXEMPT_USERS,
                    f"system:serviceaccount:{changegate_namespace}:changegate",
                    *exempt_users,
                }
            ),
            exempt_groups=frozenset(decide.BUILTIN_EXEMPT_GROUPS),
            exempt_namespaces=frozenset(
                {*decide.NEVER_SENT_NAMESPACES, changegate_namespace, *exempt_namespaces}
            ),
        )


# -- pass 1: the controlled scope -----------------------------------------------------------


class Scope:
    """Which resources changegate controlled, and when, learned from its own verdicts."""

    def __init__(self) -> None:
        self.keys: dict[Key, set[str]] = {}
        self._policy_events: list[tuple[str, str, bool]] = []  # (time, policy, exists after)
        self._alive: dict[str, tuple[list[str], list[bool], bool]] = {}

    def learn(self, line: bytes) -> None:
        """Look at one raw line; decodes only the few that can teach something."""
        if b"changegate.io" not in line:
            return
        if b'"resource":"changepolicies"' in line:
            self._learn_policy(line)
        elif b'changegate.io/policy"' in line or b'changegate.io/reason":"NoOp"' in line:
            self._learn_key(line)

    def _learn_key(self, line: bytes) -> None:
        try:
            ev = auditlog.decode(line)
        except auditlog.DecodeError:
            return
        ann = ev.annotations
        if ev.object_ref is None or ann.get(_P + "reason") in _NOT_CONTROLLED:
            return
        policy = ann.get(_P + "policy", "")
        if not policy and ann.get(_P + "reason") != "NoOp":
            return
        self.keys.setdefault(key_of(ev.object_ref), set()).add(policy)

    def _learn_policy(self, line: bytes) -> None:
        if not auditlog.is_final_stage(line):
            return
        try:
            ev = auditlog.decode(line)
        except auditlog.DecodeError:
            return
        ref = ev.object_ref
        if ref is None or ref.subresource or ev.verb not in ("create", "delete"):
            return
        if not _succeeded(ev):
            return
        self._policy_events.append((ev.stage_timestamp, ref.name, ev.verb == "create"))

    def finish(self) -> None:
        """Turn the policies' creations and deletions into lifetimes."""
        by_policy: dict[str, list[tuple[str, bool]]] = {}
        for t, name, exists in sorted(set(self._policy_events)):
            by_policy.setdefault(name, []).append((t, exists))
        for name, changes in by_policy.items():
            # Created first: did not exist before. Deleted first: existed before the log.
            before = not changes[0][1]
            self._alive[name] = ([t for t, _ in changes], [e for _, e in changes], before)

    def policy_alive(self, policy: str, t: str) -> bool:
        record = self._alive.get(policy)
        if record is None:  # never created or deleted in the log: it existed throughout
            return True
        times, exists, before = record
        i = bisect.bisect_right(times, t)
        return before if i == 0 else exists[i - 1]

    def controlled(self, key: Key, t: str) -> bool:
        policies = self.keys.get(key)
        if not policies:
            return False
        return any(p == "" or self.policy_alive(p, t) for p in policies)


def key_of(ref: auditlog.ObjectRef) -> Key:
    return (ref.api_group, ref.resource, ref.subresource, ref.namespace)


def _succeeded(ev: auditlog.Event) -> bool:
    code = ev.response_status.code if ev.response_status is not None else 0
    return 0 < code < 400


# -- rows ------------------------------------------------------------------------------------


class Change(msgspec.Struct, frozen=True, rename="camel", omit_defaults=False):
    """One controlled change (or attempt), as the report prints it."""

    time: str
    audit_id: str = msgspec.field(name="auditID")
    user: str
    groups: tuple[str, ...]
    impersonated_by: str | None
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    decision: str | None  # allow | deny; None: changegate did not decide (no annotation)
    mode: str
    reason: str
    policy: str
    window: str
    ticket: str
    approvers: tuple[str, ...]
    identity: str
    emergency: bool
    code: int
    admitted: bool

    @property
    def resource_label(self) -> str:
        """As changegate's messages name it: ``deployments.apps/scale``."""
        return explain.resource_label(
            api_group=self.api_group, resource=self.resource, subresource=self.subresource
        )

    @property
    def object_label(self) -> str:
        # A Namespace is its own namespace in the log: "payments", not "payments/payments".
        ns = "" if self.namespace == self.name else self.namespace
        return explain.object_label(namespace=ns, name=self.name)


NO_DECISION: Final = "NoDecision"


def change_from(
    ev: auditlog.Event, *, ann: Mapping[str, str] | None, code: int, admitted: bool
) -> Change:
    ref = ev.object_ref or auditlog.ObjectRef()
    subject = ev.subject
    a = ann or {}
    approvers = a.get(_P + "approvers", "")
    return Change(
        time=ev.request_received_timestamp or ev.stage_timestamp,
        audit_id=ev.audit_id,
        user=subject.username,
        groups=subject.groups,
        impersonated_by=ev.user.username if ev.impersonated_user is not None else None,
        verb=ev.verb,
        api_group=ref.api_group,
        resource=ref.resource,
        subresource=ref.subresource,
        namespace=ref.namespace,
        name=ref.name,
        decision=a.get(_P + "decision") if ann is not None else None,
        mode=a.get(_P + "mode", ""),
        reason=a.get(_P + "reason", "") if ann is not None else NO_DECISION,
        policy=a.get(_P + "policy", ""),
        window=a.get(_P + "window", ""),
        ticket=a.get(_P + "ticket", ""),
        approvers=tuple(x for x in approvers.split(",") if x),
        identity=a.get(_P + "identity", ""),
        emergency=a.get(_P + "emergency") == "true",
        code=code,
        admitted=admitted,
    )


# -- windows' history ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class HistoryEntry:
    time: str
    user: str
    action: str  # created | first-seen | approved | approval-removed | edited | approvals-stale | refused | deleted
    detail: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class WindowRecord:
    """One ChangeWindow's life as the log tells it (a re-created name is a new record)."""

    name: str
    spec: dict[str, Any] | None = None
    uid: str = ""
    created: str = ""
    deleted: str = ""
    history: list[HistoryEntry] = dataclasses.field(default_factory=list)
    #: The policies some approval ever recorded counts under ("" for one naming none).
    reviewed: set[str] = dataclasses.field(default_factory=set)

    @property
    def ticket(self) -> str:
        return str((self.spec or {}).get("ticket", ""))

    @property
    def requester(self) -> str:
        return str((self.spec or {}).get("requester", ""))

    @property
    def emergency(self) -> Mapping[str, Any] | None:
        e = (self.spec or {}).get("emergency")
        return e if isinstance(e, Mapping) else None

    def reviewed_under(self, policy: str) -> bool:
        """Some approval was ever recorded that counts under ``policy``."""
        return policy in self.reviewed or "" in self.reviewed

    def record_approval(self, approval: Mapping[str, Any]) -> None:
        self.reviewed.update(approval.get("policies") or [""])

    def to_json(self) -> dict[str, Any]:
        e = self.emergency
        return {
            "name": self.name,
            "uid": self.uid,
            "ticket": self.ticket,
            "requester": self.requester,
            "description": (self.spec or {}).get("description", ""),
            "emergency": dict(e) if e is not None else None,
            "created": self.created or None,
            "deleted": self.deleted or None,
            "specHash": approvals_mod.spec_hash(self.spec) if self.spec is not None else None,
            "spec": self.spec,
            "history": [
                {"time": h.time, "user": h.user, "action": h.action, "detail": h.detail, **h.data}
                for h in self.history
            ],
        }


def _approval_key(a: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(a.get("approver", "")), str(a.get("specHash", "")), str(a.get("approvedAt", "")))


def _short(h: str) -> str:
    return h[: len("sha256:") + 12] + "…" if h.startswith("sha256:") and len(h) > 19 else h


def _approval_text(a: Mapping[str, Any]) -> str:
    parts = [f"under {', '.join(a.get('policies') or ['(no policy recorded)'])}"]
    if a.get("namespaces"):
        parts.append(f"for namespaces {', '.join(a['namespaces'])}")
    parts.append(f"signing {_short(str(a.get('specHash', '')))}")
    sig = a.get("signature")
    if isinstance(sig, Mapping):  # appended by a task-tracking system on the approver's behalf
        parts.append(f"(signed by issuer {sig.get('issuer', '?')}, key {sig.get('keyId', '?')})")
    return " ".join(parts)


def _denial_text(ev: auditlog.Event) -> str:
    msg = ev.response_status.message if ev.response_status is not None else ""
    marker = "denied the request: "
    return msg.split(marker, 1)[1] if marker in msg else msg


class Windows:
    """Every ChangeWindow the log mentions: its states, and what changed between them."""

    def __init__(self) -> None:
        self.current: dict[str, WindowRecord] = {}
        self._by_name: dict[str, list[WindowRecord]] = {}

    def records(self) -> list[WindowRecord]:
        return [r for name in sorted(self._by_name) for r in self._by_name[name]]

    def named(self, name: str) -> list[WindowRecord]:
        return self._by_name.get(name, [])

    def feed(self, ev: auditlog.Event) -> None:
        ref = ev.object_ref
        if ref is None or ref.subresource or ev.verb not in WRITE_VERBS:
            return
        name, user, t = ref.name, ev.subject.username, ev.request_received_timestamp
        if not _succeeded(ev):
            if ev.annotations.get(_C + "decision") == "deny" and name:
                rec = self.current.get(name) or self._new(name)
                what = {"create": "creation", "delete": "deletion"}.get(ev.verb, "change")
                attempt = ev.body("request")
                rec.history.append(
                    HistoryEntry(
                        t,
                        user,
                        "refused",
                        f"{what} refused: {_denial_text(ev)}",
                        {"attempt": attempt} if isinstance(attempt, dict) else {},
                    )
                )
            return
        if ev.verb in ("delete", "deletecollection"):
            gone = self.current.get(name) if name else None
            if gone is None:
                return
            body = ev.body()
            if isinstance(body, Mapping) and body.get("kind") == "ChangeWindow":
                self._state(gone, body, t=t, user=user, verb="update")
            gone.deleted = t
            gone.history.append(HistoryEntry(t, user, "deleted", "deleted"))
            del self.current[name]
            return
        body = ev.body()
        if not (isinstance(body, Mapping) and body.get("kind") == "ChangeWindow"):
            return  # Metadata level: no body to learn from
        known = self.current.get(name)
        if ev.verb == "create" and known is not None and known.spec is not None:
            del self.current[name]  # the log missed its deletion: this is a new window
        rec = self.current.get(name) or self._new(name)
        self._state(rec, body, t=t, user=user, verb=ev.verb)

    def _new(self, name: str) -> WindowRecord:
        rec = WindowRecord(name=name)
        self.current[name] = rec
        self._by_name.setdefault(name, []).append(rec)
        return rec

    def _state(
        self, rec: WindowRecord, body: Mapping[str, Any], *, t: str, user: str, verb: str
    ) -> None:
        spec = body.get("spec")
        if not isinstance(spec, dict):
            return
        meta = body.get("metadata") or {}
        rec.uid = str(meta.get("uid") or rec.uid)
        new_hash = approvals_mod.spec_hash(spec)
        new_apps = [a for a in spec.get("approvals") or [] if isinstance(a, Mapping)]
        old, rec.spec = rec.spec, spec
        if old is None:
            emergency = (
                spec.get("emergency") if isinstance(spec.get("emergency"), Mapping) else None
            )
            details = {
                "requester": spec.get("requester", ""),
                "ticket": spec.get("ticket", ""),
                "specHash": new_hash,
            }
            text = f"requester {details['requester']}, ticket {details['ticket']}, spec {_short(new_hash)}"
            if emergency is not None:
                details["emergency"] = dict(emergency)
                text += f", emergency: {emergency.get('reason', '')}"
                if emergency.get("policies"):
                    text += f" (under {', '.join(emergency['policies'])})"
            if verb == "create":
                rec.created = t
                rec.history.append(HistoryEntry(t, user, "created", text, details))
            else:
                rec.history.append(
                    HistoryEntry(t, user, "first-seen", f"created before this log; {text}", details)
                )
            for a in new_apps:
                rec.record_approval(a)
                rec.history.append(
                    HistoryEntry(
                        str(a.get("approvedAt", t)),
                        str(a.get("approver", "")),
                        "approved",
                        _approval_text(a) + ("" if verb == "create" else " (before this log)"),
                        {"approval": a},
                    )
                )
            return
        old_hash = approvals_mod.spec_hash(old)
        old_apps = [a for a in old.get("approvals") or [] if isinstance(a, Mapping)]
        old_keys = {_approval_key(a) for a in old_apps}
        new_keys = {_approval_key(a) for a in new_apps}
        if new_hash != old_hash:
            rec.history.append(
                HistoryEntry(
                    t,
                    user,
                    "edited",
                    f"spec {_short(old_hash)} -> {_short(new_hash)}",
                    {"oldSpecHash": old_hash, "specHash": new_hash},
                )
            )
            stale = [str(a.get("approver", "")) for a in new_apps if a.get("specHash") == old_hash]
            if stale:
                rec.history.append(
                    HistoryEntry(
                        t,
                        user,
                        "approvals-stale",
                        f"approvals by {', '.join(stale)} signed the previous spec: no longer valid",
                        {"approvers": stale},
                    )
                )
        for a in old_apps:
            if _approval_key(a) not in new_keys:
                rec.history.append(
                    HistoryEntry(
                        t,
                        user,
                        "approval-removed",
                        f"approval by {a.get('approver', '')} removed",
                        {"approval": a},
                    )
                )
        for a in new_apps:
            if _approval_key(a) not in old_keys:
                rec.record_approval(a)
                text = f"by {a.get('approver', '')} {_approval_text(a)}"
                if a.get("specHash") != new_hash:
                    text += " (an older spec: stale)"
                rec.history.append(HistoryEntry(t, user, "approved", text, {"approval": a}))


# -- changes to change control itself --------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ControlChange:
    time: str
    user: str
    verb: str
    resource: str
    name: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _control_detail(ev: auditlog.Event) -> str:
    ref = ev.object_ref or auditlog.ObjectRef()
    if ev.verb in ("delete", "deletecollection"):
        if ref.resource == "validatingwebhookconfigurations":
            return "deleted: changegate is not called until the configuration is restored"
        return "deleted"
    body = ev.body()
    if not isinstance(body, Mapping):
        return ""
    if ref.resource == "changepolicies":
        spec = body.get("spec") or {}
        return f"enforcement {spec.get('enforcement', 'Enforce')}"
    if ref.resource == "authorizedidentities":
        spec = body.get("spec") or {}
        subjects = [
            str(s.get("name", "")) for s in spec.get("subjects") or [] if isinstance(s, Mapping)
        ]
        extra = " (suspended)" if spec.get("suspended") else ""
        return f"subjects {', '.join(subjects)}{extra}"
    if ref.resource == "validatingwebhookconfigurations":
        hooks = [
            f"{h.get('name', '')} ({len(h.get('rules') or [])} rules, failurePolicy {h.get('failurePolicy', '')})"
            for h in body.get("webhooks") or []
            if isinstance(h, Mapping)
        ]
        return "webhooks: " + ("; ".join(hooks) or "none")
    return ""


# -- pass 2: the report ----------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Counts:
    lines: int = 0
    malformed: int = 0
    requests: int = 0
    duplicates: int = 0
    first: str = ""
    last: str = ""
    changes: int = 0
    admitted: int = 0
    denied: int = 0
    dry_run: int = 0
    no_op: int = 0
    exempt_control_plane: int = 0
    no_decision: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "linesRead": self.lines,
            "malformedLines": self.malformed,
            "requests": self.requests,
            "duplicatesDropped": self.duplicates,
            "firstEvent": self.first or None,
            "lastEvent": self.last or None,
            "controlledChanges": self.changes,
            "admitted": self.admitted,
            "denied": self.denied,
            "dryRunNotCounted": self.dry_run,
            "noOpUpdatesNotCounted": self.no_op,
            "notSentByDesign": self.exempt_control_plane,
            "noDecision": self.no_decision,
        }


class Report:
    """Pass 2: feed it every request in time order; it spools rows and keeps the histories."""

    def __init__(self, *, scope: Scope, options: Options, spool: IO[bytes]) -> None:
        self.scope = scope
        self.options = options
        self.spool = spool
        self.counts = Counts()
        self.windows = Windows()
        self.control: list[ControlChange] = []
        self.windows_in_range: set[str] = set()
        self._since = log_time(options.since) if options.since else ""
        self._until = log_time(options.until) if options.until else ""
        self._encode = msgspec.json.Encoder().encode

    def in_range(self, t: str) -> bool:
        return (not self._since or t >= self._since) and (not self._until or t < self._until)

    def feed(self, ev: auditlog.Event) -> None:
        ref = ev.object_ref
        if ref is None:
            return
        t = ev.request_received_timestamp or ev.stage_timestamp
        if ref.api_group == crds.GROUP:
            self._changegate_object(ev, t)
            return
        if ref.resource == "validatingwebhookconfigurations" and ref.name == WEBHOOK_CONFIGURATION:
            if ev.verb in WRITE_VERBS and _succeeded(ev) and self.in_range(t):
                self._control(ev, t)
            return
        ann = ev.annotations
        decided = _P + "decision" in ann
        if decided:
            if ann.get(_P + "reason") in _NOT_CONTROLLED:
                return
        elif not self._is_gap_candidate(ev):
            return
        if not self.in_range(t):
            return
        if ann.get(_P + "dryRun") == "true" or "dryRun=" in ev.request_uri:
            self.counts.dry_run += 1
            return
        if decided and ann.get(_P + "reason") == "NoOp":
            self.counts.no_op += 1
            return
        code = ev.response_status.code if ev.response_status is not None else 0
        if decided:
            enforced_deny = ann.get(_P + "decision") == "deny" and ann.get(_P + "mode") == "Enforce"
            admitted = code < 400 if code else not enforced_deny
        else:
            admitted = 0 < code < 400
            if not admitted:
                return  # a failed write without changegate (RBAC, validation): no change
            if self._exempt_by_design(ev):
                self.counts.exempt_control_plane += 1
                return
            self.counts.no_decision += 1
        row = change_from(ev, ann=ann if decided else None, code=code, admitted=admitted)
        self.counts.changes += 1
        if admitted:
            self.counts.admitted += 1
        else:
            self.counts.denied += 1
        if row.window:
            self.windows_in_range.add(row.window)
        self.spool.write(self._encode(row))
        self.spool.write(b"\n")

    def _is_gap_candidate(self, ev: auditlog.Event) -> bool:
        ref = ev.object_ref
        assert ref is not None
        if ref.subresource in CONTENT_FILTERED_SUBRESOURCES:
            return False
        if ev.verb not in WRITE_VERBS and ref.subresource not in CONNECT_SUBRESOURCES:
            return False
        return self.scope.controlled(key_of(ref), ev.stage_timestamp)

    def _exempt_by_design(self, ev: auditlog.Event) -> bool:
        o = self.options
        subject = ev.subject
        ref = ev.object_ref
        return (
            subject.username in o.exempt_users
            or any(g in o.exempt_groups for g in subject.groups)
            or (ref is not None and ref.namespace in o.exempt_namespaces)
        )

    def _changegate_object(self, ev: auditlog.Event, t: str) -> None:
        ref = ev.object_ref
        assert ref is not None
        if ref.resource == "changewindows":
            self.windows.feed(ev)
            if not ref.subresource and ev.verb in WRITE_VERBS and self.in_range(t):
                self.windows_in_range.add(ref.name)
        elif (
            ref.resource in ("changepolicies", "authorizedidentities")
            and not ref.subresource
            and ev.verb in WRITE_VERBS
            and _succeeded(ev)
            and self.in_range(t)
        ):
            self._control(ev, t)

    def _control(self, ev: auditlog.Event, t: str) -> None:
        ref = ev.object_ref
        assert ref is not None
        self.control.append(
            ControlChange(
                time=t,
                user=ev.subject.username,
                verb=ev.verb,
                resource=ref.resource,
                name=ref.name,
                detail=_control_detail(ev),
            )
        )

    # -- after the last event -----------------------------------------------------------------

    def rows(self) -> Iterator[Change]:
        self.spool.flush()
        self.spool.seek(0)
        decoder = msgspec.json.Decoder(Change)
        for line in self.spool:
            yield decoder.decode(line)
        self.spool.seek(0, os.SEEK_END)

    def exception(self, row: Change) -> tuple[ExceptionKind, str] | None:
        """Which exception list an admitted change belongs to, and why (None: none)."""
        if not row.admitted:
            return None
        if row.decision is None:
            return WITHOUT_WINDOW, "no changegate decision: the webhook was not called"
        if row.reason == "OutsideWorkHours" and row.decision == "deny":
            return (
                OUTSIDE_WORK_HOURS,
                f"{row.mode} mode admitted it (identity {row.identity or '-'})",
            )
        if row.emergency:
            if any(r.reviewed_under(row.policy) for r in self.windows.named(row.window)):
                return None
            known = bool(self.windows.named(row.window))
            why = f"no approval under {row.policy} recorded" + (
                "" if known else " (the window's creation is not in this log)"
            )
            return UNREVIEWED_EMERGENCY, why
        if row.decision == "deny":
            return WITHOUT_WINDOW, f"{row.mode} mode admitted a denial: {row.reason}"
        if row.reason == "Exempt":
            return WITHOUT_WINDOW, f"exempt under policy {row.policy or '-'}"
        return None

    def exceptions(self, kind: ExceptionKind) -> Iterator[tuple[Change, tuple[ExceptionKind, str]]]:
        """The rows in exception list ``kind``, each with why."""
        for r in self.rows():
            e = self.exception(r)
            if e is not None and e[0] == kind:
                yield r, e

    def shown_windows(self) -> list[WindowRecord]:
        return [r for r in self.windows.records() if r.name in self.windows_in_range]


def build(
    inputs: Sequence[auditlog.Input],
    *,
    options: Options,
    spool: IO[bytes],
    warn: auditlog.Warn,
) -> Report:
    """Both passes over ``inputs``: learn the scope, then classify every request once."""
    scope = Scope()
    spans: list[auditlog.Span] = []
    stage_time = auditlog.stage_time
    for inp in inputs:
        first = last_line = b""
        for line in auditlog.read_lines(inp, warn=warn):
            if not first:
                first = stage_time(line)
            last_line = line
            scope.learn(line)
        spans.append(auditlog.Span(first, stage_time(last_line) or first))
    scope.finish()

    report = Report(scope=scope, options=options, spool=spool)
    counts = report.counts
    dedup = auditlog.Dedup()
    decode = auditlog.decode
    is_final = auditlog.is_final_stage
    relevant = _maybe_relevant
    feed = report.feed
    lines = requests = malformed = 0
    first_t = last_t = ""
    for line in auditlog.merged(inputs, spans=spans, warn=warn):
        lines += 1
        if not is_final(line) or not relevant(line):
            continue
        try:
            ev = decode(line)
        except auditlog.DecodeError:
            malformed += 1
            continue
        if ev.stage not in auditlog.FINAL_STAGES or not dedup.first(ev):
            continue
        requests += 1
        t = ev.request_received_timestamp
        if t and (not first_t or t < first_t):
            first_t = t
        if t > last_t:
            last_t = t
        feed(ev)
    counts.lines, counts.requests, counts.malformed = lines, requests, malformed
    counts.first, counts.last = first_t, last_t
    counts.duplicates = dedup.dropped
    return report


_VERB_AT: Final = b'"verb":"'
_READS: Final = (b'get"', b'list"', b'watch"')
_SUBRESOURCE_AT: Final = b'"subresource":"'
_CONNECT_MARKS: Final = tuple(_SUBRESOURCE_AT + s.encode() + b'"' for s in CONNECT_SUBRESOURCES)


def _maybe_relevant(line: bytes) -> bool:
    """False for lines the report can skip undecoded: reads changegate never saw."""
    if b"changegate.io" in line:
        return True
    i = line.find(_VERB_AT)
    if i < 0 or not line.startswith(_READS, i + len(_VERB_AT)):
        return True  # a write, or not shaped as expected: let the decoder judge
    return _SUBRESOURCE_AT in line and any(m in line for m in _CONNECT_MARKS)


# -- output ----------------------------------------------------------------------------------


def _table_time(t: str, tz: datetime.tzinfo) -> str:
    try:
        return parse_log_time(t).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return t


def _groups(groups: Sequence[str]) -> str:
    shown = [g for g in groups if g != "system:authenticated"]
    return ",".join(shown) or "-"


_TABLE = ("time", "user", "groups", "verb", "resource", "object", "decision", "mode", "reason")
_TABLE_TAIL = ("window", "ticket", "approvers", "emergency", "admitted")
_WIDE = ("policy", "identity", "code", "impersonated-by", "audit-id")


def _cells(row: Change, tz: datetime.tzinfo, *, wide: bool) -> list[str]:
    cells = [
        _table_time(row.time, tz),
        row.user or "-",
        _groups(row.groups),
        row.verb,
        row.resource_label,
        row.object_label,
        row.decision or "-",
        row.mode or "-",
        row.reason or "-",
        row.window or "-",
        row.ticket or "-",
        ",".join(row.approvers) or "-",
        "yes" if row.emergency else "no",
        "yes" if row.admitted else "no",
    ]
    if wide:
        cells += [
            row.policy or "-",
            row.identity or "-",
            str(row.code or "-"),
            row.impersonated_by or "-",
            row.audit_id,
        ]
    return cells


def _aligned(headers: Sequence[str], rows: Callable[[], Iterator[list[str]]]) -> Iterator[str]:
    """A kubectl-style table from a row source read twice (widths first), never held whole."""
    widths = [len(h) for h in headers]
    for cells in rows():
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    yield "   ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    for cells in rows():
        yield "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def _replay(rows: list[list[str]]) -> Callable[[], Iterator[list[str]]]:
    return lambda: iter(rows)


def _zone_name(tz: datetime.tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz.tzname(datetime.datetime.now(tz)) or "local")


def write_table(
    report: Report, *, out: TextIO, tz: datetime.tzinfo, wide: bool, files: Sequence[str]
) -> None:
    c = report.counts
    o = report.options
    p = _printer(out)
    span = f"{_table_time(c.first, tz)} to {_table_time(c.last, tz)}" if c.first else "no requests"
    p(
        f"Audit log: {len(files)} file(s), {c.lines:,} events, {c.requests:,} requests"
        f" ({c.duplicates:,} duplicates dropped, {c.malformed:,} malformed lines); {span}"
    )
    since = _table_time(log_time(o.since), tz) if o.since else "the start of the log"
    until = _table_time(log_time(o.until), tz) if o.until else "its end"
    p(f"Times in {_zone_name(tz)}. Period: {since} to {until}.")
    p("")
    p(
        f"Controlled changes: {c.changes:,} ({c.admitted:,} admitted, {c.denied:,} denied);"
        f" not listed: {c.dry_run:,} dry-run, {c.no_op:,} no-op updates,"
        f" {c.exempt_control_plane:,} writes the webhook skips by design"
    )
    headers = [*_TABLE, *_TABLE_TAIL, *(_WIDE if wide else ())]
    if c.changes:
        for line in _aligned(headers, lambda: (_cells(r, tz, wide=wide) for r in report.rows())):
            p(line)
    else:
        p("  none")

    p("")
    p("Exceptions")
    for kind in EXCEPTIONS:

        def source(kind: ExceptionKind = kind) -> Iterator[list[str]]:
            for r, e in report.exceptions(kind):
                yield [
                    _table_time(r.time, tz),
                    r.user or "-",
                    r.verb,
                    r.resource_label,
                    r.object_label,
                    r.window or "-",
                    e[1],
                ]

        n = sum(1 for _ in source())
        p(f"{_EXCEPTION_TITLES[kind]}: {n}")
        if n:
            headers_e = ["time", "user", "verb", "resource", "object", "window", "why"]
            for line in _aligned(headers_e, source):
                p("  " + line)

    p("")
    windows = report.shown_windows()
    p(f"Windows (history from the audit log): {len(windows)}")
    for rec in windows:
        em = rec.emergency
        if rec.spec is None:
            head = f"{rec.name}  (never created)"
        else:
            head = f"{rec.name}  ticket {rec.ticket or '-'}  requester {rec.requester or '-'}"
        if em is not None:
            head += f"  EMERGENCY: {em.get('reason', '')}"
        if rec.deleted:
            head += "  (deleted)"
        p(head)
        hist = [[_table_time(h.time, tz), h.user or "-", h.action, h.detail] for h in rec.history]
        for line in _aligned(["time", "by", "what", "detail"], _replay(hist)):
            p("  " + line)

    p("")
    p(
        f"Changes to change control (policies, identities, webhook configuration): {len(report.control)}"
    )
    if report.control:
        rows = [
            [_table_time(x.time, tz), x.user, x.verb, f"{x.resource}/{x.name}", x.detail]
            for x in report.control
        ]
        for line in _aligned(["time", "user", "verb", "object", "detail"], _replay(rows)):
            p("  " + line)


def _printer(out: TextIO) -> Callable[[str], None]:
    def p(line: str) -> None:
        out.write(line)
        out.write("\n")

    return p


def _row_json(row: Change, exception: tuple[ExceptionKind, str] | None) -> dict[str, Any]:
    d: dict[str, Any] = msgspec.to_builtins(row)
    d["approvers"] = list(row.approvers)
    d["groups"] = list(row.groups)
    d["exception"] = exception[0] if exception else None
    d["why"] = exception[1] if exception else None
    return d


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _pretty(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _array(out: TextIO, key: str, items: Iterable[Any], *, indent: str, last: bool) -> None:
    """``"key": [...]`` with one compact item per line, written item by item."""
    out.write(f'{indent}"{key}": [')
    first = True
    for item in items:
        out.write(("\n" if first else ",\n") + indent + "  " + _json(item))
        first = False
    out.write(("]" if first else "\n" + indent + "]") + ("\n" if last else ",\n"))


def write_json(report: Report, *, out: TextIO, files: Sequence[str]) -> None:
    """One JSON document, written as it goes: no list of rows or windows is ever built.

    Every change, exception, window and change-control entry is one line of compact JSON
    inside the document, so ``jq`` reads it whole and ``grep`` finds a line.
    """
    o = report.options
    head = {
        "files": list(files),
        "since": o.since.isoformat() if o.since else None,
        "until": o.until.isoformat() if o.until else None,
        "summary": report.counts.to_json(),
    }
    out.write(_pretty(head)[:-2] + ",\n")
    _array(
        out,
        "changes",
        (_row_json(r, report.exception(r)) for r in report.rows()),
        indent="  ",
        last=False,
    )
    out.write('  "exceptions": {\n')
    for i, kind in enumerate(EXCEPTIONS):
        _array(
            out,
            _JSON_EXCEPTION_KEYS[kind],
            (_row_json(r, e) for r, e in report.exceptions(kind)),
            indent="    ",
            last=i == len(EXCEPTIONS) - 1,
        )
    out.write("  },\n")
    _array(out, "windows", (w.to_json() for w in report.shown_windows()), indent="  ", last=False)
    _array(out, "changeControl", (x.to_json() for x in report.control), indent="  ", last=True)
    out.write("}\n")


CSV_COLUMNS: Final = (
    "time",
    "user",
    "groups",
    "impersonatedBy",
    "verb",
    "apiGroup",
    "resource",
    "subresource",
    "namespace",
    "name",
    "decision",
    "mode",
    "reason",
    "policy",
    "window",
    "ticket",
    "approvers",
    "identity",
    "emergency",
    "code",
    "admitted",
    "exception",
    "why",
    "auditID",
)


def write_csv(report: Report, *, out: TextIO) -> None:
    """The controlled changes, one per line, each with the exception list it belongs to."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in report.rows():
        d = _row_json(r, report.exception(r))
        d["groups"] = " ".join(r.groups)
        d["approvers"] = " ".join(r.approvers)
        d["emergency"] = "true" if r.emergency else "false"
        d["admitted"] = "true" if r.admitted else "false"
        w.writerow(["" if d.get(col) is None else d[col] for col in CSV_COLUMNS])


# -- the command -----------------------------------------------------------------------------


def time_bound(text: str | None, *, now: datetime.datetime) -> datetime.datetime | None:
    """``30d``/``12h``/``2w`` before ``now``, or an RFC 3339 time with an offset."""
    if not text:
        return None
    try:
        return now - flags.parse_since(text)
    except flags.UsageError:
        pass
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        raise flags.UsageError(
            f"invalid time {text!r}: use a period like 30d, 12h, 2w or an RFC 3339 time"
            " with an offset (2026-11-30T09:00:00+09:00)"
        )
    return t


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``report``'s audit-log flags (``--since`` and ``-o`` are shared with the Events report)."""
    parser.add_argument(
        "--audit-log",
        nargs="+",
        metavar="FILE",
        help="report from API server audit log files (plain or gzip, any order; - for stdin)",
    )
    parser.add_argument("--until", help="with --audit-log: up to this time (exclusive)")
    parser.add_argument(
        "--changegate-namespace",
        default=DEFAULT_CHANGEGATE_NAMESPACE,
        metavar="NS",
        help="with --audit-log: changegate's namespace, which its webhook skips",
    )
    parser.add_argument(
        "--exempt-user",
        action="append",
        default=[],
        metavar="USER",
        help="with --audit-log: another user the webhook skips by design (repeatable)",
    )
    parser.add_argument(
        "--exempt-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="with --audit-log: another namespace the webhook skips by design (repeatable)",
    )


def command(
    args: argparse.Namespace,
    *,
    now: datetime.datetime,
    tz: datetime.tzinfo,
    out: TextIO,
    err: TextIO,
    stdin: BinaryIO | None,
) -> int:
    """``report --audit-log``: 0 when the report was printed, 2 on bad flags or input."""
    if args.output == "yaml":
        raise flags.UsageError("report --audit-log prints table, wide, json or csv")
    options = Options.make(
        since=time_bound(args.since, now=now),
        until=time_bound(args.until, now=now),
        exempt_users=args.exempt_user,
        exempt_namespaces=args.exempt_namespace,
        changegate_namespace=args.changegate_namespace,
    )
    try:
        run(
            args.audit_log,
            options=options,
            output=args.output,
            tz=tz,
            out=out,
            err=err,
            stdin=stdin or sys.stdin.buffer,
        )
    except OSError as e:
        print(f"error: {e}", file=err)
        return 2
    return 0


def run(
    files: Sequence[str],
    *,
    options: Options,
    output: str,
    tz: datetime.tzinfo,
    out: TextIO,
    err: TextIO,
    stdin: BinaryIO,
) -> None:
    """Read ``files`` (``-``: stdin) and print the report; raises OSError/ValueError on bad input."""

    def warn(text: str) -> None:
        print(f"warning: {text}", file=err)

    with (
        auditlog.inputs(files, stdin=stdin) as inputs,
        tempfile.TemporaryFile(prefix="changegate-report-") as spool,
    ):
        report = build(inputs, options=options, spool=spool, warn=warn)
        if report.counts.malformed:
            warn(f"{report.counts.malformed} line(s) were not audit events and were skipped")
        if output == "json":
            write_json(report, out=out, files=files)
        elif output == "csv":
            write_csv(report, out=out)
        else:
            write_table(report, out=out, tz=tz, wide=output == "wide", files=files)
