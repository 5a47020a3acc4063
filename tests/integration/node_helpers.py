"""The one-node cluster and the Helm release, as the node tests see them.

``node_cluster`` (module scope: the node runs only while its tests do) starts
:class:`controller.devcluster.node.NodeCluster` with the image ``make image`` builds imported
into its containerd, and stops it at the end; its stop fails the module if anything is left
on the host. A node that cannot start fails the
tests that need it: nothing is skipped.

``Load`` is the steady, bounded stream of controlled requests the tests break things under:
a few threads, each sending one request at a time as a real user (client certificate) to the
API server, which calls changegate through its Service. Every answer is classified:

* ``denied``   -- changegate answered and denied (no window covers the change);
* ``admitted`` -- the API server admitted the change (changegate answered and allowed);
* ``failed``   -- nobody answered for changegate: the API server could not call the webhook
  (no endpoint, connection refused, TLS, timeout) and failed closed, or the request itself
  did not get through.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import image_helpers
import kubernetes
import pytest

from controller.devcluster import cluster, node

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 60.0, every: float = 0.25) -> T:
    """Retry ``check`` until it returns without AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(every)


@pytest.fixture(scope="module")
def node_cluster() -> Iterator[node.NodeCluster]:
    t0 = time.monotonic()
    image = image_helpers.build_image()
    try:
        archive = node.podman_image_archive(image)
        nc = node.NodeCluster(images=[archive])
        nc.start()
    except Exception as e:  # a node that cannot start is a failure, never a skip
        pytest.fail(f"the one-node cluster did not start: {e}", pytrace=False)
    print(
        f"\nnode: ready in {time.monotonic() - t0:.1f}s (image build/save included); "
        f"phases {nc.timings}"
    )
    try:
        yield nc
    finally:
        t1 = time.monotonic()
        nc.stop()  # raises when the host is not as it was
        print(f"\nnode: stopped and host restored in {time.monotonic() - t1:.1f}s")


# -- helm -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Release:
    """A Helm release of charts/changegate on the node."""

    cp: node.NodeCluster
    name: str
    namespace: str
    image: str

    @property
    def fullname(self) -> str:
        return self.name if "changegate" in self.name else f"{self.name}-changegate"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name=changegate,app.kubernetes.io/instance={self.name}"

    def helm(self, *args: str, timeout: float = 360) -> subprocess.CompletedProcess[str]:
        env = {"KUBECONFIG": str(self.cp.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": "/root"}
        return subprocess.run(
            [str(image_helpers.helm()), *args, f"--namespace={self.namespace}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
        )

    def diagnostics(self) -> str:
        """Pods, the Lease and the replicas' recent logs: for a failure message."""
        k = self.cp.kubectl
        parts = [
            k("-n", self.namespace, "get", "pods,lease,endpointslices", "-o", "wide").stdout,
            k("-n", self.namespace, "logs", "-l", self.selector, "--tail=40", "--prefix").stdout,
            k("get", "events", "-A", "--sort-by=.lastTimestamp").stdout[-3000:],
        ]
        return "\n".join(parts)

    def install_args(self) -> list[str]:
        repository, _, tag = self.image.rpartition(":")
        return [
            self.name,
            str(image_helpers.CHART),
            f"--set=image.repository={repository}",
            f"--set=image.tag={tag}",
            # The image is in the node's containerd already; there is no registry to pull from.
            "--set=image.pullPolicy=Never",
        ]


# -- the API, as the admin ----------------------------------------------------------------------


@dataclasses.dataclass
class Api:
    cp: node.NodeCluster
    client: Any = None

    def __post_init__(self) -> None:
        self.client = cluster.api_client(self.cp)
        self.core: Any = kubernetes.client.CoreV1Api(self.client)
        self.apps: Any = kubernetes.client.AppsV1Api(self.client)
        self.coordination: Any = kubernetes.client.CoordinationV1Api(self.client)
        self.admission: Any = kubernetes.client.AdmissionregistrationV1Api(self.client)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.client)
        self.policy: Any = kubernetes.client.PolicyV1Api(self.client)
        self.discovery: Any = kubernetes.client.DiscoveryV1Api(self.client)

    def pods(self, release: Release) -> list[Any]:
        return list(
            self.core.list_namespaced_pod(release.namespace, label_selector=release.selector).items
        )

    def ready_pods(self, release: Release) -> list[str]:
        return [p.metadata.name for p in self.pods(release) if is_ready(p)]

    def lease_holder(self, release: Release) -> str | None:
        try:
            lease = self.coordination.read_namespaced_lease("changegate", release.namespace)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise
        holder: str | None = lease.spec.holder_identity
        return holder

    def ready_endpoints(self, release: Release) -> list[str]:
        """Addresses of the chart's Service that are ready (where the API server sends reviews)."""
        slices = self.discovery.list_namespaced_endpoint_slice(
            release.namespace, label_selector=f"kubernetes.io/service-name={release.fullname}"
        ).items
        return [
            address
            for s in slices
            for e in s.endpoints or []
            if e.conditions and e.conditions.ready
            for address in e.addresses
        ]

    def webhook_configuration(self) -> Any:
        try:
            return self.admission.read_validating_webhook_configuration("changegate")
        except kubernetes.client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise


def is_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


# -- the load -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    at: float  # time.monotonic() when the answer came
    stream: str
    kind: str  # denied | admitted | failed
    detail: str


@dataclasses.dataclass
class Stream:
    """One kind of request: a ConfigMap created in ``namespace`` as ``user``."""

    name: str
    namespace: str
    user: str
    groups: Sequence[str]


class Load:
    """Controlled requests, one at a time per stream, until stopped (bounded either way)."""

    def __init__(
        self,
        cp: node.NodeCluster,
        streams: Sequence[Stream],
        *,
        pause: float = 0.1,
        max_seconds: float = 240.0,
        max_requests: int = 5000,
    ) -> None:
        self.cp = cp
        self.streams = list(streams)
        self.pause = pause
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0

    def __enter__(self) -> Load:
        # Clients first, one after another: the harness writes each identity's certificate
        # files on first use, and two threads must not write one identity's at once.
        clients = [
            cluster.api_client(self.cp, user=stream.user, groups=stream.groups)
            for stream in self.streams
        ]
        self.started = time.monotonic()
        for stream, client in zip(self.streams, clients, strict=True):
            t = threading.Thread(target=self._run, args=(stream, client), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, stream: Stream, client: Any) -> None:
        core: Any = kubernetes.client.CoreV1Api(client)
        deadline = self.started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.outcomes) >= self.max_requests:
                    return
            name = f"load-{uuid.uuid4().hex[:10]}"
            body = {"metadata": {"name": name}, "data": {"k": "v"}}
            try:
                core.create_namespaced_config_map(stream.namespace, body, _request_timeout=20)
                kind, detail = "admitted", name
            except kubernetes.client.exceptions.ApiException as e:
                message = _message(e)
                kind = "denied" if "changegate denied" in message else "failed"
                detail = message
            except Exception as e:  # connection errors: the request did not get through
                kind, detail = "failed", repr(e)
            with self._lock:
                self.outcomes.append(Outcome(time.monotonic(), stream.name, kind, detail))
            self._stop.wait(self.pause)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def count(self, stream: str | None = None, kind: str | None = None) -> int:
        return sum(
            1
            for o in self.snapshot()
            if (stream is None or o.stream == stream) and (kind is None or o.kind == kind)
        )

    def wait_for(self, n: int, *, timeout: float = 60.0) -> None:
        """Until ``n`` more answers have come (the load is flowing)."""
        goal = len(self.snapshot()) + n
        eventually(lambda: _at_least(len(self.snapshot()), goal), timeout=timeout)

    def longest_gap(self) -> float:
        """The longest time between two answers changegate gave (seconds; 0 if none failed).

        A gap starts at the last answer before a failed request and ends at the first answer
        after it: how long controlled changes could not be decided.
        """
        answered = [o.at for o in self.snapshot() if o.kind != "failed"]
        failed = [o.at for o in self.snapshot() if o.kind == "failed"]
        gap = 0.0
        for f in failed:
            before = max((a for a in answered if a <= f), default=self.started)
            after = min((a for a in answered if a >= f), default=time.monotonic())
            gap = max(gap, after - before)
        return gap

    def summary(self) -> str:
        outcomes = self.snapshot()
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[f"{o.stream}/{o.kind}"] = counts.get(f"{o.stream}/{o.kind}", 0) + 1
        span = (outcomes[-1].at - self.started) if outcomes else 0.0
        failures = sorted({o.detail[:160] for o in outcomes if o.kind == "failed"})
        text = (
            f"{len(outcomes)} requests in {span:.1f}s {json.dumps(counts, sort_keys=True)}; "
            f"longest gap {self.longest_gap():.2f}s"
        )
        if failures:
            text += "; failures: " + " | ".join(failures[:5])
        return text


def _at_least(value: int, goal: int) -> None:
    assert value >= goal, (value, goal)


def _message(e: kubernetes.client.exceptions.ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except ValueError:
        return f"{e.status} {e.reason} {e.body!r}"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))
