"""specHash and which approvals count (SPEC.md "Approvals and break-glass")."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.model import crds
from controller.policy import approvals

SPEC: dict[str, Any] = {
    "ticket": "CHG-1",
    "description": "결제 v2.3",  # non-ASCII must hash as UTF-8, not \\u escapes
    "requester": "alice",
    "identities": ["oncall"],
    "targets": [
        {
            "namespaces": ["payments"],
            "resources": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
            ],
        }
    ],
    "schedule": {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
}


def test_spec_hash_is_sha256_of_canonical_json_without_approvals() -> None:
    canonical = '{"description":"결제 v2.3","identities":["oncall"],"requester":"alice","schedule":{"end":"2026-12-02T00:00:00+09:00","start":"2026-12-01T22:00:00+09:00"},"targets":[{"namespaces":["payments"],"resources":[{"apiGroups":["apps"],"operations":["UPDATE"],"resources":["deployments"]}]}],"ticket":"CHG-1"}'
    expected = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert approvals.spec_hash(SPEC) == expected
    assert approvals.spec_hash({**SPEC, "approvals": [{"approver": "bob"}]}) == expected


def test_spec_hash_changes_when_the_spec_changes() -> None:
    assert approvals.spec_hash(SPEC) != approvals.spec_hash({**SPEC, "ticket": "CHG-2"})


@given(st.permutations(list(SPEC)))
def test_spec_hash_ignores_key_order(order: list[str]) -> None:
    assert approvals.spec_hash({k: SPEC[k] for k in order}) == approvals.spec_hash(SPEC)


def test_model_spec_round_trips_a_canonically_written_spec() -> None:
    model = crds.ChangeWindowSpec.model_validate(SPEC)
    assert approvals.spec_hash(approvals.model_spec(model)) == approvals.spec_hash(SPEC)


H = approvals.spec_hash(SPEC)
OLD = "sha256:" + "0" * 64


def window(entries: list[tuple[str, str]], *, under: tuple[str, ...] = ("p",)) -> crds.ChangeWindow:
    spec = {
        **SPEC,
        "approvals": [{"approver": a, "specHash": h, "policies": list(under)} for a, h in entries],
    }
    return crds.ChangeWindow.model_validate({"metadata": {"name": "w"}, "spec": spec})


@pytest.mark.parametrize(
    ("entries", "required", "valid", "stale", "approved"),
    [
        pytest.param([], 0, (), (), True, id="none-required"),
        pytest.param([], 1, (), (), False, id="missing"),
        pytest.param([("bob", H)], 1, ("bob",), (), True, id="current"),
        pytest.param([("bob", OLD)], 1, (), ("bob",), False, id="stale"),
        pytest.param(
            [("bob", H), ("bob", H)], 2, ("bob",), (), False, id="distinct-approvers-only"
        ),
        pytest.param([("alice", H)], 1, (), (), False, id="requester-never-counts"),
        pytest.param([("bob", OLD), ("bob", H)], 1, ("bob",), (), True, id="re-approved"),
        pytest.param([("bob", H), ("carol", OLD)], 2, ("bob",), ("carol",), False, id="one-stale"),
    ],
)
def test_only_distinct_non_requester_approvals_of_the_current_spec_count(
    entries: list[tuple[str, str]],
    required: int,
    valid: tuple[str, ...],
    stale: tuple[str, ...],
    approved: bool,
) -> None:
    policy = _named("p", approval={"required": required})
    state = approvals.approval_state(window(entries), current_hash=H, policy=policy)
    assert (state.valid, state.stale, state.approved) == (valid, stale, approved)
    assert state.summary == f"{len(valid)}/{required}"


def _policy(**spec: Any) -> crds.ChangePolicy:
    body = {
        "match": {"resources": [{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}]},
        **spec,
    }
    return crds.ChangePolicy.model_validate({"metadata": {"name": "p"}, "spec": body})


def test_approvals_recorded_for_another_policy_neither_count_nor_go_stale_here() -> None:
    w = window([("bob", H), ("carol", OLD)], under=("other",))
    state = approvals.approval_state(w, current_hash=H, policy=_named("p"))
    assert (state.valid, state.stale, state.approved) == ((), (), False)


def test_a_recorded_namespace_list_limits_what_an_approval_covers() -> None:
    spec = {
        **SPEC,
        "approvals": [
            {"approver": "bob", "specHash": H, "policies": ["p"], "namespaces": ["payments"]}
        ],
    }
    w = crds.ChangeWindow.model_validate({"metadata": {"name": "w"}, "spec": spec})
    p = _named("p")
    assert approvals.approval_state(w, current_hash=H, policy=p, namespace="payments").approved
    assert not approvals.approval_state(w, current_hash=H, policy=p, namespace="ledger").approved


def test_the_window_shows_the_policy_furthest_from_approval_and_none_means_zero() -> None:
    w = window([("bob", H)])
    states = approvals.approval_states(
        w,
        current_hash=H,
        policies=[_policy(approval={"required": 1}), _named("q", approval={"required": 3})],
    )
    assert approvals.least_approved(states).summary == "0/3"
    assert approvals.least_approved({}).summary == "0/0"


def _named(name: str, **spec: Any) -> crds.ChangePolicy:
    body = {
        "match": {"resources": [{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}]},
        **spec,
    }
    return crds.ChangePolicy.model_validate({"metadata": {"name": name}, "spec": body})


@pytest.mark.parametrize(
    ("break_glass", "hours", "named", "honoured"),
    [
        ({"groups": ["sre"], "maxDuration": "4h"}, 4, ["p"], True),
        ({"groups": ["sre"], "maxDuration": "4h"}, 5, ["p"], False),
        ({"groups": ["sre"], "maxDuration": "4h"}, 1, ["other"], False),
        ({"groups": ["sre"], "maxDuration": "4h"}, 1, [], False),
        (None, 1, ["p"], False),
    ],
)
def test_emergency_window_is_honoured_by_the_policies_it_names_up_to_max_duration(
    break_glass: dict[str, Any] | None, hours: int, named: list[str], honoured: bool
) -> None:
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    spec = {
        **SPEC,
        "emergency": {"reason": "INC-1", "policies": named},
        "schedule": {
            "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=hours)).isoformat(),
        },
    }
    w = crds.ChangeWindow.model_validate({"metadata": {"name": "w"}, "spec": spec})
    assert approvals.emergency_allowed_by(_policy(breakGlass=break_glass), w) is honoured
