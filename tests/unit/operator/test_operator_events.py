"""Events: denials are aggregated so a retry loop cannot flood etcd; dry runs post nothing."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest

from controller.operator import events
from controller.policy import decide

T0 = datetime.datetime(2026, 12, 1, 13, 0, tzinfo=datetime.UTC)
REF = events.ObjectRef(api_version="v1", kind="ConfigMap", name="cfg", namespace="payments")
KEY = events.EventKey(ref=REF, reason=events.CHANGE_DENIED, user="alice")


def aggregator() -> events.Aggregator:
    counter = itertools.count()
    return events.Aggregator(
        series_window=datetime.timedelta(minutes=5),
        flush_every=datetime.timedelta(seconds=30),
        name_suffix=lambda: str(next(counter)),
    )


def seconds(n: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=n)


def test_first_denial_is_posted_at_once() -> None:
    agg = aggregator()
    agg.record(KEY, type="Warning", message="denied", now=T0)
    (write,) = agg.due(T0)
    assert write.create and write.count == 1 and write.name == "cfg.0"


def test_a_retry_loop_becomes_one_event_with_a_count() -> None:
    agg = aggregator()
    writes = []
    for i in range(600):  # one denial every 0.5 s for 5 minutes
        agg.record(KEY, type="Warning", message="denied", now=seconds(i / 2))
        writes += agg.due(seconds(i / 2))
    writes += agg.due(seconds(330))  # the pending tail is flushed later, not lost
    assert len({w.name for w in writes}) == 1
    assert sum(w.create for w in writes) == 1
    assert len(writes) <= 12  # a create, then at most one count update per 30 s
    assert writes[-1].count == 600


def test_a_new_series_starts_after_the_window() -> None:
    agg = aggregator()
    agg.record(KEY, type="Warning", message="denied", now=T0)
    agg.due(T0)
    later = T0 + datetime.timedelta(minutes=6)
    agg.due(later)  # closes the fully posted series
    agg.record(KEY, type="Warning", message="denied", now=later)
    (write,) = agg.due(later)
    assert write.create and write.name == "cfg.1"


@pytest.mark.parametrize(
    "other",
    [
        events.EventKey(ref=REF, reason=events.CHANGE_DENIED, user="bob"),
        events.EventKey(ref=REF, reason=events.EMERGENCY_CHANGE, user="alice"),
        events.EventKey(
            ref=events.ObjectRef(
                api_version="v1", kind="ConfigMap", name="other", namespace="payments"
            ),
            reason=events.CHANGE_DENIED,
            user="alice",
        ),
    ],
    ids=["other-user", "other-reason", "other-object"],
)
def test_series_are_per_object_reason_and_user(other: events.EventKey) -> None:
    agg = aggregator()
    agg.record(KEY, type="Warning", message="a", now=T0)
    agg.record(other, type="Warning", message="b", now=T0)
    assert sum(w.create for w in agg.due(T0)) == 2


def test_new_keys_beyond_the_bound_are_dropped_not_stored() -> None:
    agg = events.Aggregator(max_keys=1)
    agg.record(KEY, type="Warning", message="a", now=T0)
    agg.record(
        events.EventKey(ref=REF, reason=events.CHANGE_DENIED, user="bob"),
        type="Warning",
        message="b",
        now=T0,
    )
    assert agg.dropped == 1 and len(agg.due(T0)) == 1


def request(**kw: Any) -> decide.Request:
    base: dict[str, Any] = dict(
        uid="u",
        user="alice",
        groups=(),
        operation="UPDATE",
        api_group="apps",
        api_version="v1",
        resource="deployments",
        subresource="",
        kind="Deployment",
        namespace="payments",
        name="web",
        dry_run=False,
    )
    return decide.Request(**{**base, **kw})


def decision(**kw: Any) -> decide.Decision:
    base: dict[str, Any] = dict(
        allowed=False,
        verdict="deny",
        reason=decide.Reason.NO_WINDOW,
        mode=None,
        message="changegate denied ...",
        policy="p",
        window=None,
        ticket=None,
        approvers=(),
        identity=None,
        emergency=False,
        warnings=(),
        audit_annotations={},
    )
    return decide.Decision(**{**base, **kw})


@pytest.mark.parametrize(
    ("req", "dec", "reason"),
    [
        (request(), decision(), events.CHANGE_DENIED),
        (request(dry_run=True), decision(), None),
        (request(), decision(reason=decide.Reason.STARTING), None),
        (request(), decision(allowed=True, verdict="allow", reason=decide.Reason.WINDOW), None),
        (
            request(),
            decision(allowed=True, verdict="allow", reason=decide.Reason.EMERGENCY, emergency=True),
            events.EMERGENCY_CHANGE,
        ),
        (
            request(dry_run=True),
            decision(allowed=True, verdict="allow", reason=decide.Reason.EMERGENCY, emergency=True),
            None,
        ),
    ],
    ids=["denied", "dry-run", "starting", "admitted", "emergency", "emergency-dry-run"],
)
def test_which_decisions_raise_events(
    req: decide.Request, dec: decide.Decision, reason: str | None
) -> None:
    got = events.classify(req, dec)
    assert (got[0] if got else None) == reason
    if got:
        assert got[1] == "Warning"


def test_subresource_events_land_on_the_parent_object() -> None:
    ref = events.involved_object(
        request(api_group="", resource="pods", subresource="exec", kind="PodExecOptions", name="p")
    )
    assert (ref.api_version, ref.kind, ref.name) == ("v1", "Pod", "p")


def test_event_body_names_changegate_as_reporter() -> None:
    write = events.EventWrite(
        key=KEY, name="cfg.0", create=True, type="Warning", message="m", count=3, first=T0, last=T0
    )
    body = events.event_body(write, instance="pod-1")
    assert body["reportingComponent"] == "changegate.io/changegate"
    assert body["metadata"]["namespace"] == "payments"
    assert body["involvedObject"]["namespace"] == "payments"
    assert body["count"] == 3


def test_cluster_scoped_objects_get_events_in_default() -> None:
    ref = events.ObjectRef(api_version="changegate.io/v1alpha1", kind="ChangeWindow", name="w")
    write = events.EventWrite(
        key=events.EventKey(ref=ref, reason="Opened", user=""),
        name="w.0",
        create=True,
        type="Normal",
        message="m",
        count=1,
        first=T0,
        last=T0,
    )
    body = events.event_body(write, instance="pod-1")
    assert body["metadata"]["namespace"] == "default"
    assert "namespace" not in body["involvedObject"]
