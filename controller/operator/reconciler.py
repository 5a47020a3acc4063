"""The leader's loop: ChangeWindow status, window-transition Events, webhook configuration.

One task instead of a kopf daemon per window: after every new snapshot (poked once it is
published) or at the earliest ``next_boundary`` of any window -- the next instant a status
changes by time alone -- it plans the status writes and makes them. Between those instants it
sleeps; nothing polls. A safety resync every ``resync`` seconds covers a missed wake-up (e.g. a
clock jump). Only the Lease holder writes; the other replicas keep their index fresh and wait.

It holds no window state of its own: it reads the published snapshot (the compiled windows the
webhook decides from) and the store's observed windows (status, generation, field errors), and
``status.plan_status_writes`` -- where every status rule lives -- says what to write. The plan
is computed in a worker thread: after a policy or namespace-label change it recomputes every
window (a second or so at 10,000), which must not stall the admission server's event loop.

The webhook configuration also has a pass of its own (``run_webhook``), woken when the watch
on the live object sees a change we did not make, or when the CA changes: a repair must not
wait behind every window's status, and must not make them all be recomputed either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes

from controller import store as stores
from controller.model import crds
from controller.operator import events, kubeapi, leader, webhook
from controller.policy import status as window_status

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookSettings:
    """How the API server reaches this changegate (everything but the policies).

    ``ca_bundle`` is PEM, or a callable returning the current PEM: rotated certificates
    (self-managed mode, cert-manager) change the CA while the replica runs, so the bundle is
    asked for on every pass instead of being fixed at start.
    """

    ca_bundle: bytes | Callable[[], bytes]
    namespace: str
    url: str | None = None
    service: webhook.ServiceRef | None = None
    failure_policy: webhook.FailurePolicy = "Fail"
    timeout_seconds: int = 5
    builtin_exemptions: bool = True
    self_username: str | None = None


class Reconciler:
    def __init__(
        self,
        *,
        store: stores.Store,
        custom_api: kubeapi.ClusterCustomObjects,
        webhooks: webhook.WebhookReconciler,
        webhook_settings: WebhookSettings,
        poster: events.EventPoster,
        elector: leader.LeaderElector,
        clock: Callable[[], datetime.datetime],
        resync: float = 300.0,
        on_phases: Callable[[Mapping[str, int]], None] | None = None,
    ) -> None:
        self._on_phases = on_phases
        self._store = store
        self._custom = custom_api
        self._webhooks = webhooks
        self._settings = webhook_settings
        self._poster = poster
        self._elector = elector
        self._clock = clock
        self._resync = resync
        self._wake = asyncio.Event()
        self._webhook_wake = asyncio.Event()
        self._memo: window_status.StatusMemo | None = None  # the last plan's, for the next
        self.work: dict[str, int] = {
            "reconcile_passes": 0,
            "statuses_computed": 0,
            "status_writes": 0,
        }
        """Running totals (exported as ``changegate_work_total``)."""

    def poke(self) -> None:
        self._wake.set()

    def webhook_observed(self, live: Mapping[str, Any] | None) -> None:
        """The watch saw the live webhook configuration (None: deleted); repair it if needed."""
        if self._webhooks.observe(live):
            self._webhook_wake.set()

    def webhook_changed(self) -> None:
        """Something the desired configuration depends on changed (the CA): check it now."""
        self._webhook_wake.set()

    async def run_webhook(self, *, min_interval: float = 1.0) -> None:
        """Repair the webhook configuration whenever woken, on the leader, once synced.

        Before the index has synced the desired configuration is not known (it would lack the
        policies' rules), so nothing is written; the first full pass after the sync does it.
        Writes are at most one per ``min_interval``: someone else re-applying their version in
        a loop must not turn this into a hot loop too.
        """
        while True:
            await self._webhook_wake.wait()
            self._webhook_wake.clear()
            if not (self._elector.leading and self._store.ready):
                continue
            try:
                wrote = await self._webhooks.reconcile(self.desired_webhook())
            except Exception:
                logger.exception("webhook configuration repair failed; retrying shortly")
                self._webhook_wake.set()
                wrote = True
            if wrote:
                await asyncio.sleep(min_interval)

    async def run(self) -> None:
        while True:
            timeout = self._resync
            if self._elector.leading and self._store.ready:
                try:
                    boundary = await self.reconcile_once()
                except Exception:
                    logger.exception("reconcile failed; retrying shortly")
                    boundary = self._clock() + datetime.timedelta(seconds=5)
                if boundary is not None:
                    until = (boundary - self._clock()).total_seconds()
                    timeout = min(timeout, max(until, 0.0) + 0.05)
            await self._wait(timeout)

    async def _wait(self, timeout: float) -> None:
        leadership = asyncio.ensure_future(self._elector.changed.wait())
        poked = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({leadership, poked}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            leadership.cancel()
            poked.cancel()
        self._elector.changed.clear()
        self._wake.clear()

    def desired_webhook(self, snapshot: Any = None) -> dict[str, Any]:
        """The configuration for the published snapshot's policies and the current CA."""
        if snapshot is None:
            snapshot = self._store.snapshot()
        s = self._settings
        return webhook.build_webhook_configuration(
            policies=snapshot.policies.values(),
            ca_bundle=s.ca_bundle() if callable(s.ca_bundle) else s.ca_bundle,
            url=s.url,
            service=s.service,
            namespace=s.namespace,
            failure_policy=s.failure_policy,
            timeout_seconds=s.timeout_seconds,
            builtin_exemptions=s.builtin_exemptions,
            self_username=s.self_username,
        )

    async def reconcile_once(self) -> datetime.datetime | None:
        """One pass; returns when the next pass is due by time alone."""
        # The snapshot the webhook decides from; the rebuild task pokes us when a newer one
        # is published, so status never lags the index by more than one pass.
        snapshot = self._store.snapshot()
        await self._webhooks.reconcile(self.desired_webhook(snapshot))

        now = self._clock()
        self.work["reconcile_passes"] += 1
        observed = self._store.observed_windows()
        plan = await asyncio.to_thread(
            window_status.plan_status_writes,
            snapshot=snapshot,
            observed=observed,
            now=now,
            memo=self._memo,
        )
        self.work["statuses_computed"] += plan.computed
        self._memo = plan.memo
        for i, write in enumerate(plan.writes):
            try:
                await self._write(write)
            except BaseException:
                # Not written: the next pass must not take these as done.
                self._memo = plan.memo.forget(w.name for w in plan.writes[i:])
                raise
        if self._on_phases is not None:
            self._on_phases(plan.phases)
        return plan.next_boundary

    async def _write(self, write: window_status.StatusWrite) -> None:
        try:
            await asyncio.to_thread(
                self._custom.patch_cluster_custom_object_status,
                crds.GROUP,
                crds.VERSION,
                crds.PLURALS["ChangeWindow"],
                write.name,
                write.patch,
            )
        except kubernetes.client.exceptions.ApiException as e:
            if e.status == 404:
                return  # deleted since the plan: its delete event is on its way
            raise
        self.work["status_writes"] += 1
        ref = events.ObjectRef(api_version=crds.API_VERSION, kind="ChangeWindow", name=write.name)
        for t in write.transitions:
            self._poster.post(ref=ref, reason=t.reason, type=t.type, message=t.message)
