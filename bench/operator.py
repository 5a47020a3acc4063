"""The operator at scale: changegate against a real kube-apiserver holding 10,000 windows.

Starts the local control plane, creates bench/decide.py's synthetic cluster in it (1,000
namespaces, 50 policies, 1,000 identities, 10,000 ChangeWindows), starts changegate the way
tests/integration do (``python -m controller run --local``), waits until it has written every
window's status, and prints (figures only; asserts nothing):

- approval -> admit: a window is approved (its approval entry ``{approver, specHash,
  approvedAt, policies}`` appended, as ``kubectl changegate approve`` does) and the time is
  taken from that write until the webhook admits the change it gates (a server-side dry run
  of the requester's update, retried until admitted) -- p50/p99 over 100 approvals;
  target p99 <= 1 s;
- namespace label -> new scope: a namespace is labelled into a label-selected policy's scope,
  timed until the webhook denies an update there that it admitted before -- p50/p99 over 100
  namespaces; target p99 <= 1 s;
- CPU of the changegate process while nothing changes (target <= 2 % of a core) and during a
  burst of 1,000 window creations (until their statuses are written); RSS (target <= 250 MB)
  once every status is written, after the burst, and after a restart of the replica;
- the work a reconcile pass does, from changegate's ``changegate_work_total`` counters:
  windows validated, windows and timelines compiled, statuses computed and written per pass
  (target: only the changed windows), and over the approvals.

    python bench/operator.py [--windows 10000] [--approvals 100] [--relabels 100] [--burst 1000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import os
import random
import ssl
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import decide as decide_bench  # bench/decide.py: a script's own folder is on sys.path
import kubernetes.client

from controller.devcluster import cluster, local
from controller.model import crds

GROUP, VERSION = crds.GROUP, crds.VERSION
WINDOWS, POLICIES = crds.PLURALS["ChangeWindow"], crds.PLURALS["ChangePolicy"]
DEV, DEV_GROUP = "bench-dev", "bench-devs"
APPROVER_GROUP = "bench-approvers"
CM_RULE = {"apiGroups": [""], "resources": ["configmaps"], "operations": ["UPDATE"]}


# -- talking to the cluster --------------------------------------------------------------------


class Cluster:
    """The admin's clients, and clients impersonating the bench's users."""

    def __init__(self, cp: cluster.ControlPlane) -> None:
        self.cp = cp
        admin = cluster.api_client(cp)
        admin.configuration.connection_pool_maxsize = 16
        self.core = kubernetes.client.CoreV1Api(admin)
        self.custom = kubernetes.client.CustomObjectsApi(admin)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
        self.dev = kubernetes.client.CoreV1Api(
            cluster.impersonating_client(cp, user=DEV, group=DEV_GROUP)
        )

    def approver(self, name: str) -> Any:
        return kubernetes.client.CustomObjectsApi(
            cluster.impersonating_client(cp=self.cp, user=name, group=APPROVER_GROUP)
        )

    def create(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "Namespace":
            self.core.create_namespace(body)
        else:
            body = {"apiVersion": crds.API_VERSION, "kind": kind, **body}
            self.custom.create_cluster_custom_object(GROUP, VERSION, crds.PLURALS[kind], body)

    def dev_update_admitted(self, namespace: str) -> bool:
        """A server-side dry run of the developer's ConfigMap update: admitted or denied."""
        try:
            self.dev.patch_namespaced_config_map(
                "cm", namespace, {"data": {"n": str(time.monotonic_ns())}}, dry_run="All"
            )
        except kubernetes.client.ApiException as e:
            if e.status == 403 and "changegate" in (e.body or ""):
                return False
            raise
        return True


def create_all(c: Cluster, objects: Iterable[tuple[str, dict[str, Any]]], threads: int = 8) -> int:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(c.create, kind, body) for kind, body in objects]
        for f in futures:
            f.result()
    return len(futures)


def bench_objects(now: dt.datetime, *, approvals: int, relabels: int) -> list[tuple[str, Any]]:
    """What the latency probes need: namespaces with a ConfigMap, an identity for the developer,
    a policy needing one approval with a window per namespace (open now, not yet approved), and
    a label-selected policy nobody holds a window for."""
    objs: list[tuple[str, Any]] = []
    for i in range(approvals):
        objs.append(("Namespace", {"metadata": {"name": f"bench-ap-{i}"}}))
    for i in range(relabels):
        objs.append(("Namespace", {"metadata": {"name": f"bench-sc-{i}"}}))
    objs.append(
        ("AuthorizedIdentity", {"metadata": {"name": DEV}, "spec": {"subjects": [{"kind": "User", "name": DEV}]}})
    )  # fmt: skip
    objs.append(
        (
            "ChangePolicy",
            {
                "metadata": {"name": "bench-approval"},
                "spec": {
                    "match": {
                        "resources": [CM_RULE],
                        "namespaces": [f"bench-ap-{i}" for i in range(approvals)],
                    },
                    "approval": {"required": 1, "approverGroups": [APPROVER_GROUP]},
                },
            },
        )
    )
    objs.append(
        (
            "ChangePolicy",
            {
                "metadata": {"name": "bench-scope"},
                "spec": {
                    "match": {
                        "resources": [CM_RULE],
                        "namespaceSelector": {"matchLabels": {"bench-scope": "on"}},
                    },
                    "approval": {"required": 0},
                    # The admin's relabel moves namespaces into this policy's scope, which the
                    # policy itself controls; the admin is trusted to do that here.
                    "exemptSubjects": [{"kind": "User", "name": cluster.ADMIN_USER}],
                },
            },
        )
    )
    for i in range(approvals):
        objs.append(
            (
                "ChangeWindow",
                {
                    "metadata": {"name": f"bench-ap-{i}"},
                    "spec": {
                        "ticket": f"CHG-{90000 + i}",
                        "requester": cluster.ADMIN_USER,
                        "identities": [DEV],
                        "targets": [{"namespaces": [f"bench-ap-{i}"], "resources": [CM_RULE]}],
                        "schedule": {
                            "start": (now - dt.timedelta(hours=1)).isoformat(),
                            "end": (now + dt.timedelta(hours=6)).isoformat(),
                        },
                    },
                },
            )
        )
    return objs


def rbac(c: Cluster) -> None:
    """The bench's users may update ConfigMaps (their dry runs) and approve windows."""
    c.rbac.create_cluster_role(
        {
            "metadata": {"name": "changegate-bench"},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch", "update"]},
                {"apiGroups": [GROUP], "resources": [WINDOWS], "verbs": ["get", "list", "patch"]},
            ],
        }
    )  # fmt: skip
    c.rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "changegate-bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "changegate-bench"},
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}
                for g in (DEV_GROUP, APPROVER_GROUP)
            ],
        }
    )  # fmt: skip


# -- reading changegate ------------------------------------------------------------------------


class Replica:
    """The changegate process: its CPU time, memory and work counters."""

    def __init__(self, cg: local.Changegate) -> None:
        assert cg.proc is not None
        self.pid = cg.proc.pid
        self.url = cg.url
        self.ctx = ssl.create_default_context(cafile=str(cg.workdir / "certs" / "ca.crt"))

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MiB."""
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines()
        )
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024

    def work(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", context=self.ctx, timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("changegate_work_total{"):
                what = line.split('what="', 1)[1].split('"', 1)[0]
                out[what] = float(line.rsplit(" ", 1)[1])
        return out


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.5) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started


def statuses_written(c: Cluster, expected: int) -> bool:
    items = c.custom.list_cluster_custom_object(GROUP, VERSION, WINDOWS)["items"]
    return sum(1 for w in items if (w.get("status") or {}).get("phase")) >= expected


def settle(replica: Replica, *, quiet: float = 5.0, timeout: float = 600.0) -> dict[str, float]:
    """Until the replica has written no status for ``quiet`` seconds; its counters then."""
    last, since = replica.work(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise SystemExit("changegate kept writing statuses")
        time.sleep(1.0)
        now = replica.work()
        if now.get("status_writes") != last.get("status_writes"):
            since = time.monotonic()
        last = now
    return last


def idle_cpu(replica: Replica, seconds: float, label: str) -> str:
    """The replica's CPU while nothing changes, and the passes it made meanwhile (windows
    whose open/close falls in the interval are due a status write: that is work too)."""
    work, cpu0, t0 = replica.work(), replica.cpu(), time.monotonic()
    time.sleep(seconds)
    idle = (replica.cpu() - cpu0) / (time.monotonic() - t0) * 100
    after = replica.work()
    d = {k: after.get(k, 0) - work.get(k, 0) for k in after}
    return (
        f"{label}: {idle:.2f} % of a core over {seconds:.0f} s (target <= 2 %), "
        f"{d.get('reconcile_passes', 0):.0f} passes, {d.get('statuses_computed', 0):.0f} statuses "
        f"computed, {d.get('status_writes', 0):.0f} written; loadavg {os.getloadavg()[0]:.2f}"
    )


def quantiles(ms: list[float]) -> str:
    ms = sorted(ms)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {ms[-1]:7.1f} ms  (n={len(ms)})"


def per_pass(before: dict[str, float], after: dict[str, float]) -> str:
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    passes = d.get("reconcile_passes", 0) or 1
    keys = [
        "ChangeWindow_validated", "windows_compiled", "timelines_compiled",
        "statuses_computed", "status_writes",
    ]  # fmt: skip
    totals = ", ".join(f"{k} {d.get(k, 0):.0f}" for k in keys)
    each = ", ".join(f"{k} {d.get(k, 0) / passes:.1f}" for k in keys)
    return f"{d.get('reconcile_passes', 0):.0f} passes; total: {totals}\n    per pass: {each}"


# -- the measurements --------------------------------------------------------------------------


def approvals_to_admit(c: Cluster, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        name, ns = f"bench-ap-{i}", f"bench-ap-{i}"
        window = c.custom.get_cluster_custom_object(GROUP, VERSION, WINDOWS, name)
        spec_hash = window["status"]["specHash"]
        if c.dev_update_admitted(ns):
            raise SystemExit(f"{name}: the change was admitted before the approval")
        approver = f"bench-approver-{i % 7}"
        entry = {
            "approver": approver,
            "specHash": spec_hash,
            "approvedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "policies": ["bench-approval"],
        }
        c.approver(approver).patch_cluster_custom_object(
            GROUP, VERSION, WINDOWS, name, {"spec": {"approvals": [entry]}}
        )
        written = time.perf_counter()
        while not c.dev_update_admitted(ns):
            if time.perf_counter() - written > 30:
                raise SystemExit(f"{name}: not admitted 30 s after its approval")
        latencies.append((time.perf_counter() - written) * 1000)
    return latencies


def relabels_to_scope(c: Cluster, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        ns = f"bench-sc-{i}"
        if not c.dev_update_admitted(ns):
            raise SystemExit(f"{ns}: denied before it was labelled into a policy's scope")
        c.core.patch_namespace(ns, {"metadata": {"labels": {"bench-scope": "on"}}})
        written = time.perf_counter()
        while c.dev_update_admitted(ns):
            if time.perf_counter() - written > 30:
                raise SystemExit(f"{ns}: still not controlled 30 s after its relabel")
        latencies.append((time.perf_counter() - written) * 1000)
    return latencies


@contextlib.contextmanager
def running(cp: cluster.ControlPlane, *, workdir: Path) -> Iterator[local.Changegate]:
    """``local.running``, with the time a replica takes to list 12,000 objects allowed for."""
    cp.kubectl("create", "namespace", local.NAMESPACE)
    cg = local.Changegate(cp=cp, workdir=workdir, port=cluster.free_port())
    try:
        cg.start(timeout=900)
        yield cg
    finally:
        cg.stop()
        cp.kubectl("delete", "validatingwebhookconfiguration", "changegate", "--ignore-not-found")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=10_000)
    ap.add_argument("--approvals", type=int, default=100)
    ap.add_argument("--relabels", type=int, default=100)
    ap.add_argument("--burst", type=int, default=1_000)
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="changegate-bench-operator-"))
    now = dt.datetime.now(dt.UTC)
    report: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        report.append(text)

    with cluster.ControlPlane(workdir=work / "cluster") as cp:
        c = Cluster(cp)
        local.install_crds(cp)
        rbac(c)
        started = time.monotonic()
        synthetic = list(
            decide_bench.cluster_objects(random.Random(7), n_windows=args.windows, now=now)
        )
        probes = bench_objects(now, approvals=args.approvals, relabels=args.relabels)
        order = {"Namespace": 0, "ChangePolicy": 1, "AuthorizedIdentity": 2, "ChangeWindow": 3}
        everything = sorted(synthetic + probes, key=lambda kv: order[kv[0]])
        namespaces = [b for k, b in everything if k == "Namespace"]
        create_all(c, [("Namespace", b) for b in namespaces])
        create_all(c, [(k, b) for k, b in everything if k != "Namespace"])
        for ns in [f"bench-ap-{i}" for i in range(args.approvals)] + [
            f"bench-sc-{i}" for i in range(args.relabels)
        ]:
            c.core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {}})
        n_windows = sum(1 for k, _ in everything if k == "ChangeWindow")
        say(
            f"cluster: {len(namespaces)} namespaces, "
            f"{sum(1 for k, _ in everything if k == 'ChangePolicy')} policies, "
            f"{sum(1 for k, _ in everything if k == 'AuthorizedIdentity')} identities, "
            f"{n_windows} windows created in {time.monotonic() - started:.0f} s"
        )

        started = time.monotonic()
        with running(cp, workdir=work / "changegate") as cg:
            ready = time.monotonic() - started
            replica = Replica(cg)
            took = wait_for(
                lambda: statuses_written(c, n_windows), timeout=900, what="every window's status", every=2
            )  # fmt: skip
            counters = settle(replica)
            rss, peak = replica.memory_mb()
            say(
                f"startup: ready (index synced, webhook registered) after {ready:.0f} s, every "
                f"status written {took:.0f} s later; RSS {rss:.0f} MB (peak {peak:.0f} MB; "
                "target <= 250)"
            )
            say(f"  startup work: {per_pass({}, counters)}")

            say(idle_cpu(replica, args.idle_seconds, "idle CPU"))

            before = replica.work()
            ms = approvals_to_admit(c, args.approvals)
            say(
                f"approval -> admit: {quantiles(ms)} (target p99 <= 1000 ms), loadavg {os.getloadavg()[0]:.2f}"
            )
            after = settle(replica)
            say(f"  work over the {args.approvals} approvals: {per_pass(before, after)}")

            before = replica.work()
            ms = relabels_to_scope(c, args.relabels)
            say(
                f"namespace label -> new scope: {quantiles(ms)} (target p99 <= 1000 ms), loadavg {os.getloadavg()[0]:.2f}"
            )
            after = settle(replica)
            say(f"  work over the {args.relabels} relabels: {per_pass(before, after)}")

            rng = random.Random(11)
            burst = []
            for i in range(args.burst):
                body = decide_bench.window_body(rng, 200_000 + i, decide_bench.NAMESPACES, now=now)
                body["spec"]["requester"] = cluster.ADMIN_USER  # the creator, as admission requires
                body["spec"].pop("approvals", None)
                burst.append(("ChangeWindow", body))
            before, cpu0, t0 = replica.work(), replica.cpu(), time.monotonic()
            create_all(c, burst)
            created = time.monotonic() - t0
            wait_for(
                lambda: replica.work().get("status_writes", 0) - before.get("status_writes", 0) >= args.burst,
                timeout=600, what="the burst's statuses",
            )  # fmt: skip
            cpu, wall = replica.cpu() - cpu0, time.monotonic() - t0
            after = settle(replica)
            rss, peak = replica.memory_mb()
            say(
                f"burst of {args.burst} window creations: created in {created:.1f} s, statuses "
                f"written after {wall:.1f} s; changegate CPU {cpu:.1f} s = {cpu / wall * 100:.0f} % "
                f"of a core on average ({cpu / args.burst * 1000:.1f} ms per window); "
                f"loadavg {os.getloadavg()[0]:.2f}"
            )
            say(f"  work over the burst: {per_pass(before, after)}")
            say(f"RSS after the burst: {rss:.0f} MB (peak {peak:.0f} MB; target <= 250)")

            say(idle_cpu(replica, args.idle_seconds, "idle CPU after all that"))

            # A restart (a rolling upgrade, a rescheduled pod): every window now has a status,
            # so the replica lists bigger objects and has nothing to write.
            cg.stop()
            t0 = time.monotonic()
            cg.start(timeout=900)
            ready = time.monotonic() - t0
            replica = Replica(cg)
            counters = settle(replica, quiet=15.0)  # and kopf's re-list, which writes nothing
            rss, peak = replica.memory_mb()
            say(
                f"restart: ready after {ready:.0f} s, {counters.get('status_writes', 0):.0f} "
                f"statuses written; RSS {rss:.0f} MB (peak {peak:.0f} MB; target <= 250)"
            )
            failures = [ln for ln in cg.log_text().splitlines() if '"level":"error"' in ln]
            if failures:
                say(f"changegate logged {len(failures)} errors; the first: {failures[0][:2000]}")

    print("\nsummary\n" + "\n".join(report))


if __name__ == "__main__":
    main()
