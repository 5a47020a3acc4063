"""The Lease rule; resync of vanished objects; the reconciler's wake-ups."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from controller import store as stores
from controller.operator import handlers, leader

T0 = datetime.datetime(2026, 12, 1, 13, 0, tzinfo=datetime.UTC)


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
    for kind in stores.KINDS:
        store.mark_synced(kind)
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
        assert len(pokes) == 1 and store.snapshot().namespaces == {"a": {"t": "1"}}

        # A namespace event that changes no label builds nothing, so nobody is poked.
        store.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "1"}}})
        wake.set()
        await settle(1)
        await asyncio.sleep(0.05)
        assert len(pokes) == 1

        store.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "2"}}})
        wake.set()
        await settle(2)
        assert len(pokes) == 2 and store.snapshot().namespaces == {"a": {"t": "2"}}
    finally:
        task.cancel()


async def test_each_object_version_is_validated_once_however_often_it_is_listed() -> None:
    store = stores.Store()
    watches = handlers.Watches(store=store, on_change=lambda kind, event, body: None)
    policy = {
        "metadata": {"name": "p", "resourceVersion": "7"},
        "spec": {"match": {"resources": []}},
    }
    listed = {"ChangePolicy": [policy]}
    await handlers.initial_sync(watches, list_page=lambda kind, token: (listed.get(kind, []), None))
    assert store.ready
    # kopf's own listing, after the initial sync, delivers the same version again.
    await watches.on_event("ChangePolicy", {"type": None, "object": policy})
    assert store.validated["ChangePolicy"] == 1
    assert watches.events == 2  # but it was work (its garbage is what the heap trim is after)
    newer = {**policy, "metadata": {"name": "p", "resourceVersion": "8"}}
    await watches.on_event("ChangePolicy", {"type": "MODIFIED", "object": newer})
    assert store.validated["ChangePolicy"] == 2
    await watches.on_event("ChangePolicy", {"type": "DELETED", "object": newer})
    assert "p" not in store.snapshot().policies


async def test_no_snapshot_is_built_before_the_initial_sync() -> None:
    store = stores.Store()
    wake = asyncio.Event()
    pokes: list[int] = []
    task = asyncio.create_task(
        handlers.keep_snapshot_fresh(store, wake, on_rebuilt=lambda: pokes.append(1))
    )
    try:
        store.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "1"}}})
        wake.set()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert store.builds == 0 and pokes == []
        for kind in stores.KINDS:
            store.mark_synced(kind)
        wake.set()
        for _ in range(200):
            if pokes:
                break
            await asyncio.sleep(0.01)
        assert pokes == [1] and store.snapshot().namespaces == {"a": {"t": "1"}}
    finally:
        task.cancel()
