"""ChangeWindow status writes and transition Events; the Lease rule; resync of vanished objects."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from controller import store as stores
from controller.operator import handlers, leader, windows

T0 = datetime.datetime(2026, 12, 1, 13, 0, tzinfo=datetime.UTC)


def cond(type_: str, status: str, ltt: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": status, "reason": "R", "message": ""}
    if ltt:
        c["lastTransitionTime"] = ltt
    return c


def test_transition_time_is_kept_while_the_status_holds() -> None:
    merged = windows.merge_conditions(
        [
            cond("Approved", "True", "2026-11-01T00:00:00Z"),
            cond("Active", "False", "2026-11-01T00:00:00Z"),
        ],
        [cond("Approved", "True", "2026-12-01T13:00:00Z"), cond("Active", "True")],
        now=T0,
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
    desired = windows.desired_status(computed, current=current, generation=None, now=T0)
    assert not windows.status_differs(current, desired)


def test_generation_change_is_a_status_change() -> None:
    current = {"phase": "Active", "observedGeneration": 1, "conditions": []}
    desired = windows.desired_status(
        {"phase": "Active", "conditions": []}, current=current, generation=2, now=T0
    )
    assert desired["observedGeneration"] == 2
    assert windows.status_differs(current, desired)


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
    assert [r for r, _, _ in windows.transitions(old=old, new=new, emergency=emergency)] == reasons


def test_invalid_window_status_names_the_fields() -> None:
    status = windows.invalid_status([("spec.schedule.timeZone", "unknown time zone")])
    assert status["phase"] == "Invalid"
    assert "spec.schedule.timeZone" in status["message"]


@pytest.mark.parametrize(
    ("view", "may"),
    [
        (None, True),
        (leader.LeaseView(holder=None, renew_time=None, duration_seconds=15), True),
        (leader.LeaseView(holder="me", renew_time=T0, duration_seconds=15), True),
        (leader.LeaseView(holder="other", renew_time=T0, duration_seconds=15), False),
        (
            leader.LeaseView(
                holder="other", renew_time=T0 - datetime.timedelta(seconds=16), duration_seconds=15
            ),
            True,
        ),
    ],
    ids=["absent", "released", "ours", "held-by-other", "expired"],
)
def test_lease_may_be_taken_only_when_free_ours_or_expired(
    view: leader.LeaseView | None, may: bool
) -> None:
    assert leader.may_hold(view, me="me", now=T0) is may


async def test_objects_deleted_during_a_watch_gap_are_dropped_after_a_get_confirms() -> None:
    changes: list[tuple[str, str, str]] = []
    watches = handlers.Watches(
        store=stores.Store(),
        on_change=lambda kind, event, body: changes.append((kind, event, body["metadata"]["name"])),
    )
    for name in ("gone", "created-after-the-list", "listed"):
        watches.apply("Namespace", "upsert", {"metadata": {"name": name}})

    task = asyncio.create_task(
        handlers.forget_vanished(
            watches,
            list_names=lambda kind: {"listed"} if kind == "Namespace" else set(),
            exists=lambda kind, name: name != "gone",
            every=0,
        )
    )
    for _ in range(100):
        if ("Namespace", "delete", "gone") in changes:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert watches.known["Namespace"] == {"created-after-the-list", "listed"}
    assert [c for c in changes if c[1] == "delete"] == [("Namespace", "delete", "gone")]


async def test_reconciler_is_poked_once_per_new_snapshot_not_per_event() -> None:
    store = stores.Store()
    wake = asyncio.Event()
    pokes: list[int] = []
    task = asyncio.create_task(
        handlers.keep_snapshot_fresh(store, wake, on_rebuilt=lambda: pokes.append(1))
    )

    async def settle(expected: int) -> None:
        for _ in range(200):
            if not wake.is_set() and len(pokes) == expected:
                return
            await asyncio.sleep(0.01)

    try:
        store.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "1"}}})
        wake.set()
        await settle(1)
        assert len(pokes) == 1 and store.published().namespaces == {"a": {"t": "1"}}

        # A namespace event that changes no label builds nothing, so nobody is poked.
        store.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "1"}}})
        wake.set()
        await settle(1)
        await asyncio.sleep(0.05)
        assert len(pokes) == 1

        store.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "2"}}})
        wake.set()
        await settle(2)
        assert len(pokes) == 2 and store.published().namespaces == {"a": {"t": "2"}}
    finally:
        task.cancel()
