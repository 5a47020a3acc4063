"""A local Kubernetes control plane: etcd + kube-apiserver on loopback, no kubelet.

Envtest-style: enough of a cluster to exercise admission, RBAC, CRDs and watches as real
identities. Identities are real: the admin and every test user authenticate with client
certificates signed by the cluster's CA (CN = user, O = groups), or by impersonation.

The API server writes an audit log as a production cluster would: the recommended policy of
docs/operations.md (``docs/audit-policy.yaml``, the same file) into ``audit/audit.log`` of the
work directory, so the tests and the demo read changegate's audit annotations where an auditor
would. The log backend runs in ``blocking`` mode: each event is written in the request's own
goroutine, unbuffered, before the API server moves on -- a test finds the entry of a request
it just made (for the response stage, a moment after the response), where ``batch`` mode
would hold it in a buffer for up to its max wait. Rotation (at ``AUDIT_LOG_MAXSIZE_MB``, gzip,
``AUDIT_LOG_MAXBACKUP`` files) is on, as it should be anywhere, and sized so that a test
session rarely rotates; the report reads rotated files anyway.

Child processes get ``PR_SET_PDEATHSIG`` so they die with the process that started them even
when it is killed with SIGKILL; ``stop()`` terminates them and is idempotent.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import kubernetes.client
import kubernetes.config

from controller import pki
from controller.devcluster import assets

ADMIN_USER = "changegate-admin"

#: The recommended audit policy (docs/operations.md#audit-log); the local API server uses it.
AUDIT_POLICY = assets.repo_root() / "docs" / "audit-policy.yaml"
AUDIT_LOG_MAXSIZE_MB = 50
AUDIT_LOG_MAXBACKUP = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to kill us when our parent dies.
    # SIGKILL, not SIGTERM: on SIGTERM etcd and kube-apiserver start a graceful shutdown that
    # can wait on each other forever once nobody is left to finish it. The data is throwaway.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ControlPlaneError(RuntimeError):
    """The local control plane could not start."""


@dataclasses.dataclass
class Identity:
    """A user the API server authenticates by client certificate."""

    user: str
    groups: tuple[str, ...]
    kubeconfig: Path


class ControlPlane:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, *, workdir: Path | None = None, bin_dir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="changegate-cp-"))
        self.bin_dir = bin_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.ca: pki.KeyPair | None = None
        self._identities: dict[tuple[str, tuple[str, ...]], Identity] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The API server's live audit log; rotated files sit next to it (``audit-*.log.gz``)."""
        return self.workdir / "audit" / "audit.log"

    def audit_log_files(self) -> list[Path]:
        """The live audit log and its rotated predecessors, in no particular order."""
        return sorted(self.audit_log.parent.glob("audit*.log*"))

    @property
    def kubectl_path(self) -> Path:
        assert self.bin_dir is not None
        return self.bin_dir / "kubectl"

    def start(self, *, timeout: float = 90.0) -> None:
        if self.bin_dir is None:
            self.bin_dir = assets.ensure_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki_dir = self._write_pki()
        try:
            self._start_etcd()
            self._start_apiserver(pki_dir)
            self._write_admin_kubeconfig()
            self._wait_ready(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _serving_hosts(self) -> list[str]:
        """The names and addresses in the API server's serving certificate."""
        return ["127.0.0.1", "localhost"]

    def _write_pki(self) -> Path:
        pki_dir = self.workdir / "pki"
        pki_dir.mkdir(exist_ok=True)
        self.ca = pki.make_ca(common_name="changegate-local-ca")
        serving = pki.make_serving_cert(ca=self.ca, hosts=self._serving_hosts())
        sa_key = pki.make_rsa_key_pem()
        files = {
            "ca.crt": self.ca.cert_pem,
            "ca.key": self.ca.key_pem,
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            "sa.key": sa_key,
        }
        for name, data in files.items():
            (pki_dir / name).write_bytes(data)
            (pki_dir / name).chmod(0o600)
        return pki_dir

    def _spawn(
        self,
        name: str,
        args: Sequence[str],
        *,
        preexec: Callable[[], None] = _die_with_parent,
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        proc = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,
            # Own process group: a Ctrl-C meant for the demo or pytest must not reach etcd
            # first; stop() shuts things down in order (changegate, API server, etcd).
            start_new_session=True,
            env=env,
        )
        log.close()
        self._procs.append(proc)
        return proc

    def _start_etcd(self) -> None:
        assert self.bin_dir is not None
        self.etcd_port = free_port()
        peer_port = free_port()
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, pki_dir: Path) -> None:
        self.port = free_port()
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        self._spawn("kube-apiserver", self._apiserver_args(pki_dir))

    def _apiserver_args(self, pki_dir: Path) -> list[str]:
        """The API server's command line: the local setup, and the audit log as production's."""
        assert self.bin_dir is not None
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={pki_dir}",
            f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
            f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
            f"--client-ca-file={pki_dir / 'ca.crt'}",
            f"--secure-port={self.port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # Loopback advertise address: no kubernetes Service endpoints to reconcile.
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki_dir / 'sa.key'}",
            f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            # No controller-manager runs: nothing would create the "default" service
            # account that the ServiceAccount admission plugin insists on for pods.
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-policy-file={AUDIT_POLICY}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            f"--audit-log-maxsize={AUDIT_LOG_MAXSIZE_MB}",
            f"--audit-log-maxbackup={AUDIT_LOG_MAXBACKUP}",
            "--audit-log-maxage=0",
            "--audit-log-compress",
            "--v=1",
        ]

    def _write_admin_kubeconfig(self) -> None:
        assert self.ca is not None
        admin = pki.make_client_cert(ca=self.ca, user=ADMIN_USER, groups=["system:masters"])
        self._write_kubeconfig(self.kubeconfig, user=ADMIN_USER, pair=admin)

    def _write_kubeconfig(self, path: Path, *, user: str, pair: pki.KeyPair) -> None:
        assert self.ca is not None
        stem = path.with_suffix("")
        cert_file, key_file = Path(f"{stem}.crt"), Path(f"{stem}.key")
        cert_file.write_bytes(pair.cert_pem)
        key_file.write_bytes(pair.key_pem)
        key_file.chmod(0o600)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "changegate-local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.workdir / "pki" / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate": str(cert_file), "client-key": str(key_file)},
                }
            ],
            "contexts": [
                {
                    "name": "changegate-local",
                    "context": {"cluster": "changegate-local", "user": user},
                }
            ],
            "current-context": "changegate-local",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
        stem = self.kubeconfig.with_suffix("")
        ctx.load_cert_chain(f"{stem}.crt", f"{stem}.key")
        return ctx

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self._ssl_context()
        last = "no answer"
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    name = self._proc_name(proc)
                    raise ControlPlaneError(
                        f"{name} exited with {proc.returncode}; last log lines:\n"
                        + self._log_tail(name)
                    )
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
                    last = f"HTTP {r.status}"
            except Exception as e:
                last = str(e)
            time.sleep(0.25)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout:.0f}s ({last}); logs in {self.workdir}"
        )

    def _proc_name(self, proc: subprocess.Popen[bytes]) -> str:
        """The name of a child process (its log is ``<name>.log``)."""
        return Path(str(proc.args[0])).name  # type: ignore[index]

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        procs, self._procs = self._procs[::-1], []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._own_workdir and not os.environ.get("CHANGEGATE_KEEP_WORKDIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- identities --------------------------------------------------------------------------

    def identity(self, user: str, groups: Sequence[str] = ()) -> Identity:
        """A kubeconfig that authenticates as ``user`` in ``groups`` by client certificate."""
        key = (user, tuple(groups))
        if key not in self._identities:
            assert self.ca is not None
            pair = pki.make_client_cert(ca=self.ca, user=user, groups=groups)
            safe = "".join(c if c.isalnum() else "_" for c in user)
            path = self.workdir / "users" / f"{safe}-{len(self._identities)}.kubeconfig"
            path.parent.mkdir(exist_ok=True)
            self._write_kubeconfig(path, user=user, pair=pair)
            self._identities[key] = Identity(user=user, groups=tuple(groups), kubeconfig=path)
        return self._identities[key]

    def kubectl(
        self,
        *args: str,
        as_user: str | None = None,
        as_groups: Sequence[str] = (),
        input: str | None = None,
        check: bool = False,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl as the admin, or impersonating ``as_user``/``as_groups``."""
        cmd = [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}"]
        if as_user is not None:
            cmd.append(f"--as={as_user}")
            cmd += [f"--as-group={g}" for g in as_groups]
        cmd += list(args)
        return subprocess.run(
            cmd, input=input, capture_output=True, text=True, check=check, timeout=timeout
        )


def api_client(
    cp: ControlPlane, *, user: str | None = None, groups: Sequence[str] = ()
) -> kubernetes.client.ApiClient:
    """A kubernetes Python client: the admin, or ``user``/``groups`` by client certificate.

    Client certificates make the API server authenticate the identity itself (no impersonation
    rights needed), which is how real users and service accounts arrive.
    """
    path = cp.kubeconfig if user is None else cp.identity(user, groups).kubeconfig
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path)
    )
    return client


def impersonating_client(
    cp: ControlPlane, *, user: str, group: str | None = None
) -> kubernetes.client.ApiClient:
    """The admin's client impersonating ``user`` (and one ``group``: the Python client sends
    one value per header, so use :func:`api_client` for several groups)."""
    client = api_client(cp)
    client.set_default_header("Impersonate-User", user)  # type: ignore[no-untyped-call]
    if group is not None:
        client.set_default_header("Impersonate-Group", group)  # type: ignore[no-untyped-call]
    return client
