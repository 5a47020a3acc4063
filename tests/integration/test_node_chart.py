"""The Helm chart, installed as a platform team installs it, on a real node -- and broken.

The one-node cluster (``node_helpers.node_cluster``: kubelet, containerd, controllers,
scheduler) runs the image ``make image`` builds, imported into its containerd;
``helm install charts/changegate`` with ``image.pullPolicy=Never`` is the only difference from
a user's install. The API server calls changegate's pods through the chart's Service. Then:
the leader pod is deleted under load, a replica is SIGKILLed, the shared certificate Secret
is rotated, the release is upgraded and finally uninstalled -- each while controlled requests
keep coming (``node_helpers.Load``), none of which may be admitted without a window.

Tests run in file order against one release; the last one uninstalls it. Figures (gaps,
failed requests, times) are printed, not asserted: run with ``-s`` to see them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import image_helpers
import kubernetes
import pytest
from cryptography import x509
from node_helpers import Api, Load, Release, Stream, eventually, node_cluster  # noqa: F401

from controller import pki
from controller.devcluster import cluster, node

pytestmark = [pytest.mark.integration, pytest.mark.node]

ALICE = ("alice@example.com", ("developers",))  # requester, designated
BOB = ("bob@example.com", ("developers", "change-approvers"))  # approver
FROZEN = "node-frozen"  # controlled; no window ever covers it
OPEN = "node-open"  # controlled; an approved window covers alice's changes here
POLICY = "node-test"
IDENTITY = "node-oncall"
USERS_ROLE = "node-test-users"
CONTROLLED = [{"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]}]
STREAMS = [
    Stream("no-window", FROZEN, ALICE[0], ALICE[1]),
    Stream("window", OPEN, ALICE[0], ALICE[1]),
]


def iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report(what: str, **figures: Any) -> None:
    print(f"\nnode figures: {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def must(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release(node_cluster: node.NodeCluster) -> Iterator[Release]:  # noqa: F811
    rel = Release(
        cp=node_cluster,
        name="changegate",  # as the README installs it
        namespace="changegate",
        image=image_helpers.build_image(),
    )
    t0 = time.monotonic()
    out = rel.helm("install", *rel.install_args(), "--create-namespace", "--wait", "--timeout=5m")
    if out.returncode != 0:
        pods = node_cluster.kubectl("-n", rel.namespace, "get", "pods", "-o", "wide").stdout
        logs = node_cluster.kubectl("-n", rel.namespace, "logs", "-l", rel.selector, "--tail=20")
        pytest.fail(
            f"helm install failed: {out.stderr}\n{pods}\n{logs.stdout}{logs.stderr}", pytrace=False
        )
    report("helm install --wait (2 replicas Ready)", seconds=round(time.monotonic() - t0, 1))
    try:
        yield rel
    finally:
        if rel.helm("status", rel.name).returncode == 0:
            rel.helm("uninstall", rel.name, "--wait", "--timeout=3m")


@pytest.fixture(scope="module")
def api(node_cluster: node.NodeCluster) -> Api:  # noqa: F811
    return Api(node_cluster)


@dataclasses.dataclass
class World:
    """The policy, identity and users of the tests; what alice saw before her window."""

    denied_before_window: str
    window: str


def apply(
    cp: node.NodeCluster, obj: dict[str, Any], *, who: tuple[str, tuple[str, ...]] | None = None
) -> None:
    if who is None:
        out = cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
    else:
        out = cp.kubectl(
            "create", "-f", "-", as_user=who[0], as_groups=who[1], input=json.dumps(obj)
        )
    assert out.returncode == 0, out.stderr


def create_configmap(
    cp: node.NodeCluster, namespace: str, name: str
) -> subprocess.CompletedProcess[str]:
    return cp.kubectl(
        "create", "configmap", name, "-n", namespace, "--from-literal=k=v",
        as_user=ALICE[0], as_groups=ALICE[1],
    )  # fmt: skip


def request_window(cp: node.NodeCluster, name: str, release: Release) -> str:
    """alice requests a window over OPEN, bob approves it; returns the approved specHash."""
    now = datetime.datetime.now(datetime.UTC)
    apply(
        cp,
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": name},
            "spec": {
                "ticket": "CHG-13",
                "description": "node test",
                "requester": ALICE[0],
                "identities": [IDENTITY],
                "targets": [{"namespaces": [OPEN], "resources": CONTROLLED}],
                "schedule": {
                    "start": iso(now - datetime.timedelta(hours=1)),
                    "end": iso(now + datetime.timedelta(hours=3)),
                },
            },
        },
        who=ALICE,
    )

    def published_hash() -> str:
        # Status is written by the leader only: this is the leader at work.
        body = json.loads(must(cp.kubectl("get", "changewindow", name, "-o", "json")))
        status = body.get("status") or {}
        assert status.get("specHash"), status
        assert status.get("observedGeneration") == body["metadata"]["generation"], status
        return str(status["specHash"])

    try:
        spec_hash = eventually(published_hash)
    except AssertionError as e:
        raise AssertionError(f"no status for window {name}: {e}\n{release.diagnostics()}") from e
    approval = {
        "approver": BOB[0],
        "specHash": spec_hash,
        "approvedAt": iso(datetime.datetime.now(datetime.UTC)),
        "policies": [POLICY],
    }
    out = cp.kubectl(
        "patch", "changewindow", name, "--type=merge",
        "-p", json.dumps({"spec": {"approvals": [approval]}}),
        as_user=BOB[0], as_groups=BOB[1],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return spec_hash


def approved_event(cp: node.NodeCluster, window: str) -> None:
    out = must(
        cp.kubectl(
            "get", "events", "-A", "-o", "json",
            f"--field-selector=involvedObject.name={window},reason=Approved",
        )
    )  # fmt: skip
    assert json.loads(out)["items"], f"no Approved Event for {window}"


@pytest.fixture(scope="module")
def world(release: Release, api: Api) -> World:
    cp = release.cp
    for ns in (FROZEN, OPEN):
        cp.kubectl("create", "namespace", ns)
    apply(
        cp,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": USERS_ROLE},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["create", "get", "list"],
                },
                {
                    "apiGroups": ["changegate.io"],
                    "resources": ["changewindows"],
                    "verbs": ["get", "list", "create", "update", "patch"],
                },
            ],
        },
    )
    apply(
        cp,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": USERS_ROLE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": USERS_ROLE,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "developers"}
            ],
        },
    )
    apply(
        cp,
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "AuthorizedIdentity",
            "metadata": {"name": IDENTITY},
            "spec": {"subjects": [{"kind": "User", "name": ALICE[0]}]},
        },
    )
    apply(
        cp,
        {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangePolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "match": {"resources": CONTROLLED, "namespaces": [FROZEN, OPEN]},
                "enforcement": "Enforce",
                "approval": {"required": 1, "approverGroups": [BOB[1][1]]},
                "message": {"contact": "#change-management"},
            },
        },
    )

    def denied() -> str:
        out = create_configmap(cp, OPEN, "before-window")
        assert out.returncode != 0 and "changegate denied" in out.stderr, out.stderr
        return out.stderr

    denied_before = eventually(denied)
    window = "node-window"
    request_window(cp, window, release)

    def admitted() -> None:
        out = create_configmap(cp, OPEN, "inside-window")
        assert out.returncode == 0, out.stderr

    eventually(admitted)
    return World(denied_before_window=denied_before, window=window)


def wait_healthy(release: Release, api: Api, *, timeout: float = 180) -> list[str]:
    """Until the Deployment has all its replicas Ready, up to date, and a leader."""

    def healthy() -> list[str]:
        d = api.apps.read_namespaced_deployment(release.fullname, release.namespace)
        want = d.spec.replicas
        assert d.status.ready_replicas == want, d.status
        assert d.status.updated_replicas == want, d.status
        pods = api.ready_pods(release)
        assert len(pods) == want and len(api.pods(release)) == want, pods
        assert api.lease_holder(release) in pods, (api.lease_holder(release), pods)
        return pods

    try:
        return eventually(healthy, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{release.diagnostics()}") from e


def assert_nothing_admitted_without_window(load: Load, api: Api) -> None:
    admitted = [
        o.detail for o in load.snapshot() if o.stream == "no-window" and o.kind == "admitted"
    ]
    assert not admitted, f"admitted without a window: {admitted}"
    names = [
        c.metadata.name
        for c in api.core.list_namespaced_config_map(FROZEN).items
        if c.metadata.name.startswith("load-")
    ]
    assert not names, f"objects created without a window: {names}"


# -- the tests ----------------------------------------------------------------------------------


def test_install_runs_replicas_and_the_webhook_denies_until_a_window_is_approved(
    release: Release, api: Api, world: World
) -> None:
    cp = release.cp
    pods = wait_healthy(release, api)
    assert len(pods) == 2  # the chart's default replicaCount
    for pod in api.pods(release):
        (container,) = pod.spec.containers
        assert container.image == release.image
        assert container.image_pull_policy == "Never"
        assert pod.spec.node_name == node.NODE_NAME

    hooks = api.webhook_configuration().webhooks
    assert hooks, "the operator wrote no webhooks"
    for hook in hooks:
        service = hook.client_config.service
        assert (service.namespace, service.name, service.port) == (
            release.namespace,
            release.fullname,
            443,
        )
        assert hook.client_config.url is None
        assert hook.failure_policy == "Fail"
        bundle = base64.b64decode(hook.client_config.ca_bundle)
        secret = api.core.read_namespaced_secret(f"{release.fullname}-tls", release.namespace)
        assert base64.b64decode(secret.data["ca.crt"]) in bundle

    assert "no approved change window" in world.denied_before_window, world.denied_before_window
    assert f"policy {POLICY}" in world.denied_before_window
    frozen = create_configmap(cp, FROZEN, "no-window")
    assert frozen.returncode != 0 and "changegate denied" in frozen.stderr, frozen.stderr
    inside = create_configmap(cp, OPEN, "inside-window-2")
    assert inside.returncode == 0, inside.stderr
    audit = api.core.read_namespaced_config_map("inside-window-2", OPEN)
    assert audit.metadata.name == "inside-window-2"


def test_leader_pod_deleted_under_load_another_replica_takes_over(
    release: Release, api: Api, world: World
) -> None:
    cp = release.cp
    pods = wait_healthy(release, api)
    leader = api.lease_holder(release)
    assert leader in pods
    (survivor,) = [p for p in pods if p != leader]

    with Load(cp, STREAMS) as load:
        load.wait_for(10)
        deleted_at = time.monotonic()
        api.core.delete_namespaced_pod(leader, release.namespace)

        def new_leader() -> str:
            holder = api.lease_holder(release)
            assert holder and holder != leader, holder
            return holder

        successor = eventually(new_leader, timeout=120)
        takeover = time.monotonic() - deleted_at
        wait_healthy(release, api)
        load.wait_for(20)
    assert_nothing_admitted_without_window(load, api)
    failed = load.count(kind="failed")
    report(
        "leader pod deleted",
        lease_takeover_s=round(takeover, 1),
        successor="the surviving replica" if successor == survivor else "the replacement pod",
        gap_s=round(load.longest_gap(), 2),
        failed_requests=failed,
        load=load.summary(),
    )
    assert successor in api.ready_pods(release)
    # The webhook kept answering: decisions came after the takeover, on both streams.
    after = [o for o in load.snapshot() if o.at > deleted_at + takeover]
    assert any(o.stream == "no-window" and o.kind == "denied" for o in after), load.summary()
    assert any(o.stream == "window" and o.kind == "admitted" for o in after), load.summary()

    # The new leader writes status and Events: a new window gets its specHash, and an Event
    # once it is approved.
    window = "node-window-after-failover"
    request_window(cp, window, release)
    eventually(lambda: approved_event(cp, window), timeout=60)


def test_a_sigkilled_replica_is_restarted_and_ready_only_after_its_index_synced(
    release: Release, api: Api, world: World
) -> None:
    cp = release.cp
    pods = wait_healthy(release, api)
    victim = next(p for p in api.pods(release) if p.metadata.name == pods[0])
    (status,) = victim.status.container_statuses
    restarts = status.restart_count
    container_id = status.container_id.removeprefix("containerd://")
    pod_ip = victim.status.pod_ip

    # Watch the replica's own readiness endpoint, from inside the node, every 50 ms.
    poller = subprocess.Popen(
        cp.command_in_node("python3", "-c", READYZ_POLLER, f"https://{pod_ip}:8443/readyz"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # some 200s before the kill
        killed_at = time.time()
        out = cp.ctr("tasks", "kill", "--signal=SIGKILL", container_id)
        assert out.returncode == 0, out.stderr
        stdout, stderr = poller.communicate(timeout=180)
    finally:
        poller.kill()
    samples = [(float(t), code) for t, code in (line.split() for line in stdout.splitlines())]
    assert samples, stderr

    def restarted() -> Any:
        pod = api.core.read_namespaced_pod(victim.metadata.name, release.namespace)
        (s,) = pod.status.container_statuses
        assert s.restart_count == restarts + 1, s
        assert s.ready, s
        return pod

    pod = eventually(restarted, timeout=120)
    logs = must(cp.kubectl("-n", release.namespace, "logs", victim.metadata.name))
    synced = [
        datetime.datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
        for line in logs.splitlines()
        if line.startswith("{") and "index synced" in line
    ]
    assert synced, logs[-3000:]
    synced_at = synced[0]  # the restarted container's log only
    after_kill = [(t, c) for t, c in samples if t > killed_at]
    down = [t for t, c in after_kill if c != "200"]
    assert down, "the replica never stopped answering after SIGKILL"
    first_ready = next(t for t, c in after_kill if c == "200" and t > down[0])
    assert first_ready >= synced_at, (first_ready, synced_at)
    ready_condition = next(c for c in pod.status.conditions if c.type == "Ready")
    assert ready_condition.last_transition_time.timestamp() >= int(synced_at)
    report(
        "replica SIGKILLed",
        restarted_and_ready_s=round(
            ready_condition.last_transition_time.timestamp() - killed_at, 1
        ),
        synced_after_kill_s=round(synced_at - killed_at, 2),
        first_readyz_200_after_sync_s=round(first_ready - synced_at, 3),
        readyz_answers_while_down=sorted({c for _, c in after_kill if c != "200"}),
    )
    wait_healthy(release, api)


READYZ_POLLER = """
import ssl, sys, time, urllib.request
url = sys.argv[1]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
seen_down, deadline = False, time.time() + 150
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=1) as r:
            code = str(r.status)
    except urllib.error.HTTPError as e:
        code = str(e.code)
    except Exception:
        code = "down"
    print(f"{time.time():.3f} {code}", flush=True)
    if code != "200":
        seen_down = True
    elif seen_down:
        break
    time.sleep(0.05)
"""


def served_certificate(cp: node.NodeCluster, pod_ip: str) -> x509.Certificate:
    out = cp.in_node(
        "python3", "-c",
        "import ssl, sys; print(ssl.get_server_certificate((sys.argv[1], 8443), timeout=5))",
        pod_ip,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return x509.load_pem_x509_certificate(out.stdout.encode())


def test_certificate_rotation_of_the_shared_secret_while_both_replicas_serve(
    release: Release, api: Api, world: World
) -> None:
    cp = release.cp
    wait_healthy(release, api)
    name, ns = f"{release.fullname}-tls", release.namespace
    old = api.core.read_namespaced_secret(name, ns)
    old_ca = base64.b64decode(old.data["ca.crt"])
    hosts = [f"{release.fullname}.{ns}.svc", f"{release.fullname}.{ns}.svc.cluster.local"]
    # A new CA and a serving certificate from it, put into the Secret at once -- what an
    # operator restoring the Secret from a vault, or another tool rotating it, would do.
    new_ca = pki.make_ca(common_name="changegate webhook CA (rotated)")
    leaf = pki.make_serving_cert(ca=new_ca, hosts=hosts)
    new_leaf = x509.load_pem_x509_certificate(leaf.cert_pem)
    pod_ips = [p.status.pod_ip for p in api.pods(release)]
    for ip in pod_ips:
        assert served_certificate(cp, ip).issuer != new_leaf.issuer

    with Load(cp, STREAMS) as load:
        load.wait_for(10)
        rotated_at = time.monotonic()
        data = {
            "tls.crt": leaf.cert_pem,
            "tls.key": leaf.key_pem,
            "ca.crt": new_ca.cert_pem,
            "ca.key": new_ca.key_pem,
        }
        api.core.patch_namespaced_secret(
            name, ns, {"data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
        )

        def bundle_trusts_new_ca() -> None:
            for hook in api.webhook_configuration().webhooks:
                assert new_ca.cert_pem in base64.b64decode(hook.client_config.ca_bundle)

        eventually(bundle_trusts_new_ca, timeout=60)

        def every_replica_serves_the_new_certificate() -> None:
            for ip in pod_ips:
                assert served_certificate(cp, ip) == new_leaf, ip

        eventually(every_replica_serves_the_new_certificate, timeout=90, every=0.5)
        served_at = time.monotonic()
        load.wait_for(20)
    assert_nothing_admitted_without_window(load, api)
    report(
        "certificate Secret rotated",
        all_replicas_on_new_certificate_s=round(served_at - rotated_at, 1),
        failed_requests=load.count(kind="failed"),
        load=load.summary(),
    )
    # Both replicas served throughout: every request was decided by changegate.
    assert load.count(kind="failed") == 0, load.summary()
    assert old_ca != new_ca.cert_pem
    assert api.ready_pods(release) and len(api.ready_pods(release)) == 2


def test_helm_upgrade_rolls_within_the_pdb_and_never_leaves_no_ready_webhook(
    release: Release, api: Api, world: World
) -> None:
    cp = release.cp
    before = set(wait_healthy(release, api))
    pdb = api.policy.read_namespaced_pod_disruption_budget(release.fullname, release.namespace)
    min_available = int(pdb.spec.min_available)
    samples: list[tuple[int, int]] = []  # (ready pods, ready Service endpoints)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a failed sample is not an observation
                samples.append((len(api.ready_pods(release)), len(api.ready_endpoints(release))))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    with Load(cp, STREAMS) as load:
        load.wait_for(10)
        sampler.start()
        out = release.helm(
            "upgrade", *release.install_args(),
            "--set=logLevel=debug", "--set=podAnnotations.changegate\\.io/upgraded=yes",
            "--wait", "--timeout=5m",
        )  # fmt: skip
        upgraded = time.monotonic() - t0
        load.wait_for(10)
        stop.set()
        sampler.join()
    assert out.returncode == 0, out.stderr
    after = set(wait_healthy(release, api))
    assert not after & before, "the rollout did not replace the pods"
    for pod in api.pods(release):
        assert "--log-level=debug" in pod.spec.containers[0].args
    assert samples, "nothing sampled"
    assert min(p for p, _ in samples) >= min_available, samples
    assert min(e for _, e in samples) >= 1, "a moment without a ready webhook endpoint"
    assert_nothing_admitted_without_window(load, api)
    report(
        "helm upgrade",
        seconds=round(upgraded, 1),
        min_ready_pods=min(p for p, _ in samples),
        min_ready_endpoints=min(e for _, e in samples),
        failed_requests=load.count(kind="failed"),
        load=load.summary(),
    )

    # A drain honours the PDB too: one eviction is allowed, the next is refused.
    first, second = sorted(after)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction"}
    api.core.create_namespaced_pod_eviction(
        first, release.namespace, {**eviction, "metadata": {"name": first}}
    )
    with pytest.raises(kubernetes.client.exceptions.ApiException) as refused:
        api.core.create_namespaced_pod_eviction(
            second, release.namespace, {**eviction, "metadata": {"name": second}}
        )
    assert refused.value.status == 429, refused.value
    wait_healthy(release, api)


def test_helm_uninstall_leaves_no_webhook_configuration_and_no_stuck_namespace(
    release: Release, api: Api, world: World
) -> None:
    cp = release.cp
    wait_healthy(release, api)
    t0 = time.monotonic()
    with Load(cp, STREAMS[:1]) as load:
        load.wait_for(5)
        out = release.helm("uninstall", release.name, "--wait", "--timeout=5m")
        uninstalled = time.monotonic() - t0
        load.wait_for(5)
    assert out.returncode == 0, out.stderr
    assert api.webhook_configuration() is None
    # Nothing is left to recreate it.
    time.sleep(3)
    assert api.webhook_configuration() is None
    assert not api.pods(release)
    hook_jobs = api_jobs(cp, release.namespace)
    assert not hook_jobs, hook_jobs

    t1 = time.monotonic()
    api.core.delete_namespace(release.namespace)

    def namespace_gone() -> None:
        try:
            ns = api.core.read_namespace(release.namespace)
        except kubernetes.client.exceptions.ApiException as e:
            assert e.status == 404
            return
        raise AssertionError(f"namespace {release.namespace} still {ns.status.phase}")

    eventually(namespace_gone, timeout=120)
    # Not bricked: with changegate gone, the change is simply not controlled any more.
    out = create_configmap(cp, FROZEN, "after-uninstall")
    assert out.returncode == 0, out.stderr
    report(
        "helm uninstall",
        seconds=round(uninstalled, 1),
        namespace_deleted_s=round(time.monotonic() - t1, 1),
        requests_during=load.summary(),
    )


def api_jobs(cp: node.NodeCluster, namespace: str) -> list[str]:
    batch: Any = kubernetes.client.BatchV1Api(cluster.api_client(cp))
    return [j.metadata.name for j in batch.list_namespaced_job(namespace).items]
