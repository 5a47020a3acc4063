"""How fast `kubectl changegate report --audit-log` reads an audit log, and in how much memory.

Generates a realistic API server audit log of N events (default 1,000,000) as the API server
writes it with a Metadata-for-everything policy plus changegate's rules (bodies for its CRs):
kubelets and controllers reading and writing, leases, Events, users and CI changing
controlled Deployments and ConfigMaps through changegate (admitted through windows, denied,
Warn mode, dry-run, emergency), ChangeWindows created and approved with their bodies, and a
few writes with no changegate decision. It is split like a rotated log: nine gzip files and a
live plain one, passed in shuffled order.

Then runs the real command in a child process,

    python -m controller.cli.main report --audit-log FILES... -o json > /dev/null

and prints events per second (events in the files / wall time of the child, start-up
included) and the child's peak RSS. Targets: >= 50,000 events/s, <= 150 MB. Prints figures
only; asserts nothing.

    python bench/report.py [--events 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from controller.policy import approvals

FILES = 10
T0 = datetime.datetime(2026, 11, 2, 0, 0, tzinfo=datetime.UTC)
NAMESPACES = [f"team-{i}" for i in range(20)]
CONTROLLED = NAMESPACES[:8]  # a policy per team namespace for these
USERS = [f"dev{i}@example.com" for i in range(40)]
CI = "system:serviceaccount:argocd:argocd-application-controller"
NODES = [f"node-{i}" for i in range(30)]


def ts(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Gen:
    def __init__(self, seed: int = 7) -> None:
        self.r = random.Random(seed)
        self.windows: dict[str, dict[str, Any]] = {}  # still being approved
        self.retired: list[str] = []

    def base(
        self,
        t: datetime.datetime,
        *,
        verb: str,
        user: str,
        groups: list[str],
        ref: dict[str, Any],
        code: int,
        uri: str,
        level: str = "Metadata",
        stage: str = "ResponseComplete",
    ) -> dict[str, Any]:
        received = t - datetime.timedelta(microseconds=self.r.randint(800, 9000))
        ev: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": level,
            "auditID": str(uuid.UUID(int=self.r.getrandbits(128))),
            "stage": stage,
            "requestURI": uri,
            "verb": verb,
            "user": {"username": user, "groups": [*groups, "system:authenticated"]},
            "sourceIPs": [f"10.0.0.{self.r.randint(2, 250)}"],
            "userAgent": "kubectl/v1.37.2 (linux/amd64) kubernetes/$Format",
            "objectRef": ref,
            "responseStatus": {"metadata": {}, "code": code},
            "requestReceivedTimestamp": ts(received),
            "stageTimestamp": ts(t),
            "annotations": {
                "authorization.k8s.io/decision": "allow",
                "authorization.k8s.io/reason": "",
            },
        }
        return ev

    def event(self, t: datetime.datetime) -> dict[str, Any]:
        x = self.r.random()
        if x < 0.33:
            return self.read(t)
        if x < 0.58:
            return self.node_write(t)
        if x < 0.66:
            return self.lease(t)
        if x < 0.75:
            return self.controller_write(t)
        if x < 0.82:
            return self.k8s_event(t)
        if x < 0.995:
            return self.controlled(t)
        if x < 0.998:
            return self.window(t)
        return self.gap(t)

    def read(self, t: datetime.datetime) -> dict[str, Any]:
        ns = self.r.choice(NAMESPACES)
        res = self.r.choice(["pods", "configmaps", "secrets", "services", "endpoints"])
        verb = self.r.choice(["get", "list", "watch"])
        stage = (
            "ResponseStarted" if verb == "watch" and self.r.random() < 0.5 else "ResponseComplete"
        )
        return self.base(
            t,
            verb=verb,
            user=f"system:node:{self.r.choice(NODES)}",
            groups=["system:nodes"],
            ref={"resource": res, "namespace": ns, "apiVersion": "v1"},
            code=200,
            uri=f"/api/v1/namespaces/{ns}/{res}?limit=500",
            stage=stage,
        )

    def node_write(self, t: datetime.datetime) -> dict[str, Any]:
        node = self.r.choice(NODES)
        if self.r.random() < 0.5:
            ref = {"resource": "nodes", "name": node, "apiVersion": "v1", "subresource": "status"}
            uri = f"/api/v1/nodes/{node}/status"
        else:
            ns = self.r.choice(NAMESPACES)
            pod = f"web-{self.r.randint(1, 999)}"
            ref = {
                "resource": "pods",
                "namespace": ns,
                "name": pod,
                "apiVersion": "v1",
                "subresource": "status",
            }
            uri = f"/api/v1/namespaces/{ns}/pods/{pod}/status"
        return self.base(
            t,
            verb="patch",
            user=f"system:node:{node}",
            groups=["system:nodes"],
            ref=ref,
            code=200,
            uri=uri,
        )

    def lease(self, t: datetime.datetime) -> dict[str, Any]:
        name = self.r.choice(["kube-controller-manager", "kube-scheduler", "changegate"])
        return self.base(
            t,
            verb="update",
            user=f"system:{name}",
            groups=[],
            ref={
                "resource": "leases",
                "namespace": "kube-system",
                "name": name,
                "apiGroup": "coordination.k8s.io",
                "apiVersion": "v1",
            },
            code=200,
            uri=f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}",
        )

    def controller_write(self, t: datetime.datetime) -> dict[str, Any]:
        ns = self.r.choice(NAMESPACES)
        res, group = self.r.choice(
            [("replicasets", "apps"), ("endpointslices", "discovery.k8s.io"), ("pods", "")]
        )
        verb = self.r.choice(["create", "update", "delete"])
        return self.base(
            t,
            verb=verb,
            user="system:kube-controller-manager",
            groups=[],
            ref={
                "resource": res,
                "namespace": ns,
                "name": f"web-{self.r.randint(1, 99)}",
                "apiGroup": group,
                "apiVersion": "v1",
            },
            code=200,
            uri=f"/apis/{group}/v1/namespaces/{ns}/{res}",
        )

    def k8s_event(self, t: datetime.datetime) -> dict[str, Any]:
        ns = self.r.choice(NAMESPACES)
        return self.base(
            t,
            verb="create",
            user="system:kube-controller-manager",
            groups=[],
            ref={
                "resource": "events",
                "namespace": ns,
                "name": f"web.{self.r.getrandbits(32):x}",
                "apiVersion": "v1",
            },
            code=201,
            uri=f"/api/v1/namespaces/{ns}/events",
        )

    def controlled(self, t: datetime.datetime) -> dict[str, Any]:
        r = self.r
        ns = r.choice(NAMESPACES)
        res, group = r.choice([("deployments", "apps"), ("configmaps", "")])
        user, groups = (
            (CI, ["system:serviceaccounts", "system:serviceaccounts:argocd"])
            if r.random() < 0.4
            else (r.choice(USERS), ["developers"])
        )
        ev = self.base(
            t,
            verb=r.choice(["update", "patch", "patch", "create"]),
            user=user,
            groups=groups,
            ref={
                "resource": res,
                "namespace": ns,
                "name": f"app-{r.randint(1, 50)}",
                "apiGroup": group,
                "apiVersion": "v1",
            },
            code=200,
            uri=f"/apis/{group or 'v1'}/namespaces/{ns}/{res}/app",
        )
        p = "controlled.changegate.io/"
        ann = ev["annotations"]
        if ns not in CONTROLLED:
            ann.update({p + "decision": "allow", p + "reason": "NotControlled"})
            return ev
        window = r.choice(self.retired) if self.retired else "chg-1000"
        policy = f"{ns}-prod"
        y = r.random()
        if y < 0.70:
            ann.update(
                {
                    p + "decision": "allow",
                    p + "reason": "Window",
                    p + "mode": "Enforce",
                    p + "policy": policy,
                    p + "window": window,
                    p + "ticket": "CHG-" + window[4:],
                    p + "approvers": "bob@example.com",
                    p + "identity": f"{ns}-oncall",
                }
            )
        elif y < 0.90:
            ann.update(
                {
                    p + "decision": "deny",
                    p + "reason": "NoWindow",
                    p + "mode": "Enforce",
                    p + "policy": policy,
                }
            )
            ev["responseStatus"] = {
                "metadata": {},
                "status": "Failure",
                "message": f'admission webhook "controlled.changegate.io" denied the request: changegate denied UPDATE {res} {ns}/app for {user}: no approved change window covers this change (policy {policy}).',
                "reason": "Forbidden",
                "code": 403,
            }
        elif y < 0.95:
            ann.update(
                {
                    p + "decision": "deny",
                    p + "reason": r.choice(["NoWindow", "OutsideWorkHours"]),
                    p + "mode": "Warn",
                    p + "policy": policy,
                    p + "window": window,
                }
            )
        elif y < 0.98:
            ann.update(
                {
                    p + "decision": "allow",
                    p + "reason": "Emergency",
                    p + "mode": "Enforce",
                    p + "policy": policy,
                    p + "window": "inc-1",
                    p + "ticket": "EMERGENCY",
                    p + "identity": f"{ns}-sre",
                    p + "emergency": "true",
                }
            )
        else:
            ann.update(
                {
                    p + "decision": "allow",
                    p + "reason": "Window",
                    p + "mode": "Enforce",
                    p + "policy": policy,
                    p + "window": window,
                    p + "dryRun": "true",
                }
            )
            ev["requestURI"] += "?dryRun=All"
        return ev

    def window(self, t: datetime.datetime) -> dict[str, Any]:
        """A window's life: created by a developer, approved, now and then edited and approved
        again (the log keeps the bodies: RequestResponse)."""
        r = self.r
        live = list(self.windows)
        if not live or r.random() < 0.4:
            name = f"chg-{len(self.windows) + len(self.retired) + 1000}"
            ns = r.choice(CONTROLLED)
            requester = r.choice(USERS)
            spec: dict[str, Any] = {
                "ticket": "CHG-" + name[4:],
                "description": "roll out the new release of the payments service",
                "requester": requester,
                "identities": [f"{ns}-oncall"],
                "targets": [
                    {
                        "namespaces": [ns],
                        "resources": [
                            {
                                "apiGroups": ["apps"],
                                "resources": ["deployments"],
                                "operations": ["UPDATE"],
                            }
                        ],
                    }
                ],
                "schedule": {"start": ts(t), "end": ts(t + datetime.timedelta(hours=2))},
            }
            self.windows[name] = spec
            verb, user, code = "create", requester, 201
        else:
            name = r.choice(live)
            spec = self.windows[name]
            if r.random() < 0.15:  # the requester edits the plan: approvals go stale
                spec["description"] += " (and the api)"
                verb, user = "update", spec["requester"]
            else:
                ns = spec["targets"][0]["namespaces"][0]
                spec.setdefault("approvals", []).append(
                    {
                        "approver": r.choice(["bob@example.com", "erin@example.com"]),
                        "specHash": approvals.spec_hash(spec),
                        "approvedAt": ts(t)[:19] + "Z",
                        "policies": [f"{ns}-prod"],
                    }
                )
                verb, user = "patch", spec["approvals"][-1]["approver"]
            code = 200
            if len(spec.get("approvals", [])) >= 2:  # done: no more writes
                self.retired.append(name)
                del self.windows[name]
        body = {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {
                "name": name,
                "uid": str(uuid.UUID(int=r.getrandbits(128))),
                "generation": 1,
            },
            "spec": spec,
        }
        ev = self.base(
            t,
            verb=verb,
            user=user,
            groups=["developers"],
            ref={
                "resource": "changewindows",
                "name": name,
                "apiGroup": "changegate.io",
                "apiVersion": "v1alpha1",
            },
            code=code,
            uri=f"/apis/changegate.io/v1alpha1/changewindows/{name}",
            level="RequestResponse",
        )
        text = json.dumps(body)  # a snapshot: the window changes later
        ev["requestObject"] = json.loads(text)
        ev["responseObject"] = json.loads(text)
        ev["annotations"].update(
            {"crds.changegate.io/decision": "allow", "crds.changegate.io/reason": "Valid"}
        )
        return ev

    def gap(self, t: datetime.datetime) -> dict[str, Any]:
        ns = self.r.choice(CONTROLLED)
        return self.base(
            t,
            verb="patch",
            user=self.r.choice(USERS),
            groups=["developers"],
            ref={
                "resource": "deployments",
                "namespace": ns,
                "name": "app-1",
                "apiGroup": "apps",
                "apiVersion": "v1",
            },
            code=200,
            uri=f"/apis/apps/v1/namespaces/{ns}/deployments/app-1",
        )


def generate(n: int, folder: Path) -> list[Path]:
    gen = Gen()
    per_file = -(-n // FILES)
    paths: list[Path] = []
    t = T0
    written = 0
    for i in range(FILES):
        live = i == FILES - 1
        path = folder / ("audit.log" if live else f"audit-2026-11-02T{i:02d}-00-00.000.log.gz")
        f = open(path, "wb") if live else gzip.open(path, "wb", compresslevel=1)  # noqa: SIM115
        with f:
            lines = []
            for _ in range(min(per_file, n - written)):
                t += datetime.timedelta(microseconds=gen.r.randint(1000, 9000))
                lines.append(json.dumps(gen.event(t), separators=(",", ":")))
                if len(lines) == 5000:
                    f.write(("\n".join(lines) + "\n").encode())
                    lines = []
            if lines:
                f.write(("\n".join(lines) + "\n").encode())
            written += min(per_file, n - written)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="changegate-bench-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        paths = generate(args.events, folder)
        size = sum(p.stat().st_size for p in paths)
        print(
            f"generated {args.events:,} events in {len(paths)} files ({size / 1e6:.0f} MB on disk)"
            f" in {time.perf_counter() - started:.0f}s"
        )
        shuffled = paths[:]
        random.Random(3).shuffle(shuffled)
        cmd = [
            sys.executable,
            "-m",
            "controller.cli.main",
            "report",
            "--audit-log",
            *map(str, shuffled),
            "-o",
            "json",
        ]
        with tempfile.TemporaryFile() as out:
            started = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - started
            err = proc.stderr.read().decode() if proc.stderr else ""
            if status != 0:
                print(f"report failed ({status}): {err}")
                return
            out.seek(0)
            summary = json.loads(_head(out))["summary"]
        rss_mb = usage.ru_maxrss / 1024  # kilobytes on Linux
        print(
            f"report: {summary['linesRead']:,} events, {summary['requests']:,} requests decoded,"
            f" {summary['controlledChanges']:,} controlled changes"
        )
        print(
            f"events/s:  {summary['linesRead'] / elapsed:,.0f}  (wall {elapsed:.1f}s, start-up included; target >= 50,000)"
        )
        print(f"peak RSS:  {rss_mb:.0f} MB  (target <= 150 MB)")


def _head(out: Any) -> str:
    """The report's JSON up to the rows: enough for the summary, without loading the rows."""
    text = b""
    for line in out:
        if line.startswith(b'  "changes"'):
            break
        text += line
    return text.decode().rstrip().rstrip(",") + "}"


if __name__ == "__main__":
    main()
