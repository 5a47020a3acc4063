"""A small leader election on a ``coordination.k8s.io/v1`` Lease.

Why not kopf's peering: kopf pauses the watches of every non-leading replica, but every
changegate replica serves admission and needs its own fresh index. So kopf runs standalone
(all replicas watch), and only the writes that must happen once -- ChangeWindow status,
window-transition Events, the webhook configuration -- are guarded by this Lease.

Protocol: every ``renew_every`` the replica reads the Lease. It takes it when it is absent,
released (no holder) or expired (``renewTime + leaseDurationSeconds`` in the past), and renews
it while it holds it. Writes carry the read ``resourceVersion``, so two replicas racing for an
expired Lease cannot both win: the loser gets 409 Conflict. A leader that cannot renew steps
down once its own lease would have expired, before anyone else may take over. On shutdown the
leader releases the Lease so a successor takes over at its next renewal instead of waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import Any

from controller.operator import kubeapi

logger = logging.getLogger(__name__)

LEASE_NAME = "changegate"


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseView:
    """The parts of a Lease the election reads."""

    holder: str | None
    renew_time: datetime.datetime | None
    duration_seconds: int


def may_hold(view: LeaseView | None, *, me: str, now: datetime.datetime) -> bool:
    """Whether ``me`` may take or keep the Lease now (absent, ours, released or expired)."""
    if view is None or not view.holder or view.holder == me or view.renew_time is None:
        return True
    return view.renew_time + datetime.timedelta(seconds=view.duration_seconds) < now


def _micro_time(t: datetime.datetime) -> str:
    # A Lease's times are MicroTime, which the API server reads in Go's RFC3339Micro layout
    # (microseconds), not in crds.rfc3339's whole seconds.
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Runs the election loop; ``leading`` says whether this replica holds the Lease now."""

    def __init__(
        self,
        *,
        coordination_api: kubeapi.Leases,
        namespace: str,
        identity: str,
        clock: Callable[[], datetime.datetime],
        duration_seconds: int = 15,
        renew_every: float = 5.0,
    ) -> None:
        self._api = coordination_api
        self.namespace = namespace
        self.identity = identity
        self._clock = clock
        self.duration_seconds = duration_seconds
        self.renew_every = renew_every
        self.leading = False
        self.changed = asyncio.Event()  # set whenever ``leading`` flips
        self._last_renewal: datetime.datetime | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    won = await asyncio.to_thread(self._try_hold)
                except Exception as e:
                    logger.warning("lease %s/%s: %s", self.namespace, LEASE_NAME, e)
                    won = self._still_valid()
                self._set(won)
                await asyncio.sleep(self.renew_every)
        finally:
            if self.leading:
                try:
                    await asyncio.to_thread(self._release)
                except Exception as e:  # shutdown goes on; the Lease expires anyway
                    logger.warning("could not release the lease: %s", e)
            self._set(False)

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            logger.info("leadership %s", "acquired" if leading else "lost")
            self.changed.set()

    def _still_valid(self) -> bool:
        # Step down before our lease could expire in others' eyes.
        if not self.leading or self._last_renewal is None:
            return False
        elapsed = self._clock() - self._last_renewal
        return elapsed < datetime.timedelta(seconds=self.duration_seconds)

    def _body(
        self, *, now: datetime.datetime, resource_version: str | None, acquire: bool
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": LEASE_NAME, "namespace": self.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_seconds,
            "renewTime": _micro_time(now),
        }
        if acquire:
            spec["acquireTime"] = _micro_time(now)
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def _try_hold(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        now = self._clock()
        try:
            lease = self._api.read_namespaced_lease(LEASE_NAME, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            try:
                self._api.create_namespaced_lease(
                    self.namespace, self._body(now=now, resource_version=None, acquire=True)
                )
            except ApiException as e2:
                if e2.status == 409:
                    return False
                raise
            self._last_renewal = now
            return True
        spec = lease.spec
        view = LeaseView(
            holder=spec.holder_identity,
            renew_time=spec.renew_time,
            duration_seconds=spec.lease_duration_seconds or self.duration_seconds,
        )
        if not may_hold(view, me=self.identity, now=now):
            return False
        body = self._body(
            now=now,
            resource_version=lease.metadata.resource_version,
            acquire=view.holder != self.identity,
        )
        try:
            self._api.replace_namespaced_lease(LEASE_NAME, self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        self._last_renewal = now
        return True

    def _release(self) -> None:
        lease = self._api.read_namespaced_lease(LEASE_NAME, self.namespace)
        if lease.spec.holder_identity != self.identity:
            return
        self._api.patch_namespaced_lease(
            LEASE_NAME, self.namespace, {"spec": {"holderIdentity": None}}
        )
