"""ChangeWindow status as a pure function of (window, raw spec, snapshot, now)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

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
