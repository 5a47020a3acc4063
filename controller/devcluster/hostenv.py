"""What the node mode changes on the machine, kept where it can be undone -- even after a crash.

A kubelet and containerd change the host they run on: they mount filesystems, create network
devices and iptables chains, write files under hard-coded paths (``/var/lib/kubelet``,
``/var/log/containers``, ``/run/containerd``, ``/var/lib/cni``), create cgroups and set kernel
sysctls. The node mode confines all of it:

* **A sandbox** (:class:`Sandbox`): one process holds new *network* and *mount* namespaces,
  and every node process (etcd, the API server, the controllers, containerd, the kubelet) runs
  inside them. The node's address, its bridge, the pods' interfaces, every iptables rule and
  every mount live in those namespaces and vanish with their last process: nothing to undo.
  In the mount namespace ``/run``, ``/var/lib`` and ``/var/log`` are private tmpfs, so the
  hard-coded paths never touch the host's. One veth pair joins the host to the node (its host
  end disappears with the namespace too).
* **A cgroup of its own** (``/changegate-node-<slot>`` in every hierarchy): every node
  process is started into it, and the kubelet puts its pods under it (``cgroupRoot``).
  Stopping -- or the next start, after a crash -- kills exactly the processes in that tree,
  by their ids, and removes the tree. No process is ever picked by its name.
* **Kernel sysctls** the kubelet sets (``vm.overcommit_memory``, ``kernel.panic``, ...) are
  recorded before the first node starts and restored when the last one stops.
* **A record** per slot in ``/run/changegate-node/`` says what a running node changed; a slot
  is held with a file lock for as long as its node runs. A start that finds a record whose
  lock nobody holds undoes that node first. The last node to stop removes the directory.

Several nodes (two engineers' test runs) may run at once: each takes a free slot, which gives
its cgroup, its link name and its addresses. Needs root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

STATE_DIR = Path("/run/changegate-node")
SLOTS = 16
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: What the kubelet sets on start (it has no switch to leave them alone).
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
#: Host paths the sandbox hides behind private tmpfs mounts (kubelet, containerd and CNI
#: hard-code paths below them).
PRIVATE_DIRS = ("/run", "/var/lib", "/var/log")


class HostError(RuntimeError):
    """The host could not be prepared for a node, or not restored after one."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """One node's share of the host: names and addresses no other running node uses."""

    index: int

    @property
    def cgroup(self) -> str:
        return f"changegate-node-{self.index}"

    @property
    def host_link(self) -> str:
        return f"cgnode{self.index}"

    @property
    def node_ip(self) -> str:
        """The node's address: on the node's end of the veth, inside its network namespace."""
        return f"10.201.{self.index}.1"

    @property
    def host_ip(self) -> str:
        return f"10.201.{self.index}.2"

    @property
    def prefix_len(self) -> int:
        return 30


# -- cgroups ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """A mounted cgroup hierarchy, and where this process sits in it."""

    mount: Path
    own: str  # this process's cgroup in it, e.g. "/" or "/process_api/1c..."
    v2: bool


def hierarchies() -> list[Hierarchy]:
    """Every cgroup hierarchy mounted under /sys/fs/cgroup (v1, hybrid or v2)."""
    mounts: dict[str, tuple[Path, bool]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, super_opts = right.split(" ", 2)
        mount_point = Path(left.split(" ")[4])
        if fstype not in ("cgroup", "cgroup2") or not mount_point.is_relative_to(CGROUP_ROOT):
            continue
        if fstype == "cgroup2":
            mounts[""] = (mount_point, True)
        else:
            opts = super_opts.split(",")
            controllers = [o for o in opts if o not in ("rw", "ro") and "=" not in o]
            names = [o for o in opts if o.startswith("name=")]
            key = ",".join(sorted(controllers + names))
            mounts[key] = (mount_point, False)
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, listed, path = line.split(":", 2)
        own[",".join(sorted(listed.split(","))) if listed else ""] = path
    return [
        Hierarchy(mount=mount, own=own.get(key, "/"), v2=v2)
        for key, (mount, v2) in sorted(mounts.items())
    ]


def _cgroup_dirs(slot: Slot) -> list[Path]:
    return [h.mount / slot.cgroup for h in hierarchies()]


def _copy_cpuset(directory: Path) -> None:
    # A new cgroup-v1 cpuset takes no task until it has CPUs and memory nodes of its own.
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine, parent = directory / name, directory.parent / name
        if mine.exists() and not mine.read_text().strip():
            mine.write_text(parent.read_text())


def create_cgroups(slot: Slot) -> None:
    """``/<cgroup>`` (the kubelet's cgroupRoot) and ``/<cgroup>/node`` (the node's processes)."""
    for h in hierarchies():
        for directory in (h.mount / slot.cgroup, h.mount / slot.cgroup / "node"):
            directory.mkdir(exist_ok=True)
            _copy_cpuset(directory)


def join_cgroups(slot: Slot) -> Callable[[], None]:
    """A ``preexec_fn`` body that moves the new process into the slot's ``node`` cgroup.

    Hierarchies in which this process is not at the root are left alone: there the machine
    accounts the session's processes (here: memory), and the node's daemons stay counted
    with the session. The other hierarchies are enough to find every node process again.
    """
    targets = [
        h.mount / slot.cgroup / "node" / "cgroup.procs" for h in hierarchies() if h.own == "/"
    ]

    def join() -> None:
        pid = str(os.getpid())
        for procs in targets:
            with open(procs, "w") as f:
                f.write(pid)

    return join


def cgroup_pids(slot: Slot) -> set[int]:
    """Every process in the slot's cgroup trees (node daemons, shims, pods' containers)."""
    pids: set[int] = set()
    for top in _cgroup_dirs(slot):
        if not top.is_dir():
            continue
        for directory, _, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    text = (Path(directory) / "cgroup.procs").read_text()
                    pids.update(int(p) for p in text.split())
    return pids


def kill_cgroups(slot: Slot, *, timeout: float = 30.0) -> None:
    """SIGKILL every process of the slot until none is left (new ones may still be forking)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(slot)
        if not pids:
            return
        if time.monotonic() > deadline:
            raise HostError(f"processes of {slot.cgroup} did not exit: {sorted(pids)}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def remove_cgroups(slot: Slot, *, timeout: float = 15.0) -> None:
    """Remove the slot's cgroup trees, deepest first (only empty cgroups can be removed)."""
    deadline = time.monotonic() + timeout
    for top in _cgroup_dirs(slot):
        while top.is_dir():
            for directory, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            if top.is_dir():
                if time.monotonic() > deadline:
                    raise HostError(f"cannot remove cgroup {top}")
                time.sleep(0.1)


# -- sysctls ------------------------------------------------------------------------------------


def read_sysctls() -> dict[str, str]:
    values: dict[str, str] = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


def write_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys") / name
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)


# -- links --------------------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _run(*args: str) -> None:
    out = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=30)
    if out.returncode != 0:
        raise HostError(f"`{' '.join(args)}` failed: {out.stderr.strip()}")


# -- the record of a running node, and the slots ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    """What a running node changed, written before it changes it."""

    slot: int
    workdir: str
    remove_workdir: bool
    started: str
    pid: int  # the process that started it (for humans reading the record)

    @classmethod
    def load(cls, path: Path) -> Record | None:
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def _record_path(index: int) -> Path:
    return STATE_DIR / f"slot-{index}.json"


def _lock_path(index: int) -> Path:
    return STATE_DIR / f"slot-{index}.lock"


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialises slot claims and the sysctl bookkeeping between concurrent nodes.

    The lock is taken on the parent directory (``/run``), which always exists, so that the
    last node to stop can remove ``STATE_DIR`` altogether without a waiter holding a lock on
    a file that is gone.
    """
    fd = os.open(STATE_DIR.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        STATE_DIR.mkdir(mode=0o755, exist_ok=True)
        yield
    finally:
        os.close(fd)


def _try_lock(index: int) -> IO[str] | None:
    f = open(_lock_path(index), "w")  # noqa: SIM115 - held for the node's lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def undo(slot: Slot, record: Record | None) -> None:
    """Undo everything a node in ``slot`` changed: processes, cgroups, workdir, record.

    The network and mount namespaces (and with them the veth, the bridge, iptables rules,
    mounts) go away by themselves once their last process has been killed.
    """
    kill_cgroups(slot)
    remove_cgroups(slot)
    deadline = time.monotonic() + 10
    while link_exists(slot.host_link) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel dismantles a namespace asynchronously
    if link_exists(slot.host_link):  # only if something outside the tree held the namespace
        _run("ip", "link", "delete", slot.host_link)
    if record is not None and record.remove_workdir:
        shutil.rmtree(record.workdir, ignore_errors=True)
    _record_path(slot.index).unlink(missing_ok=True)


def leftovers(slot: Slot, workdir: Path) -> list[str]:
    """What of a stopped node is still on the host (empty when everything was undone)."""
    found: list[str] = []
    pids = cgroup_pids(slot)
    if pids:
        found.append(f"processes in {slot.cgroup}: {sorted(pids)}")
    found += [f"cgroup {d}" for d in _cgroup_dirs(slot) if d.exists()]
    if link_exists(slot.host_link):
        found.append(f"network link {slot.host_link}")
    prefix = str(workdir.resolve()) + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split(" ")[4]
        if mount_point.startswith(prefix):
            found.append(f"mount {mount_point}")
    return found


class Claim:
    """A slot held for one node: taken by :meth:`acquire`, given back by :meth:`release`."""

    def __init__(self, *, workdir: Path, remove_workdir: bool) -> None:
        self.workdir = workdir
        self.remove_workdir = remove_workdir
        self.slot: Slot | None = None
        self._lock: IO[str] | None = None
        self.undone_stale: list[int] = []  # slots of crashed runs this claim cleaned up

    def acquire(self) -> Slot:
        if os.geteuid() != 0:
            raise HostError("the node mode needs root (namespaces, cgroups, containerd)")
        with _state_lock():
            # First undo every crashed run: a record whose slot lock nobody holds.
            for index in range(SLOTS):
                if not _record_path(index).exists():
                    continue
                lock = _try_lock(index)
                if lock is None:
                    continue  # a live node
                try:
                    undo(Slot(index), Record.load(_record_path(index)))
                    self.undone_stale.append(index)
                finally:
                    lock.close()
            for index in range(SLOTS):
                lock = _try_lock(index)
                if lock is None:
                    continue
                if self._lock is None:
                    self._lock, self.slot = lock, Slot(index)
                else:
                    lock.close()
            if self.slot is None:
                raise HostError(f"all {SLOTS} node slots are in use")
            # The kernel settings as they were before any node: kept until the last one stops
            # (a file left by a crashed last node still holds them).
            sysctl_file = STATE_DIR / "sysctl-orig.json"
            if not sysctl_file.exists():
                sysctl_file.write_text(json.dumps(read_sysctls()))
            record = Record(
                slot=self.slot.index,
                workdir=str(self.workdir),
                remove_workdir=self.remove_workdir,
                started=datetime.datetime.now(datetime.UTC).isoformat(),
                pid=os.getpid(),
            )
            _record_path(self.slot.index).write_text(json.dumps(dataclasses.asdict(record)))
            # Nothing of a free slot's may still run: a tree left over is from a crash.
            kill_cgroups(self.slot)
            remove_cgroups(self.slot)
            create_cgroups(self.slot)
            return self.slot

    def release(self) -> list[str]:
        """Undo the node's changes; returns whatever could not be undone."""
        if self.slot is None or self._lock is None:
            return []
        slot = self.slot
        with _state_lock():
            record = Record.load(_record_path(slot.index))
            problems: list[str] = []
            try:
                undo(slot, record)
            except HostError as e:
                problems.append(str(e))
            # The last node to stop puts the kernel settings back.
            last = True
            for index in range(SLOTS):
                if index == slot.index:
                    continue
                lock = _try_lock(index)
                if lock is None:
                    last = False
                else:
                    lock.close()
            sysctl_file = STATE_DIR / "sysctl-orig.json"
            if last and sysctl_file.exists():
                try:
                    orig: dict[str, str] = json.loads(sysctl_file.read_text())
                except (OSError, ValueError):
                    orig = {}
                write_sysctls(orig)
                sysctl_file.unlink()
                problems += [
                    f"sysctl {k} is {v}, was {orig[k]}"
                    for k, v in read_sysctls().items()
                    if k in orig and orig[k] != v
                ]
            problems += leftovers(slot, self.workdir)
            self._lock.close()
            self._lock, self.slot = None, None
            # Nothing running and nothing to undo: the bookkeeping goes too.
            if last and not list(STATE_DIR.glob("slot-*.json")):
                shutil.rmtree(STATE_DIR, ignore_errors=True)
            return problems


# -- the sandbox --------------------------------------------------------------------------------

_HOLDER_SCRIPT = """
set -e
for d in {dirs}; do mount -t tmpfs -o mode=0755,size=2g changegate-node "$d"; done
ip link set lo up
echo ready
exec sleep infinity
"""


class Sandbox:
    """The process that holds the node's network and mount namespaces, and the veth to it."""

    def __init__(self, *, slot: Slot, log: Path) -> None:
        self.slot = slot
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def enter(self) -> list[str]:
        """The command prefix that runs a program inside the node's namespaces."""
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--"]

    def enter_net(self) -> list[str]:
        """The prefix for the node's network namespace alone (the host's filesystem view)."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--"]

    def start(self, *, preexec: Callable[[], None], timeout: float = 15.0) -> None:
        script = _HOLDER_SCRIPT.format(dirs=" ".join(PRIVATE_DIRS))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "--mount", "--propagation=private", "--", "sh", "-c", script],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=preexec,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        line = b""
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() < deadline and self.proc.poll() is None:
            line += self.proc.stdout.read() or b""
            if b"ready" in line:
                break
            time.sleep(0.02)
        if b"ready" not in line:
            raise HostError(
                f"the node sandbox did not start: {self.log.read_text(errors='replace')[-2000:]}"
            )
        self._link()

    def _link(self) -> None:
        s = self.slot
        _run("ip", "link", "add", s.host_link, "type", "veth", "peer", "name", "eth0",
             "netns", str(self.pid))  # fmt: skip
        _run("ip", "addr", "add", f"{s.host_ip}/{s.prefix_len}", "dev", s.host_link)
        _run("ip", "link", "set", s.host_link, "up")
        inside = self.enter_net()
        _run(*inside, "ip", "addr", "add", f"{s.node_ip}/{s.prefix_len}", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command inside the node's namespaces (e.g. ``ctr``, ``iptables``)."""
        return subprocess.run(
            [*self.enter(), *args], capture_output=True, text=True, check=False, timeout=timeout
        )

    def must(self, *args: str, timeout: float = 60) -> str:
        out = self.run(*args, timeout=timeout)
        if out.returncode != 0:
            raise HostError(f"`{' '.join(args)}` in the node failed: {out.stderr.strip()}")
        return out.stdout
