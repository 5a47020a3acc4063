"""Benchmark of the decision core at cluster scale. Prints figures; asserts nothing.

A seeded synthetic cluster — 10,000 windows, 1,000 identities, 1,000 namespaces, 50 policies —
is fed through ``Store.apply`` as watch events, then ``decide()`` is timed per call with
``time.perf_counter_ns`` after a warm-up. Targets: p99 <= 100 us, peak RSS <= 200 MB.

    .venv/bin/python bench/decide.py [--windows 10000] [--decisions 20000] [--seed 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import statistics
import time
from collections.abc import Iterator
from typing import Any

from controller import store as store_mod
from controller.policy import approvals, decide

NOW = dt.datetime(2026, 12, 1, 13, 30, tzinfo=dt.UTC)
ZONES = ["Asia/Seoul", "Europe/Berlin", "America/New_York", "UTC", "Asia/Kolkata"]
RESOURCES = [
    ("apps", "deployments", ""),
    ("apps", "statefulsets", ""),
    ("apps", "deployments", "scale"),
    ("", "configmaps", ""),
    ("", "secrets", ""),
    ("", "services", ""),
]
OPS = ["CREATE", "UPDATE", "DELETE"]
# Shared by every synthetic request (decide() only reads them): 25,000 private copies would
# add ~30 MB of bench data to the engine's RSS figure.
_NEW: dict[str, Any] = {"metadata": {"name": "x"}, "spec": {"v": 1}}
_OLD: dict[str, Any] = {"metadata": {"name": "x"}, "spec": {"v": 0}}


def _rule(group: str, resource: str, sub: str, ops: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": [group],
        "resources": [f"{resource}/{sub}" if sub else resource],
        "operations": ops,
    }


def build_cluster(rng: random.Random, *, n_windows: int) -> tuple[store_mod.Store, list[str]]:
    s = store_mod.Store()
    for kind, body in cluster_objects(rng, n_windows=n_windows):
        s.apply(kind, "upsert", body)
    for kind in store_mod.KINDS:
        s.mark_synced(kind)
    return s, NAMESPACES


NAMESPACES = [f"ns-{i}" for i in range(1000)]


def cluster_objects(
    rng: random.Random, *, n_windows: int, now: dt.datetime = NOW
) -> Iterator[tuple[store_mod.Kind, dict[str, Any]]]:
    """The synthetic cluster as (kind, body) watch objects: 1,000 namespaces, 50 policies,
    1,000 identities, ``n_windows`` windows around ``now`` (bench/operator.py creates the same
    objects in a real API server)."""
    namespaces = NAMESPACES
    for i, ns in enumerate(namespaces):
        yield (
            "Namespace",
            {
                "metadata": {
                    "name": ns,
                    "labels": {"tier": "prod" if i % 3 else "dev", "team": f"t{i % 40}"},
                }
            },
        )
    for i in range(50):
        rules = [_rule(*r, ["*"]) for r in rng.sample(RESOURCES, 3)]
        match: dict[str, Any] = {"resources": rules}
        if i % 2:
            match["namespaceSelector"] = {"matchLabels": {"team": f"t{i % 40}"}}
        else:
            match["namespaces"] = rng.sample(namespaces, 25)
        spec: dict[str, Any] = {
            "match": match,
            "enforcement": rng.choice(["Enforce", "Enforce", "Warn", "Audit"]),
            "approval": {"required": rng.choice([0, 1, 2]), "approverGroups": ["approvers"]},
            "ticketPattern": "^CHG-[0-9]+$",
            "breakGlass": {"groups": ["sre"], "maxDuration": "4h"},
        }
        if i % 10 == 0:
            spec["blackouts"] = [
                {"name": "kr", "holidays": {"country": "KR", "timeZone": "Asia/Seoul"}}
            ]
        elif i % 10 == 1:
            spec["blackouts"] = [
                {
                    "name": "freeze",
                    "schedule": {"start": "2026-12-24T00:00:00Z", "end": "2027-01-02T00:00:00Z"},
                }
            ]
        yield "ChangePolicy", {"metadata": {"name": f"policy-{i:02d}"}, "spec": spec}
    for i in range(1000):
        subjects: list[dict[str, Any]] = [{"kind": "User", "name": f"user-{i}"}]
        if i % 5 == 0:
            subjects.append({"kind": "Group", "name": f"group-{i % 50}"})
        ispec: dict[str, Any] = {"subjects": subjects}
        if i % 2:
            ispec["workHours"] = {
                "timeZone": rng.choice(ZONES),
                "weekly": [
                    {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "08:00", "end": "20:00"}
                ],
            }
        yield "AuthorizedIdentity", {"metadata": {"name": f"id-{i}"}, "spec": ispec}
    for i in range(n_windows):
        yield "ChangeWindow", window_body(rng, i, namespaces, now=now)


def window_body(
    rng: random.Random, i: int, namespaces: list[str], *, now: dt.datetime = NOW
) -> dict[str, Any]:
    group, res, sub = rng.choice(RESOURCES)
    if rng.random() < 0.6:
        start = now + dt.timedelta(hours=rng.randint(-48, 48))
        schedule: dict[str, Any] = {
            "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=rng.randint(1, 8))).isoformat(),
        }
    else:
        schedule = {
            "cron": f"{rng.randint(0, 59)} {rng.randint(0, 23)} * * {rng.randint(0, 6)}",
            "duration": f"{rng.randint(1, 6)}h",
            "timeZone": rng.choice(ZONES),
        }
    target: dict[str, Any] = {"resources": [_rule(group, res, sub, rng.sample(OPS, 2))]}
    if i % 10 == 0:
        target["namespaceSelector"] = {"matchLabels": {"team": f"t{i % 40}"}}
    else:
        target["namespaces"] = rng.sample(namespaces, rng.randint(1, 3))
    spec: dict[str, Any] = {
        "ticket": f"CHG-{i}",
        "requester": f"user-{rng.randrange(1000)}",
        "identities": [f"id-{rng.randrange(1000)}" for _ in range(rng.randint(1, 2))],
        "targets": [target],
        "schedule": schedule,
    }
    h = approvals.spec_hash(spec)
    # Approvers here are in every policy's approverGroups, so each approval records all 50
    # policies (the most an approval can carry here); selector windows record the namespaces
    # their selector covered when signed, as `kubectl changegate approve` does.
    entries: list[dict[str, Any]] = []
    for k in range(rng.randint(0, 2)):
        entry: dict[str, Any] = {"approver": f"approver-{k}", "specHash": h, "policies": POLICIES}
        if "namespaceSelector" in target:
            entry["namespaces"] = [ns for j, ns in enumerate(namespaces) if j % 40 == i % 40]
        entries.append(entry)
    spec["approvals"] = entries
    return {"metadata": {"name": f"window-{i:05d}"}, "spec": spec}


POLICIES = [f"policy-{i:02d}" for i in range(50)]


def requests(rng: random.Random, namespaces: list[str], n: int) -> list[decide.Request]:
    out = []
    for k in range(n):
        group, res, sub = rng.choice(RESOURCES)
        i = rng.randrange(1000)
        out.append(
            decide.Request(
                uid=str(k),
                user=f"user-{i}",
                groups=("system:authenticated", f"group-{i % 50}"),
                operation=rng.choice(OPS),
                api_group=group,
                api_version="v1",
                resource=res,
                subresource=sub,
                kind="X",
                namespace=rng.choice(namespaces),
                name=f"obj-{rng.randrange(50)}",
                dry_run=False,
                object=_NEW,
                old_object=_OLD,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    s, namespaces = build_cluster(rng, n_windows=args.windows)
    t1 = time.perf_counter()
    snap = s.snapshot()
    t2 = time.perf_counter()
    print(f"store: {args.windows} windows applied as watch events in {t1 - t0:.2f} s")
    print(f"snapshot build (first, full): {(t2 - t1) * 1e3:.1f} ms; RSS so far {_rss_mb():.0f} MB")

    # One watch event at this size: apply() alone, and apply() + the snapshot rebuild it causes.
    applies, rebuilds = [], []
    for k in range(20):
        body = window_body(rng, 100_000 + k, namespaces)
        a = time.perf_counter_ns()
        s.apply("ChangeWindow", "upsert", body)
        b = time.perf_counter_ns()
        snap = s.snapshot()
        c = time.perf_counter_ns()
        applies.append(b - a)
        rebuilds.append(c - b)
    print(
        f"single event: apply {statistics.median(applies) / 1e3:.0f} us (median), "
        f"next snapshot() rebuild {statistics.median(rebuilds) / 1e6:.1f} ms (median), "
        f"{max(rebuilds) / 1e6:.1f} ms (max)"
    )

    a = time.perf_counter()
    snap.prime(NOW)
    print(
        f"snapshot.prime (compile {len(snap.windows)} timelines, fill caches): {time.perf_counter() - a:.2f} s"
    )
    # A namespace relabel re-resolves every window that uses a namespaceSelector.
    s.apply(
        "Namespace",
        "upsert",
        {"metadata": {"name": "ns-7", "labels": {"tier": "prod", "team": "t3"}}},
    )
    a = time.perf_counter()
    snap = s.snapshot()
    print(f"namespace relabel: next snapshot() rebuild {(time.perf_counter() - a) * 1e3:.1f} ms")
    warm = requests(rng, namespaces, 5_000)
    for r in warm:
        decide.decide(r, snapshot=snap, now=NOW)
    reqs = requests(rng, namespaces, args.decisions)
    lat: list[int] = []
    cpu: list[int] = []
    outcomes: dict[str, int] = {}
    start = time.perf_counter()
    for i, r in enumerate(reqs):
        now = NOW + dt.timedelta(seconds=i // 100)  # time moves on, as in production
        c = time.thread_time_ns()
        a = time.perf_counter_ns()
        d = decide.decide(r, snapshot=snap, now=now)
        lat.append(time.perf_counter_ns() - a)
        cpu.append(time.thread_time_ns() - c)
        outcomes[d.reason] = outcomes.get(d.reason, 0) + 1
    elapsed = time.perf_counter() - start
    lat.sort()
    cpu.sort()
    p50, p99 = lat[len(lat) // 2] / 1e3, lat[int(len(lat) * 0.99)] / 1e3
    print(
        f"decide(): {len(reqs) / elapsed:,.0f} decisions/s, p50 {p50:.1f} us, p99 {p99:.1f} us, max {lat[-1] / 1e3:.0f} us (wall, perf_counter_ns)"
    )
    c50, c99 = cpu[len(cpu) // 2] / 1e3, cpu[int(len(cpu) * 0.99)] / 1e3
    print(
        f"decide() CPU time of this thread: p50 {c50:.1f} us, p99 {c99:.1f} us "
        f"(wall minus CPU is time the shared machine ran someone else; load avg {os.getloadavg()[0]:.1f})"
    )
    print("reasons:", ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    print(f"peak RSS: {_rss_mb():.0f} MB")


def _rss_mb() -> float:
    """Peak resident set size so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
