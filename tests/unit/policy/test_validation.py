"""Admission of changegate's own CRs: SPEC.md "Approvals and break-glass", and bad input.

Every case goes through ``decide`` (as the webhook does), so these also pin that bad input is
a deny with reason Invalid and field errors — never an exception.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from controller.model import crds
from controller.policy import approvals, decide, index

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 13, 30, tzinfo=UTC)
RULE = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
PLURAL = {
    "ChangeWindow": "changewindows",
    "ChangePolicy": "changepolicies",
    "AuthorizedIdentity": "authorizedidentities",
}


def policy(**spec: Any) -> crds.ChangePolicy:
    body: dict[str, Any] = {
        "match": {"resources": [RULE], "namespaces": ["payments"]},
        "approval": {"required": 1, "approverGroups": ["change-approvers"]},
        "ticketPattern": "^CHG-[0-9]+$",
        "breakGlass": {"groups": ["sre-oncall"], "maxDuration": "4h"},
    }
    body.update(spec)
    return crds.ChangePolicy.model_validate({"metadata": {"name": "payments-prod"}, "spec": body})


IDENTITY = crds.AuthorizedIdentity.model_validate(
    {
        "metadata": {"name": "payments-oncall"},
        "spec": {"subjects": [{"kind": "User", "name": "alice"}]},
    }
)
SNAP = index.Snapshot.build(
    policies=[policy()], identities=[IDENTITY], windows=[], namespaces={"payments": {}}
)


def window_body(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": "CHG-1234",
        "requester": "alice",
        "identities": ["payments-oncall"],
        "targets": [{"namespaces": ["payments"], "resources": [RULE]}],
        "schedule": {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
    }
    body.update(spec)
    return {
        "apiVersion": crds.API_VERSION,
        "kind": "ChangeWindow",
        "metadata": {"name": "w1"},
        "spec": body,
    }


def admit(
    obj: dict[str, Any] | None,
    *,
    kind: str = "ChangeWindow",
    operation: str = "CREATE",
    user: str = "alice",
    groups: tuple[str, ...] = (),
    old: dict[str, Any] | None = None,
    snap: index.Snapshot = SNAP,
) -> decide.Decision:
    req = decide.Request(
        uid="u",
        user=user,
        groups=groups,
        operation=operation,
        api_group=crds.GROUP,
        api_version=crds.VERSION,
        resource=PLURAL[kind],
        subresource="",
        kind=kind,
        namespace="",
        name="w1",
        dry_run=False,
        object=obj,
        old_object=old,
    )
    return decide.decide(req, snapshot=snap, now=NOW)


def fields(d: decide.Decision) -> list[str]:
    return [path for path, _ in d.field_errors]


def test_valid_window_create_is_admitted() -> None:
    d = admit(window_body())
    assert (d.allowed, d.reason, d.field_errors) == (True, decide.Reason.VALID, ())


def test_create_requester_must_be_the_authenticated_user() -> None:
    d = admit(window_body(), user="mallory")
    assert (d.allowed, d.reason) == (False, decide.Reason.INVALID)
    assert fields(d) == ["spec.requester"]
    assert "'mallory'" in d.message


def test_create_must_carry_no_approvals() -> None:
    h = approvals.spec_hash(window_body()["spec"])
    d = admit(window_body(approvals=[{"approver": "bob", "specHash": h}]))
    assert fields(d) == ["spec.approvals"]


def test_create_ticket_must_match_every_covering_policy_pattern() -> None:
    d = admit(window_body(ticket="JIRA-1"))
    assert fields(d) == ["spec.ticket"]
    assert "payments-prod" in d.field_errors[0][1]


def test_ticket_pattern_of_a_policy_not_covering_the_targets_does_not_apply() -> None:
    other = [{"namespaces": ["elsewhere"], "resources": [RULE]}]
    assert admit(window_body(ticket="JIRA-1", targets=other)).allowed


def test_naming_an_identity_that_does_not_exist_yet_is_a_warning() -> None:
    d = admit(window_body(identities=["future-team"]))
    assert d.allowed and any("future-team" in w for w in d.warnings)


@pytest.mark.parametrize(
    ("kind", "body", "path"),
    [
        (
            "ChangeWindow",
            window_body(schedule={"cron": "61 * * * *", "duration": "1h", "timeZone": "UTC"}),
            "spec.schedule.cron",
        ),
        (
            "ChangeWindow",
            window_body(
                schedule={"cron": "0 22 * * 2", "duration": "1h", "timeZone": "Mars/Olympus"}
            ),
            "spec.schedule.timeZone",
        ),
        (
            "ChangeWindow",
            window_body(schedule={"cron": "0 22 * * 2", "duration": "0h", "timeZone": "UTC"}),
            "spec.schedule.duration",
        ),
        (
            "ChangeWindow",
            window_body(schedule={"cron": "0 22 * * 2", "duration": "-1h", "timeZone": "UTC"}),
            "spec.schedule.duration",
        ),
        (
            "ChangeWindow",
            window_body(schedule={"start": "yesterday", "end": "2026-12-02T00:00:00Z"}),
            "spec.schedule.start",
        ),
        (
            "ChangeWindow",
            window_body(schedule={"start": "2026-12-02T00:00:00", "end": "2026-12-03T00:00:00Z"}),
            "spec.schedule.start",
        ),
        (
            "ChangeWindow",
            window_body(schedule={"start": "2026-12-02T00:00:00Z", "end": "2026-12-01T00:00:00Z"}),
            "spec.schedule",
        ),
        ("ChangeWindow", window_body(targets=[]), "spec.targets"),
        ("ChangeWindow", window_body(identities=[]), "spec.identities"),
        (
            "AuthorizedIdentity",
            {"metadata": {"name": "i"}, "spec": {"subjects": []}},
            "spec.subjects",
        ),
        (
            "AuthorizedIdentity",
            {
                "metadata": {"name": "i"},
                "spec": {
                    "subjects": [{"kind": "User", "name": "a"}],
                    "workHours": {
                        "timeZone": "UTC",
                        "weekly": [{"days": ["Funday"], "start": "09:00", "end": "18:00"}],
                    },
                },
            },
            "spec.workHours.weekly[0].days[0]",
        ),
        (
            "AuthorizedIdentity",
            {
                "metadata": {"name": "i"},
                "spec": {"subjects": [{"kind": "User", "name": "a"}], "validUntil": "soon"},
            },
            "spec.validUntil",
        ),
        (
            "ChangePolicy",
            {"metadata": {"name": "p"}, "spec": {"match": {"resources": []}}},
            "spec.match.resources",
        ),
        (
            "ChangePolicy",
            {
                "metadata": {"name": "p"},
                "spec": {
                    "match": {"resources": [RULE]},
                    "blackouts": [
                        {"name": "b", "holidays": {"country": "KR", "timeZone": "Nowhere/City"}}
                    ],
                },
            },
            "spec.blackouts[0].holidays.timeZone",
        ),
        (
            "ChangePolicy",
            {
                "metadata": {"name": "p"},
                "spec": {"match": {"resources": [RULE]}, "ticketPattern": "(["},
            },
            "spec.ticketPattern",
        ),
        (
            "ChangeWindow",
            window_body(schedule={"cron": "R 22 * * 2", "duration": "1h", "timeZone": "UTC"}),
            "spec.schedule.cron",
        ),
        (
            "ChangePolicy",
            {
                "metadata": {"name": "p"},
                "spec": {
                    "match": {"resources": [RULE]},
                    "blackouts": [{"name": "b", "holidays": {"country": "XX", "timeZone": "UTC"}}],
                },
            },
            "spec.blackouts[0].holidays.country",
        ),
        (
            "ChangePolicy",
            {
                "metadata": {"name": "p"},
                "spec": {
                    "match": {"resources": [RULE]},
                    "blackouts": [
                        {
                            "name": "b",
                            "holidays": {"country": "US", "subdivision": "ZZ", "timeZone": "UTC"},
                        }
                    ],
                },
            },
            "spec.blackouts[0].holidays",
        ),
    ],
)
def test_bad_input_yields_field_named_errors(kind: str, body: dict[str, Any], path: str) -> None:
    d = admit(body, kind=kind)
    assert (d.allowed, d.reason) == (False, decide.Reason.INVALID)
    assert path in fields(d)
    assert path in d.message


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE"])
def test_missing_object_is_invalid_not_an_exception(operation: str) -> None:
    d = admit(None, operation=operation)
    assert (d.allowed, d.reason) == (False, decide.Reason.INVALID)


def test_delete_of_own_resources_is_allowed() -> None:
    assert admit(None, operation="DELETE").allowed


# -- approvals ----------------------------------------------------------------------------------


def _approve(
    body: dict[str, Any],
    approver: str,
    spec_hash: str | None = None,
    *,
    under: tuple[str, ...] = ("payments-prod",),
    **extra: Any,
) -> dict[str, Any]:
    new = copy.deepcopy(body)
    h = spec_hash or approvals.spec_hash(new["spec"])
    entry = {
        "approver": approver,
        "specHash": h,
        "approvedAt": "2026-12-01T13:29:00Z",
        "policies": list(under),
        **extra,
    }
    new["spec"].setdefault("approvals", []).append(entry)
    return new


APPROVER = ("change-approvers",)


def test_approver_may_append_their_own_approval() -> None:
    old = window_body()
    d = admit(_approve(old, "bob"), operation="UPDATE", user="bob", groups=APPROVER, old=old)
    assert (d.allowed, d.field_errors) == (True, ())


@pytest.mark.parametrize(
    ("approver", "user", "groups", "path"),
    [
        pytest.param(
            "bob", "carol", APPROVER, "spec.approvals[0].approver", id="on-behalf-of-someone-else"
        ),
        pytest.param(
            "alice", "alice", APPROVER, "spec.approvals[0].approver", id="requester-self-approval"
        ),
        pytest.param(
            "bob", "bob", ("developers",), "spec.approvals[0].approver", id="not-in-approver-group"
        ),
    ],
)
def test_approval_must_be_by_an_approver_other_than_the_requester(
    approver: str, user: str, groups: tuple[str, ...], path: str
) -> None:
    old = window_body()
    d = admit(_approve(old, approver), operation="UPDATE", user=user, groups=groups, old=old)
    assert (d.allowed, fields(d)[0]) == (False, path)


def test_approval_must_sign_the_current_spec_hash() -> None:
    old = window_body()
    d = admit(
        _approve(old, "bob", "sha256:" + "0" * 64),
        operation="UPDATE",
        user="bob",
        groups=APPROVER,
        old=old,
    )
    assert fields(d) == ["spec.approvals[0].specHash"]


def test_existing_approvals_cannot_be_altered_but_may_be_removed() -> None:
    old = _approve(window_body(), "bob")
    altered = copy.deepcopy(old)
    altered["spec"]["approvals"][0]["approvedAt"] = "2020-01-01T00:00:00Z"
    d = admit(altered, operation="UPDATE", user="carol", groups=APPROVER, old=old)
    assert fields(d) == ["spec.approvals[0]"]
    removed = copy.deepcopy(old)
    removed["spec"]["approvals"] = []
    assert admit(removed, operation="UPDATE", user="alice", old=old).allowed


def test_requester_is_immutable() -> None:
    old = window_body()
    new = window_body(requester="mallory")
    assert "spec.requester" in fields(admit(new, operation="UPDATE", user="mallory", old=old))


def test_spec_change_is_allowed_and_leaves_old_approvals_stale() -> None:
    old = _approve(window_body(), "bob")
    new = copy.deepcopy(old)
    new["spec"]["description"] = "changed"
    assert admit(new, operation="UPDATE", user="alice", old=old).allowed
    stale = crds.ChangeWindow.model_validate(new)
    state = approvals.approval_state(
        stale, current_hash=approvals.spec_hash(new["spec"]), policy=policy()
    )
    assert (state.approved, state.stale) == (False, ("bob",))


def test_update_cannot_turn_a_window_into_an_emergency_without_break_glass() -> None:
    old = window_body()
    new = window_body(
        emergency={"reason": "INC-1"},
        schedule={"start": "2026-12-01T13:30:00Z", "end": "2026-12-01T14:30:00Z"},
    )
    assert "spec.emergency" in fields(admit(new, operation="UPDATE", user="alice", old=old))


# -- break-glass --------------------------------------------------------------------------------


def _emergency(
    start: str = "2026-12-01T13:30:00Z", end: str = "2026-12-01T15:30:00Z", **kw: Any
) -> dict[str, Any]:
    emergency = {"reason": "INC-77 payments down", "policies": ["payments-prod"]}
    return window_body(emergency=emergency, schedule={"start": start, "end": end}, **kw)


SRE = ("sre-oncall",)


def test_break_glass_member_may_open_an_emergency_window_now() -> None:
    d = admit(_emergency(), groups=SRE)
    assert (d.allowed, d.field_errors) == (True, ())


def test_emergency_window_carries_an_incident_id_not_a_change_ticket() -> None:
    # The policy's ticketPattern (^CHG-[0-9]+$) describes change tickets; break-glass is for
    # incidents, which must not wait for a change ticket to be raised.
    d = admit(_emergency(ticket="INC-77"), groups=SRE)
    assert (d.allowed, d.field_errors) == (True, ())
    regular = admit(window_body(ticket="INC-77"))
    assert "spec.ticket" in fields(regular)


@pytest.mark.parametrize(
    ("body", "groups", "path"),
    [
        pytest.param(_emergency(), (), "spec.emergency", id="not-in-break-glass-group"),
        pytest.param(
            _emergency(end="2026-12-01T18:00:00Z"),
            SRE,
            "spec.schedule.end",
            id="longer-than-maxDuration",
        ),
        pytest.param(
            _emergency(start="2026-12-01T10:00:00Z"),
            SRE,
            "spec.schedule.start",
            id="not-starting-now",
        ),
        pytest.param(
            window_body(emergency={"reason": "   "}),
            SRE,
            "spec.emergency.reason",
            id="blank-reason",
        ),
        pytest.param(
            window_body(emergency={"reason": ""}), SRE, "spec.emergency.reason", id="empty-reason"
        ),
        pytest.param(
            window_body(
                emergency={"reason": "x"},
                schedule={"cron": "0 * * * *", "duration": "1h", "timeZone": "UTC"},
            ),
            SRE,
            "spec.schedule",
            id="recurring",
        ),
    ],
)
def test_emergency_window_rules(body: dict[str, Any], groups: tuple[str, ...], path: str) -> None:
    d = admit(body, groups=groups)
    assert (d.allowed, d.reason) == (False, decide.Reason.INVALID)
    assert path in fields(d)


def test_emergency_needs_a_covering_policy_with_break_glass() -> None:
    snap = index.Snapshot.build(
        policies=[policy(breakGlass=None)], identities=[], windows=[], namespaces={}
    )
    d = admit(_emergency(), groups=SRE, snap=snap)
    assert "spec.emergency" in fields(d)


# -- the plan is the requester's -----------------------------------------------------------------


def _widened(body: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(body)
    new["spec"]["identities"] = ["bobs-team"]
    new["spec"]["targets"][0]["resources"][0]["resources"] = ["deployments", "configmaps"]
    return new


@pytest.mark.parametrize(
    "who",
    [
        pytest.param(("bob", APPROVER), id="an-approver"),
        pytest.param(("root", ("system:masters",)), id="a-cluster-admin"),
    ],
)
def test_only_the_requester_may_change_the_plan(who: tuple[str, tuple[str, ...]]) -> None:
    old = window_body()
    d = admit(_widened(old), operation="UPDATE", user=who[0], groups=who[1], old=old)
    assert (d.allowed, fields(d)) == (False, ["spec"])
    assert "only the requester alice may change" in d.message


def test_an_approver_cannot_rewrite_the_plan_and_approve_it_in_one_update() -> None:
    old = window_body()
    new = _approve(_widened(old), "bob")
    d = admit(new, operation="UPDATE", user="bob", groups=APPROVER, old=old)
    assert (d.allowed, fields(d)) == (False, ["spec"])


def test_the_requester_may_change_the_plan_and_others_may_remove_approvals() -> None:
    old = _approve(window_body(), "bob")
    assert admit(_widened(old), operation="UPDATE", user="alice", old=old).allowed
    removed = copy.deepcopy(old)
    removed["spec"]["approvals"] = []
    assert admit(removed, operation="UPDATE", user="carol", old=old).allowed


def test_an_approver_cannot_alter_his_own_approval() -> None:
    old = _approve(window_body(), "bob")
    altered = copy.deepcopy(old)
    altered["spec"]["approvals"][0]["approvedAt"] = "2026-12-01T13:30:00Z"
    d = admit(altered, operation="UPDATE", user="bob", groups=APPROVER, old=old)
    assert (d.allowed, fields(d)) == (False, ["spec.approvals[0]"])
    assert "cannot be altered" in d.message


def test_new_approvals_come_after_the_existing_ones() -> None:
    old = _approve(window_body(), "carol")
    new = _approve(old, "bob")
    new["spec"]["approvals"].reverse()
    d = admit(new, operation="UPDATE", user="bob", groups=APPROVER, old=old)
    assert d.allowed is False and "spec.approvals[1]" in fields(d)


def test_an_approval_is_dated_when_it_is_given() -> None:
    old = window_body()
    new = _approve(old, "bob")
    new["spec"]["approvals"][0]["approvedAt"] = "2026-11-01T00:00:00Z"
    d = admit(new, operation="UPDATE", user="bob", groups=APPROVER, old=old)
    assert fields(d) == ["spec.approvals[0].approvedAt"]


# -- what an approval qualifies for is recorded, and verified when appended ---------------------


def test_an_approval_must_record_the_policies_it_counts_under() -> None:
    old = window_body()
    d = admit(
        _approve(old, "bob", under=()), operation="UPDATE", user="bob", groups=APPROVER, old=old
    )
    assert fields(d) == ["spec.approvals[0].policies"]
    assert "bob may approve under: payments-prod" in d.message


def _two_policy_snapshot() -> index.Snapshot:
    ledger = crds.ChangePolicy.model_validate(
        {
            "metadata": {"name": "ledger-prod"},
            "spec": {
                "match": {"resources": [RULE], "namespaces": ["ledger"]},
                "approval": {"required": 1, "approverGroups": ["db-approvers"]},
                "breakGlass": {"groups": ["dba-oncall"], "maxDuration": "4h"},
            },
        }
    )
    return index.Snapshot.build(
        policies=[policy(), ledger],
        identities=[IDENTITY],
        windows=[],
        namespaces={"payments": {}, "ledger": {}},
    )


BOTH = [{"namespaces": ["payments", "ledger"], "resources": [RULE]}]


def test_an_approver_cannot_record_a_policy_whose_approver_group_he_is_not_in() -> None:
    old = window_body(targets=BOTH)
    new = _approve(old, "bob", under=("payments-prod", "ledger-prod"))
    d = admit(
        new, operation="UPDATE", user="bob", groups=APPROVER, old=old, snap=_two_policy_snapshot()
    )
    assert fields(d) == ["spec.approvals[0].policies[1]"]
    assert "not in an approver group of policy ledger-prod (db-approvers)" in d.message
    ok = _approve(old, "bob", under=("payments-prod",))
    assert admit(
        ok, operation="UPDATE", user="bob", groups=APPROVER, old=old, snap=_two_policy_snapshot()
    ).allowed


def test_an_approval_cannot_name_a_policy_that_does_not_control_the_window() -> None:
    old = window_body()
    d = admit(
        _approve(old, "bob", under=("ledger-prod",)),
        operation="UPDATE",
        user="bob",
        groups=APPROVER,
        old=old,
    )
    assert fields(d) == ["spec.approvals[0].policies[0]"]


SELECTED = {"matchLabels": {"tier": "prod"}}


def _selector_snapshot() -> index.Snapshot:
    return index.Snapshot.build(
        policies=[policy(match={"resources": [RULE]})],
        identities=[IDENTITY],
        windows=[],
        namespaces={"payments": {"tier": "prod"}, "ledger": {"tier": "dev"}},
    )


def test_a_selector_window_approval_records_the_namespaces_it_saw() -> None:
    old = window_body(targets=[{"namespaceSelector": SELECTED, "resources": [RULE]}])
    snap = _selector_snapshot()
    d = admit(
        _approve(old, "bob"), operation="UPDATE", user="bob", groups=APPROVER, old=old, snap=snap
    )
    assert fields(d) == ["spec.approvals[0].namespaces"]
    assert "(payments)" in d.message
    ok = _approve(old, "bob", namespaces=["payments"])
    assert admit(ok, operation="UPDATE", user="bob", groups=APPROVER, old=old, snap=snap).allowed
    unseen = _approve(old, "bob", namespaces=["payments", "ledger"])
    d = admit(unseen, operation="UPDATE", user="bob", groups=APPROVER, old=old, snap=snap)
    assert "ledger not covered by this window now" in d.message


# -- break-glass holds per policy ---------------------------------------------------------------


def test_an_emergency_window_must_name_the_policies_whose_break_glass_it_uses() -> None:
    body = _emergency()
    body["spec"]["emergency"]["policies"] = []
    d = admit(body, groups=SRE)
    assert fields(d) == ["spec.emergency.policies"]
    assert "may use: payments-prod" in d.message


def test_break_glass_for_one_policy_does_not_extend_to_another() -> None:
    snap = _two_policy_snapshot()
    body = _emergency(targets=BOTH)
    body["spec"]["emergency"]["policies"] = ["payments-prod", "ledger-prod"]
    d = admit(body, groups=SRE, snap=snap)
    assert fields(d) == ["spec.emergency.policies[1]"]
    assert "not in the breakGlass groups of policy ledger-prod" in d.message
    # Naming only the policy she may break glass under is accepted, with a warning that the
    # other policy's resources still need an approved window.
    body["spec"]["emergency"]["policies"] = ["payments-prod"]
    d = admit(body, groups=SRE, snap=snap)
    assert d.allowed and any("not a break-glass window under ledger-prod" in w for w in d.warnings)


# -- windowLimits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "spec", "says"),
    [
        pytest.param(
            {"maxLifetime": "30d"},
            {"schedule": {"start": "2026-12-01T00:00:00Z", "end": "2126-12-01T00:00:00Z"}},
            "more than maxLifetime 30d",
            id="hundred-year-window",
        ),
        pytest.param(
            {"maxDuration": "8h"},
            {"schedule": {"cron": "* * * * *", "duration": "2h", "timeZone": "UTC"}},
            "open without end",
            id="always-open-cron",
        ),
        pytest.param(
            {"maxLifetime": "30d"},
            {"schedule": {"cron": "0 22 * * 2", "duration": "2h", "timeZone": "UTC"}},
            "needs notBefore and notAfter",
            id="recurring-forever",
        ),
        pytest.param(
            {"allowWildcards": False},
            {
                "targets": [
                    {
                        "namespaceSelector": {},
                        "resources": [
                            {"apiGroups": ["*"], "resources": ["*/*"], "operations": ["*"]}
                        ],
                    }
                ]
            },
            "namespaceSelector {} selects every namespace",
            id="everything-everywhere",
        ),
    ],
)
def test_a_window_beyond_the_policy_limits_is_refused(
    limits: dict[str, Any], spec: dict[str, Any], says: str
) -> None:
    snap = index.Snapshot.build(
        policies=[policy(match={"resources": [RULE]}, windowLimits=limits)],
        identities=[IDENTITY],
        windows=[],
        namespaces={"payments": {}},
    )
    d = admit(window_body(**spec), snap=snap)
    assert (d.allowed, set(fields(d))) == (False, {"spec"})
    assert says in d.message and "windowLimits of policy payments-prod" in d.message


def test_a_window_within_the_limits_is_admitted() -> None:
    limits = {
        "maxDuration": "8h",
        "maxLifetime": "30d",
        "maxNamespaces": 2,
        "allowWildcards": False,
    }
    snap = index.Snapshot.build(
        policies=[policy(windowLimits=limits)], identities=[IDENTITY], windows=[], namespaces={}
    )
    assert admit(window_body(), snap=snap).allowed


# -- a policy says which related paths it leaves open --------------------------------------------


def _policy_body(rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": crds.API_VERSION,
        "kind": "ChangePolicy",
        "metadata": {"name": "workloads"},
        "spec": {"match": {"resources": rules}},
    }


def test_a_policy_controlling_some_workloads_warns_about_the_others() -> None:
    d = admit(_policy_body([RULE]), kind="ChangePolicy")
    assert d.allowed
    text = " ".join(d.warnings)
    # deployments are only controlled for UPDATE: creating one is a side door too.
    assert "pods, deployments.apps, replicasets.apps" in text and "jobs.batch" in text
    assert "horizontalpodautoscalers" in text


def test_a_policy_controlling_exec_warns_about_attach_and_debug() -> None:
    rule = {"apiGroups": [""], "resources": ["pods/exec"], "operations": ["CONNECT"]}
    text = " ".join(admit(_policy_body([rule]), kind="ChangePolicy").warnings)
    assert "pods/attach, pods/portforward, pods/proxy" in text
    assert "kubectl debug" in text


def test_a_complete_workloads_policy_warns_about_nothing() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods", "replicationcontrollers"], "operations": ["*"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"],
            "operations": ["*"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "operations": ["*"]},
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers"],
            "operations": ["*"],
        },
        {
            "apiGroups": [""],
            "resources": ["pods/exec", "pods/attach", "pods/portforward", "pods/proxy"],
            "operations": ["CONNECT"],
        },
    ]
    assert admit(_policy_body(rules), kind="ChangePolicy").warnings == ()
