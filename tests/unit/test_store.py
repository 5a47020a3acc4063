"""Store: watch events in, immutable snapshots out."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller import store
from controller.policy import approvals, matching

RULE = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}


def window_body(name: str = "w1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ticket": "CHG-1",
        "requester": "alice",
        "identities": ["oncall"],
        "targets": [{"namespaces": ["payments"], "resources": [RULE]}],
        "schedule": {"cron": "0 22 * * *", "duration": "120m", "timeZone": "Asia/Seoul"},
    }
    body.update(spec)
    return {"metadata": {"name": name}, "spec": body}


POLICY = {"metadata": {"name": "p"}, "spec": {"match": {"resources": [RULE]}}}
IDENTITY = {
    "metadata": {"name": "oncall"},
    "spec": {"subjects": [{"kind": "User", "name": "alice"}]},
}


def test_valid_objects_enter_the_snapshot() -> None:
    s = store.Store()
    assert s.apply("ChangePolicy", "upsert", POLICY) == []
    assert s.apply("AuthorizedIdentity", "upsert", IDENTITY) == []
    assert s.apply("ChangeWindow", "upsert", window_body()) == []
    assert (
        s.apply("Namespace", "upsert", {"metadata": {"name": "payments", "labels": {"t": "p"}}})
        == []
    )
    snap = s.snapshot()
    assert (set(snap.policies), set(snap.identities), set(snap.windows)) == (
        {"p"},
        {"oncall"},
        {"w1"},
    )
    assert snap.namespaces == {"payments": {"t": "p"}}


def test_spec_hash_is_of_the_raw_spec_as_stored() -> None:
    s = store.Store()
    body = window_body()
    s.apply("ChangeWindow", "upsert", body)
    # "120m" is kept as written: hashing a re-serialised model ("2h") would differ.
    assert s.snapshot().compiled_windows["w1"].spec_hash == approvals.spec_hash(body["spec"])


def test_a_status_only_event_is_told_from_a_change_without_the_raw_spec() -> None:
    s = store.Store()
    body = window_body()
    s.apply("ChangeWindow", "upsert", body)
    validated = s.validated["ChangeWindow"]
    # The same spec (a copy, keys in another order) with a new status: nothing to validate.
    same = {**body, "spec": dict(reversed(list(body["spec"].items()))), "status": {"phase": "x"}}
    s.apply("ChangeWindow", "upsert", same)
    assert s.validated["ChangeWindow"] == validated
    assert s.observed_windows()["w1"].status == {"phase": "x"}
    # Any change to the spec, approvals included, is a change: validated again.
    edited = {**same, "spec": {**same["spec"], "approvals": [{"approver": "bob"}]}}
    s.apply("ChangeWindow", "upsert", edited)
    assert s.validated["ChangeWindow"] == validated + 1


def test_invalid_object_is_left_out_and_replaces_its_valid_version() -> None:
    s = store.Store()
    s.apply("ChangeWindow", "upsert", window_body())
    assert "w1" in s.snapshot().windows
    errors = s.apply(
        "ChangeWindow",
        "upsert",
        window_body(schedule={"cron": "nope", "duration": "1h", "timeZone": "UTC"}),
    )
    assert [path for path, _ in errors] == ["spec.schedule.cron"]
    assert "w1" not in s.snapshot().windows
    assert s.errors[("ChangeWindow", "w1")] == errors


def test_malformed_status_does_not_hide_a_valid_window() -> None:
    s = store.Store()
    body = {**window_body(), "status": {"phase": "Bogus"}}
    assert s.apply("ChangeWindow", "upsert", body) == []
    assert "w1" in s.snapshot().windows


def test_delete_removes_the_object() -> None:
    s = store.Store()
    s.apply("ChangePolicy", "upsert", POLICY)
    s.apply("ChangePolicy", "delete", POLICY)
    assert s.snapshot().policies == {}


def test_snapshot_is_immutable_and_rebuilt_only_after_changes() -> None:
    s = store.Store()
    s.apply("ChangeWindow", "upsert", window_body("w1"))
    first = s.snapshot()
    assert s.snapshot() is first
    s.apply("ChangeWindow", "upsert", window_body("w2"))
    second = s.snapshot()
    assert second is not first
    assert set(first.windows) == {"w1"} and set(second.windows) == {"w1", "w2"}
    # the untouched window's compiled form (timeline, hash, caches) is reused
    assert second.compiled_windows["w1"] is first.compiled_windows["w1"]


@pytest.mark.parametrize("missing", store.KINDS)
def test_ready_only_once_every_kind_including_namespace_synced(missing: str) -> None:
    s = store.Store()
    for kind in store.KINDS:
        if kind != missing:
            s.mark_synced(kind)
    assert not s.ready
    s.mark_synced(missing)
    assert s.ready


def test_object_without_a_name_is_rejected() -> None:
    assert store.Store().apply("ChangePolicy", "upsert", {"spec": {}}) == [
        ("metadata.name", "missing")
    ]


def test_namespace_event_without_label_change_keeps_the_snapshot() -> None:
    s = store.Store()
    s.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "1"}}})
    first = s.snapshot()
    s.apply(
        "Namespace",
        "upsert",
        {"metadata": {"name": "a", "labels": {"t": "1"}, "annotations": {"x": "y"}}},
    )
    assert s.snapshot() is first
    s.apply("Namespace", "upsert", {"metadata": {"name": "a", "labels": {"t": "2"}}})
    assert s.snapshot().namespaces == {"a": {"t": "2"}}


# -- the index against an obviously-correct oracle: a full scan --------------------------------

NAMESPACES = {f"ns-{i}": {"team": f"t{i % 3}"} for i in range(6)}
RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "operations": ["*"]},
    {"apiGroups": ["*"], "resources": ["*"], "operations": ["DELETE"]},
    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "operations": ["CREATE", "UPDATE"]},
]
SELECTORS: list[dict[str, Any]] = [
    {"matchLabels": {"team": "t1"}},
    {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["t0"]}]},
    {},
]
REQUESTS = [
    (g, r, sub, op, ns, name)
    for g, r, sub in [
        ("apps", "deployments", ""),
        ("apps", "deployments", "scale"),
        ("", "configmaps", ""),
        ("", "nodes", ""),
    ]
    for op in ("CREATE", "UPDATE", "DELETE")
    for ns in ("ns-0", "ns-1", "ns-5", "unknown-ns", "")
    for name in ("web", "api")
]


def _random_window(rng: random.Random, i: int) -> dict[str, Any]:
    targets = []
    for _ in range(rng.randint(1, 2)):
        t: dict[str, Any] = {"resources": rng.sample(RULES, rng.randint(1, 2))}
        if rng.random() < 0.6:
            t["namespaces"] = rng.sample(sorted(NAMESPACES), rng.randint(1, 2))
        if rng.random() < 0.4 or "namespaces" not in t:
            t["namespaceSelector"] = rng.choice(SELECTORS)
        if rng.random() < 0.3:
            t["names"] = [rng.choice(["web", "api"])]
        targets.append(t)
    return window_body(f"w{i}", targets=targets)


def _assert_index_agrees_with_full_scan(snap: Any) -> None:
    for g, r, sub, op, ns, name in REQUESTS:
        labels = snap.namespace_labels(ns)
        expected = sorted(
            n
            for n, w in snap.windows.items()
            if any(
                matching.CompiledTarget(t).covers(
                    api_group=g,
                    patterns=matching.resource_patterns(r, sub),
                    operation=op,
                    namespace=ns,
                    name=name,
                    labels=labels,
                )
                for t in w.spec.targets
            )
        )
        got = [
            w.name
            for w in snap.covering_windows(
                api_group=g, resource=r, subresource=sub, operation=op, namespace=ns, name=name
            )
        ]
        assert got == expected, (g, r, sub, op, ns, name)


@pytest.mark.parametrize("seed", range(5))
def test_index_finds_exactly_what_a_full_scan_finds_before_and_after_updates(seed: int) -> None:
    rng = random.Random(seed)
    s = store.Store()
    for ns, labels in NAMESPACES.items():
        s.apply("Namespace", "upsert", {"metadata": {"name": ns, "labels": labels}})
    shadow: dict[str, dict[str, Any]] = {}  # what the index must hold: name -> body
    for i in range(30):
        shadow[f"w{i}"] = _random_window(rng, i)
        s.apply("ChangeWindow", "upsert", shadow[f"w{i}"])
    _assert_index_agrees_with_full_scan(s.snapshot())
    for step in range(20):  # incremental: upserts, replacements, deletes, invalid versions
        i = rng.randrange(40)
        # Several events between builds, as a burst coalesces them.
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.25:
                s.apply("ChangeWindow", "delete", {"metadata": {"name": f"w{i}"}})
                shadow.pop(f"w{i}", None)
            elif roll < 0.35:
                bad = window_body(f"w{i}", targets=[])  # invalid: left out of the index
                s.apply("ChangeWindow", "upsert", bad)
                shadow.pop(f"w{i}", None)
            else:
                shadow[f"w{i}"] = _random_window(rng, i)
                s.apply("ChangeWindow", "upsert", shadow[f"w{i}"])
            i = rng.randrange(40)
        snap = s.snapshot()
        _assert_index_agrees_with_full_scan(snap)
        assert set(snap.windows) == set(snap.compiled_windows) == set(shadow), step
        for name, body in shadow.items():
            assert snap.compiled_windows[name].spec_hash == approvals.spec_hash(body["spec"])
            assert snap.windows[name] is snap.compiled_windows[name].window
    # namespace changes re-resolve selectors: a relabel, a new namespace, a deleted one
    s.apply("Namespace", "upsert", {"metadata": {"name": "ns-0", "labels": {"team": "t1"}}})
    _assert_index_agrees_with_full_scan(s.snapshot())
    s.apply("Namespace", "upsert", {"metadata": {"name": "ns-5", "labels": {"team": "t0"}}})
    s.apply("Namespace", "delete", {"metadata": {"name": "ns-1"}})
    s.apply("ChangeWindow", "upsert", _random_window(rng, 3))
    _assert_index_agrees_with_full_scan(s.snapshot())


@pytest.mark.parametrize(
    ("target_names", "covered"),
    [
        ([["web"], ["api"]], {"web", "api"}),
        ([["web"], []], {"web", "api", "db"}),
        ([[], ["web"]], {"web", "api", "db"}),
        ([["web"], ["web"]], {"web"}),
    ],
    ids=["two-name-lists", "names-then-all", "all-then-names", "same-names-twice"],
)
def test_window_covers_a_name_if_any_target_covering_the_request_does(
    target_names: list[list[str]], covered: set[str]
) -> None:
    s = store.Store()
    targets = [
        {"namespaces": ["payments"], "resources": [RULE], **({"names": n} if n else {})}
        for n in target_names
    ]
    s.apply("ChangeWindow", "upsert", window_body(targets=targets))
    snap = s.snapshot()
    for _ in range(2):  # the second round answers from the snapshot's memo
        found = {
            name
            for name in ("web", "api", "db")
            if snap.covering_windows(
                api_group=RULE["apiGroups"][0],
                resource=RULE["resources"][0],
                subresource="",
                operation="UPDATE",
                namespace="payments",
                name=name,
            )
        }
        assert found == covered


def test_published_snapshot_is_built_on_demand_without_a_background_builder() -> None:
    s = store.Store()
    s.apply("ChangePolicy", "upsert", POLICY)
    assert set(s.snapshot().policies) == {"p"}
    s.apply("ChangeWindow", "upsert", window_body())
    assert set(s.snapshot().windows) == {"w1"}  # no builder: the reader builds


def test_with_a_background_builder_the_request_path_reads_the_last_published_snapshot() -> None:
    s = store.Store()
    s.apply("ChangePolicy", "upsert", POLICY)
    first = s.rebuild()
    s.rebuild_in_background = True
    s.apply("ChangeWindow", "upsert", window_body())
    # The request path does not build: it answers from the last published snapshot ...
    assert s.snapshot() is first and set(first.windows) == set()
    # ... until the builder (the operator's worker thread) publishes the next one.
    built = s.rebuild()
    assert s.snapshot() is built and set(built.windows) == {"w1"}


def test_an_event_during_a_build_marks_the_store_stale_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = store.Store()
    s.apply("ChangePolicy", "upsert", POLICY)
    real_build = store.index.Snapshot.build

    def build_while_an_event_lands(**kw: Any) -> Any:
        monkeypatch.setattr(store.index.Snapshot, "build", real_build)
        s.apply("ChangeWindow", "upsert", window_body())  # arrives mid-build
        return real_build(**kw)

    monkeypatch.setattr(store.index.Snapshot, "build", build_while_an_event_lands)
    mid = s.snapshot()
    assert set(mid.windows) == set()  # built from the inputs copied before the event
    assert set(s.snapshot().windows) == {"w1"}  # the event is not lost


def test_a_failed_build_loses_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    s = store.Store()
    s.apply("ChangeWindow", "upsert", window_body("w1"))
    assert set(s.rebuild().windows) == {"w1"}
    real_build = store.index.Snapshot.build

    def failing(**_: Any) -> Any:
        monkeypatch.setattr(store.index.Snapshot, "build", real_build)
        raise RuntimeError("boom")

    monkeypatch.setattr(store.index.Snapshot, "build", failing)
    s.apply("ChangeWindow", "upsert", window_body("w2"))
    with pytest.raises(RuntimeError):
        s.rebuild()
    # The changes the failed build was to take in come with the next one.
    assert set(s.rebuild().windows) == {"w1", "w2"}


def test_equal_conditions_of_observed_statuses_are_one_object_and_stay_what_was_read() -> None:
    s = store.Store()
    valid = {"type": "Valid", "status": "True", "reason": "Valid", "lastTransitionTime": "t0"}
    for i in range(3):
        status = {
            "phase": "Scheduled",
            "approved": True,
            "observedGeneration": 1,
            "conditions": [dict(valid), {"type": "Active", "status": "False", "message": f"{i}"}],
        }
        s.apply("ChangeWindow", "upsert", {**window_body(f"w{i}"), "status": status})
    observed = s.observed_windows()
    first, second = observed["w0"].status["conditions"][0], observed["w1"].status["conditions"][0]
    assert first == valid and first is second
    assert observed["w0"].status["conditions"][1] is not observed["w1"].status["conditions"][1]
    # Shared by value and type: 1 and True are equal in Python, not in JSON.
    s.apply("ChangeWindow", "upsert", {**window_body("a"), "status": {"n": 1}})
    s.apply("ChangeWindow", "upsert", {**window_body("b"), "status": {"n": True}})
    assert s.observed_windows()["b"].status["n"] is True
    assert s.observed_windows()["a"].status["n"] == 1
    assert s.observed_windows()["a"].status["n"] is not True


def test_the_table_of_shared_objects_is_bounded() -> None:
    s = store.Store()
    for i in range(store._FLAT_LIMIT + 10):
        s.apply("ChangeWindow", "upsert", {**window_body(f"w{i}"), "status": {"message": f"{i}"}})
    assert 0 < len(store._flat) <= store._FLAT_LIMIT
    assert s.observed_windows()["w7"].status == {"message": "7"}


def test_an_object_with_a_lot_of_text_is_never_kept_by_the_table() -> None:
    # A status may be 1.5 MiB; the table keeps what it holds after the window is deleted.
    s = store.Store()
    big = "x" * (store._FLAT_MAX_CHARS + 1)
    for name in ("a", "b"):
        s.apply("ChangeWindow", "upsert", {**window_body(name), "status": {"message": big}})
    observed = s.observed_windows()
    assert observed["a"].status == observed["b"].status == {"message": big}
    assert observed["a"].status is not observed["b"].status
    assert all(big not in entry.values() for _, entry in store._flat.items())
