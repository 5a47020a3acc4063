"""What changegate costs a real `kubectl apply`: ConfigMap updates through kube-apiserver.

Starts the local control plane, then times N ConfigMap updates (the admin, through the Python
client, one at a time) in rounds measured in the same run:

  A   no webhook registered
  G2  a bare Go webhook (bench/barewebhook.go: decode, answer allowed), HTTP/2 offered by ALPN
  G1  the same Go webhook, HTTP/1.1 only (what an aiohttp server offers)
  P   a bare aiohttp TLS webhook (bench/admission.py's "bare" target), HTTP/1.1
  B   changegate running and gating the namespace: every update is sent to the webhook and
      admitted through an open window (policy + identity + window, approvals required: 0)
  A'  no webhook again (changegate stopped, its webhook configuration removed)

Per round it prints p50/p90/p99/mean of the update, and where the time goes: the API server's
own measure of the webhook call (``apiserver_admission_webhook_admission_duration_seconds``,
mean), the webhook server's handling time where it reports one (changegate's
``changegate_admission_duration_seconds``: body read to answer built), the TCP connections the
machine accepted during the round (connection reuse: a handful means every call reused one
TLS connection) and the size of one answer. G2 - G1 is what HTTP/2 would change, P - G1 what a
Python HTTP/TLS stack costs, B - P what changegate itself adds. Ratios are B / mean(A, A').
Targets: p50 and p99 ratio <= 1.25. Prints figures only; asserts nothing.

    python bench/apiserver.py [--updates 3000] [--rounds A,G2,G1,P,B,A2]

G rounds need the Go toolchain (the control plane is built with it); without it they are
skipped.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes.client

from controller.admission import tls
from controller.devcluster import cluster, local

NS = "bench"
BENCH = Path(__file__).resolve().parent
BARE_HOOK = "bare.bench.changegate.io"
ROUNDS = {
    "A": "A   no webhook",
    "G2": "G2  Go, HTTP/2",
    "G1": "G1  Go, HTTP/1.1",
    "P": "P   aiohttp bare",
    "B": "B   changegate",
    "A2": "A'  no webhook",
}


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


def _passive_opens() -> int:
    """TCP connections this machine has accepted so far (/proc/net/snmp, Tcp PassiveOpens)."""
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Tcp:")
    ]
    return int(lines[1][lines[0].index("PassiveOpens")])


def _histogram(text: str, metric: str, **labels: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram over every series with ``labels``."""
    total = count = 0.0
    for line in text.splitlines():
        for suffix in ("_sum", "_count"):
            if line.startswith(metric + suffix) and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                value = float(line.rsplit(" ", 1)[1])
                if suffix == "_sum":
                    total += value
                else:
                    count += value
    return total, count


def _apiserver_webhook_seconds(cp: cluster.ControlPlane) -> tuple[float, float]:
    out = cp.kubectl("get", "--raw", "/metrics", check=True).stdout
    return _histogram(
        out, "apiserver_admission_webhook_admission_duration_seconds", operation="UPDATE",
        type="validating",
    )  # fmt: skip


def _is_gated(core: Any) -> bool:
    """A server-side dry-run update is admitted (once the webhook gates configmaps, that
    means changegate has the bench window in its index)."""
    try:
        core.patch_namespaced_config_map("cm", NS, {"data": {"probe": "1"}}, dry_run="All")
    except kubernetes.client.ApiException:
        return False
    return True


def _review_body() -> bytes:
    """A ConfigMap UPDATE review as the API server sends one for this bench."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": NS}}
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "cm",
                "namespace": NS,
                "operation": "UPDATE",
                "userInfo": {"username": cluster.ADMIN_USER, "groups": ["system:masters"]},
                "object": {**cm, "data": {"n": "2"}},
                "oldObject": {**cm, "data": {"n": "1"}},
                "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "PatchOptions"},
            },
        }
    ).encode()


def _answer_bytes(url: str, ca: Path) -> int:
    """Size of the webhook's answer to one bench review (HTTP body)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(
        url, data=_review_body(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        return len(r.read())


def _webhook_configuration(url: str, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "bench-bare"},
        "webhooks": [
            {
                "name": BARE_HOOK,
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca.read_bytes()).decode()},
                "rules": [
                    {
                        "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"],
                        "operations": ["UPDATE"], "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }  # fmt: skip


def _wait_called(cp: cluster.ControlPlane, core: Any, *, timeout: float = 30) -> None:
    """Until a dry-run update goes through the newly registered webhook."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _apiserver_webhook_seconds(cp)[1]
        if _is_gated(core) and _apiserver_webhook_seconds(cp)[1] > before:
            return
        time.sleep(0.3)
    raise SystemExit("the API server did not start calling the bare webhook")


@contextmanager
def _bare(kind: str, *, work: Path) -> Iterator[tuple[str, Path]]:
    """A bare webhook server (Go h2, Go h1 or aiohttp) on a free port: (url, ca file)."""
    certs = work / "bare-certs"
    ca, cert, key = tls.ensure_dev_certs(certs)
    port_file = work / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    if kind in ("G1", "G2"):
        binary = work / "barewebhook"
        if not binary.exists():
            subprocess.run(
                ["go", "build", "-o", str(binary), str(BENCH / "barewebhook.go")],
                check=True, env={**os.environ, "GOFLAGS": ""},
            )  # fmt: skip
        cmd = [str(binary), "-cert", str(cert), "-key", str(key), "-port-file", str(port_file)]
        cmd += ["-http1"] if kind == "G1" else []
    else:
        cmd = [sys.executable, str(BENCH / "admission.py"), "--serve", "bare", "--certs",
               str(certs), "--port-file", str(port_file)]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "CHANGEGATE_BENCH_CHILD": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bare webhook {kind} did not start")
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port_file.read_text()}/validate", ca
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _measured_round(cp: cluster.ControlPlane, core: Any, *, n: int, tag: str) -> dict[str, Any]:
    hook_sum, hook_count = _apiserver_webhook_seconds(cp)
    opens = _passive_opens()
    ms = _round(core, n=n, tag=tag)
    opens = _passive_opens() - opens
    hook_sum2, hook_count2 = _apiserver_webhook_seconds(cp)
    calls = hook_count2 - hook_count
    return {
        "ms": ms,
        "hook_ms": (hook_sum2 - hook_sum) / calls * 1000 if calls else None,
        "calls": int(calls),
        "connections": opens,
    }


def _changegate_seconds(cg: local.Changegate) -> tuple[float, float]:
    ctx = ssl.create_default_context(cafile=str(cg.workdir / "certs" / "ca.crt"))
    with urllib.request.urlopen(f"{cg.url}/metrics", context=ctx, timeout=5) as r:
        text = r.read().decode()
    return _histogram(text, "changegate_admission_duration_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--rounds", default=",".join(ROUNDS))
    args = parser.parse_args()
    wanted = [r for r in ROUNDS if r in args.rounds.split(",")]
    if shutil.which("go") is None:
        print("no Go toolchain: rounds G1 and G2 skipped")
        wanted = [r for r in wanted if r not in ("G1", "G2")]
    work = Path(tempfile.mkdtemp(prefix="changegate-bench-"))
    results: dict[str, dict[str, Any]] = {}
    with cluster.ControlPlane(workdir=work / "cluster") as cp:
        core = kubernetes.client.CoreV1Api(cluster.api_client(cp))
        cp.kubectl("create", "namespace", NS, check=True)
        core.create_namespaced_config_map(NS, {"metadata": {"name": "cm"}, "data": {}})
        local.install_crds(cp)
        load_before = os.getloadavg()[0]

        for tag in wanted:
            if tag in ("A", "A2"):
                results[tag] = _measured_round(cp, core, n=args.updates, tag=tag)
            elif tag in ("G1", "G2", "P"):
                with _bare(tag, work=work) as (url, ca):
                    cp.kubectl(
                        "apply",
                        "-f",
                        "-",
                        input=json.dumps(_webhook_configuration(url, ca)),
                        check=True,
                    )
                    try:
                        _wait_called(cp, core)
                        results[tag] = _measured_round(cp, core, n=args.updates, tag=tag)
                        results[tag]["answer_bytes"] = _answer_bytes(url, ca)
                    finally:
                        cp.kubectl(
                            "delete", "validatingwebhookconfiguration", "bench-bare", check=True
                        )
            else:
                with local.running(cp, workdir=work / "changegate") as cg:
                    now = datetime.datetime.now(datetime.UTC)
                    for obj in _objects(now):
                        cp.kubectl("apply", "-f", "-", input=json.dumps(obj), check=True)
                    deadline = time.monotonic() + 30
                    while not _is_gated(core):
                        if time.monotonic() > deadline:
                            raise SystemExit("changegate did not start gating configmaps")
                        time.sleep(0.5)
                    own_sum, own_count = _changegate_seconds(cg)
                    results[tag] = _measured_round(cp, core, n=args.updates, tag=tag)
                    own_sum2, own_count2 = _changegate_seconds(cg)
                    results[tag]["own_ms"] = (own_sum2 - own_sum) / (own_count2 - own_count) * 1000
                    results[tag]["answer_bytes"] = _answer_bytes(
                        f"{cg.url}/validate", cg.workdir / "certs" / "ca.crt"
                    )  # fmt: skip

    print(
        f"{args.updates} sequential ConfigMap updates per round, loadavg {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print(
        f"{'round':<20}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'mean ms':>8}"
        f"{'webhook':>9}{'server':>8}{'conns':>7}{'answer':>8}"
    )
    sums = {tag: _summary(r["ms"]) for tag, r in results.items()}
    for tag, r in results.items():
        s = sums[tag]
        hook = f"{r['hook_ms']:.3f}" if r.get("hook_ms") is not None else "-"
        own = f"{r['own_ms']:.3f}" if "own_ms" in r else "-"
        answer = f"{r['answer_bytes']} B" if "answer_bytes" in r else "-"
        print(
            f"{ROUNDS[tag]:<20}{s['p50']:>8.2f}{s['p90']:>8.2f}{s['p99']:>8.2f}{s['mean']:>8.2f}"
            f"{hook:>9}{own:>8}{r['connections']:>7}{answer:>8}"
        )
    print(
        "webhook: the API server's mean webhook call (ms); server: changegate's own handling "
        "(ms, body read to answer); conns: TCP connections accepted during the round"
    )
    if {"A", "A2"} <= sums.keys():
        base = {q: (sums["A"][q] + sums["A2"][q]) / 2 for q in sums["A"]}
        for tag in ("G2", "G1", "P", "B"):
            if tag in sums:
                ratio = {q: sums[tag][q] / base[q] for q in base}
                print(
                    f"ratio {tag} / mean(A, A'): "
                    + ", ".join(f"{q} {v:.2f}" for q, v in ratio.items())
                    + ("   (target: p50 and p99 <= 1.25)" if tag == "B" else "")
                )


if __name__ == "__main__":
    main()
