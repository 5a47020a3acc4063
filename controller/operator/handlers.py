"""The initial sync and the kopf handlers that keep the Store fresh.

Every replica watches (kopf runs standalone, see ``leader``). The initial sync is a plain list
of each of the four kinds (``initial_sync``), applied to the Store before kopf starts; then the
Store is marked synced and kopf's ``@kopf.on.event`` handlers apply every later event. kopf's
own listing delivers every object once more: the Store skips a version it already holds
(same resourceVersion), so each object version is validated once.

Not kopf's indexing barrier (``@kopf.index``), which this used to wait on: it holds back one
worker per object and wakes all of them on every object indexed -- quadratic in the number of
objects; a replica at 10,000 windows had not synced after 15 minutes.

The handlers are coroutines on purpose: kopf runs plain functions in worker threads, and the
callbacks they fire (the reconciler's wake-up, its window table) belong to the event loop.
Applying one event is ~0.1 ms; anything slow (priming, snapshot rebuilds) goes to a thread.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import kopf

from controller import store as stores
from controller.model import crds

logger = logging.getLogger(__name__)

Kind = Literal["ChangePolicy", "AuthorizedIdentity", "ChangeWindow", "Namespace"]
KINDS: tuple[Kind, ...] = ("ChangePolicy", "AuthorizedIdentity", "ChangeWindow", "Namespace")

OnChange = Callable[[Kind, Literal["upsert", "delete"], Mapping[str, Any]], None]


def _resource(kind: Kind) -> tuple[str, str, str]:
    if kind == "Namespace":
        return "", "v1", "namespaces"
    return crds.GROUP, crds.VERSION, crds.PLURALS[kind]


class Watches:
    """Feeds the Store from kopf and tells ``on_change`` (the reconciler) what changed."""

    def __init__(
        self,
        *,
        store: stores.Store,
        on_change: OnChange,
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.on_change = on_change
        self.on_synced = on_synced
        self.synced = False
        self.known: dict[Kind, set[str]] = {kind: set() for kind in KINDS}
        #: Events applied so far, kopf's re-list of objects the Store already holds included.
        self.events = 0

    def apply(
        self, kind: Kind, event: Literal["upsert", "delete"], body: Mapping[str, Any]
    ) -> None:
        self.events += 1
        plain = dict(body)
        name = str(plain.get("metadata", {}).get("name", ""))
        if event == "delete":
            self.known[kind].discard(name)
        else:
            self.known[kind].add(name)
        errors = self.store.apply(kind, event, plain)
        if errors:
            name = plain.get("metadata", {}).get("name", "?")
            logger.warning(
                "%s %s left out of the index: %s",
                kind,
                name,
                "; ".join(f"{path}: {msg}" for path, msg in errors),
            )
        self.on_change(kind, event, plain)

    async def mark_synced(self) -> None:
        """Declare the index synced: every kind has been listed and applied once."""
        if self.synced:
            return
        self.synced = True  # before the await: a second call must not prime a second time
        # Compile every schedule before declaring readiness, so the first requests after a
        # start do not each pay for a cron walk (seconds in total at 10,000 windows).
        now = datetime.datetime.now(datetime.UTC)
        await asyncio.to_thread(lambda: self.store.rebuild().prime(now))
        freeze_long_lived()
        for kind in KINDS:
            self.store.mark_synced(kind)
        logger.info("index synced: every kind listed once")
        self.on_synced()

    async def on_event(self, kind: Kind, raw_event: Mapping[str, Any]) -> None:
        body = raw_event.get("object") or {}
        if raw_event.get("type") == "DELETED":
            self.apply(kind, "delete", body)
        elif body:
            self.apply(kind, "upsert", body)


ListPage = Callable[[Kind, str | None], tuple[list[Mapping[str, Any]], str | None]]
"""One page of a kind's list: (objects, the continue token of the next page or None)."""


async def initial_sync(watches: Watches, *, list_page: ListPage) -> None:
    """List every kind, apply what is listed, and mark the index synced.

    Run before kopf starts watching: kopf lists again, after this, so whatever changed in
    between reaches the Store as a newer version (an object deleted in between is dropped by
    ``forget_vanished``). Page by page, each applied before the next is read: 10,000 windows
    listed at once are tens of MB of parsed JSON that the process would keep as RSS.
    """
    for kind in ("Namespace", "ChangePolicy", "AuthorizedIdentity", "ChangeWindow"):
        count, token = 0, None
        while True:
            page, token = await asyncio.to_thread(list_page, kind, token)
            for body in page:
                watches.apply(kind, "upsert", body)
            count += len(page)
            if not token:
                break
        logger.info("listed %d %s objects", count, kind)
    await watches.mark_synced()


def freeze_long_lived() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight (``gc.freeze``).

    After the initial sync the index is a million long-lived objects (models, compiled
    windows) that the collector would otherwise walk in every full collection, and those are
    set off by the admission server's own short-lived allocations: measured at 10,000
    windows, the webhook's CPU per review fell by half once they were frozen. Frozen objects
    are still freed by reference counting when a later event replaces them; the index holds no
    reference cycles, and the collection run first leaves no cyclic garbage behind to leak.
    """
    gc.collect()
    gc.freeze()


async def forget_vanished(
    watches: Watches,
    *,
    list_names: Callable[[Kind], set[str]],
    exists: Callable[[Kind, str], bool],
    every: float = 300.0,
) -> None:
    """Periodically drop objects the watch never reported as deleted.

    When a watch expires (410 Gone) kopf lists again, and objects deleted in the gap produce
    no DELETED event. A deleted ChangeWindow that stayed in the index would keep admitting
    changes, so every ``every`` seconds each kind is listed and any name we still hold but
    the list lacks is confirmed gone with a GET (an object created after the list must not
    be dropped) before it is removed.
    """
    while True:
        await asyncio.sleep(every)
        for kind in KINDS:
            try:
                listed = await asyncio.to_thread(list_names, kind)
                for name in sorted(watches.known[kind] - listed):
                    if not await asyncio.to_thread(exists, kind, name):
                        logger.warning("%s %s vanished without a watch event; dropped", kind, name)
                        watches.apply(kind, "delete", {"metadata": {"name": name}})
            except Exception as e:  # the watch stays the primary source; retry next round
                logger.warning("resync of %s failed: %s", kind, e)


def build_registry(watches: Watches, *, kubeconfig: Path | None = None) -> kopf.OperatorRegistry:
    """A kopf registry with the handlers for ``watches``; no global state."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # With --kubeconfig, that file (run() exports it as KUBECONFIG, which kopf reads at call
        # time); otherwise the in-cluster service account, then ~/.kube/config.
        if kubeconfig is not None:
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_via_client(**kwargs)

    for kind in KINDS:
        group, version, plural = _resource(kind)

        def make_event(kind: Kind) -> Callable[..., Awaitable[None]]:
            async def event(event: kopf.RawEvent, **_: Any) -> None:
                await watches.on_event(kind, event)

            return event

        kopf.on.event(group, version, plural, id=f"watch-{plural}", registry=registry)(
            make_event(kind)
        )
    return registry


async def keep_snapshot_fresh(
    store: stores.Store, wake: asyncio.Event, *, on_rebuilt: Callable[[], None] = lambda: None
) -> None:
    """Rebuild the Store's snapshot in a worker thread after changes, coalescing bursts.

    The webhook reads ``store.snapshot()``, the last snapshot built here, so a rebuild (about
    20 ms after one window event, 170 ms after a namespace relabel at 10,000 windows) never
    blocks the event loop that answers admission requests. Decisions lag a watch event by
    that rebuild, the same order as the watch's own delivery delay.
    """
    store.rebuild_in_background = True
    while True:
        await wake.wait()
        wake.clear()
        if not store.ready:
            # Nobody reads a snapshot before the initial sync (the webhook answers "starting",
            # the reconciler waits) and the sync builds the first one itself: rebuilding after
            # every batch of the initial listing redid a 10,000-window index over and over.
            # The sync wakes this task once more (``run``), for what arrived meanwhile.
            continue
        before = store.builds
        try:
            await asyncio.to_thread(store.rebuild)
        except Exception:  # a bad object must not stop future rebuilds
            logger.exception("snapshot rebuild failed; keeping the previous one")
            continue
        if store.builds != before:  # a namespace event that changed no label builds nothing
            on_rebuilt()
