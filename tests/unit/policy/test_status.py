"""ChangeWindow status: the rules, and the writes planned over a snapshot (pure functions)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from controller import store
from controller.model import crds
from controller.policy import approvals, index, status

UTC = dt.UTC
START = dt.datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
END = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
BEFORE, DURING, AFTER = (
    START - dt.timedelta(hours=1),
    START + dt.timedelta(hours=1),
    END + dt.timedelta(hours=1),
)
RULE = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}

POLICY = crds.ChangePolicy.model_validate(
    {
        "metadata": {"name": "payments-prod"},
        "spec": {
            "match": {"resources": [RULE], "namespaces": ["payments"]},
            "approval": {"required": 1, "approverGroups": ["change-approvers"]},
            "ticketPattern": "^CHG-[0-9]+$",
            "breakGlass": {"groups": ["sre"], "maxDuration": "4h"},
        },
    }
)


def raw_spec(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": "CHG-1",
        "requester": "alice",
        "identities": ["oncall"],
        "targets": [{"namespaces": ["payments"], "resources": [RULE]}],
        "schedule": {"start": START.isoformat(), "end": END.isoformat()},
    }
    body.update(spec)
    return body


def build(
    raw: dict[str, Any],
    *,
    approved_by: tuple[str, ...] = (),
    policies: list[crds.ChangePolicy] | None = None,
) -> tuple[crds.ChangeWindow, dict[str, Any], index.Snapshot]:
    h = approvals.spec_hash(raw)
    raw = {
        **raw,
        "approvals": [
            {"approver": a, "specHash": h, "policies": ["payments-prod"]} for a in approved_by
        ],
    }
    w = crds.ChangeWindow.model_validate({"metadata": {"name": "w1", "generation": 3}, "spec": raw})
    snap = index.Snapshot.build(
        policies=[POLICY] if policies is None else policies,
        identities=[],
        windows=[w],
        namespaces={"payments": {}},
        raw_window_specs={"w1": raw},
    )
    return w, raw, snap


def status_of(raw: dict[str, Any], now: dt.datetime, **kw: Any) -> status.WindowStatus:
    w, r, snap = build(raw, **kw)
    return status.window_status(w, raw_spec=r, snapshot=snap, now=now)


EMERGENCY = {"emergency": {"reason": "INC-1", "policies": ["payments-prod"]}}


@pytest.mark.parametrize(
    ("spec", "approved_by", "now", "phase"),
    [
        pytest.param({}, (), BEFORE, crds.Phase.PENDING_APPROVAL, id="unapproved"),
        pytest.param({}, ("bob",), BEFORE, crds.Phase.SCHEDULED, id="approved-future"),
        pytest.param({}, ("bob",), DURING, crds.Phase.ACTIVE, id="approved-open"),
        pytest.param({}, ("bob",), AFTER, crds.Phase.EXPIRED, id="approved-past"),
        pytest.param({}, (), AFTER, crds.Phase.EXPIRED, id="unapproved-past"),
        pytest.param({}, ("alice",), DURING, crds.Phase.PENDING_APPROVAL, id="self-approved"),
        pytest.param(
            EMERGENCY, (), DURING, crds.Phase.REVIEW_REQUIRED, id="emergency-open-unreviewed"
        ),
        pytest.param(
            EMERGENCY, (), AFTER, crds.Phase.REVIEW_REQUIRED, id="emergency-past-unreviewed"
        ),
        pytest.param(EMERGENCY, ("bob",), DURING, crds.Phase.ACTIVE, id="emergency-reviewed"),
        pytest.param(
            {"ticket": "JIRA-1"}, ("bob",), DURING, crds.Phase.INVALID, id="ticket-mismatch"
        ),
        pytest.param(
            {**EMERGENCY, "ticket": "INC-1"},
            (),
            DURING,
            crds.Phase.REVIEW_REQUIRED,
            id="emergency-incident-id-is-not-a-change-ticket",
        ),
    ],
)
def test_phase_follows_validity_review_approval_and_schedule(
    spec: dict[str, Any], approved_by: tuple[str, ...], now: dt.datetime, phase: crds.Phase
) -> None:
    assert status_of(raw_spec(**spec), now, approved_by=approved_by).phase is phase


def test_emergency_window_is_open_before_review() -> None:
    st = status_of(raw_spec(**EMERGENCY), DURING)
    active = next(c for c in st.conditions if c.type == "Active")
    approved = next(c for c in st.conditions if c.type == "Approved")
    assert (active.status, approved.status, approved.reason) == ("True", "False", "ReviewRequired")


def test_window_no_policy_controls_needs_no_approval() -> None:
    st = status_of(raw_spec(), DURING, policies=[])
    assert (st.phase, st.approved, st.approvals) == (crds.Phase.ACTIVE, True, "0/0")


def test_stale_approvals_leave_the_window_pending_and_say_so() -> None:
    _, raw, snap = build(raw_spec(), approved_by=("bob",))
    edited = {**raw, "description": "changed"}
    w2 = crds.ChangeWindow.model_validate({"metadata": {"name": "w1"}, "spec": edited})
    st = status.window_status(w2, raw_spec=edited, snapshot=snap, now=BEFORE)
    approved = next(c for c in st.conditions if c.type == "Approved")
    assert (st.phase, approved.reason, st.approvals) == (
        crds.Phase.PENDING_APPROVAL,
        "ApprovalStale",
        "0/1",
    )
    assert "bob" in approved.message
    assert st.spec_hash == approvals.spec_hash(edited)


@pytest.mark.parametrize(
    ("now", "next_open", "next_close", "boundary"),
    [(BEFORE, START, END, START), (DURING, None, END, END), (AFTER, None, None, None)],
)
def test_next_open_close_and_boundary_of_a_one_off_window(
    now: dt.datetime,
    next_open: dt.datetime | None,
    next_close: dt.datetime | None,
    boundary: dt.datetime | None,
) -> None:
    st = status_of(raw_spec(), now, approved_by=("bob",))
    assert (st.next_open, st.next_close, st.next_boundary) == (next_open, next_close, boundary)


def test_recurring_window_boundary_is_the_next_open_or_close() -> None:
    recurring = raw_spec(
        schedule={"cron": "0 22 * * *", "duration": "2h", "timeZone": "Asia/Seoul"}
    )
    st = status_of(recurring, DURING, approved_by=("bob",))  # 23:00 KST: open
    assert st.phase is crds.Phase.ACTIVE
    assert st.next_boundary == END  # 24:00 KST
    assert st.next_open == START + dt.timedelta(days=1)


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    w, raw, snap = build(raw_spec(), approved_by=("bob",))
    first = status.window_status(w, raw_spec=raw, snapshot=snap, now=BEFORE)
    w_with_status = w.model_copy(
        update={"status": crds.ChangeWindowStatus(conditions=list(first.conditions))}
    )
    later = status.window_status(w_with_status, raw_spec=raw, snapshot=snap, now=DURING)
    times = {c.type: c.last_transition_time for c in later.conditions}
    assert times["Approved"] == BEFORE  # unchanged: still approved
    assert times["Active"] == DURING  # flipped: opened
    assert all(c.observed_generation == 3 for c in later.conditions)


def test_status_patch_is_camel_case_json() -> None:
    patch = status_of(raw_spec(), DURING, approved_by=("bob",)).to_patch()
    body = patch["status"]
    assert body["phase"] == "Active"
    assert body["approvals"] == "1/1"
    assert body["nextOpen"] is None  # cleared explicitly in a merge patch
    assert body["nextClose"] == "2026-12-01T15:00:00Z"
    assert {c["type"] for c in body["conditions"]} == {"Approved", "Active", "Valid"}
    assert "lastTransitionTime" in body["conditions"][0]


LEDGER = crds.ChangePolicy.model_validate(
    {
        "metadata": {"name": "ledger-prod"},
        "spec": {
            "match": {"resources": [RULE], "namespaces": ["ledger"]},
            "approval": {"required": 1, "approverGroups": ["db-approvers"]},
        },
    }
)


def test_a_window_across_two_policies_is_approved_only_when_approved_under_each() -> None:
    raw = raw_spec(targets=[{"namespaces": ["payments", "ledger"], "resources": [RULE]}])
    st = status_of(raw, DURING, approved_by=("bob",), policies=[POLICY, LEDGER])
    assert (st.phase, st.approved, st.approvals) == (crds.Phase.PENDING_APPROVAL, False, "0/1")
    approved = next(c for c in st.conditions if c.type == "Approved")
    assert "under ledger-prod (0/1)" in approved.message
    assert "under payments-prod by bob (1/1)" in approved.message


def test_a_window_beyond_its_policy_limits_is_invalid() -> None:
    limited = POLICY.model_copy(
        update={
            "spec": POLICY.spec.model_copy(
                update={"window_limits": crds.WindowLimits(max_duration=dt.timedelta(hours=1))}
            )
        }
    )
    st = status_of(raw_spec(), DURING, approved_by=("bob",), policies=[limited])
    assert st.phase is crds.Phase.INVALID
    assert "windowLimits of policy payments-prod" in st.message


def cond(type_: str, status: str, ltt: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": status, "reason": "R", "message": ""}
    if ltt:
        c["lastTransitionTime"] = ltt
    return c


def test_transition_time_is_kept_while_the_status_holds() -> None:
    merged = status.merge_conditions(
        [
            cond("Approved", "True", "2026-11-01T00:00:00Z"),
            cond("Active", "False", "2026-11-01T00:00:00Z"),
        ],
        [cond("Approved", "True", "2026-12-01T13:00:00Z"), cond("Active", "True")],
        now=START,
    )
    assert merged[0]["lastTransitionTime"] == "2026-11-01T00:00:00Z"
    assert merged[1]["lastTransitionTime"] == "2026-12-01T13:00:00Z"


def test_unchanged_status_is_not_rewritten() -> None:
    current = {"phase": "Active", "approved": True, "conditions": [cond("Approved", "True", "x")]}
    computed = {
        "phase": "Active",
        "approved": True,
        "conditions": [cond("Approved", "True", "y")],
        "nextOpen": None,
    }
    desired = status.desired_status(computed, current=current, generation=None, now=START)
    assert not status.status_differs(current, desired)


def test_generation_change_is_a_status_change() -> None:
    current = {"phase": "Active", "observedGeneration": 1, "conditions": []}
    desired = status.desired_status(
        {"phase": "Active", "conditions": []}, current=current, generation=2, now=START
    )
    assert desired["observedGeneration"] == 2
    assert status.status_differs(current, desired)


@pytest.mark.parametrize(
    ("old", "new", "emergency", "reasons"),
    [
        ({}, {"phase": "PendingApproval"}, False, []),
        (
            {"phase": "PendingApproval"},
            {"phase": "Scheduled", "approved": True},
            False,
            ["Approved"],
        ),
        (
            {"phase": "Scheduled", "approved": True},
            {"phase": "Active", "approved": True},
            False,
            ["Opened"],
        ),
        (
            {"phase": "Active", "approved": True},
            {"phase": "Scheduled", "approved": True},
            False,
            ["Closed"],
        ),
        (
            {"phase": "Active", "approved": True},
            {"phase": "Expired", "approved": True},
            False,
            ["Expired"],
        ),
        (
            {"phase": "Active", "approved": True},
            {"phase": "PendingApproval", "approved": False},
            False,
            ["ApprovalStale", "Closed"],
        ),
        ({}, {"phase": "ReviewRequired"}, True, ["EmergencyOpened"]),
        ({"phase": "ReviewRequired"}, {"phase": "Active", "approved": True}, True, ["Approved"]),
        ({}, {"phase": "Expired"}, False, []),
    ],
    ids=[
        "created",
        "approved",
        "opened",
        "closed",
        "expired",
        "stale-while-open",
        "emergency",
        "emergency-reviewed",
        "created-expired",
    ],
)
def test_transition_events(
    old: dict[str, Any], new: dict[str, Any], emergency: bool, reasons: list[str]
) -> None:
    assert [t.reason for t in status.transitions(old=old, new=new, emergency=emergency)] == reasons


def test_invalid_window_status_names_the_fields() -> None:
    invalid = status.invalid_status([("spec.schedule.timeZone", "unknown time zone")])
    assert invalid["phase"] == "Invalid"
    assert "spec.schedule.timeZone" in invalid["message"]


# -- planning the writes over a snapshot ---------------------------------------------------------

EARLY = START - dt.timedelta(hours=2)
IDENTITY = {"metadata": {"name": "oncall"}, "spec": {"subjects": [{"kind": "User", "name": "a"}]}}


def fed_store(*names: str) -> store.Store:
    """A store fed like the operator feeds it: a policy needing no approval, windows."""
    s = store.Store()
    s.apply(
        "ChangePolicy",
        "upsert",
        {
            "metadata": {"name": "p"},
            "spec": {"match": {"resources": [RULE]}, "approval": {"required": 0}},
        },
    )
    s.apply("AuthorizedIdentity", "upsert", IDENTITY)
    for name in names:
        s.apply("ChangeWindow", "upsert", window_event(name))
    return s


#: The spec each window was last created or edited with (the store keeps only its hash).
_SPECS: dict[str, dict[str, Any]] = {}


def window_event(name: str, status_: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": raw_spec(**spec),
    }
    _SPECS[name] = body["spec"]
    if status_ is not None:
        body["status"] = status_
    return body


def plan(s: store.Store, now: dt.datetime, memo: status.StatusMemo | None) -> status.StatusPlan:
    return status.plan_status_writes(
        snapshot=s.snapshot(), observed=s.observed_windows(), now=now, memo=memo
    )


def report_writes(s: store.Store, p: status.StatusPlan) -> None:
    """The watch reports each write back (a status-only event)."""
    for w in p.writes:
        spec = _SPECS[w.name]
        body = {**window_event(w.name, dict(w.status)), "spec": spec}
        _SPECS[w.name] = spec
        s.apply("ChangeWindow", "upsert", body)


def test_plan_writes_each_new_window_once_and_nothing_until_something_changes() -> None:
    s = fed_store("w1", "w2")
    first = plan(s, EARLY, None)
    assert {w.name: w.status["phase"] for w in first.writes} == {
        "w1": "Scheduled",
        "w2": "Scheduled",
    }
    assert first.computed == 2 and first.next_boundary == START
    assert first.phases == {"Scheduled": 2}
    # Before the watch reports the writes back, and after: nothing to write, nothing computed.
    second = plan(s, EARLY, first.memo)
    assert (second.writes, second.computed) == ((), 0)
    report_writes(s, first)
    third = plan(s, EARLY, second.memo)
    assert (third.writes, third.computed) == ((), 0)


def test_a_status_only_event_neither_validates_again_nor_rebuilds_the_snapshot() -> None:
    s = fed_store("w1")
    snap = s.snapshot()
    validated = s.validated["ChangeWindow"]
    s.apply("ChangeWindow", "upsert", window_event("w1", {"phase": "Scheduled"}))
    assert s.snapshot() is snap and s.validated["ChangeWindow"] == validated
    assert s.observed_windows()["w1"].status == {"phase": "Scheduled"}
    s.apply("ChangeWindow", "upsert", window_event("w1", {"phase": "Scheduled"}, ticket="CHG-2"))
    assert s.snapshot() is not snap and s.validated["ChangeWindow"] == validated + 1


def test_plan_computes_only_the_windows_that_changed() -> None:
    s = fed_store("w1", "w2", "w3")
    first = plan(s, EARLY, None)
    report_writes(s, first)
    s.apply(
        "ChangeWindow", "upsert", window_event("w2", dict(first.writes[1].status), ticket="CHG-9")
    )
    timelines = index.CachedTimeline.compiled
    second = plan(s, EARLY, first.memo)
    assert second.computed == 1
    assert index.CachedTimeline.compiled == timelines + 1  # the changed window's timeline only
    # Same schedule and phase; the new specHash is written, and raises no Event.
    assert [(w.name, w.transitions) for w in second.writes] == [("w2", ())]


def test_a_policy_change_recomputes_every_window() -> None:
    s = fed_store("w1", "w2")
    first = plan(s, EARLY, None)
    report_writes(s, first)
    s.apply(
        "ChangePolicy",
        "upsert",
        {
            "metadata": {"name": "p"},
            "spec": {"match": {"resources": [RULE]}, "approval": {"required": 1}},
        },
    )
    second = plan(s, EARLY, first.memo)
    assert second.computed == 2
    assert {w.name: w.status["phase"] for w in second.writes} == {
        "w1": "PendingApproval",
        "w2": "PendingApproval",
    }


def test_a_boundary_passing_recomputes_the_window_and_raises_its_event() -> None:
    s = fed_store("w1")
    first = plan(s, EARLY, None)
    report_writes(s, first)
    opened = plan(s, DURING, first.memo)
    assert opened.computed == 1
    [write] = opened.writes
    assert write.status["phase"] == "Active"
    assert [t.reason for t in write.transitions] == [status.OPENED]
    assert opened.next_boundary == END


def test_a_status_someone_else_changed_is_restored() -> None:
    s = fed_store("w1")
    first = plan(s, EARLY, None)
    report_writes(s, first)
    s.apply("ChangeWindow", "upsert", window_event("w1", {"phase": "Active", "approved": True}))
    second = plan(s, EARLY, first.memo)
    [write] = second.writes
    assert write.status["phase"] == "Scheduled"
    assert write.patch["status"]["phase"] == "Scheduled"


def test_a_field_our_status_no_longer_sets_is_removed_by_the_patch() -> None:
    s = fed_store("w1")
    first = plan(s, EARLY, None)
    report_writes(s, first)
    [written] = first.writes
    edited = {**written.status, "phase": "Active", "someoneElses": "x"}
    s.apply("ChangeWindow", "upsert", window_event("w1", edited))
    [write] = plan(s, EARLY, first.memo).writes
    assert "someoneElses" not in write.status
    assert write.patch == {"status": {"someoneElses": None, **write.status}}


def test_an_invalid_window_gets_the_invalid_status_with_its_fields() -> None:
    s = fed_store()
    body = window_event("bad")
    body["spec"]["schedule"] = {"cron": "not a cron", "duration": "1h", "timeZone": "UTC"}
    assert s.apply("ChangeWindow", "upsert", body)
    [write] = plan(s, EARLY, None).writes
    assert write.status["phase"] == "Invalid"
    assert "spec.schedule" in write.status["message"]
    assert write.status["observedGeneration"] == 1


def test_writes_that_were_not_made_are_planned_again() -> None:
    s = fed_store("w1")
    first = plan(s, EARLY, None)
    again = plan(s, EARLY, first.memo.forget(["w1"]))
    assert [w.name for w in again.writes] == ["w1"]


def test_a_relabel_recomputes_only_the_windows_that_cover_the_namespace() -> None:
    s = fed_store("w1", "w2")
    s.apply("Namespace", "upsert", {"metadata": {"name": "payments"}})
    s.apply("Namespace", "upsert", {"metadata": {"name": "ledger"}})
    s.apply(
        "ChangeWindow",
        "upsert",
        window_event("w3", targets=[{"namespaces": ["ledger"], "resources": [RULE]}]),
    )
    first = plan(s, EARLY, None)
    report_writes(s, first)
    s.apply("Namespace", "upsert", {"metadata": {"name": "ledger", "labels": {"tier": "prod"}}})
    second = plan(s, EARLY, first.memo)
    assert second.computed == 1  # w3; w1 and w2 cover payments only


def test_a_relabel_recomputes_a_selector_window_only_if_its_selector_matches_before_or_after() -> (
    None
):
    s = fed_store()
    for ns in ("a", "b"):
        s.apply("Namespace", "upsert", {"metadata": {"name": ns}})
    selected = [{"namespaceSelector": {"matchLabels": {"team": "x"}}, "resources": [RULE]}]
    s.apply("ChangeWindow", "upsert", window_event("sel", targets=selected))
    first = plan(s, EARLY, None)
    report_writes(s, first)
    s.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"team": "y"}}})
    unrelated = plan(s, EARLY, first.memo)
    assert unrelated.computed == 0
    s.apply("Namespace", "upsert", {"metadata": {"name": "b", "labels": {"team": "x"}}})
    assert plan(s, EARLY, unrelated.memo).computed == 1
