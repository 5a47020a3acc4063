"""``make demo``: changegate end to end on a local control plane, told as a story.

Starts etcd + kube-apiserver (built or reused), installs the CRDs, starts changegate in local
mode, applies examples/, then plays the day of a change with real kubectl calls as different
users (client certificates, so the API server itself authenticates them):

alice (developer) is denied outside a window, requests one, cannot approve it herself; bob
(approver) approves it; alice's change is admitted; dave (not designated) is denied;
``kubectl exec`` is denied; carol (on call) opens a break-glass window and gets in. It ends
with the auditor's view: ``kubectl changegate report --audit-log`` over the API server's audit
log of the story.

Every step checks what it expects and the demo exits non-zero when one does not hold, so the
test that runs it (tests/integration/test_demo.py) keeps it honest.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from controller.devcluster import assets, cluster, local

ROOT = assets.repo_root()
EXAMPLES = ROOT / "examples"

ALICE = ("alice@example.com", ("developers", "payments-ops"))
BOB = ("bob@example.com", ("change-approvers",))
CAROL = ("carol@example.com", ("sre-oncall", "developers"))
DAVE = ("dave@example.com", ("developers",))

RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo-developer}
rules:
- {apiGroups: [apps], resources: [deployments, deployments/scale], verbs: [get, list, watch, create, update, patch]}
- {apiGroups: [""], resources: [pods, configmaps, namespaces, events], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [pods/exec], verbs: [create, get]}
- {apiGroups: [changegate.io], resources: [changewindows], verbs: [get, list, watch, create]}
- {apiGroups: [changegate.io], resources: [changepolicies, authorizedidentities], verbs: [get, list, watch]}
- {apiGroups: [events.k8s.io], resources: [events], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: demo-approver}
rules:
- {apiGroups: [changegate.io], resources: [changewindows], verbs: [get, list, watch, patch, update]}
- {apiGroups: [changegate.io], resources: [changepolicies, authorizedidentities], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [namespaces], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-developers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-developer}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: developers}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: sre-oncall}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: demo-approvers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: demo-approver}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: change-approvers}
"""

# The story's own policy: no blackouts and no work hours, so it plays the same on any day.
# (examples/ hold the realistic payments policy with freezes, holidays and work hours.)
SHOP = """
apiVersion: changegate.io/v1alpha1
kind: ChangePolicy
metadata: {name: shop-prod}
spec:
  match:
    resources:
    - {apiGroups: [apps], resources: [deployments, deployments/scale], operations: [CREATE, UPDATE, DELETE]}
    - {apiGroups: [""], resources: [configmaps], operations: [CREATE, UPDATE, DELETE]}
    - {apiGroups: [""], resources: [pods/exec], operations: [CONNECT]}
    namespaces: [shop]
  enforcement: Enforce
  approval: {required: 1, approverGroups: [change-approvers]}
  ticketPattern: "^CHG-[0-9]+$"
  breakGlass: {groups: [sre-oncall], maxDuration: 4h}
  message: {contact: "#change-management"}
---
apiVersion: changegate.io/v1alpha1
kind: AuthorizedIdentity
metadata: {name: shop-oncall}
spec:
  subjects:
  - {kind: User, name: alice@example.com}
---
apiVersion: changegate.io/v1alpha1
kind: AuthorizedIdentity
metadata: {name: shop-sre}
spec:
  subjects:
  - {kind: Group, name: sre-oncall}
"""

WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.27"}]
---
apiVersion: v1
kind: Pod
metadata: {name: debug, namespace: shop}
spec:
  containers: [{name: shell, image: "busybox:1.36", command: [sleep, infinity]}]
"""


class Demo:
    def __init__(self, *, cp: cluster.ControlPlane) -> None:
        self.cp = cp
        self.step_no = 0
        self.failures: list[str] = []
        self.cli = [sys.executable, "-m", "controller.cli.main"]

    # -- printing ---------------------------------------------------------------------------

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n\033[1m== {self.step_no}. {title}\033[0m", flush=True)

    def say(self, text: str) -> None:
        print(textwrap.fill(text, width=96), flush=True)

    # -- running as someone ----------------------------------------------------------------

    def _kubeconfig(self, who: tuple[str, tuple[str, ...]] | None) -> Path:
        return self.cp.kubeconfig if who is None else self.cp.identity(*who).kubeconfig

    def run(
        self,
        who: tuple[str, tuple[str, ...]] | None,
        argv: Sequence[str],
        *,
        expect: str,
        contains: Sequence[str] = (),
        stdin: str | None = None,
        show: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl or kubectl-changegate as ``who``; check the outcome is ``expect``."""
        name = "admin" if who is None else who[0].split("@")[0]
        kubeconfig = str(self._kubeconfig(who))
        if argv[:2] == ["kubectl", "changegate"]:  # the plugin, as kubectl would run it
            cmd = [*self.cli, *argv[2:], f"--kubeconfig={kubeconfig}"]
        else:
            cmd = [str(self.cp.kubectl_path), f"--kubeconfig={kubeconfig}", *argv[1:]]
        print(f"{name}$ {show or shlex.join(argv)}", flush=True)
        env = dict(os.environ, TZ=os.environ.get("TZ", "UTC"))
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)
        text = (res.stdout + res.stderr).strip()
        if text:
            print(textwrap.indent(text, "    "), flush=True)
        ok = (res.returncode == 0) == (expect == "ok") and all(c in text for c in contains)
        if not ok:
            problem = f"step {self.step_no}: expected {expect} with {list(contains)}, got exit {res.returncode}"
            print(f"    !! {problem}", flush=True)
            self.failures.append(problem)
        return res

    def wait_until_allowed(self, who: tuple[str, tuple[str, ...]], args: Sequence[str]) -> None:
        """The webhook learns about new windows and approvals from its watch: a moment later."""
        cmd = [*self.cli, "can-i", *args, f"--kubeconfig={self._kubeconfig(who)}"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0:
                time.sleep(1.0)  # and give the webhook's own index the same moment
                return
            time.sleep(0.5)

    # -- the story --------------------------------------------------------------------------

    def play(self) -> None:
        cp = self.cp
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

        self.step("The platform team sets up namespaces, RBAC and a workload")
        for ns in ("shop", "payments"):
            cp.kubectl("create", "namespace", ns)
        cp.kubectl("apply", "-f", "-", input=RBAC, check=True)
        cp.kubectl("apply", "-f", "-", input=WORKLOAD, check=True)
        self.run(None, ["kubectl", "get", "deployments,pods", "-n", "shop"], expect="ok")

        self.step("The platform team applies the examples and the shop policy")
        self.run(
            None,
            [
                "kubectl",
                "apply",
                "-f",
                str(EXAMPLES / "changepolicy-payments-prod.yaml"),
                "-f",
                str(EXAMPLES / "authorizedidentity-payments-oncall.yaml"),
            ],
            expect="ok",
        )
        self.say("Windows are requested by the requester named in them, so alice applies these:")
        self.run(
            ALICE,
            [
                "kubectl",
                "apply",
                "-f",
                str(EXAMPLES / "changewindow-chg-1234-payments-v2-3.yaml"),
                "-f",
                str(EXAMPLES / "changewindow-weekly-payments-maintenance.yaml"),
            ],
            expect="ok",
        )
        self.run(
            None,
            ["kubectl", "apply", "-f", "-"],
            stdin=SHOP,
            expect="ok",
            show="kubectl apply -f shop-policy.yaml",
        )
        print(textwrap.indent(SHOP.strip(), "    | "))
        time.sleep(1.5)  # let the webhook's index see the new policy

        self.step("alice changes the shop's web deployment with no window: denied")
        self.run(
            ALICE,
            ["kubectl", "-n", "shop", "set", "image", "deployment/web", "web=nginx:1.28"],
            expect="denied",
            contains=["changegate denied", "no approved change window"],
        )

        self.step("alice asks before she tries: kubectl changegate can-i")
        self.run(
            ALICE,
            ["kubectl", "changegate", "can-i", "update", "deployments", "web", "-n", "shop"],
            expect="denied",
        )

        self.step("alice requests a change window (the requester is filled in from her identity)")
        start = (now - datetime.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        end = (now + datetime.timedelta(hours=2)).isoformat().replace("+00:00", "Z")
        self.run(
            ALICE,
            [
                "kubectl",
                "changegate",
                "request",
                "-n",
                "shop",
                "--ticket",
                "CHG-2001",
                "--description",
                "Roll out web on nginx 1.28",
                "--identity",
                "shop-oncall",
                "--resource",
                "deployments.apps",
                "--operation",
                "UPDATE",
                "--name",
                "web",
                "--start",
                start,
                "--end",
                end,
                "--name-window",
                "chg-2001-web",
            ],
            expect="ok",
        )

        self.step("alice tries to approve her own window: four-eyes says no")
        self.run(
            ALICE,
            ["kubectl", "changegate", "approve", "chg-2001-web", "--yes"],
            expect="denied",
            contains=["four-eyes"],
        )

        self.step("bob, an approver, approves it (he signs the spec's hash)")
        self.run(
            BOB,
            ["kubectl", "changegate", "approve", "chg-2001-web", "--yes"],
            expect="ok",
            contains=["sha256:"],
        )
        self.wait_until_allowed(ALICE, ["update", "deployments", "web", "-n", "shop"])
        self.run(ALICE, ["kubectl", "changegate", "list"], expect="ok", contains=["chg-2001-web"])

        self.step("alice makes the same change again: admitted through CHG-2001")
        self.run(
            ALICE,
            ["kubectl", "-n", "shop", "set", "image", "deployment/web", "web=nginx:1.28"],
            expect="ok",
        )

        self.step("dave is a developer too, but the window does not name him: denied")
        self.run(
            DAVE,
            ["kubectl", "-n", "shop", "set", "image", "deployment/web", "web=nginx:1.29"],
            expect="denied",
            contains=["is not designated personnel of window CHG-2001"],
        )

        self.step("alice tries to kubectl exec into a pod: the window does not cover pods/exec")
        self.run(
            ALICE,
            ["kubectl", "-n", "shop", "exec", "debug", "--", "true"],
            expect="denied",
            contains=["changegate denied"],
        )

        self.step("carol is on call: she opens a break-glass window and gets in")
        self.run(
            CAROL,
            [
                "kubectl",
                "changegate",
                "emergency",
                "-n",
                "shop",
                "--reason",
                "INC-88 checkout latency",
                "--duration",
                "1h",
                "--name-window",
                "inc-88-checkout",
            ],
            expect="ok",
        )
        self.wait_until_allowed(CAROL, ["exec", "pods", "debug", "-n", "shop"])
        res = self.run(
            CAROL, ["kubectl", "-n", "shop", "exec", "debug", "--", "true"], expect="denied"
        )
        if "changegate denied" in res.stdout + res.stderr:
            self.failures.append("carol's exec was denied by changegate despite break-glass")
        self.say(
            "changegate admitted it (flagged as an emergency); the API server then fails because "
            "this local control plane has no kubelet to run the command. She scales web up:"
        )
        self.run(
            CAROL,
            ["kubectl", "-n", "shop", "scale", "deployment/web", "--replicas=3"],
            expect="ok",
        )

        self.step("What SREs and auditors see: windows and Events")
        self.run(
            None,
            ["kubectl", "get", "changewindows"],
            expect="ok",
            contains=["chg-2001-web", "inc-88-checkout"],
        )
        time.sleep(1.0)
        self.run(None, ["kubectl", "get", "events", "-A", "--sort-by=.lastTimestamp"], expect="ok")
        self.run(ALICE, ["kubectl", "changegate", "report", "--since", "1d"], expect="ok")

        self.step("The durable record: the API server's audit log, read back for the auditor")
        self.say(
            "Events expire after an hour and windows can be deleted; the API server's audit log "
            "keeps every decision changegate made (its audit annotations) and every window's "
            "requests and approvals. The report needs nothing but the log files:"
        )
        since = now.isoformat().replace("+00:00", "Z")
        files = [str(f) for f in cp.audit_log_files()]
        self.run(
            None,
            ["kubectl", "changegate", "report", "--audit-log", *files, "--since", since],
            expect="ok",
            contains=[
                "chg-2001-web",
                "NotDesignated",
                "Emergency changes whose window was never reviewed: 1",
                "inc-88-checkout",
            ],
            show=f"kubectl changegate report --audit-log {cp.audit_log.parent}/audit*.log* --since {since}",
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".changegate-cluster")
    parser.add_argument(
        "--wait",
        choices=["auto", "yes", "no"],
        default="auto",
        help="keep the cluster running at the end until Ctrl-C (auto: when run from a terminal)",
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)

    print("Building or reusing the control-plane binaries ...", flush=True)
    try:
        bin_dir = assets.ensure_binaries()
    except assets.AssetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cp = cluster.ControlPlane(workdir=workdir / "cluster", bin_dir=bin_dir)
    print(f"Starting etcd + kube-apiserver {assets.KUBE_VERSION} on 127.0.0.1 ...", flush=True)
    cp.start()
    ok = False
    try:
        with local.running(cp, workdir=workdir / "changegate") as cg:
            print(f"changegate is serving at {cg.url} (logs: {cg.log})", flush=True)
            demo = Demo(cp=cp)
            demo.play()
            ok = not demo.failures
            print(
                "\n"
                + (
                    "The story played as expected."
                    if ok
                    else "Some steps did not turn out as expected:\n  " + "\n  ".join(demo.failures)
                )
            )
            wait = args.wait == "yes" or (args.wait == "auto" and sys.stdin.isatty())
            print(
                textwrap.dedent(f"""
                Keep exploring:
                  export KUBECONFIG={cp.kubeconfig}
                  export PATH={bin_dir}:$PATH
                  kubectl get changewindows
                  kubectl changegate list --kubeconfig {cp.identity(*ALICE).kubeconfig}   # as alice
                  (kubectl-changegate is in .venv/bin: export PATH=$PWD/.venv/bin:$PATH)
                changegate's decision log: {cg.log}""")
            )
            if wait:
                print("Press Ctrl-C to stop changegate and the control plane.", flush=True)
                stop = threading.Event()
                signal.signal(signal.SIGINT, lambda *_: stop.set())
                signal.signal(signal.SIGTERM, lambda *_: stop.set())
                stop.wait()
                print("\nStopping changegate, then the control plane ...", flush=True)
            else:
                print("Stopping (run `make demo` from a terminal to keep it running).")
    finally:
        cp.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
