"""Run changegate for real against a local control plane (the demo and end-to-end tests).

``Changegate`` starts ``python -m controller run --local`` as a subprocess with the admin
kubeconfig and waits until it is ready *and* the API server has its webhook configuration.
``running(cp, workdir=...)`` also installs the CRDs and, on exit, removes the webhook
configuration so a shared control plane is not left failing closed.

The admin kubeconfig is a local shortcut: in a cluster changegate runs as its own service
account with the RBAC in charts/changegate/templates/rbac.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from controller.devcluster import assets, cluster

CRDS_DIR = assets.repo_root() / "crds"
NAMESPACE = "changegate"


def install_crds(cp: cluster.ControlPlane) -> None:
    """Apply crds/*.yaml and wait until the API server serves them."""
    cp.kubectl("apply", "-f", str(CRDS_DIR), check=True)
    cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRDS_DIR), check=True
    )


@dataclasses.dataclass
class Changegate:
    """A changegate process in local mode; ``stop``/``start`` simulate an outage."""

    cp: cluster.ControlPlane
    workdir: Path
    port: int
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "changegate.log"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, *, timeout: float = 60.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "controller",
            "run",
            "--local",
            f"--kubeconfig={self.cp.kubeconfig}",
            "--listen-host=127.0.0.1",
            f"--port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--namespace={NAMESPACE}",
            "--log-level=info",
            *self.args,
        ]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=assets.repo_root(),
                env=env,
                preexec_fn=cluster._die_with_parent,
                start_new_session=True,  # stopped in order by stop(), not by a terminal Ctrl-C
            )
        self.wait_ready(timeout=timeout)

    def wait_ready(self, *, timeout: float) -> None:
        """Until /readyz answers 200 and the API server has the webhook configuration."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"changegate exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            with contextlib.suppress(Exception):
                # The CA appears when the process has made its dev certificates.
                ctx = ssl.create_default_context(cafile=str(self.workdir / "certs" / "ca.crt"))
                with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200 and self._webhook_points_here():
                        return
            time.sleep(0.2)
        raise RuntimeError(f"changegate not ready after {timeout:.0f}s:\n{self.log_text()[-4000:]}")

    def _webhook_points_here(self) -> bool:
        out = self.cp.kubectl("get", "validatingwebhookconfiguration", "changegate", "-o", "json")
        if out.returncode != 0:
            return False
        hooks = json.loads(out.stdout).get("webhooks") or []
        return bool(hooks) and all(
            h["clientConfig"].get("url") == f"{self.url}/validate" for h in hooks
        )

    def stop(self) -> int | None:
        """SIGTERM, as the kubelet sends; returns the exit code (None if it was not running)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode


@contextlib.contextmanager
def running(
    cp: cluster.ControlPlane, *, workdir: Path, args: Sequence[str] = ()
) -> Iterator[Changegate]:
    """CRDs installed, changegate running in local mode; torn down (webhook removed) on exit."""
    install_crds(cp)
    cp.kubectl("create", "namespace", NAMESPACE)  # may exist already: fine
    cg = Changegate(cp=cp, workdir=workdir, port=cluster.free_port(), args=tuple(args))
    try:
        cg.start()
        yield cg
    finally:
        cg.stop()
        cp.kubectl("delete", "validatingwebhookconfiguration", "changegate", "--ignore-not-found")
