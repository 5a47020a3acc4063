"""What changegate costs a real `kubectl apply`: ConfigMap updates through kube-apiserver.

Starts the local control plane, then times N ConfigMap updates (the admin, through the Python
client, one at a time) in three rounds measured in the same run:

  A  no webhook registered
  B  changegate running and gating the namespace: every update is sent to the webhook and
     admitted through an open window (policy + identity + window, approvals required: 0)
  A' no webhook again (changegate stopped, its webhook configuration removed)

and prints p50/p90/p99/mean per round and the ratio B / mean(A, A'). Target: p50 ratio <= 1.5.
Prints figures only; asserts nothing.

    python bench/apiserver.py [--updates 300]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes.client

from controller.devcluster import cluster, local

NS = "bench"


def _objects(now: datetime.datetime) -> list[dict[str, Any]]:
    rule = {"apiGroups": [""], "resources": ["configmaps"], "operations": ["UPDATE"]}
    return [
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangePolicy",
            "metadata": {"name": "bench"},
            "spec": {
                "match": {"resources": [rule], "namespaces": [NS]},
                "approval": {"required": 0},
            },
        },
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "AuthorizedIdentity",
            "metadata": {"name": "bench-admin"},
            "spec": {"subjects": [{"kind": "User", "name": cluster.ADMIN_USER}]},
        },
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": "bench"},
            "spec": {
                "ticket": "CHG-1",
                "requester": cluster.ADMIN_USER,
                "identities": ["bench-admin"],
                "targets": [{"namespaces": [NS], "resources": [rule]}],
                "schedule": {
                    "start": (now - datetime.timedelta(hours=1)).isoformat(),
                    "end": (now + datetime.timedelta(hours=3)).isoformat(),
                },
            },
        },
    ]


def _round(core: Any, *, n: int, tag: str) -> list[float]:
    """n sequential updates; latency of each in milliseconds (after 20 warm-up updates)."""
    for i in range(20):
        core.patch_namespaced_config_map("cm", NS, {"data": {"warmup": f"{tag}-{i}"}})
    out: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        core.patch_namespaced_config_map("cm", NS, {"data": {"n": f"{tag}-{i}"}})
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _summary(ms: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(ms, n=100)
    return {"p50": qs[49], "p90": qs[89], "p99": qs[98], "mean": statistics.fmean(ms)}


def _is_gated(core: Any) -> bool:
    """A server-side dry-run update is admitted (once the webhook gates configmaps, that
    means changegate has the bench window in its index)."""
    try:
        core.patch_namespaced_config_map("cm", NS, {"data": {"probe": "1"}}, dry_run="All")
    except kubernetes.client.ApiException:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="changegate-bench-"))
    with cluster.ControlPlane(workdir=work / "cluster") as cp:
        core = kubernetes.client.CoreV1Api(cluster.api_client(cp))
        cp.kubectl("create", "namespace", NS, check=True)
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {}})
        local.install_crds(cp)

        a1 = _round(core, n=args.updates, tag="a1")
        with local.running(cp, workdir=work / "changegate") as cg:
            now = datetime.datetime.now(datetime.UTC)
            for obj in _objects(now):
                cp.kubectl("apply", "-f", "-", input=json.dumps(obj), check=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                webhooks = cp.kubectl(
                    "get", "validatingwebhookconfiguration", "changegate", "-o", "json"
                )
                rules = json.loads(webhooks.stdout or "{}").get("webhooks", [])
                if any(
                    "configmaps" in r.get("resources", [])
                    for h in rules
                    for r in h.get("rules") or []
                ) and _is_gated(core):
                    break
                time.sleep(0.5)
            else:
                raise SystemExit("changegate did not start gating configmaps")
            b = _round(core, n=args.updates, tag="b")
            decisions = sum(
                1 for line in cg.log_text().splitlines() if '"uid"' in line and "configmaps" in line
            )
        a2 = _round(core, n=args.updates, tag="a2")

    rows = {"A  no webhook": a1, "B  changegate": b, "A' no webhook": a2}
    print(
        f"{args.updates} sequential ConfigMap updates per round, loadavg {os.getloadavg()[0]:.2f}"
    )
    print(f"{'round':<16}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    sums = {k: _summary(v) for k, v in rows.items()}
    for k, s in sums.items():
        print(f"{k:<16}{s['p50']:>9.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['mean']:>9.2f}")
    base = {
        q: (sums["A  no webhook"][q] + sums["A' no webhook"][q]) / 2 for q in sums["B  changegate"]
    }
    ratio = {q: sums["B  changegate"][q] / base[q] for q in base}
    print(
        "ratio B / mean(A, A'): "
        + ", ".join(f"{q} {r:.2f}" for q, r in ratio.items())
        + "   (target: p50 <= 1.5)"
    )
    print(f"webhook decisions logged during round B: {decisions}")


if __name__ == "__main__":
    main()
