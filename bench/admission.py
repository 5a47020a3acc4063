"""Admission server throughput and latency against a bare aiohttp TLS server (prints, asserts nothing).

Every process on its own, so the load generator never shares an event loop with a server:

- target (a): changegate's admission server (``server.build_app`` + ``server.serve``) over a
  Store holding bench/decide.py's seeded synthetic cluster (10,000 ChangeWindows by default),
  decision log lines formatted and written (to /dev/null) as in production;
- target (b): a bare aiohttp TLS server that reads the body, parses the JSON and answers
  ``allowed: true`` -- the floor any Python webhook pays for HTTP + TLS + JSON;
- target (c): changegate's server over an empty, synced store -- (c) - (b) is the cost of the
  admission layer itself (review codec, response, log line, metrics), (a) - (c) that of deciding;
- the load generator: an aiohttp client over TLS sending ~3.6 KB Deployment UPDATE
  AdmissionReviews at a fixed concurrency for a fixed number of requests (bounded in time),
  after an unmeasured warm-up run.

Every server and the load generator run on the same event loop, ``--loop`` (uvloop, the one
``changegate run`` uses, by default; ``asyncio`` for the standard one), so the ratio measures
changegate, not the loop.

Printed per round: req/s, p50/p99 latency and the server's CPU time per request (from
/proc/PID/stat), with the load average. Wall-clock figures move with whatever else the
machine runs; CPU per request much less. Rounds alternate targets; the best round of each is
compared. Targets: throughput ratio (a)/(b) >= 0.8, p99 of (a) <= 5 ms at concurrency 16.

    .venv/bin/python bench/admission.py [--requests 5000] [--concurrency 16] [--windows 10000]
        [--rounds 2] [--warmup 1000] [--targets changegate,bare,changegate-empty]
        [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import decide as decide_bench  # bench/decide.py: a script's own folder is on sys.path
import uvloop

from controller import __main__ as entrypoint
from controller import store as stores
from controller.admission import server, tls
from controller.operator import handlers

_CHILD_ENV = "CHANGEGATE_BENCH_CHILD"
SEED = 7

# -- the synthetic cluster: bench/decide.py's seeded generator (10,000 windows, 1,000
# namespaces ns-N, 1,000 identities for users user-N, 50 policies), so both benches measure the
# same cluster. Reviews below are Deployment UPDATEs by user-N in ns-N: a mix of denials
# (no covering window, not designated, outside work hours...) and uncontrolled requests.


def deployment(*, namespace: str, replicas: int, image: str) -> dict[str, Any]:
    """A Deployment as the API server sends it (managedFields trimmed), about 1.5 KB of JSON."""
    labels = {
        "app.kubernetes.io/name": "web",
        "app.kubernetes.io/part-of": "payments",
        "tier": "frontend",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": namespace,
            "uid": "3f1c2a8e-0b7d-4c55-9d1e-6a0f4b2c9e11",
            "resourceVersion": "918273",
            "generation": 42,
            "creationTimestamp": "2026-03-02T08:15:00Z",
            "labels": labels,
            "annotations": {"deployment.kubernetes.io/revision": "17", "owner": "payments-team"},
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "env": [
                                {"name": "LOG_LEVEL", "value": "info"},
                                {"name": "REGION", "value": "ap-northeast-2"},
                            ],
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "256Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": 8080},
                                "periodSeconds": 5,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/live", "port": 8080},
                                "periodSeconds": 10,
                            },
                        }
                    ],
                    "securityContext": {"runAsNonRoot": True},
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
        "status": {
            "observedGeneration": 41,
            "replicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
        },
    }


def review_body(*, user: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web",
            "namespace": namespace,
            "operation": "UPDATE",
            "userInfo": {"username": user, "groups": ["payments-ops", "system:authenticated"]},
            "object": deployment(
                namespace=namespace, replicas=4, image="registry.example/web:2.3.1"
            ),
            "oldObject": deployment(
                namespace=namespace, replicas=3, image="registry.example/web:2.3.0"
            ),
            "dryRun": False,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": "UpdateOptions",
                "fieldManager": "kubectl-client-side-apply",
            },
        },
    }


# -- targets -------------------------------------------------------------------------------------


def _run(main: Coroutine[Any, Any, Any], loop: str) -> Any:
    """Run ``main`` on the chosen event loop (every bench process uses the same one)."""
    if loop == "uvloop":
        return uvloop.run(main)
    return asyncio.run(main)


async def _run_forever(srv: server.Server, port_file: Path) -> None:
    port_file.write_text(str(srv.port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await srv.stop()


async def serve_changegate(*, certs: Path, port_file: Path, windows: int) -> None:
    # Decision log lines are formatted and written as in production (``changegate run``'s
    # logging setup, JSON lines on its stderr), but to /dev/null.
    real_stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115
    try:
        entrypoint.configure_logging("INFO")
    finally:
        sys.stderr = real_stderr

    started = time.perf_counter()
    if windows >= 0:
        store, _ = decide_bench.build_cluster(random.Random(SEED), n_windows=windows)
    else:  # an empty, synced store: measures the admission layer without decision work
        store = stores.Store()
        for kind in stores.KINDS:
            store.mark_synced(kind)
    # What a replica does once its index has synced: compile every timeline, then take the
    # long-lived index out of the garbage collector's way.
    store.snapshot().prime(decide_bench.NOW)
    handlers.freeze_long_lived()
    print(
        f"  target store with {max(windows, 0)} windows built in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )
    app = server.build_app(store=store, clock=lambda: decide_bench.NOW)
    _, cert, key = tls.ensure_dev_certs(certs)
    srv = await server.serve(app=app, host="127.0.0.1", port=0, cert_file=cert, key_file=key)
    await _run_forever(srv, port_file)


async def serve_bare(*, certs: Path, port_file: Path) -> None:
    from aiohttp import web

    async def validate(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        uid = body["request"]["uid"]
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True},
            }
        )

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/validate", validate)
    _, cert, key = tls.ensure_dev_certs(certs)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port_file.write_text(str(runner.addresses[0][1]))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


# -- load generator ------------------------------------------------------------------------------


async def load(
    *, url: str, ca: Path, requests: int, concurrency: int, max_seconds: float
) -> dict[str, Any]:
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(ca))
    bodies = [
        json.dumps(review_body(user=f"user-{n}", namespace=f"ns-{n}")).encode()
        for n in range(0, 1000, 7)
    ]
    latencies: list[float] = []
    answers: dict[str, int] = {}
    errors = 0
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=ctx)
    async with aiohttp.ClientSession(
        connector=connector, headers={"Content-Type": "application/json"}
    ) as session:

        async def worker(deadline: float) -> None:
            nonlocal errors
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                started = time.perf_counter()
                try:
                    async with session.post(url, data=bodies[i % len(bodies)]) as resp:
                        payload = await resp.read()
                except (aiohttp.ClientError, OSError):
                    errors += 1
                    continue
                elapsed = time.perf_counter() - started
                if resp.status != 200:
                    errors += 1
                    continue
                latencies.append(elapsed)
                key = "allowed" if b'"allowed":true' in payload.replace(b" ", b"") else "denied"
                answers[key] = answers.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(started + max_seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "seconds": elapsed,
        "sent": n + errors,
        "rps": n / elapsed if elapsed else 0.0,
        "p50_ms": statistics.median(latencies) * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "answers": answers,
        "body_bytes": statistics.mean(len(b) for b in bodies),
    }


# -- orchestration -------------------------------------------------------------------------------


def _start_target(
    kind: str, *, certs: Path, tmp: Path, windows: int, loop: str
) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / f"{kind}.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--certs",
            str(certs),
            "--port-file",
            str(port_file),
            "--windows",
            str(windows),
            "--loop",
            loop,
        ],
        env={**os.environ, _CHILD_ENV: "1"},
    )
    deadline = time.monotonic() + 180
    while not port_file.exists() or not port_file.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"target {kind} did not start")
        time.sleep(0.2)
    return proc, f"https://127.0.0.1:{port_file.read_text()}/validate"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(url: str, *, pid: int, ca: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One load run against a started target, with the target's CPU time per request.

    CPU per request does not depend on what else the (shared) machine is doing, wall-clock
    throughput does; both are printed.
    """

    def run(requests: int) -> bytes:
        out = subprocess.run(
            [
                sys.executable, __file__, "--load", url, "--ca", str(ca), "--requests", str(requests),
                "--concurrency", str(args.concurrency), "--max-seconds", str(args.max_seconds),
                "--loop", args.loop,
            ],
            capture_output=True, env={**os.environ, _CHILD_ENV: "1"},
        )  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"load generator failed: {out.stderr.decode()[-2000:]}")
        return out.stdout

    # Warm-up run first (connections, lazily compiled window timelines, caches), not measured.
    run(args.warmup)
    cpu_before = _cpu_seconds(pid)
    stdout = run(args.requests)
    result: dict[str, Any] = json.loads(stdout)
    result["server_cpu_us"] = (_cpu_seconds(pid) - cpu_before) / result["sent"] * 1e6
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--windows", type=int, default=10_000)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--targets", default="changegate,bare,changegate-empty")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--serve", choices=["changegate", "changegate-empty", "bare"])
    ap.add_argument("--load")
    ap.add_argument("--certs", type=Path)
    ap.add_argument("--ca", type=Path)
    ap.add_argument("--port-file", type=Path)
    args = ap.parse_args()

    if args.serve is not None:
        windows = args.windows if args.serve == "changegate" else -1  # -1: an empty store
        if args.serve == "bare":
            _run(serve_bare(certs=args.certs, port_file=args.port_file), args.loop)
        else:
            _run(
                serve_changegate(certs=args.certs, port_file=args.port_file, windows=windows),
                args.loop,
            )
        return
    if args.load:
        result = _run(
            load(url=args.load, ca=args.ca, requests=args.requests, concurrency=args.concurrency,
                 max_seconds=args.max_seconds),
            args.loop,
        )  # fmt: skip
        print(json.dumps(result))
        return
    if os.environ.get(_CHILD_ENV):
        raise SystemExit("bench child processes never orchestrate (would recurse)")

    with tempfile.TemporaryDirectory(prefix="changegate-bench-") as tmpdir:
        tmp = Path(tmpdir)
        certs = tmp / "certs"
        ca, _, _ = tls.ensure_dev_certs(certs)
        print(
            f"admission bench: {args.requests} requests per target, concurrency {args.concurrency}, "
            f"{args.windows} windows, cpu count {os.cpu_count()}, {args.loop} event loop"
        )
        # Rounds alternate (a), (b), (a), (b)... so a burst of load from elsewhere on the machine
        # does not land on one target only; the best round of each is compared.
        labels = {
            "changegate": "(a) changegate",
            "bare": "(b) bare aiohttp",
            "changegate-empty": "(c) changegate, empty store",
        }
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in labels}
        targets = [kind for kind in labels if kind in args.targets.split(",")]
        for round_ in range(1, args.rounds + 1):
            for kind in targets:
                proc, url = _start_target(
                    kind, certs=certs, tmp=tmp, windows=args.windows, loop=args.loop
                )
                try:
                    r = _measure(url, pid=proc.pid, ca=ca, args=args)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
                runs[kind].append(r)
                label = labels[kind]
                r["loadavg"] = os.getloadavg()[0]
                print(
                    f"round {round_} {label:28} {r['rps']:6.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  server CPU {r['server_cpu_us']:5.0f} us/req  "
                    f"({r['requests']} measured in {r['seconds']:.1f}s, errors {r['errors']}, "
                    f"answers {r['answers']}, body {r['body_bytes']:.0f} B, "
                    f"loadavg {r['loadavg']:.2f})",
                    flush=True,
                )
        best = {kind: max(rs, key=lambda r: r["rps"]) for kind, rs in runs.items() if rs}
        for kind, r in best.items():
            print(
                f"best {labels[kind]:28} {r['rps']:6.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                f"p99 {r['p99_ms']:6.2f} ms  server CPU {r['server_cpu_us']:5.0f} us/req"
            )
        a, b, c = best.get("changegate"), best.get("bare"), best.get("changegate-empty")
        if a and b:
            print(
                f"throughput ratio (a)/(b) = {a['rps'] / b['rps']:.2f} (target >= 0.8); "
                f"server CPU per request (b)/(a) = {b['server_cpu_us'] / a['server_cpu_us']:.2f}; "
                f"p99 (a) = {a['p99_ms']:.2f} ms (target <= 5)"
            )
        if c and b:
            print(
                f"admission layer without decision work, (c)/(b): throughput "
                f"{c['rps'] / b['rps']:.2f}, server CPU {c['server_cpu_us'] - b['server_cpu_us']:+.0f} us/req"
            )
        if a and c:
            print(
                f"deciding against {args.windows} windows, (a)-(c): "
                f"{a['server_cpu_us'] - c['server_cpu_us']:+.0f} us/req server CPU"
            )


if __name__ == "__main__":
    main()
