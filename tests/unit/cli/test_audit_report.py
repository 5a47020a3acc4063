"""``report --audit-log``: controlled changes, exceptions and window histories from the log alone.

Events are shaped as kube-apiserver v1.37 writes them (checked against the real one in
tests/integration/test_audit_log.py): users act by impersonation, changegate's annotations
are prefixed with the webhook's name, changegate's own objects carry their bodies.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from controller.cli import audit, auditlog
from controller.cli import main as cli
from controller.operator import webhook
from controller.policy import approvals

T0 = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.UTC)
P = "controlled.changegate.io/"
ADMIN = "changegate-admin"


def at(minutes: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cg(**values: str) -> dict[str, str]:
    """changegate's audit annotations as the API server records them (empty values left out)."""
    return {P + k: v for k, v in values.items() if v}


def window_ok(window: str = "chg-1", policy: str = "shop-prod") -> dict[str, str]:
    return cg(
        decision="allow",
        reason="Window",
        mode="Enforce",
        policy=policy,
        window=window,
        ticket="CHG-1",
        approvers="bob@example.com",
        identity="shop-oncall",
    )


def event(
    *,
    t: datetime.datetime,
    verb: str = "update",
    user: str = "alice@example.com",
    groups: Sequence[str] = ("developers",),
    resource: str = "configmaps",
    group: str = "",
    namespace: str = "shop",
    name: str = "web",
    subresource: str = "",
    code: int = 200,
    ann: Mapping[str, str] | None = None,
    stage: str = "ResponseComplete",
    audit_id: str | None = None,
    uri: str | None = None,
    request: Any = None,
    response: Any = None,
    message: str = "",
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "name": name, "apiVersion": "v1"}
    if namespace:
        ref["namespace"] = namespace
    if group:
        ref["apiGroup"] = group
    if subresource:
        ref["subresource"] = subresource
    status: dict[str, Any] = {"metadata": {}, "code": code}
    if message:
        status.update({"status": "Failure", "message": message, "reason": "Forbidden"})
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse" if response is not None or request is not None else "Metadata",
        "auditID": audit_id or str(uuid.uuid4()),
        "stage": stage,
        "requestURI": uri or f"/api/v1/namespaces/{namespace}/{resource}/{name}",
        "verb": verb,
        "user": {"username": ADMIN, "groups": ["system:masters", "system:authenticated"]},
        "impersonatedUser": {"username": user, "groups": [*groups, "system:authenticated"]},
        "sourceIPs": ["127.0.0.1"],
        "userAgent": "kubectl/v1.37.2 (linux/amd64) kubernetes/$Format",
        "objectRef": ref,
        "responseStatus": status,
        "requestReceivedTimestamp": stamp(t - datetime.timedelta(milliseconds=5)),
        "stageTimestamp": stamp(t),
        "annotations": {"authorization.k8s.io/decision": "allow", **(ann or {})},
    }
    if request is not None:
        ev["requestObject"] = request
    if response is not None:
        ev["responseObject"] = response
    return ev


def as_system(ev: dict[str, Any], user: str, groups: Sequence[str] = ()) -> dict[str, Any]:
    """The same event made by a control-plane identity directly (no impersonation)."""
    ev = dict(ev)
    del ev["impersonatedUser"]
    ev["user"] = {"username": user, "groups": [*groups, "system:authenticated"]}
    return ev


def policy_event(t: datetime.datetime, verb: str, name: str = "shop-prod") -> dict[str, Any]:
    body = {
        "apiVersion": "changegate.io/v1alpha1",
        "kind": "ChangePolicy",
        "metadata": {"name": name},
        "spec": {"enforcement": "Enforce"},
    }
    return as_system(
        event(
            t=t,
            verb=verb,
            resource="changepolicies",
            group="changegate.io",
            namespace="",
            name=name,
            code=201 if verb == "create" else 200,
            response=body if verb != "delete" else {"kind": "Status", "status": "Success"},
        ),
        ADMIN,
        ["system:masters"],
    )


def window_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ticket": "CHG-1",
        "description": "roll out web",
        "requester": "alice@example.com",
        "identities": ["shop-oncall"],
        "targets": [
            {
                "namespaces": ["shop"],
                "resources": [
                    {"apiGroups": [""], "resources": ["configmaps"], "operations": ["UPDATE"]}
                ],
            }
        ],
        "schedule": {"start": "2026-11-30T08:00:00Z", "end": "2026-11-30T12:00:00Z"},
    }
    spec.update(over)
    return spec


def window_event(
    t: datetime.datetime,
    verb: str,
    spec: dict[str, Any] | None,
    *,
    name: str = "chg-1",
    user: str = "alice@example.com",
    groups: Sequence[str] = ("developers",),
    code: int | None = None,
    message: str = "",
) -> dict[str, Any]:
    body = None
    if spec is not None:
        body = {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": name, "uid": "u-" + name, "generation": 1},
            "spec": spec,
        }
    denied = bool(message)
    ann = {"crds.changegate.io/decision": "deny" if denied else "allow"}
    response: Any = body
    if denied:
        response = {"kind": "Status", "status": "Failure", "code": 403}
    elif verb == "delete":
        response = {"kind": "Status", "status": "Success"}
    return event(
        t=t,
        verb=verb,
        user=user,
        groups=groups,
        resource="changewindows",
        group="changegate.io",
        namespace="",
        name=name,
        code=code or (403 if denied else 201 if verb == "create" else 200),
        ann=ann,
        request=body if verb != "delete" else {"kind": "DeleteOptions"},
        response=response,
        message=message,
    )


def approval(
    spec: Mapping[str, Any],
    *,
    approver: str = "bob@example.com",
    policies: Sequence[str] = ("shop-prod",),
    t: datetime.datetime = T0,
) -> dict[str, Any]:
    return {
        "approver": approver,
        "specHash": approvals.spec_hash(spec),
        "approvedAt": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "policies": list(policies),
    }


def write_log(path: Path, events: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
    return path


@pytest.fixture
def spool() -> Iterator[io.BufferedRandom]:
    with tempfile.TemporaryFile() as f:
        yield f  # type: ignore[misc]


def build(
    tmp_path: Path, events: Sequence[Mapping[str, Any]], spool: Any, **options: Any
) -> audit.Report:
    path = write_log(tmp_path / "audit.log", events)
    warnings: list[str] = []
    report = audit.build(
        [auditlog.Input(label=str(path), path=path)],
        options=audit.Options.make(**options),
        spool=spool,
        warn=warnings.append,
    )
    return report


def rows(report: audit.Report) -> list[audit.Change]:
    return list(report.rows())


def exceptions(report: audit.Report) -> dict[str, list[tuple[str, str]]]:
    return {
        kind: [(r.name, why) for r, (_, why) in report.exceptions(kind)]
        for kind in audit.EXCEPTIONS
    }


#: A policy controlling configmaps in shop, known from a verdict that names it.
SCOPE = [event(t=at(0), verb="create", name="probe", ann=window_ok())]


# -- rows ------------------------------------------------------------------------------------


def test_admitted_change_is_a_row_with_its_window_ticket_approvers_and_identity(
    tmp_path: Path, spool: Any
) -> None:
    report = build(tmp_path, [event(t=at(1), ann=window_ok())], spool)
    (row,) = rows(report)
    assert (row.user, row.groups, row.impersonated_by) == (
        "alice@example.com",
        ("developers", "system:authenticated"),
        ADMIN,
    )
    assert (row.verb, row.resource_label, row.object_label) == ("update", "configmaps", "shop/web")
    assert (row.decision, row.mode, row.reason, row.policy) == (
        "allow",
        "Enforce",
        "Window",
        "shop-prod",
    )
    assert (row.window, row.ticket, row.approvers, row.identity) == (
        "chg-1",
        "CHG-1",
        ("bob@example.com",),
        "shop-oncall",
    )
    assert (row.emergency, row.admitted, row.code) == (False, True, 200)
    assert report.exception(row) is None


def test_denied_change_is_a_row_with_its_reason_and_not_admitted(
    tmp_path: Path, spool: Any
) -> None:
    denied = event(
        t=at(1),
        code=403,
        ann=cg(decision="deny", reason="NoWindow", mode="Enforce", policy="shop-prod"),
        message='admission webhook "controlled.changegate.io" denied the request: ...',
    )
    (row,) = rows(build(tmp_path, [denied], spool))
    assert (row.decision, row.reason, row.admitted) == ("deny", "NoWindow", False)


@pytest.mark.parametrize(
    "ann",
    [
        cg(decision="allow", reason="NotControlled"),
        cg(decision="allow", reason="StatusSubresource"),
    ],
    ids=["not-controlled", "status"],
)
def test_requests_changegate_did_not_control_are_not_rows(
    tmp_path: Path, spool: Any, ann: dict[str, str]
) -> None:
    assert rows(build(tmp_path, [event(t=at(1), ann=ann)], spool)) == []


def test_dry_run_and_no_op_updates_are_counted_not_listed(tmp_path: Path, spool: Any) -> None:
    report = build(
        tmp_path,
        [
            event(
                t=at(1),
                ann={**window_ok(), P + "dryRun": "true"},
                uri="/api/v1/namespaces/shop/configmaps?dryRun=All",
            ),
            event(t=at(2), name="noop", ann=cg(decision="allow", reason="NoOp", mode="Enforce")),
            event(t=at(3), name="real", ann=window_ok()),
        ],
        spool,
    )
    assert [r.name for r in rows(report)] == ["real"]
    assert (report.counts.dry_run, report.counts.no_op, report.counts.changes) == (1, 1, 1)


def test_since_and_until_bound_the_rows(tmp_path: Path, spool: Any) -> None:
    events = [event(t=at(m), name=f"cm-{m}", ann=window_ok()) for m in (0, 10, 20, 30)]
    report = build(tmp_path, events, spool, since=at(9), until=at(25))
    assert [r.name for r in rows(report)] == ["cm-10", "cm-20"]


# -- exceptions ------------------------------------------------------------------------------


def test_warn_mode_denial_admitted_is_an_exception_without_a_window(
    tmp_path: Path, spool: Any
) -> None:
    warn = event(
        t=at(1),
        ann=cg(
            decision="deny", reason="NotDesignated", mode="Warn", policy="shop-prod", window="chg-1"
        ),
    )
    report = build(tmp_path, [warn], spool)
    (row,) = rows(report)
    assert row.admitted
    assert exceptions(report)[audit.WITHOUT_WINDOW] == [
        ("web", "Warn mode admitted a denial: NotDesignated")
    ]


def test_exempt_change_is_an_exception_without_a_window(tmp_path: Path, spool: Any) -> None:
    exempt = event(
        t=at(1), ann=cg(decision="allow", reason="Exempt", mode="Enforce", policy="shop-prod")
    )
    assert exceptions(build(tmp_path, [exempt], spool))[audit.WITHOUT_WINDOW] == [
        ("web", "exempt under policy shop-prod")
    ]


def test_outside_work_hours_admitted_in_audit_mode_is_its_own_exception(
    tmp_path: Path, spool: Any
) -> None:
    late = event(
        t=at(1),
        ann=cg(
            decision="deny",
            reason="OutsideWorkHours",
            mode="Audit",
            policy="shop-prod",
            window="chg-1",
            identity="shop-oncall",
        ),
    )
    found = exceptions(build(tmp_path, [late], spool))
    assert found[audit.OUTSIDE_WORK_HOURS] == [
        ("web", "Audit mode admitted it (identity shop-oncall)")
    ]
    assert found[audit.WITHOUT_WINDOW] == []


def test_write_with_no_changegate_decision_to_a_controlled_resource_is_a_gap(
    tmp_path: Path, spool: Any
) -> None:
    gap = event(t=at(5), name="unseen")
    report = build(tmp_path, [*SCOPE, gap], spool)
    (row,) = [r for r in rows(report) if r.name == "unseen"]
    assert (row.decision, row.reason, row.admitted) == (None, audit.NO_DECISION, True)
    assert exceptions(report)[audit.WITHOUT_WINDOW] == [
        ("unseen", "no changegate decision: the webhook was not called")
    ]


@pytest.mark.parametrize(
    ("gap", "why"),
    [
        (event(t=at(5), namespace="other"), "a namespace no verdict named"),
        (event(t=at(5), resource="secrets"), "a resource no verdict named"),
        (event(t=at(5), subresource="status"), "status is sent only when metadata changes"),
        (event(t=at(5), verb="get"), "a read"),
        (event(t=at(5), code=403), "refused by RBAC: no change"),
        (event(t=at(5), uri="/api/v1/namespaces/shop/configmaps/web?dryRun=All"), "dry-run"),
        (as_system(event(t=at(5)), "system:kube-controller-manager"), "built-in exemption"),
        (as_system(event(t=at(5)), "system:node:n1", ["system:nodes"]), "built-in group"),
        (
            as_system(event(t=at(5)), "system:serviceaccount:changegate-system:changegate"),
            "changegate itself",
        ),
        (event(t=at(5), namespace="kube-system"), "kube-system is never sent"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_unannotated_writes_the_webhook_never_gets_are_not_gaps(
    tmp_path: Path, spool: Any, gap: dict[str, Any], why: str
) -> None:
    report = build(tmp_path, [*SCOPE, gap], spool)
    assert [r.name for r in rows(report)] == ["probe"], why


def test_connect_without_a_decision_is_a_gap_even_as_a_get(tmp_path: Path, spool: Any) -> None:
    # kubectl exec over WebSocket is a GET on pods/exec.
    scope = event(
        t=at(0), verb="get", resource="pods", subresource="exec", name="db", ann=window_ok()
    )
    gap = event(t=at(5), verb="get", resource="pods", subresource="exec", name="db")
    report = build(tmp_path, [scope, gap], spool)
    assert [(r.resource_label, r.decision) for r in rows(report)] == [
        ("pods/exec", "allow"),
        ("pods/exec", None),
    ]


def test_built_in_exempt_writes_to_controlled_resources_are_counted(
    tmp_path: Path, spool: Any
) -> None:
    kcm = as_system(event(t=at(5)), "system:kube-controller-manager")
    assert build(tmp_path, [*SCOPE, kcm], spool).counts.exempt_control_plane == 1


def test_no_gap_before_the_policy_existed_or_after_it_was_deleted(
    tmp_path: Path, spool: Any
) -> None:
    events = [
        event(t=at(0), name="before"),
        policy_event(at(1), "create"),
        event(t=at(2), name="probe", ann=window_ok()),
        event(t=at(3), name="during"),
        policy_event(at(4), "delete"),
        event(t=at(5), name="after"),
    ]
    report = build(tmp_path, events, spool)
    assert [r.name for r in rows(report)] == ["probe", "during"]


def test_policy_deleted_in_the_log_existed_before_it(tmp_path: Path, spool: Any) -> None:
    events = [
        event(t=at(0), name="early"),
        event(t=at(1), name="probe", ann=window_ok()),
        policy_event(at(2), "delete"),
        event(t=at(3), name="late"),
    ]
    assert [r.name for r in rows(build(tmp_path, events, spool))] == ["early", "probe"]


def _emergency_change(t: datetime.datetime, window: str = "inc-7") -> dict[str, Any]:
    return event(
        t=t,
        ann=cg(
            decision="allow",
            reason="Emergency",
            mode="Enforce",
            policy="shop-prod",
            window=window,
            ticket="EMERGENCY",
            identity="shop-sre",
            emergency="true",
        ),
    )


def test_emergency_change_whose_window_was_never_reviewed_is_an_exception(
    tmp_path: Path, spool: Any
) -> None:
    spec = window_spec(
        ticket="EMERGENCY",
        requester="carol@example.com",
        emergency={"reason": "INC-7", "policies": ["shop-prod"]},
    )
    events = [
        window_event(at(0), "create", spec, name="inc-7", user="carol@example.com"),
        _emergency_change(at(1)),
    ]
    report = build(tmp_path, events, spool)
    (row,) = rows(report)
    assert row.emergency
    assert exceptions(report)[audit.UNREVIEWED_EMERGENCY] == [
        ("web", "no approval under shop-prod recorded")
    ]


def test_emergency_change_reviewed_afterwards_is_not_an_exception(
    tmp_path: Path, spool: Any
) -> None:
    spec = window_spec(
        ticket="EMERGENCY",
        requester="carol@example.com",
        emergency={"reason": "INC-7", "policies": ["shop-prod"]},
    )
    reviewed = {**spec, "approvals": [approval(spec)]}
    events = [
        window_event(at(0), "create", spec, name="inc-7", user="carol@example.com"),
        _emergency_change(at(1)),
        window_event(at(30), "patch", reviewed, name="inc-7", user="bob@example.com"),
    ]
    assert exceptions(build(tmp_path, events, spool))[audit.UNREVIEWED_EMERGENCY] == []


def test_review_under_another_policy_does_not_count(tmp_path: Path, spool: Any) -> None:
    spec = window_spec(ticket="EMERGENCY", emergency={"reason": "INC-7", "policies": ["shop-prod"]})
    other = {**spec, "approvals": [approval(spec, policies=["payments-prod"])]}
    events = [
        window_event(at(0), "create", spec, name="inc-7"),
        _emergency_change(at(1)),
        window_event(at(30), "patch", other, name="inc-7", user="bob@example.com"),
    ]
    assert len(exceptions(build(tmp_path, events, spool))[audit.UNREVIEWED_EMERGENCY]) == 1


def test_emergency_window_missing_from_the_log_is_said_so(tmp_path: Path, spool: Any) -> None:
    found = exceptions(build(tmp_path, [_emergency_change(at(1))], spool))
    assert found[audit.UNREVIEWED_EMERGENCY] == [
        ("web", "no approval under shop-prod recorded (the window's creation is not in this log)")
    ]


def test_each_admitted_change_is_in_at_most_one_exception_list(tmp_path: Path, spool: Any) -> None:
    events = [
        *SCOPE,
        event(
            t=at(1),
            name="warn",
            ann=cg(decision="deny", reason="OutsideWorkHours", mode="Warn", policy="shop-prod"),
        ),
        event(t=at(2), name="gap"),
        _emergency_change(at(3)),
        event(
            t=at(4),
            name="exempt",
            ann=cg(decision="allow", reason="Exempt", mode="Enforce", policy="shop-prod"),
        ),
    ]
    found = exceptions(build(tmp_path, events, spool))
    names = [n for kind in audit.EXCEPTIONS for n, _ in found[kind]]
    assert sorted(names) == ["exempt", "gap", "warn", "web"]


# -- windows' history ------------------------------------------------------------------------


def test_deleted_window_keeps_its_whole_history(tmp_path: Path, spool: Any) -> None:
    spec = window_spec()
    approved = {**spec, "approvals": [approval(spec)]}
    edited = {**approved, "description": "roll out web, and api"}
    reapproved = {
        **edited,
        "approvals": [*approved["approvals"], approval(edited, approver="erin@example.com")],
    }
    events = [
        window_event(at(0), "create", spec),
        window_event(
            at(1),
            "patch",
            None,
            user="alice@example.com",
            groups=("developers", "change-approvers"),
            message='admission webhook "crds.changegate.io" denied the request: changegate denied UPDATE changewindows.changegate.io chg-1 for alice@example.com: four-eyes: the requester cannot approve',
        ),
        window_event(at(2), "patch", approved, user="bob@example.com"),
        window_event(at(3), "update", edited),
        window_event(at(4), "patch", reapproved, user="erin@example.com"),
        window_event(at(5), "patch", {**reapproved, "approvals": reapproved["approvals"][1:]}),
        window_event(at(6), "delete", None, user=ADMIN),
    ]
    report = build(tmp_path, events, spool)
    (record,) = report.shown_windows()
    assert (record.name, record.ticket, record.requester) == ("chg-1", "CHG-1", "alice@example.com")
    assert record.deleted
    history = [(h.user, h.action) for h in record.history]
    assert history == [
        ("alice@example.com", "created"),
        ("alice@example.com", "refused"),
        ("bob@example.com", "approved"),
        ("alice@example.com", "edited"),
        ("alice@example.com", "approvals-stale"),
        ("erin@example.com", "approved"),
        ("alice@example.com", "approval-removed"),
        (ADMIN, "deleted"),
    ]
    details = {h.action: h.detail for h in record.history}
    assert "four-eyes" in details["refused"]
    assert (
        details["approvals-stale"]
        == "approvals by bob@example.com signed the previous spec: no longer valid"
    )
    assert details["approval-removed"] == "approval by bob@example.com removed"
    bob = record.history[2]
    assert bob.data["approval"]["policies"] == ["shop-prod"]
    assert bob.detail.startswith("by bob@example.com under shop-prod signing sha256:")


def test_window_created_before_the_log_is_first_seen_with_its_approvals(
    tmp_path: Path, spool: Any
) -> None:
    spec = window_spec()
    approved = {**spec, "approvals": [approval(spec)]}
    edited = {**approved, "description": "changed"}
    report = build(tmp_path, [window_event(at(1), "update", edited)], spool)
    (record,) = report.shown_windows()
    assert [h.action for h in record.history] == ["first-seen", "approved"]
    assert record.history[1].detail.endswith("(before this log)")


def test_a_re_created_name_is_a_new_window(tmp_path: Path, spool: Any) -> None:
    events = [
        window_event(at(0), "create", window_spec()),
        window_event(at(1), "delete", None),
        window_event(at(2), "create", window_spec(ticket="CHG-2")),
    ]
    records = build(tmp_path, events, spool).shown_windows()
    assert [(r.ticket, [h.action for h in r.history]) for r in records] == [
        ("CHG-1", ["created", "deleted"]),
        ("CHG-2", ["created"]),
    ]


def test_windows_outside_the_period_are_not_shown(tmp_path: Path, spool: Any) -> None:
    events = [
        window_event(at(0), "create", window_spec(), name="old"),
        window_event(at(30), "create", window_spec(), name="new"),
    ]
    report = build(tmp_path, events, spool, since=at(20))
    assert [r.name for r in report.shown_windows()] == ["new"]


def test_changes_to_change_control_are_listed(tmp_path: Path, spool: Any) -> None:
    config = as_system(
        event(
            t=at(1),
            verb="delete",
            resource="validatingwebhookconfigurations",
            group="admissionregistration.k8s.io",
            namespace="",
            name="changegate",
            response={"kind": "Status", "status": "Success"},
        ),
        "mallory@example.com",
    )
    report = build(tmp_path, [policy_event(at(0), "create"), config], spool)
    assert [(c.user, c.verb, c.resource, c.detail) for c in report.control] == [
        (ADMIN, "create", "changepolicies", "enforcement Enforce"),
        (
            "mallory@example.com",
            "delete",
            "validatingwebhookconfigurations",
            "deleted: changegate is not called until the configuration is restored",
        ),
    ]


# -- the command and its outputs -------------------------------------------------------------


def run_cli(args: Sequence[str], *, stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        ["report", *args, "--tz", "UTC"],
        out=out,
        err=err,
        stdin=io.TextIOWrapper(io.BytesIO(stdin)),
        now=at(60),
    )
    return code, out.getvalue(), err.getvalue()


STORY = [
    *SCOPE,
    window_event(at(1), "create", window_spec()),
    window_event(
        at(2),
        "patch",
        {**window_spec(), "approvals": [approval(window_spec())]},
        user="bob@example.com",
    ),
    event(t=at(3), ann=window_ok()),
    event(
        t=at(4),
        user="dave@example.com",
        code=403,
        ann=cg(
            decision="deny",
            reason="NotDesignated",
            mode="Enforce",
            policy="shop-prod",
            window="chg-1",
            ticket="CHG-1",
        ),
    ),
    event(t=at(5), name="hotfix"),
]


def test_report_table_for_a_small_story(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", STORY)
    code, out, err = run_cli(["--audit-log", str(path), "--since", "2026-11-30T09:00:30Z"])
    assert (code, err) == (0, "")
    assert out.splitlines()[3:9] == [
        "Controlled changes: 3 (2 admitted, 1 denied); not listed: 0 dry-run, 0 no-op updates, 0 writes the webhook skips by design",
        "TIME                  USER                GROUPS       VERB     RESOURCE     OBJECT        DECISION   MODE      REASON          WINDOW   TICKET   APPROVERS         EMERGENCY   ADMITTED",
        "2026-11-30 09:02:59   alice@example.com   developers   update   configmaps   shop/web      allow      Enforce   Window          chg-1    CHG-1    bob@example.com   no          yes",
        "2026-11-30 09:03:59   dave@example.com    developers   update   configmaps   shop/web      deny       Enforce   NotDesignated   chg-1    CHG-1    -                 no          no",
        "2026-11-30 09:04:59   alice@example.com   developers   update   configmaps   shop/hotfix   -          -         NoDecision      -        -        -                 no          yes",
        "",
    ]
    assert (
        "Admitted without a window (Warn/Audit mode, exemptions, no changegate decision): 1" in out
    )
    assert "no changegate decision: the webhook was not called" in out
    assert "chg-1  ticket CHG-1  requester alice@example.com" in out


def test_report_json_is_one_document_with_every_section(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", STORY)
    code, out, _ = run_cli(["--audit-log", str(path), "-o", "json"])
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["controlledChanges"] == 4
    assert [c["name"] for c in doc["changes"]] == ["probe", "web", "web", "hotfix"]
    assert [c["name"] for c in doc["exceptions"]["withoutWindow"]] == ["hotfix"]
    assert doc["exceptions"]["unreviewedEmergency"] == []
    (window,) = doc["windows"]
    assert [h["action"] for h in window["history"]] == ["created", "approved"]
    assert window["history"][1]["approval"]["approver"] == "bob@example.com"


def test_report_json_without_rows_is_still_valid(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", [])
    code, out, _ = run_cli(["--audit-log", str(path), "-o", "json"])
    assert code == 0
    doc = json.loads(out)
    assert (doc["changes"], doc["windows"], doc["changeControl"]) == ([], [], [])


def test_report_csv_has_one_line_per_change_with_its_exception(tmp_path: Path) -> None:
    path = write_log(tmp_path / "audit.log", STORY)
    code, out, _ = run_cli(["--audit-log", str(path), "-o", "csv"])
    assert code == 0
    lines = list(csv.DictReader(io.StringIO(out)))
    assert list(lines[0]) == list(audit.CSV_COLUMNS)
    assert [(r["name"], r["decision"], r["admitted"], r["exception"]) for r in lines] == [
        ("probe", "allow", "true", ""),
        ("web", "allow", "true", ""),
        ("web", "deny", "false", ""),
        ("hotfix", "", "true", audit.WITHOUT_WINDOW),
    ]
    assert lines[1]["approvers"] == "bob@example.com"
    assert lines[1]["groups"] == "developers system:authenticated"


def test_report_reads_stdin(tmp_path: Path) -> None:
    data = "".join(json.dumps(e) + "\n" for e in STORY).encode()
    code, out, _ = run_cli(["--audit-log", "-", "-o", "json"], stdin=data)
    assert code == 0
    assert json.loads(out)["summary"]["controlledChanges"] == 4


def test_report_needs_no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    path = write_log(tmp_path / "audit.log", STORY)
    assert run_cli(["--audit-log", str(path), "-o", "csv"])[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--audit-log", "/nonexistent/audit.log"], "no such file"),
        (["--audit-log", "AUDIT", "-o", "yaml"], "table, wide, json or csv"),
        (["--audit-log", "AUDIT", "--since", "yesterday"], "invalid time 'yesterday'"),
        (["--audit-log", "AUDIT", "--since", "2026-11-30T09:00:00"], "with an offset"),
    ],
)
def test_report_refuses_bad_input_with_a_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = write_log(tmp_path / "audit.log", STORY)
    code, _, err = run_cli([str(path) if a == "AUDIT" else a for a in args])
    assert code == 2
    assert message in err


def test_time_bounds_are_periods_or_rfc3339() -> None:
    now = at(60)
    assert audit.time_bound("30m", now=now) == at(30)
    assert audit.time_bound("2026-11-30T18:00:00+09:00", now=now) == at(0)
    assert audit.time_bound(None, now=now) is None


def test_webhook_names_are_the_operators() -> None:
    assert audit.CONTROLLED_WEBHOOK == webhook.CONTROLLED_WEBHOOK
    assert audit.CRDS_WEBHOOK == webhook.CRDS_WEBHOOK
    assert audit.WEBHOOK_CONFIGURATION == webhook.NAME


@pytest.mark.parametrize(
    ("where", "label"),
    [
        (
            {"resource": "deployments", "group": "apps", "subresource": "scale"},
            ("deployments.apps/scale", "shop/web"),
        ),
        ({"resource": "namespaces", "namespace": "shop", "name": "shop"}, ("namespaces", "shop")),
        ({"verb": "create", "name": ""}, ("configmaps", "shop/*")),
    ],
)
def test_rows_name_resources_and_objects_as_changegate_messages_do(
    tmp_path: Path, spool: Any, where: dict[str, str], label: tuple[str, str]
) -> None:
    (row,) = rows(build(tmp_path, [event(t=at(1), ann=window_ok(), **where)], spool))
    assert (row.resource_label, row.object_label) == label


def test_report_takes_csv_and_the_other_commands_keep_their_outputs() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["report", "--audit-log", "x", "-o", "csv"]).output == "csv"
    assert parser.parse_args(["can-i", "get", "pods", "-o", "json"]).output == "json"
    assert parser.parse_args(["list", "-o", "wide"]).output == "wide"
    with pytest.raises(SystemExit):
        parser.parse_args(["list", "-o", "csv"])


def test_an_approval_signed_by_a_tracker_names_the_issuer(tmp_path: Path, spool: Any) -> None:
    spec = window_spec()
    signed = {
        **approval(spec),
        "signature": {
            "issuer": "servicenow",
            "keyId": "2026-11",
            "window": "chg-1",
            "ticket": "CHG-1",
            "value": "c2ln",
        },
    }
    events = [
        window_event(at(0), "create", spec),
        window_event(
            at(1),
            "patch",
            {**spec, "approvals": [signed]},
            user="system:serviceaccount:tracker:bot",
        ),
    ]
    (record,) = build(tmp_path, events, spool).shown_windows()
    approved = record.history[1]
    assert (approved.user, approved.action) == ("system:serviceaccount:tracker:bot", "approved")
    assert approved.detail.startswith("by bob@example.com under shop-prod signing sha256:")
    assert approved.detail.endswith("(signed by issuer servicenow, key 2026-11)")
