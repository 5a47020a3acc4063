"""A one-node cluster: the local control plane plus a real node that runs pods.

:class:`NodeCluster` is a :class:`~controller.devcluster.cluster.ControlPlane` (same API: the
admin kubeconfig, identities, ``kubectl``, the audit log) that also runs
kube-controller-manager, kube-scheduler, containerd and a kubelet, so a Deployment gets pods,
a Service gets endpoints, a Lease is taken by a pod, and ``helm install`` runs the chart for
real. Used by ``make cluster NODE=1`` and the node tests (``pytest -m node``).

Everything runs inside a sandbox (:mod:`controller.devcluster.hostenv`): the node's own
network and mount namespaces, and a cgroup tree of its own. Inside, the node has a
non-loopback address on one end of a veth pair (the kubelet refuses a loopback node IP, and
Endpoints refuse loopback addresses); the host reaches the API server at that address, through
the other end. Pods get addresses on a CNI bridge inside the namespace, and nothing is routed
off the machine: the node's namespace has no default route.

No kube-proxy and no cluster DNS: the API server calls webhook Services through their
endpoints (``--enable-aggregator-routing``), and one DNAT rule sends the ``kubernetes``
Service (10.0.0.1:443) to the API server, so in-cluster clients (kopf, the Python client,
client-go) work unchanged. Images come from ``ctr images import``: no registry is reachable.

Stopping kills every process of the node by its id (the cgroup tree says which), which also
dissolves the namespaces with their links, bridge, iptables rules and mounts; it then restores
the kernel settings the kubelet changed, and fails if anything is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from controller import pki
from controller.devcluster import assets, cluster, hostenv, ociimage

NODE_NAME = "changegate-node"
API_PORT = 6443
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
POD_CIDR = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
PAUSE_IMAGE = f"localhost/changegate-pause:{assets.KUBE_VERSION}"
#: The CNI plugins of Debian's containernetworking-plugins.
CNI_BIN_DIR = "/usr/lib/cni"


class NodeError(cluster.ControlPlaneError):
    """The node could not start, or could not be cleaned up completely."""


def podman_image_archive(ref: str) -> Path:
    """``ref`` from podman's store as an archive for ``ctr images import`` (cached by image id).

    ``make image`` builds with podman; the node runs containerd, which has its own store.
    """
    inspect = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if inspect.returncode != 0:
        raise NodeError(f"image {ref} is not in podman's store (make image): {inspect.stderr}")
    image_id = inspect.stdout.strip()[:16]
    cache = assets.node_cache_dir().parent / "images"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{image_id}.tar"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            tmp = archive.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            saved = subprocess.run(
                ["podman", "save", "--format=docker-archive", "--output", str(tmp), ref],
                capture_output=True,
                text=True,
                check=False,
            )
            if saved.returncode != 0:
                raise NodeError(f"podman save {ref} failed: {saved.stderr}")
            tmp.replace(archive)
            # Archives of images that have since been rebuilt are dead weight.
            for old in cache.glob("*.tar"):
                if old != archive:
                    old.unlink(missing_ok=True)
    return archive


def _replace_flags(args: Sequence[str], changes: dict[str, str | None]) -> list[str]:
    """``args`` with ``--flag=value`` replaced (or dropped, for None) per ``changes``."""
    out: list[str] = []
    for arg in args:
        name = arg.partition("=")[0]
        if name not in changes:
            out.append(arg)
        elif (value := changes[name]) is not None:
            out.append(f"{name}={value}")
    return out


class NodeCluster(cluster.ControlPlane):
    """The control plane plus one node; ``start``/``stop`` as for :class:`ControlPlane`."""

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        bin_dir: Path | None = None,
        node_bin_dir: Path | None = None,
        images: Sequence[Path] = (),
    ) -> None:
        super().__init__(workdir=workdir, bin_dir=bin_dir)
        self.node_bin_dir = node_bin_dir
        self.images = list(images)
        self.claim: hostenv.Claim | None = None
        self.slot: hostenv.Slot | None = None
        self.sandbox: hostenv.Sandbox | None = None
        self.port = API_PORT
        #: Seconds each start-up phase took (for the figures in docs and notes).
        self.timings: dict[str, float] = {}

    # -- where things are ---------------------------------------------------------------------

    @property
    def node_ip(self) -> str:
        assert self.slot is not None, "not started"
        return self.slot.node_ip

    @property
    def server(self) -> str:
        return f"https://{self.node_ip}:{API_PORT}"

    @property
    def node_dir(self) -> Path:
        return self.workdir / "node"

    @property
    def containerd_socket(self) -> Path:
        """Inside the node's private /run: only the node's own processes talk to containerd
        (the host through ``ctr`` in the node), and a unix socket path must stay short."""
        return Path("/run/changegate/containerd.sock")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, timeout: float = 240.0) -> None:
        t0 = time.monotonic()
        try:
            if self.bin_dir is None:
                self.bin_dir = assets.ensure_binaries()
            if self.node_bin_dir is None:
                self.node_bin_dir = assets.ensure_node_binaries()
            assets.ensure_node_tools()
        except assets.AssetsError as e:
            raise NodeError(str(e)) from e
        self.workdir.mkdir(parents=True, exist_ok=True)
        for private in hostenv.PRIVATE_DIRS:
            if self.workdir.resolve().is_relative_to(private):
                raise NodeError(f"the workdir must not be under {private}: the node hides it")
        keep = bool(os.environ.get("CHANGEGATE_KEEP_WORKDIR"))
        self.claim = hostenv.Claim(
            workdir=self.workdir, remove_workdir=self._own_workdir and not keep
        )
        try:
            self.slot = self.claim.acquire()
        except hostenv.HostError as e:
            raise NodeError(str(e)) from e
        deadline = t0 + timeout
        try:
            # Every start is a new cluster: no etcd data or node state from a previous run.
            for stale in ("etcd", "node"):
                shutil.rmtree(self.workdir / stale, ignore_errors=True)
            self.node_dir.mkdir()
            pki_dir = self._write_pki()
            self._write_node_pki(pki_dir)
            self.sandbox = hostenv.Sandbox(slot=self.slot, log=self.workdir / "sandbox.log")
            self.sandbox.start(preexec=self._preexec())
            self._route_kubernetes_service()
            self._mark("sandbox", t0)
            self._start_etcd()
            self._start_apiserver(pki_dir)
            self._write_admin_kubeconfig()
            self._start_containerd()
            self._wait_ready(timeout=max(deadline - time.monotonic(), 1.0))
            self._mark("apiserver", t0)
            self._wait_for("containerd", self._containerd_ready, deadline)
            self._import_pause()
            for archive in self.images:
                self.import_image(archive)
            self._mark("images", t0)
            self._start_controllers(pki_dir)
            self._start_kubelet(pki_dir)
            self._wait_for(f"node {NODE_NAME} Ready", self._node_ready, deadline)
            # Pods are refused until kube-controller-manager made the default ServiceAccount.
            self._wait_for("ServiceAccount default/default", self._default_sa, deadline)
            self._mark("ready", t0)
        except BaseException as e:
            problems = self._teardown()
            if problems and isinstance(e, Exception):
                e.add_note("and the node left behind: " + "; ".join(problems))
            raise

    def _mark(self, phase: str, t0: float) -> None:
        self.timings[phase] = round(time.monotonic() - t0, 1)

    def stop(self) -> None:
        """Stop everything and undo the host changes; raises if something is left behind."""
        problems = self._teardown()
        if problems:
            raise NodeError("the node left behind: " + "; ".join(problems))

    def _teardown(self) -> list[str]:
        procs, self._procs = self._procs, []
        if self.sandbox is not None and self.sandbox.proc is not None:
            procs.append(self.sandbox.proc)
        # The data is throwaway: kill at once rather than shut down in order. Direct children
        # first (and reap them), then the claim kills what they left: shims and containers.
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.sandbox = None
        if self.claim is None:
            return []
        claim, self.claim = self.claim, None
        try:
            return claim.release()
        except hostenv.HostError as e:
            return [str(e)]

    # -- processes inside the sandbox --------------------------------------------------------

    def _preexec(self) -> Callable[[], None]:
        assert self.slot is not None
        join = hostenv.join_cgroups(self.slot)

        def preexec() -> None:
            cluster._die_with_parent()
            join()

        return preexec

    def _spawn(
        self,
        name: str,
        args: Sequence[str],
        *,
        preexec: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        assert self.sandbox is not None
        return super()._spawn(
            name, [*self.sandbox.enter(), *args], preexec=preexec or self._preexec()
        )

    def command_in_node(self, *args: str) -> list[str]:
        """``args`` as a command line that runs inside the node's namespaces (for Popen)."""
        assert self.sandbox is not None, "not started"
        return [*self.sandbox.enter(), *args]

    def in_node(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's namespaces (its network, its mounts)."""
        assert self.sandbox is not None, "not started"
        return self.sandbox.run(*args, timeout=timeout)

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """containerd's ``ctr`` against the node's containerd, in the CRI namespace."""
        return self.in_node(
            "ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args,
            timeout=timeout,
        )  # fmt: skip

    def _proc_name(self, proc: subprocess.Popen[bytes]) -> str:
        args = [str(a) for a in proc.args]  # type: ignore[union-attr]
        return Path(args[args.index("--") + 1] if "--" in args else args[0]).name

    def _check_alive(self) -> None:
        for proc in self._procs:
            if proc.poll() is not None:
                name = self._proc_name(proc)
                raise NodeError(
                    f"{name} exited with {proc.returncode}; last log lines:\n"
                    + self._log_tail(name)
                )

    def _wait_for(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(0.5)
        raise NodeError(f"timed out waiting for {what}; logs in {self.workdir}")

    # -- certificates and kubeconfigs ---------------------------------------------------------

    def _serving_hosts(self) -> list[str]:
        return [
            self.node_ip,
            "127.0.0.1",
            KUBERNETES_SERVICE_IP,
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]

    def _write_node_pki(self, pki_dir: Path) -> None:
        assert self.ca is not None
        clients = {
            "kubelet": (f"system:node:{NODE_NAME}", ["system:nodes"]),
            "kube-controller-manager": ("system:kube-controller-manager", []),
            "kube-scheduler": ("system:kube-scheduler", []),
        }
        for name, (user, groups) in clients.items():
            pair = pki.make_client_cert(ca=self.ca, user=user, groups=groups)
            self._write_kubeconfig(self.node_dir / f"{name}.kubeconfig", user=user, pair=pair)
        files = {
            # The API server's identity towards the kubelet (logs, exec, port-forward).
            "apiserver-kubelet-client": pki.make_client_cert(
                ca=self.ca, user="kube-apiserver-kubelet-client", groups=["system:masters"]
            ),
            "kubelet-serving": pki.make_serving_cert(
                ca=self.ca, hosts=[NODE_NAME, self.node_ip, "127.0.0.1", "localhost"]
            ),
        }
        for name, pair in files.items():
            (pki_dir / f"{name}.crt").write_bytes(pair.cert_pem)
            (pki_dir / f"{name}.key").write_bytes(pair.key_pem)
            (pki_dir / f"{name}.key").chmod(0o600)

    # -- the control plane, as a cluster with a node needs it ---------------------------------

    def _start_apiserver(self, pki_dir: Path) -> None:
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        args = _replace_flags(
            self._apiserver_args(pki_dir),
            {
                "--secure-port": str(API_PORT),
                # Inside the node's namespace: its loopback (for the node's components) and
                # the node's address (for the host and the pods).
                "--bind-address": "0.0.0.0",
                "--advertise-address": self.node_ip,
                # A real address: the kubernetes Service gets the API server as its endpoint.
                "--endpoint-reconciler-type": "lease",
                "--authorization-mode": "Node,RBAC",
                # kube-controller-manager makes the service accounts that pods need.
                "--disable-admission-plugins": None,
            },
        )
        args += [
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki_dir / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki_dir / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki_dir / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            # Webhook Services are called through their endpoints: no kube-proxy needed.
            "--enable-aggregator-routing=true",
        ]
        self._spawn("kube-apiserver", args)

    def _route_kubernetes_service(self) -> None:
        """In-cluster clients dial 10.0.0.1:443; send that to the API server (no kube-proxy)."""
        assert self.sandbox is not None
        target = f"{self.node_ip}:{API_PORT}"
        # A local route, so a hostNetwork process can connect() before the DNAT rewrites it.
        self.sandbox.must("ip", "route", "add", "local", f"{KUBERNETES_SERVICE_IP}/32", "dev", "lo")
        for chain in ("PREROUTING", "OUTPUT"):  # from pods on the bridge; from the node itself
            self.sandbox.must(
                "iptables", "-w", "-t", "nat", "-A", chain, "-d", f"{KUBERNETES_SERVICE_IP}/32",
                "-p", "tcp", "--dport", "443", "-j", "DNAT", "--to-destination", target,
            )  # fmt: skip

    def _start_controllers(self, pki_dir: Path) -> None:
        assert self.node_bin_dir is not None
        kcm = self.node_dir / "kube-controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.node_bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                f"--root-ca-file={pki_dir / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki_dir / 'ca.crt'}",
                f"--cluster-signing-key-file={pki_dir / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--v=1",
            ],
        )
        sched = self.node_dir / "kube-scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            [
                str(self.node_bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched}",
                f"--authentication-kubeconfig={sched}",
                f"--authorization-kubeconfig={sched}",
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    # -- containerd ---------------------------------------------------------------------------

    def _start_containerd(self) -> None:
        d = self.node_dir / "containerd"
        cni = self.node_dir / "cni"
        (cni / "net.d").mkdir(parents=True)
        d.mkdir(exist_ok=True)
        # containerd 1.6 (Debian bookworm), config version 2. Its root, state and socket are the
        # node's own; cgroupfs, as the kubelet's; the pause image imported below.
        config = f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"

[grpc]
  address = "{self.containerd_socket}"

[ttrpc]
  address = "{self.containerd_socket}.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d / "opt"}"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    enable_selinux = false
    disable_apparmor = true
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{cni / "net.d"}"
"""
        (d / "config.toml").write_text(config)
        # A bridge and host-local addresses, inside the node's namespace. containerd reports
        # the network NotReady without a CNI config, and the node then never becomes Ready.
        conflist = {
            "cniVersion": "1.0.0",
            "name": "changegate",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                        # Pods reach the node's address (and so the API server) via the bridge.
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(cni / "ipam"),
                    },
                }
            ],
        }
        (cni / "net.d" / "10-changegate.conflist").write_text(json.dumps(conflist, indent=2))
        self._spawn("containerd", ["containerd", f"--config={d / 'config.toml'}"])

    def _containerd_ready(self) -> bool:
        return self.ctr("version", timeout=10).returncode == 0

    def import_image(self, archive: Path) -> None:
        """Import an image archive (docker or OCI) into the node's containerd."""
        out = self.ctr("images", "import", str(archive), timeout=600)
        if out.returncode != 0:
            raise NodeError(f"importing {archive} failed: {out.stderr.strip()}")

    def _import_pause(self) -> None:
        assert self.node_bin_dir is not None
        archive = self.node_dir / "pause.tar"
        ociimage.write_archive(
            ref=PAUSE_IMAGE,
            files={"pause": self.node_bin_dir / "pause"},
            entrypoint=["/pause"],
            out=archive,
        )
        self.import_image(archive)

    def images_present(self) -> list[str]:
        out = self.ctr("images", "list", "--quiet")
        return [line for line in out.stdout.split() if not line.startswith("sha256:")]

    # -- the kubelet --------------------------------------------------------------------------

    def _start_kubelet(self, pki_dir: Path) -> None:
        assert self.node_bin_dir is not None and self.slot is not None
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "imageServiceEndpoint": f"unix://{self.containerd_socket}",
            # The node's cgroup tree: what stop() kills and removes.
            "cgroupRoot": f"/{self.slot.cgroup}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "podLogsDir": str(self.node_dir / "pod-logs"),
            "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "resolvConf": "/etc/resolv.conf",
            # A shared development machine: evict only when it is really full.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
        }
        path = self.node_dir / "kubelet.json"
        path.write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            [
                str(self.node_bin_dir / "kubelet"),
                f"--config={path}",
                f"--kubeconfig={self.node_dir / 'kubelet.kubeconfig'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.node_ip}",
                # Its default, inside the node's private /var/lib: the kubelet keeps unix
                # sockets there, whose paths must stay short.
                "--root-dir=/var/lib/kubelet",
                "--v=1",
            ],
        )

    def _node_ready(self) -> bool:
        out = self.kubectl(
            "get", "node", NODE_NAME, "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        )  # fmt: skip
        return out.returncode == 0 and out.stdout.strip() == "True"

    def _default_sa(self) -> bool:
        return self.kubectl("-n", "default", "get", "serviceaccount", "default").returncode == 0
