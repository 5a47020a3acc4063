"""The admission decision, rule by rule, as SPEC.md "The admission decision" states them."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.model import crds
from controller.policy import approvals, decide, index, schedules

UTC = dt.UTC
# Tue 2026-12-01 22:30 KST: inside the default window (22:00-24:00 KST).
NOW = dt.datetime(2026, 12, 1, 13, 30, tzinfo=UTC)

DEPLOY_RULE = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}


def policy(name: str = "payments-prod", **spec: Any) -> crds.ChangePolicy:
    body: dict[str, Any] = {
        "match": {"resources": [DEPLOY_RULE], "namespaces": ["payments"]},
        "approval": {"required": 1, "approverGroups": ["change-approvers"]},
        "message": {"contact": "#change-management"},
    }
    body.update(spec)
    return crds.ChangePolicy.model_validate({"metadata": {"name": name}, "spec": body})


def identity(name: str = "payments-oncall", **spec: Any) -> crds.AuthorizedIdentity:
    body: dict[str, Any] = {"subjects": [{"kind": "User", "name": "alice@example.com"}]}
    body.update(spec)
    return crds.AuthorizedIdentity.model_validate({"metadata": {"name": name}, "spec": body})


def window_spec(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": "CHG-1234",
        "description": "payments v2.3",
        "requester": "alice@example.com",
        "identities": ["payments-oncall"],
        "targets": [{"namespaces": ["payments"], "resources": [DEPLOY_RULE]}],
        "schedule": {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
    }
    body.update(spec)
    return body


def window(
    name: str = "w1",
    *,
    approved_by: tuple[str, ...] = ("bob@example.com",),
    under: tuple[str, ...] = ("payments-prod",),
    **spec: Any,
) -> tuple[crds.ChangeWindow, dict[str, Any]]:
    """A window approved by ``approved_by`` for its current spec, under the policies
    ``under``; returns (model, raw spec)."""
    raw = window_spec(**spec)
    h = approvals.spec_hash(raw)
    entries = [{"approver": a, "specHash": h, "policies": list(under)} for a in approved_by]
    raw = {**raw, "approvals": entries}
    return crds.ChangeWindow.model_validate({"metadata": {"name": name}, "spec": raw}), raw


def snapshot(
    *,
    policies: list[crds.ChangePolicy] | None = None,
    identities: list[crds.AuthorizedIdentity] | None = None,
    windows: list[tuple[crds.ChangeWindow, dict[str, Any]]] | None = None,
    namespaces: dict[str, dict[str, str]] | None = None,
    **kw: Any,
) -> index.Snapshot:
    ws = windows if windows is not None else [window()]
    return index.Snapshot.build(
        policies=policies if policies is not None else [policy()],
        identities=identities if identities is not None else [identity()],
        windows=[w for w, _ in ws],
        raw_window_specs={w.metadata.name: raw for w, raw in ws},
        namespaces=namespaces if namespaces is not None else {"payments": {}, "other": {}},
        **kw,
    )


def request(**kw: Any) -> decide.Request:
    fields: dict[str, Any] = {
        "uid": "u1",
        "user": "alice@example.com",
        "groups": ("system:authenticated",),
        "operation": "UPDATE",
        "api_group": "apps",
        "api_version": "v1",
        "resource": "deployments",
        "subresource": "",
        "kind": "Deployment",
        "namespace": "payments",
        "name": "web",
        "dry_run": False,
        "object": {"metadata": {"name": "web"}, "spec": {"replicas": 3}},
        "old_object": {"metadata": {"name": "web"}, "spec": {"replicas": 2}},
    }
    fields.update(kw)
    return decide.Request(**fields)


def run(
    req: decide.Request | None = None, snap: index.Snapshot | None = None, now: dt.datetime = NOW
) -> decide.Decision:
    return decide.decide(req or request(), snapshot=snap or snapshot(), now=now)


# -- step 1: controlling policies ------------------------------------------------------------


@pytest.mark.parametrize(
    "req",
    [
        pytest.param(request(namespace="other"), id="other-namespace"),
        pytest.param(request(resource="configmaps", api_group=""), id="other-resource"),
        pytest.param(request(operation="DELETE"), id="other-operation"),
        pytest.param(request(subresource="rollback"), id="subresource-not-named"),
    ],
)
def test_request_no_policy_matches_is_not_controlled(req: decide.Request) -> None:
    d = run(req)
    assert (d.allowed, d.reason, d.mode) == (True, decide.Reason.NOT_CONTROLLED, None)


def test_excluded_namespace_is_not_controlled() -> None:
    p = policy(match={"resources": [DEPLOY_RULE], "excludeNamespaces": ["payments"]})
    assert run(snap=snapshot(policies=[p])).reason is decide.Reason.NOT_CONTROLLED
    assert run(request(namespace="other"), snapshot(policies=[p])).reason is decide.Reason.NO_WINDOW


def test_namespace_selector_is_evaluated_against_namespace_labels() -> None:
    p = policy(
        match={
            "resources": [DEPLOY_RULE],
            "namespaceSelector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}]
            },
        }
    )
    snap = snapshot(
        policies=[p], namespaces={"payments": {"tier": "prod"}, "other": {"tier": "dev"}}
    )
    assert run(request(namespace="other"), snap).reason is decide.Reason.NOT_CONTROLLED
    assert run(request(), snap).reason is decide.Reason.WINDOW


def test_cluster_scoped_request_is_controlled_only_by_unscoped_policy() -> None:
    rule = {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "operations": ["DELETE"],
    }
    req = request(
        api_group="rbac.authorization.k8s.io",
        resource="clusterroles",
        namespace="",
        name="admin",
        operation="DELETE",
    )
    scoped = policy(match={"resources": [rule], "namespaces": ["payments"]})
    unscoped = policy(match={"resources": [rule]})
    assert run(req, snapshot(policies=[scoped])).reason is decide.Reason.NOT_CONTROLLED
    assert run(req, snapshot(policies=[unscoped])).reason is decide.Reason.NO_WINDOW


def test_connect_to_pod_subresource_is_controlled_when_named() -> None:
    rule = {"apiGroups": [""], "resources": ["pods/exec"], "operations": ["CONNECT"]}
    p = policy(match={"resources": [rule], "namespaces": ["payments"]})
    exec_req = request(api_group="", resource="pods", subresource="exec", operation="CONNECT")
    log_req = request(api_group="", resource="pods", subresource="portforward", operation="CONNECT")
    assert run(exec_req, snapshot(policies=[p])).reason is decide.Reason.NO_WINDOW
    assert run(log_req, snapshot(policies=[p])).reason is decide.Reason.NOT_CONTROLLED


# -- step 2: the happy path and every deny reason ----------------------------------------------


def test_approved_window_with_designated_identity_allows() -> None:
    d = run()
    assert (d.allowed, d.verdict, d.reason) == (True, "allow", decide.Reason.WINDOW)
    assert (d.policy, d.window, d.ticket, d.identity) == (
        "payments-prod",
        "w1",
        "CHG-1234",
        "payments-oncall",
    )
    assert d.approvers == ("bob@example.com",)
    assert d.warnings == ()


def test_no_window_denies_and_names_the_next_window() -> None:
    early = dt.datetime(2026, 12, 1, 3, 58, tzinfo=UTC)  # 12:58 KST
    kst = {
        "timeZone": "Asia/Seoul",
        "weekly": [{"days": ["Tue"], "start": "00:00", "end": "00:00"}],
    }
    d = run(snap=snapshot(identities=[identity(workHours=kst)]), now=early)
    assert (d.allowed, d.reason) == (False, decide.Reason.NO_WINDOW)
    assert d.message == (
        "changegate denied UPDATE deployments.apps payments/web for alice@example.com: no approved "
        'change window covers this change (policy payments-prod). Next: window CHG-1234 "payments '
        'v2.3" opens Tue 2026-12-01 22:00 KST (in 9h 2m). Contact #change-management.'
    )


def test_no_covering_window_denies_with_no_window() -> None:
    d = run(snap=snapshot(windows=[]))
    assert d.reason is decide.Reason.NO_WINDOW
    assert "no approved change window covers this change (policy payments-prod)" in d.message


def test_unapproved_window_does_not_open() -> None:
    d = run(snap=snapshot(windows=[window(approved_by=())]))
    assert (d.allowed, d.reason) == (False, decide.Reason.NOT_APPROVED)
    assert "0 of 1 approvals" in d.message and "change-approvers" in d.message


def test_stale_approval_does_not_open_window() -> None:
    _, raw = window()
    stale_raw = {**raw, "description": "payments v2.4"}  # spec edited after bob approved
    w2 = crds.ChangeWindow.model_validate({"metadata": {"name": "w1"}, "spec": stale_raw})
    d = run(snap=snapshot(windows=[(w2, stale_raw)]))
    assert (d.allowed, d.reason) == (False, decide.Reason.APPROVAL_STALE)
    assert "bob@example.com" in d.message and "stale" in d.message


def test_self_approval_does_not_open_window() -> None:
    d = run(snap=snapshot(windows=[window(approved_by=("alice@example.com",))]))
    assert d.reason is decide.Reason.NOT_APPROVED


def test_zero_required_approvals_opens_unapproved_window() -> None:
    p = policy(approval={"required": 0})
    assert (
        run(snap=snapshot(policies=[p], windows=[window(approved_by=())])).reason
        is decide.Reason.WINDOW
    )


def test_ticket_not_matching_policy_pattern_does_not_open_window() -> None:
    d = run(snap=snapshot(policies=[policy(ticketPattern="^INC-[0-9]+$")]))
    assert (d.allowed, d.reason) == (False, decide.Reason.NOT_APPROVED)
    assert "ticketPattern" in d.message and "CHG-1234" in d.message


def test_requester_not_named_by_window_is_not_designated() -> None:
    d = run(request(user="mallory@example.com"))
    assert (d.allowed, d.reason) == (False, decide.Reason.NOT_DESIGNATED)
    assert "mallory@example.com is not designated personnel" in d.message
    assert "payments-oncall" in d.message


@pytest.mark.parametrize(
    ("subject", "user", "groups"),
    [
        ({"kind": "User", "name": "carol"}, "carol", ()),
        ({"kind": "Group", "name": "payments-ops"}, "dave", ("payments-ops",)),
        (
            {
                "kind": "ServiceAccount",
                "namespace": "argocd",
                "name": "argocd-application-controller",
            },
            "system:serviceaccount:argocd:argocd-application-controller",
            ("system:serviceaccounts", "system:serviceaccounts:argocd"),
        ),
    ],
)
def test_identity_subjects_designate_users_groups_and_service_accounts(
    subject: dict[str, str], user: str, groups: tuple[str, ...]
) -> None:
    snap = snapshot(identities=[identity(subjects=[subject])])
    assert run(request(user=user, groups=groups), snap).reason is decide.Reason.WINDOW


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ({"validUntil": "2026-11-30T00:00:00Z"}, "expired"),
        ({"suspended": True}, "is suspended"),
    ],
)
def test_expired_or_suspended_identity_denies_with_identity_expired(
    spec: dict[str, Any], expect: str
) -> None:
    d = run(snap=snapshot(identities=[identity(**spec)]))
    assert (d.allowed, d.reason) == (False, decide.Reason.IDENTITY_EXPIRED)
    assert f"authorized identity payments-oncall {expect}" in d.message
    if expect == "expired":
        assert "expired Mon 2026-11-30 00:00 UTC (1d 13h ago)" in d.message


def test_outside_work_hours_denies_and_says_when_they_start() -> None:
    hours = {
        "timeZone": "Asia/Seoul",
        "weekly": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "09:00", "end": "18:00"}],
    }
    d = run(snap=snapshot(identities=[identity(workHours=hours)]))
    assert (d.allowed, d.reason) == (False, decide.Reason.OUTSIDE_WORK_HOURS)
    assert "outside the work hours of identity payments-oncall" in d.message
    assert "next start Wed 2026-12-02 09:00 KST (in 10h 30m)" in d.message


def test_work_hours_past_midnight_belong_to_the_day_they_start() -> None:
    hours = {
        "timeZone": "Asia/Seoul",
        "weekly": [{"days": ["Tue"], "start": "22:00", "end": "06:00"}],
    }
    assert run(snap=snapshot(identities=[identity(workHours=hours)])).reason is decide.Reason.WINDOW


def test_blackout_denies_even_with_an_approved_window() -> None:
    freeze = {
        "name": "year-end-freeze",
        "schedule": {"start": "2026-12-01T00:00:00+09:00", "end": "2026-12-03T00:00:00+09:00"},
    }
    d = run(snap=snapshot(policies=[policy(blackouts=[freeze])]))
    assert (d.allowed, d.reason) == (False, decide.Reason.BLACKOUT)
    assert (
        "blackout year-end-freeze is in effect until Thu 2026-12-03 00:00 +09:00 (in 1d 1h)"
        in d.message
    )


def test_holiday_blackout_denies_on_a_public_holiday() -> None:
    kr = {"name": "kr-holidays", "holidays": {"country": "KR", "timeZone": "Asia/Seoul"}}
    christmas = dt.datetime(2026, 12, 25, 1, 0, tzinfo=UTC)  # 10:00 KST, Christmas Day
    w = window(schedule={"start": "2026-12-25T09:00:00+09:00", "end": "2026-12-25T12:00:00+09:00"})
    d = run(snap=snapshot(policies=[policy(blackouts=[kr])], windows=[w]), now=christmas)
    assert d.reason is decide.Reason.BLACKOUT and "kr-holidays" in d.message


def test_most_specific_reason_prefers_the_window_that_got_furthest() -> None:
    hours = {
        "timeZone": "Asia/Seoul",
        "weekly": [{"days": ["Mon"], "start": "09:00", "end": "18:00"}],
    }
    cases = [
        # (windows, identities, expected reason)
        (
            [
                window("a-unapproved", approved_by=()),
                window("b-other-person", identities=["nobody"]),
            ],
            [identity()],
            decide.Reason.NOT_DESIGNATED,
        ),
        (
            [
                window(
                    "a-closed",
                    schedule={"start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z"},
                ),
                window("b-unapproved", approved_by=()),
            ],
            [identity()],
            decide.Reason.NOT_APPROVED,
        ),
        (
            [window("a-not-designated", identities=["nobody"]), window("b-hours")],
            [identity(workHours=hours)],
            decide.Reason.OUTSIDE_WORK_HOURS,
        ),
    ]
    for ws, ids, reason in cases:
        assert run(snap=snapshot(windows=ws, identities=ids)).reason is reason


def test_window_names_limit_which_objects_it_covers() -> None:
    ws = [
        window(targets=[{"namespaces": ["payments"], "resources": [DEPLOY_RULE], "names": ["api"]}])
    ]
    assert run(snap=snapshot(windows=ws)).reason is decide.Reason.NO_WINDOW
    assert run(request(name="api"), snapshot(windows=ws)).reason is decide.Reason.WINDOW


def test_create_takes_the_name_from_the_object() -> None:
    rule = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["CREATE"]}
    p = policy(match={"resources": [rule], "namespaces": ["payments"]})
    ws = [window(targets=[{"namespaces": ["payments"], "resources": [rule], "names": ["web"]}])]
    req = request(operation="CREATE", name="", old_object=None)
    assert run(req, snapshot(policies=[p], windows=ws)).reason is decide.Reason.WINDOW


def test_window_closing_within_15_minutes_warns() -> None:
    d = run(now=dt.datetime(2026, 12, 1, 14, 50, tzinfo=UTC))
    assert d.allowed and any("closes" in w and "(in 10m)" in w for w in d.warnings)
    assert run(now=dt.datetime(2026, 12, 1, 14, 40, tzinfo=UTC)).warnings == ()


# -- exemptions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "groups"),
    [
        ("system:kube-controller-manager", ()),
        ("system:kube-scheduler", ()),
        ("system:node:n1", ("system:nodes",)),
        (
            "system:serviceaccount:kube-system:replicaset-controller",
            ("system:serviceaccounts:kube-system",),
        ),
    ],
)
def test_builtin_exemptions_admit_the_control_plane(user: str, groups: tuple[str, ...]) -> None:
    snap = snapshot(windows=[])
    assert run(request(user=user, groups=groups), snap).reason is decide.Reason.EXEMPT
    off = snapshot(windows=[], builtin_exemptions=False)
    assert run(request(user=user, groups=groups), off).reason is decide.Reason.NO_WINDOW


def test_changegate_own_service_account_is_exempt() -> None:
    me = crds.Subject(kind="ServiceAccount", namespace="changegate-system", name="changegate")
    req = request(user="system:serviceaccount:changegate-system:changegate")
    assert run(req, snapshot(windows=[], self_subject=me)).reason is decide.Reason.EXEMPT
    assert run(req, snapshot(windows=[])).reason is decide.Reason.NO_WINDOW
    off = snapshot(windows=[], self_subject=me, builtin_exemptions=False)
    assert run(req, off).reason is decide.Reason.NO_WINDOW


def test_cluster_admin_is_not_exempt() -> None:
    d = run(
        request(user="admin", groups=("system:masters", "system:authenticated")),
        snapshot(windows=[]),
    )
    assert (d.allowed, d.reason) == (False, decide.Reason.NO_WINDOW)


def test_policy_exempt_subjects_are_never_gated() -> None:
    p = policy(
        exemptSubjects=[
            {"kind": "ServiceAccount", "namespace": "monitoring", "name": "prometheus-operator"}
        ]
    )
    req = request(user="system:serviceaccount:monitoring:prometheus-operator")
    assert run(req, snapshot(policies=[p], windows=[])).reason is decide.Reason.EXEMPT


# -- emergency --------------------------------------------------------------------------------


def _emergency(**kw: Any) -> tuple[crds.ChangeWindow, dict[str, Any]]:
    return window(
        "break-glass",
        approved_by=(),
        emergency={"reason": "INC-77 payments down", "policies": ["payments-prod"]},
        schedule={"start": "2026-12-01T13:00:00Z", "end": "2026-12-01T15:00:00Z"},
        **kw,
    )


def test_emergency_window_admits_during_blackout_and_warns() -> None:
    freeze = {
        "name": "freeze",
        "schedule": {"start": "2026-12-01T00:00:00Z", "end": "2026-12-31T00:00:00Z"},
    }
    p = policy(blackouts=[freeze], breakGlass={"groups": ["sre-oncall"], "maxDuration": "4h"})
    d = run(snap=snapshot(policies=[p], windows=[_emergency()]))
    assert (d.allowed, d.reason, d.emergency) == (True, decide.Reason.EMERGENCY, True)
    assert any("break-glass" in w and "INC-77" in w for w in d.warnings)
    assert d.audit_annotations["emergency"] == "true"


def test_emergency_window_needs_a_policy_offering_break_glass() -> None:
    assert run(snap=snapshot(windows=[_emergency()])).reason is decide.Reason.NOT_APPROVED


def test_emergency_window_longer_than_max_duration_is_not_honoured() -> None:
    p = policy(breakGlass={"groups": ["sre-oncall"], "maxDuration": "1h"})
    assert (
        run(snap=snapshot(policies=[p], windows=[_emergency()])).reason
        is decide.Reason.NOT_APPROVED
    )


# -- several policies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("modes", "allowed", "mode", "warned"),
    [
        (["Enforce", "Warn"], False, crds.Enforcement.ENFORCE, False),
        (["Audit", "Warn"], True, crds.Enforcement.WARN, True),
        (["Audit"], True, crds.Enforcement.AUDIT, False),
        (["Warn"], True, crds.Enforcement.WARN, True),
    ],
)
def test_strictest_enforcement_among_denying_policies_decides(
    modes: list[str], allowed: bool, mode: crds.Enforcement, warned: bool
) -> None:
    ps = [policy(f"p{i}", enforcement=m) for i, m in enumerate(modes)]
    d = run(snap=snapshot(policies=ps, windows=[]))
    assert (d.allowed, d.verdict, d.mode) == (allowed, "deny", mode)
    assert (d.warnings == (d.message,)) is warned


def test_every_controlling_policy_must_allow() -> None:
    lenient = policy("a-lenient", approval={"required": 0})
    strict = policy("b-strict", approval={"required": 2, "approverGroups": ["cab"]})
    w = window(under=("a-lenient", "b-strict"))
    d = run(snap=snapshot(policies=[lenient, strict], windows=[w]))
    assert (d.allowed, d.policy, d.reason) == (False, "b-strict", decide.Reason.NOT_APPROVED)
    assert "1 of 2 approvals" in d.message


# -- per policy, always: approvals and break-glass never leak across policies -----------------


def _two_policies(**b_spec: Any) -> list[crds.ChangePolicy]:
    """Policy A controls payments (change-approvers); policy B controls ledger (db-approvers)."""
    a = policy("a-payments", breakGlass={"groups": ["sre-oncall"], "maxDuration": "4h"})
    b = policy(
        "b-ledger",
        match={"resources": [DEPLOY_RULE], "namespaces": ["ledger"]},
        approval={"required": 1, "approverGroups": ["db-approvers"]},
        **b_spec,
    )
    return [a, b]


_BOTH = {
    "targets": [{"namespaces": ["payments", "ledger"], "resources": [DEPLOY_RULE]}],
}


def test_an_approval_counts_only_under_the_policies_it_recorded() -> None:
    snap = snapshot(
        policies=_two_policies(),
        windows=[window(under=("a-payments",), **_BOTH)],
        namespaces={"payments": {}, "ledger": {}},
    )
    assert run(request(namespace="payments"), snap).reason is decide.Reason.WINDOW
    d = run(request(namespace="ledger"), snap)
    assert (d.allowed, d.policy, d.reason) == (False, "b-ledger", decide.Reason.NOT_APPROVED)
    assert "db-approvers" in d.message


def test_an_approval_under_both_policies_opens_both() -> None:
    snap = snapshot(
        policies=_two_policies(),
        windows=[window(under=("a-payments", "b-ledger"), **_BOTH)],
        namespaces={"payments": {}, "ledger": {}},
    )
    assert run(request(namespace="ledger"), snap).reason is decide.Reason.WINDOW


def test_an_approval_without_recorded_policies_counts_nowhere() -> None:
    snap = snapshot(windows=[window(under=())])
    assert run(snap=snap).reason is decide.Reason.NOT_APPROVED


def test_required_is_per_policy() -> None:
    a, b = _two_policies()
    b = policy(
        "b-ledger",
        match={"resources": [DEPLOY_RULE], "namespaces": ["ledger"]},
        approval={"required": 2, "approverGroups": ["db-approvers"]},
    )
    snap = snapshot(
        policies=[a, b],
        windows=[window(under=("a-payments", "b-ledger"), **_BOTH)],
        namespaces={"payments": {}, "ledger": {}},
    )
    assert run(request(namespace="payments"), snap).reason is decide.Reason.WINDOW
    assert "1 of 2 approvals" in run(request(namespace="ledger"), snap).message


def test_break_glass_admits_only_under_the_policies_the_window_names() -> None:
    a, b = _two_policies(breakGlass={"groups": ["dba-oncall"], "maxDuration": "4h"})
    w = window(
        "break-glass",
        approved_by=(),
        emergency={"reason": "INC-77", "policies": ["a-payments"]},
        schedule={"start": "2026-12-01T13:00:00Z", "end": "2026-12-01T15:00:00Z"},
        **_BOTH,
    )
    snap = snapshot(policies=[a, b], windows=[w], namespaces={"payments": {}, "ledger": {}})
    assert run(request(namespace="payments"), snap).reason is decide.Reason.EMERGENCY
    d = run(request(namespace="ledger"), snap)
    assert (d.allowed, d.policy) == (False, "b-ledger")


# -- scope cannot be escaped sideways --------------------------------------------------------

_SELECTED = {"matchLabels": {"changegate.io/controlled": "true"}}


def _selector_policy() -> crds.ChangePolicy:
    return policy(match={"resources": [DEPLOY_RULE], "namespaceSelector": _SELECTED})


def _ns_request(
    operation: str, *, old: dict[str, str], new: dict[str, str] | None
) -> decide.Request:
    return request(
        api_group="",
        resource="namespaces",
        kind="Namespace",
        namespace="payments",
        name="payments",
        operation=operation,
        old_object={"metadata": {"name": "payments", "labels": old}},
        object=None if new is None else {"metadata": {"name": "payments", "labels": new}},
    )


CONTROLLED_LABELS = {"changegate.io/controlled": "true", "team": "pay"}


@pytest.mark.parametrize(
    ("operation", "old", "new"),
    [
        pytest.param("UPDATE", CONTROLLED_LABELS, {"team": "pay"}, id="label-removed"),
        pytest.param("UPDATE", {"team": "pay"}, CONTROLLED_LABELS, id="label-added"),
        pytest.param("DELETE", CONTROLLED_LABELS, None, id="namespace-deleted"),
    ],
)
def test_a_change_that_moves_a_namespace_across_a_policy_scope_is_controlled_by_it(
    operation: str, old: dict[str, str], new: dict[str, str] | None
) -> None:
    snap = snapshot(policies=[_selector_policy()], namespaces={"payments": old})
    d = run(_ns_request(operation, old=old, new=new), snap)
    assert (d.allowed, d.policy, d.reason) == (False, "payments-prod", decide.Reason.NO_WINDOW)
    assert "namespaces payments" in d.message


def test_a_namespace_change_that_keeps_the_scope_is_not_controlled() -> None:
    labels = {**CONTROLLED_LABELS, "cost-center": "1"}
    snap = snapshot(policies=[_selector_policy()], namespaces={"payments": CONTROLLED_LABELS})
    d = run(_ns_request("UPDATE", old=CONTROLLED_LABELS, new=labels), snap)
    assert d.reason is decide.Reason.NOT_CONTROLLED


def test_deleting_a_namespace_a_policy_lists_is_controlled() -> None:
    d = run(_ns_request("DELETE", old={}, new=None))
    assert (d.allowed, d.reason) == (False, decide.Reason.NO_WINDOW)


def test_a_window_for_the_namespace_object_admits_the_relabel() -> None:
    rule = {"apiGroups": [""], "resources": ["namespaces"], "operations": ["UPDATE"]}
    w = window(targets=[{"namespaces": ["payments"], "resources": [rule]}])
    snap = snapshot(policies=[_selector_policy()], windows=[w], namespaces={"payments": {}})
    d = run(_ns_request("UPDATE", old=CONTROLLED_LABELS, new={}), snap)
    assert (d.allowed, d.reason) == (True, decide.Reason.WINDOW)


def test_a_window_for_a_namespace_relabel_is_approved_under_the_policies_it_concerns() -> None:
    rule = {"apiGroups": [""], "resources": ["namespaces"], "operations": ["UPDATE"]}
    w, _ = window(targets=[{"namespaces": ["elsewhere"], "resources": [rule]}])
    listed = policy("listed")  # lists payments only: "elsewhere" is none of its business
    selected = policy(
        "selected", match={"resources": [DEPLOY_RULE], "namespaceSelector": _SELECTED}
    )
    snap = snapshot(policies=[listed, selected], windows=[])
    assert [p.name for p in snap.policies_for_window(w)] == ["selected"]


def test_a_request_in_a_namespace_the_index_has_not_seen_is_never_not_controlled() -> None:
    snap = snapshot(policies=[_selector_policy()], windows=[], namespaces={})
    d = run(snap=snap)
    assert (d.allowed, d.reason) == (False, decide.Reason.UNKNOWN_NAMESPACE)
    assert "retry" in d.message
    # With the labels read from the API server, it is decided as usual.
    labelled = decide.decide(request(), snapshot=snap, now=NOW, namespace_labels=CONTROLLED_LABELS)
    assert labelled.reason is decide.Reason.NO_WINDOW
    unlabelled = decide.decide(request(), snapshot=snap, now=NOW, namespace_labels={})
    assert unlabelled.reason is decide.Reason.NOT_CONTROLLED


def test_an_unseen_namespace_needs_no_lookup_when_no_policy_selects_by_label() -> None:
    assert run(snap=snapshot(namespaces={})).reason is decide.Reason.WINDOW


def _selector_window(*, signed: list[str] | None) -> tuple[crds.ChangeWindow, dict[str, Any]]:
    raw = window_spec(targets=[{"namespaceSelector": _SELECTED, "resources": [DEPLOY_RULE]}])
    entry: dict[str, Any] = {
        "approver": "bob@example.com",
        "specHash": approvals.spec_hash(raw),
        "policies": ["payments-prod"],
    }
    if signed is not None:
        entry["namespaces"] = signed
    raw = {**raw, "approvals": [entry]}
    return crds.ChangeWindow.model_validate({"metadata": {"name": "w1"}, "spec": raw}), raw


def test_an_approval_never_covers_a_namespace_a_selector_picked_up_after_signing() -> None:
    snap = snapshot(
        policies=[policy(match={"resources": [DEPLOY_RULE]})],
        windows=[_selector_window(signed=["payments"])],
        namespaces={"payments": CONTROLLED_LABELS, "ledger": CONTROLLED_LABELS},
    )
    assert run(request(namespace="payments"), snap).reason is decide.Reason.WINDOW
    d = run(request(namespace="ledger"), snap)
    assert (d.allowed, d.reason) == (False, decide.Reason.NOT_APPROVED)
    assert "no approval covers ledger" in d.message
    assert "approve w1" in d.message


def test_a_selector_window_approval_without_recorded_namespaces_covers_none() -> None:
    snap = snapshot(
        policies=[policy(match={"resources": [DEPLOY_RULE]})],
        windows=[_selector_window(signed=None)],
        namespaces={"payments": CONTROLLED_LABELS},
    )
    assert run(snap=snap).reason is decide.Reason.NOT_APPROVED


# -- /status can change metadata: such a write is an update ---------------------------------


@pytest.mark.parametrize(
    ("meta_change", "reason"),
    [
        pytest.param({}, decide.Reason.STATUS_SUBRESOURCE, id="status-only"),
        pytest.param({"labels": {"app": "evil"}}, decide.Reason.NO_WINDOW, id="labels"),
        pytest.param({"annotations": {"lb": "public"}}, decide.Reason.NO_WINDOW, id="annotations"),
        pytest.param({"finalizers": ["x/y"]}, decide.Reason.NO_WINDOW, id="finalizers"),
    ],
)
def test_a_status_write_that_changes_metadata_is_decided_as_an_update(
    meta_change: dict[str, Any], reason: decide.Reason
) -> None:
    old = {"metadata": {"name": "web", "labels": {"app": "web"}}, "status": {"replicas": 1}}
    new = copy.deepcopy(old)
    new["status"]["replicas"] = 2
    new["metadata"].update(meta_change)
    req = request(subresource="status", object=new, old_object=old)
    assert run(req, snapshot(windows=[])).reason is reason
    # A window for updating the object admits its metadata change through /status too.
    assert run(req).allowed


def test_relabelling_a_namespace_through_status_or_finalize_is_a_scope_change() -> None:
    snap = snapshot(policies=[_selector_policy()], namespaces={"payments": CONTROLLED_LABELS})
    for sub in ("status", "finalize"):
        req = _ns_request("UPDATE", old=CONTROLLED_LABELS, new={"team": "pay"})
        d = run(_with_subresource(req, sub), snap)
        assert (d.allowed, d.reason) == (False, decide.Reason.NO_WINDOW), sub


def _with_subresource(req: decide.Request, sub: str) -> decide.Request:
    return msgspec.structs.replace(req, subresource=sub)


# -- paths with the same effect --------------------------------------------------------------

POD_RULE = {"apiGroups": [""], "resources": ["pods"], "operations": ["UPDATE", "DELETE"]}


@pytest.mark.parametrize(
    ("resource", "subresource", "operation", "rule"),
    [
        pytest.param("pods", "eviction", "CREATE", POD_RULE, id="eviction-is-a-delete"),
        pytest.param("pods", "ephemeralcontainers", "UPDATE", POD_RULE, id="debug-is-an-update"),
        pytest.param("pods", "resize", "UPDATE", POD_RULE, id="resize-is-an-update"),
        pytest.param("deployments", "scale", "UPDATE", DEPLOY_RULE, id="scale-is-an-update"),
    ],
)
def test_a_path_with_the_same_effect_is_controlled_with_the_action(
    resource: str, subresource: str, operation: str, rule: dict[str, Any]
) -> None:
    group = "apps" if resource == "deployments" else ""
    p = policy(match={"resources": [rule], "namespaces": ["payments"]})
    req = request(api_group=group, resource=resource, subresource=subresource, operation=operation)
    assert run(req, snapshot(policies=[p], windows=[])).reason is decide.Reason.NO_WINDOW
    # ... and a window for the action admits it too.
    w = window(targets=[{"namespaces": ["payments"], "resources": [rule]}])
    assert run(req, snapshot(policies=[p], windows=[w])).reason is decide.Reason.WINDOW


# -- windowLimits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "spec", "says"),
    [
        pytest.param(
            {"maxDuration": "1h"},
            {},
            "stays open 2h at a stretch, more than maxDuration 1h",
            id="too-long",
        ),
        pytest.param(
            {"allowWildcards": False},
            {
                "targets": [
                    {
                        "namespaces": ["payments"],
                        "resources": [
                            {"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}
                        ],
                    }
                ]
            },
            'apiGroups has "*"',
            id="wildcards",
        ),
        pytest.param(
            {"maxNamespaces": 1},
            {"targets": [{"namespaces": ["payments", "other"], "resources": [DEPLOY_RULE]}]},
            "covers 2 namespaces, more than maxNamespaces 1",
            id="too-broad",
        ),
    ],
)
def test_a_window_beyond_the_policy_limits_admits_nothing_under_it(
    limits: dict[str, Any], spec: dict[str, Any], says: str
) -> None:
    p = policy(windowLimits=limits)
    d = run(snap=snapshot(policies=[p], windows=[window(**spec)]))
    assert (d.allowed, d.reason) == (False, decide.Reason.NOT_APPROVED)
    assert says in d.message and "windowLimits" in d.message


# -- bookkeeping, status, dry-run -----------------------------------------------------------------


def _obj(**meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "labels": {"app": "web"}, **meta}, "spec": {"replicas": 2}}


@pytest.mark.parametrize(
    ("new_meta", "no_op"),
    [
        ({"resourceVersion": "2", "generation": 5, "managedFields": [{"manager": "argocd"}]}, True),
        ({"labels": {"app": "web", "x": "y"}}, False),
        ({"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}}, False),
    ],
)
def test_update_of_only_bookkeeping_metadata_is_allowed(
    new_meta: dict[str, Any], no_op: bool
) -> None:
    old = _obj(resourceVersion="1", generation=4)
    new = copy.deepcopy(old)
    new["metadata"].update(new_meta)
    d = run(request(object=new, old_object=old), snapshot(windows=[]))
    assert (d.reason is decide.Reason.NO_OP) is no_op
    assert d.allowed is no_op


_NO_METADATA: dict[str, Any] = {"spec": {"replicas": 2}}


@pytest.mark.parametrize(
    ("new", "old", "no_op"),
    [
        (_obj(resourceVersion="2"), _obj(resourceVersion="1"), True),
        (_obj(), {**_obj(), "status": {"ready": 1}}, False),
        ({**_obj(), "spec": {"replicas": 3}}, _obj(), False),
        (_obj(generation=2), {**_obj(), "metadata": {"generation": 1}}, False),
        (_NO_METADATA, dict(_NO_METADATA), True),
        (_NO_METADATA, _obj(), False),
        ({**_NO_METADATA, "metadata": "odd"}, {**_NO_METADATA, "metadata": "odd"}, True),
        ({**_NO_METADATA, "metadata": "odd"}, {**_NO_METADATA, "metadata": {}}, False),
        ({**_NO_METADATA, "metadata": {"generation": 1}}, {**_NO_METADATA, "metadata": {}}, True),
        (_obj(), None, False),
    ],
    ids=[
        "resource-version-only",
        "extra-top-level-field",
        "spec-changed",
        "labels-dropped",
        "no-metadata-either-side",
        "metadata-on-one-side",
        "non-object-metadata-equal",
        "non-object-metadata-vs-object",
        "bookkeeping-only-metadata-vs-empty",
        "no-old-object",
    ],
)
def test_no_op_means_equal_once_bookkeeping_metadata_is_ignored(
    new: dict[str, Any], old: dict[str, Any] | None, no_op: bool
) -> None:
    assert decide.is_bookkeeping_update(new, old) is no_op
    assert decide.is_bookkeeping_update(old, new) is no_op


def test_status_subresource_is_never_gated() -> None:
    rule = {"apiGroups": ["apps"], "resources": ["*/*"], "operations": ["*"]}
    p = policy(match={"resources": [rule]})
    d = run(request(subresource="status"), snapshot(policies=[p], windows=[]))
    assert (d.allowed, d.reason) == (True, decide.Reason.STATUS_SUBRESOURCE)


def test_dry_run_is_decided_the_same_way() -> None:
    for snap in (snapshot(), snapshot(windows=[])):
        real, dry = run(request(), snap), run(request(dry_run=True), snap)
        assert (real.allowed, real.reason, real.message) == (dry.allowed, dry.reason, dry.message)
        assert dry.audit_annotations["dryRun"] == "true"


# -- the response -------------------------------------------------------------------------------


def test_every_decision_carries_audit_annotations() -> None:
    keys = {"decision", "reason", "policy", "window", "ticket", "approvers", "identity"}
    allowed = run()
    assert keys <= set(allowed.audit_annotations)
    assert allowed.audit_annotations["window"] == "w1"
    assert allowed.audit_annotations["approvers"] == "bob@example.com"
    assert allowed.audit_annotations["identity"] == "payments-oncall"
    denied = run(snap=snapshot(windows=[]))
    assert denied.audit_annotations["decision"] == "deny"
    assert denied.audit_annotations["reason"] == "NoWindow"
    assert keys <= set(run(request(namespace="other")).audit_annotations)


def test_decide_fails_closed_when_something_breaks() -> None:
    snap = snapshot()

    def broken() -> Any:
        raise RuntimeError("cron exploded")

    snap.compiled_windows["w1"].timeline._factory = broken
    d = run(snap=snap)
    assert (d.allowed, d.reason) == (False, decide.Reason.INVALID)
    assert "cron exploded" in d.message


# -- the caches behind decide() against the timelines they cache -------------------------------

_CRONS = ["0 22 * * 2,4", "*/30 9-17 * * 1-5", "0 0 1 * *"]


@settings(max_examples=40, deadline=None)
@given(
    cron=st.sampled_from(_CRONS),
    minutes=st.lists(st.integers(min_value=0, max_value=60 * 24 * 40), min_size=1, max_size=30),
)
def test_cached_timeline_answers_exactly_like_the_timeline(cron: str, minutes: list[int]) -> None:
    schedule = crds.Schedule(cron=cron, duration="90m", time_zone="Asia/Seoul")
    cached = index.CachedTimeline(lambda: schedules.from_schedule(schedule))
    oracle = schedules.from_schedule(schedule)
    base = dt.datetime(2026, 11, 1, tzinfo=UTC)
    for m in minutes:  # any order: the cache must not assume time only moves forward
        t = base + dt.timedelta(minutes=m)
        assert cached.interval_at(t) == oracle.interval_at(t)
        assert cached.next_interval(t) == oracle.next_interval(t)


# -- every denial says what to do next -----------------------------------------------------------

_FREEZE = {
    "name": "year-end-freeze",
    "schedule": {"start": "2026-12-01T00:00:00+09:00", "end": "2026-12-03T00:00:00+09:00"},
}
_OFFICE_HOURS = {
    "timeZone": "Asia/Seoul",
    "weekly": [{"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "09:00", "end": "18:00"}],
}


@pytest.mark.parametrize(
    ("reason", "build", "next_step"),
    [
        (decide.Reason.NO_WINDOW, lambda: run(snap=snapshot(windows=[])), "Next: request"),
        (
            decide.Reason.NOT_APPROVED,
            lambda: run(snap=snapshot(windows=[window(approved_by=())])),
            "Next: ask a member of change-approvers to run `kubectl changegate approve w1`",
        ),
        (
            decide.Reason.NOT_APPROVED,
            lambda: run(snap=snapshot(policies=[policy(ticketPattern="^INC-[0-9]+$")])),
            "Next: request a window whose ticket matches '^INC-[0-9]+$'",
        ),
        (
            decide.Reason.NOT_DESIGNATED,
            lambda: run(request(user="mallory@example.com")),
            "ask the platform team to add you to payments-oncall",
        ),
        (
            decide.Reason.IDENTITY_EXPIRED,
            lambda: run(snap=snapshot(identities=[identity(suspended=True)])),
            "Next: ask the platform team to renew or unsuspend AuthorizedIdentity payments-oncall",
        ),
        (
            decide.Reason.OUTSIDE_WORK_HOURS,
            lambda: run(snap=snapshot(identities=[identity(workHours=_OFFICE_HOURS)])),
            "Next: make the change within those hours",
        ),
        (
            decide.Reason.BLACKOUT,
            lambda: run(snap=snapshot(policies=[policy(blackouts=[_FREEZE])])),
            "Next: wait for the blackout to end",
        ),
    ],
)
def test_every_denial_names_the_next_step(
    reason: decide.Reason, build: Any, next_step: str
) -> None:
    d = build()
    assert (d.allowed, d.reason) == (False, reason)
    assert next_step in d.message


def test_a_window_that_grows_past_max_namespaces_by_a_relabel_stops_admitting() -> None:
    """Compiled windows outlive snapshots; their limit answers must not."""
    selected = {"matchLabels": {"team": "pay"}}
    raw = window_spec(targets=[{"namespaceSelector": selected, "resources": [DEPLOY_RULE]}])
    entry = {
        "approver": "bob@example.com",
        "specHash": approvals.spec_hash(raw),
        "policies": ["payments-prod"],
        "namespaces": ["payments"],
    }
    raw = {**raw, "approvals": [entry]}
    w = crds.ChangeWindow.model_validate({"metadata": {"name": "w1"}, "spec": raw})
    p = policy(windowLimits={"maxNamespaces": 1})
    first = snapshot(policies=[p], windows=[(w, raw)], namespaces={"payments": {"team": "pay"}})
    assert run(snap=first).reason is decide.Reason.WINDOW
    relabelled = index.Snapshot.build(
        policies=[p],
        identities=[identity()],
        windows=[w],
        raw_window_specs={"w1": raw},
        namespaces={"payments": {"team": "pay"}, "other": {"team": "pay"}},
        previous=first,
    )
    assert relabelled.compiled_windows["w1"] is first.compiled_windows["w1"]
    d = run(snap=relabelled)
    assert (d.reason, "more than maxNamespaces 1" in d.message) == (
        decide.Reason.NOT_APPROVED,
        True,
    )
