"""Kubernetes Events: aggregated ``ChangeDenied``, emergency changes, and window transitions.

A denied client often retries in a loop. One Event per denial would let that loop write to
etcd as fast as it retries, so denials are aggregated: one Event object per
(object, reason, user) per ``series_window``, whose ``count`` and ``lastTimestamp`` are
updated at most every ``flush_every``. The aggregation is the pure :class:`Aggregator`; the
:class:`EventPoster` is the thin shell that feeds it from the admission callback and writes.

The admission server calls ``on_decision`` synchronously on the event loop; it only enqueues
(dropping when the queue is full), so an Event never blocks or fails an admission answer.
Dry-run requests post nothing: the webhook declares ``sideEffects: None``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Literal

from controller.model import crds
from controller.operator import kubeapi
from controller.policy import decide

logger = logging.getLogger(__name__)

REPORTING_CONTROLLER = "changegate.io/changegate"
COMPONENT = "changegate"

EventType = Literal["Normal", "Warning"]

CHANGE_DENIED = "ChangeDenied"
EMERGENCY_CHANGE = "EmergencyChange"

# Kinds of the parent object for subresource requests, whose request kind is the
# subresource's (PodExecOptions, Scale): the Event belongs on the object the user touched.
_PARENT_KINDS = {
    "pods": ("v1", "Pod"),
    "deployments": ("apps/v1", "Deployment"),
    "statefulsets": ("apps/v1", "StatefulSet"),
    "replicasets": ("apps/v1", "ReplicaSet"),
    "daemonsets": ("apps/v1", "DaemonSet"),
    "services": ("v1", "Service"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about (``involvedObject``)."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class EventKey:
    ref: ObjectRef
    reason: str
    user: str


@dataclasses.dataclass(frozen=True, slots=True)
class EventWrite:
    """One write to send: ``create`` a new Event, or update an existing one's count."""

    key: EventKey
    name: str
    create: bool
    type: EventType
    message: str
    count: int
    first: datetime.datetime
    last: datetime.datetime


@dataclasses.dataclass(slots=True)
class _Series:
    name: str
    type: EventType
    message: str
    first: datetime.datetime
    last: datetime.datetime
    count: int = 1
    posted_count: int = 0
    posted_at: datetime.datetime | None = None


class Aggregator:
    """Folds repeated occurrences into one Event per key per ``series_window``. Pure."""

    def __init__(
        self,
        *,
        series_window: datetime.timedelta = datetime.timedelta(minutes=5),
        flush_every: datetime.timedelta = datetime.timedelta(seconds=30),
        max_keys: int = 10_000,
        name_suffix: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        self.series_window = series_window
        self.flush_every = flush_every
        self.max_keys = max_keys
        self._name_suffix = name_suffix
        self._series: dict[EventKey, _Series] = {}
        self.dropped = 0

    def record(
        self, key: EventKey, *, type: EventType, message: str, now: datetime.datetime
    ) -> None:
        series = self._series.get(key)
        if series is not None and now - series.first < self.series_window:
            series.count += 1
            series.last = now
            series.message = message
            return
        if series is None and len(self._series) >= self.max_keys:
            self.dropped += 1  # bounded memory beats completeness under a flood of new keys
            return
        name = f"{key.ref.name or key.ref.kind.lower()}.{self._name_suffix()}"
        self._series[key] = _Series(name=name, type=type, message=message, first=now, last=now)

    def due(self, now: datetime.datetime) -> list[EventWrite]:
        """Writes to send now; new series at once, count updates at most every flush_every."""
        writes: list[EventWrite] = []
        for key, s in list(self._series.items()):
            if s.count > s.posted_count and (
                s.posted_at is None or now - s.posted_at >= self.flush_every
            ):
                writes.append(
                    EventWrite(
                        key=key,
                        name=s.name,
                        create=s.posted_count == 0,
                        type=s.type,
                        message=s.message,
                        count=s.count,
                        first=s.first,
                        last=s.last,
                    )
                )
                s.posted_count, s.posted_at = s.count, now
            elif s.count == s.posted_count and now - s.first >= self.series_window:
                del self._series[key]  # closed series, fully posted
        return writes


def involved_object(request: decide.Request) -> ObjectRef:
    """The object a request is about; for subresources, the parent object."""
    if request.subresource and request.resource in _PARENT_KINDS:
        api_version, kind = _PARENT_KINDS[request.resource]
    else:
        group = request.api_group
        api_version = f"{group}/{request.api_version}" if group else request.api_version
        kind = request.kind
    return ObjectRef(
        api_version=api_version, kind=kind, name=request.name, namespace=request.namespace
    )


def classify(
    request: decide.Request, decision: decide.Decision
) -> tuple[str, EventType, str] | None:
    """Which Event (reason, type, message) a decision raises, if any."""
    if request.dry_run:
        return None
    if decision.allowed and decision.emergency:
        who = f"{request.user} changed {request.resource} {request.namespace}/{request.name}"
        return (
            EMERGENCY_CHANGE,
            "Warning",
            f"{who} through emergency window {decision.window} (ticket {decision.ticket})",
        )
    if not decision.allowed and decision.reason not in (
        decide.Reason.STARTING,
        decide.Reason.INVALID,
    ):
        return CHANGE_DENIED, "Warning", decision.message
    return None


def event_body(write: EventWrite, *, instance: str) -> dict[str, Any]:
    """A core/v1 Event (legacy count/series form, understood by every kubectl)."""
    ref = write.key.ref
    involved: dict[str, Any] = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
    if ref.namespace:
        involved["namespace"] = ref.namespace
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": write.name, "namespace": ref.namespace or "default"},
        "involvedObject": involved,
        "reason": write.key.reason,
        "message": write.message[:1024],
        "type": write.type,
        "count": write.count,
        "firstTimestamp": crds.rfc3339(write.first),
        "lastTimestamp": crds.rfc3339(write.last),
        "source": {"component": COMPONENT},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance,
    }


class EventPoster:
    """Posts Events from a background task; fed without blocking by ``on_decision``."""

    def __init__(
        self,
        *,
        core_api: kubeapi.Events,
        instance: str,
        clock: Callable[[], datetime.datetime],
        aggregator: Aggregator | None = None,
        queue_size: int = 10_000,
    ) -> None:
        self._api = core_api
        self._instance = instance
        self._clock = clock
        self.aggregator = aggregator or Aggregator()
        self._queue: asyncio.Queue[tuple[EventKey, EventType, str]] = asyncio.Queue(queue_size)
        self.dropped = 0

    def on_decision(self, request: decide.Request, decision: decide.Decision) -> None:
        """The admission callback: classify and enqueue; never raises, never waits."""
        event = classify(request, decision)
        if event is None:
            return
        reason, type_, message = event
        key = EventKey(ref=involved_object(request), reason=reason, user=request.user)
        try:
            self._queue.put_nowait((key, type_, message))
        except asyncio.QueueFull:
            self.dropped += 1

    def post(
        self, *, ref: ObjectRef, reason: str, type: EventType, message: str, user: str = ""
    ) -> None:
        """Queue an Event that is not about an admission (window transitions)."""
        try:
            self._queue.put_nowait((EventKey(ref=ref, reason=reason, user=user), type, message))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        """Drain the queue into the aggregator and send what is due, until cancelled."""
        tick = self.aggregator.flush_every.total_seconds()
        while True:
            try:
                key, type_, message = await asyncio.wait_for(self._queue.get(), timeout=tick)
                self.aggregator.record(key, type=type_, message=message, now=self._clock())
                while not self._queue.empty():
                    key, type_, message = self._queue.get_nowait()
                    self.aggregator.record(key, type=type_, message=message, now=self._clock())
            except TimeoutError:
                pass
            for write in self.aggregator.due(self._clock()):
                try:
                    await asyncio.to_thread(self._send, write)
                except Exception as e:  # an Event is an observation; losing one is acceptable
                    logger.warning("could not post Event %s: %s", write.key.reason, e)

    def _send(self, write: EventWrite) -> None:
        body = event_body(write, instance=self._instance)
        namespace = body["metadata"]["namespace"]
        if write.create:
            self._api.create_namespaced_event(namespace, body)
        else:
            patch: Mapping[str, Any] = {
                "count": write.count,
                "lastTimestamp": body["lastTimestamp"],
                "message": body["message"],
            }
            self._api.patch_namespaced_event(write.name, namespace, patch)
