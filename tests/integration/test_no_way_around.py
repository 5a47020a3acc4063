"""No way around a policy: each bypass of issue 8, tried as the person who would try it.

A real kube-apiserver calls a real changegate process. The people are real identities (client
certificates for the CLI, impersonation for kubectl) holding the ClusterRoles that
docs/rbac.md recommends -- read from that page, so the docs and the test cannot drift apart --
plus what a cluster grants developers anyway (writing workloads and config in their
namespaces, patching namespaces).

- alice: developer, requester, designated personnel (AuthorizedIdentity ``oncall``)
- bob: approver under policy A (group change-approvers)
- dan: approver under policy B (group db-approvers)
- carol: on-call SRE, break-glass under policy A only (group sre-oncall), designated
- dave: developer who may patch and delete namespaces

Policy A controls namespace ``<id>-pay``; policy B controls ``<id>-ledger``.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e_helpers
import kubernetes
import pytest
import yaml

from controller.cli import main as cli
from controller.devcluster import cluster
from controller.model import crds
from controller.policy import approvals

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Who = tuple[str, tuple[str, ...]]

ALICE: Who = ("alice@example.com", ("developers",))
BOB: Who = ("bob@example.com", ("developers", "change-approvers"))
DAN: Who = ("dan@example.com", ("developers", "db-approvers"))
CAROL: Who = ("carol@example.com", ("developers", "sre-oncall"))
DAVE: Who = ("dave@example.com", ("developers",))

CONFIGMAPS = {"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]}

# What a cluster gives its developers regardless of changegate (not changegate's RBAC).
DEVELOPER_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: nwa-developer}
rules:
- {apiGroups: [""], resources: [configmaps, pods], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [""], resources: [pods/eviction], verbs: [create]}
- {apiGroups: [""], resources: [pods/ephemeralcontainers, pods/resize], verbs: [get, patch, update]}
- {apiGroups: [apps], resources: [deployments, deployments/scale], verbs: [get, list, watch, create, update, patch]}
- {apiGroups: [""], resources: [namespaces], verbs: [get, list, watch, create, patch, update, delete]}
- {apiGroups: [""], resources: [namespaces/status, namespaces/finalize, services/status], verbs: [get, patch, update]}
- {apiGroups: [""], resources: [services], verbs: [get, list, create, update, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: nwa-developer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: nwa-developer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: developers}]
"""

# Who gets which of docs/rbac.md's ClusterRoles.
DOCS_BINDINGS = {
    "changegate-requester": ["developers", "sre-oncall"],
    "changegate-approver": ["change-approvers", "db-approvers"],
    "changegate-viewer": ["developers"],
}


def docs_cluster_roles() -> list[dict[str, Any]]:
    """The ClusterRoles in docs/rbac.md's YAML examples, as the docs print them."""
    text = (REPO / "docs" / "rbac.md").read_text()
    roles = []
    for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == "ClusterRole":
                roles.append(doc)
    return roles


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def denied(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, f"expected a denial, got: {out.stdout}"
    assert "changegate denied" in out.stderr, out.stderr
    return out.stderr


def admitted(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, out.stderr
    return out


def refused(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A write to changegate's own CRs refused by the webhook, naming what is wrong."""
    assert out.returncode != 0, f"expected a refusal, got: {out.stdout}"
    for needle in needles:
        assert needle in out.stderr, out.stderr
    return out.stderr


@pytest.fixture(scope="module")
def changegate(
    controlplane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_helpers.Changegate]:
    cp = controlplane
    cp.kubectl("apply", "-f", "-", input=DEVELOPER_RBAC, check=True)
    for role in docs_cluster_roles():
        cp.kubectl("apply", "-f", "-", input=json.dumps(role), check=True)
    for role, groups in DOCS_BINDINGS.items():
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"nwa-{role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}
                for g in groups
            ],
        }
        cp.kubectl("apply", "-f", "-", input=json.dumps(binding), check=True)
    with e2e_helpers.running_changegate(cp, workdir=tmp_path_factory.mktemp("nwa")) as cg:
        yield cg


class World:
    """Two namespaces, two policies (A: pay, B: ledger), one identity, and the verbs."""

    def __init__(self, cp: cluster.ControlPlane) -> None:
        self.cp = cp
        self.id = uuid.uuid4().hex[:6]
        self.pay = f"nwa-{self.id}-pay"
        self.ledger = f"nwa-{self.id}-ledger"
        self.a = f"nwa-{self.id}-a"
        self.b = f"nwa-{self.id}-b"
        self.identity = f"nwa-{self.id}-oncall"

    def kubectl(
        self, *args: str, who: Who | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if who is None:
            return self.cp.kubectl(*args, input=input)
        return self.cp.kubectl(*args, as_user=who[0], as_groups=who[1], input=input)

    def apply(self, obj: dict[str, Any] | str, who: Who | None = None) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        admitted(self.kubectl("apply", "-f", "-", input=text, who=who))

    def create(self, obj: dict[str, Any], who: Who) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=json.dumps(obj), who=who)

    def cli(self, who: Who, *args: str) -> tuple[int, str, str]:
        """``kubectl changegate`` in-process, as ``who`` authenticated by client certificate."""
        import io

        kubeconfig = self.cp.identity(who[0], list(who[1])).kubeconfig
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(
            [*args, "--kubeconfig", str(kubeconfig)], out=out, err=err, stdin=io.StringIO("")
        )
        return code, out.getvalue(), err.getvalue()

    def configmap(self, ns: str, name: str, who: Who) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "configmap", name, "-n", ns, "--from-literal=k=v", who=who)

    def policy(
        self,
        name: str,
        *,
        namespaces: list[str] | None = None,
        selector: dict[str, Any] | None = None,
        approvers: str,
        break_glass: str,
        rules: list[dict[str, Any]] | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        match: dict[str, Any] = {"resources": rules or [CONFIGMAPS]}
        if namespaces is not None:
            match["namespaces"] = namespaces
        if selector is not None:
            match["namespaceSelector"] = selector
        return {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangePolicy",
            "metadata": {"name": name},
            "spec": {
                "match": match,
                "approval": {"required": 1, "approverGroups": [approvers]},
                "breakGlass": {"groups": [break_glass], "maxDuration": "2h"},
                "message": {"contact": "#change-management"},
                **spec,
            },
        }

    def window(
        self,
        name: str,
        *,
        namespaces: list[str] | None = None,
        selector: dict[str, Any] | None = None,
        requester: Who = ALICE,
        rules: list[dict[str, Any]] | None = None,
        emergency: list[str] | None = None,
        hours: float = 1,
    ) -> dict[str, Any]:
        target: dict[str, Any] = {"resources": rules or [CONFIGMAPS]}
        if namespaces is not None:
            target["namespaces"] = namespaces
        if selector is not None:
            target["namespaceSelector"] = selector
        start = now() - datetime.timedelta(minutes=1) if emergency is None else now()
        spec: dict[str, Any] = {
            "ticket": "CHG-8",
            "description": f"issue 8 {name}",
            "requester": requester[0],
            "identities": [self.identity],
            "targets": [target],
            "schedule": {
                "start": crds.rfc3339(start),
                "end": crds.rfc3339(start + datetime.timedelta(hours=hours)),
            },
        }
        if emergency is not None:
            spec["emergency"] = {"reason": "INC-8 ledger down", "policies": emergency}
        return {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": name},
            "spec": spec,
        }

    def setup(self, *, policies: list[dict[str, Any]] | None = None) -> World:
        for ns in (self.pay, self.ledger):
            if self.kubectl("get", "namespace", ns).returncode != 0:
                admitted(self.kubectl("create", "namespace", ns))
        self.apply(
            {
                "apiVersion": "changegate.io/v1alpha1",
                "kind": "AuthorizedIdentity",
                "metadata": {"name": self.identity},
                "spec": {
                    "subjects": [
                        {"kind": "User", "name": ALICE[0]},
                        {"kind": "Group", "name": "sre-oncall"},
                    ]
                },
            }
        )
        for p in policies or [
            self.policy(
                self.a,
                namespaces=[self.pay],
                approvers="change-approvers",
                break_glass="sre-oncall",
            ),
            self.policy(
                self.b, namespaces=[self.ledger], approvers="db-approvers", break_glass="dba-oncall"
            ),
        ]:
            self.apply(p)
        # In force once the admin (who has no window) is denied in a controlled namespace.
        e2e_helpers.eventually(
            lambda: denied(
                self.kubectl(
                    "create",
                    "configmap",
                    "probe",
                    "-n",
                    self.pay,
                    "--from-literal=k=v",
                    "--dry-run=server",
                )
            )
        )
        return self

    def body(self, name: str) -> dict[str, Any]:
        out = admitted(self.kubectl("get", "changewindow", name, "-o", "json"))
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def published(self, name: str) -> None:
        """Until changegate's status shows the window's current spec (it is in the index)."""

        def check() -> None:
            body = self.body(name)
            assert (body.get("status") or {}).get("specHash") == approvals.spec_hash(body["spec"])

        e2e_helpers.eventually(check)

    def approve(self, name: str, who: Who) -> str:
        self.published(name)
        code, out, err = self.cli(who, "approve", name, "--yes")
        assert code == 0, err
        return out + err

    def merge_patch(
        self, name: str, patch: dict[str, Any], who: Who
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "patch", "changewindow", name, "--type=merge", "-p", json.dumps(patch), who=who
        )


@pytest.fixture
def world(controlplane: cluster.ControlPlane, changegate: e2e_helpers.Changegate) -> World:
    return World(controlplane)


# -- 1. approvals hold per policy -----------------------------------------------------------------


def test_1_an_approval_opens_a_window_only_under_the_approvers_own_policy(world: World) -> None:
    world.setup()
    name = f"nwa-{world.id}-both"
    admitted(world.create(world.window(name, namespaces=[world.pay, world.ledger]), who=ALICE))
    world.published(name)

    # bob cannot claim policy B by writing it into his approval by hand.
    body = world.body(name)
    forged = {
        "approver": BOB[0],
        "specHash": approvals.spec_hash(body["spec"]),
        "approvedAt": crds.rfc3339(now()),
        "policies": [world.a, world.b],
    }
    patch = [{"op": "add", "path": "/spec/approvals", "value": [forged]}]
    out = world.kubectl(
        "patch", "changewindow", name, "--type=json", "-p", json.dumps(patch), who=BOB
    )
    refused(out, f"not in an approver group of policy {world.b} (db-approvers)")

    said = world.approve(name, BOB)
    assert f"Approving under: {world.a}" in said and f"does not count under {world.b}" in said
    e2e_helpers.eventually(lambda: admitted(world.configmap(world.pay, "paid", ALICE)))
    message = denied(world.configmap(world.ledger, "booked", ALICE))
    assert f"policy {world.b}" in message and "db-approvers" in message

    # A db-approver's approval opens it under B too.
    world.approve(name, DAN)
    e2e_helpers.eventually(lambda: admitted(world.configmap(world.ledger, "booked", ALICE)))


# -- 2. break-glass holds per policy --------------------------------------------------------------


def test_2_break_glass_under_one_policy_does_not_open_another(world: World) -> None:
    world.setup()
    both = [world.pay, world.ledger]
    alone = world.window(
        f"nwa-{world.id}-inc1", namespaces=[world.ledger], requester=CAROL, emergency=[world.b]
    )
    refused(world.create(alone, who=CAROL), f"not in the breakGlass groups of policy {world.b}")
    sneaky = world.window(
        f"nwa-{world.id}-inc2", namespaces=both, requester=CAROL, emergency=[world.a, world.b]
    )
    refused(world.create(sneaky, who=CAROL), f"not in the breakGlass groups of policy {world.b}")

    honest = world.window(
        f"nwa-{world.id}-inc3", namespaces=both, requester=CAROL, emergency=[world.a]
    )
    out = admitted(world.create(honest, who=CAROL))
    assert f"not a break-glass window under {world.b}" in out.stderr
    e2e_helpers.eventually(lambda: admitted(world.configmap(world.pay, "hotfix", CAROL)))
    message = denied(world.configmap(world.ledger, "hotfix", CAROL))
    assert f"policy {world.b}" in message


# -- 3. the plan is the requester's ----------------------------------------------------------------


def test_3_an_approver_cannot_rewrite_the_plan_he_approves(world: World) -> None:
    world.setup()
    name = f"nwa-{world.id}-plan"
    admitted(world.create(world.window(name, namespaces=[world.pay]), who=ALICE))
    world.published(name)
    body = world.body(name)
    wider = json.loads(json.dumps(body["spec"]))
    wider["identities"] = ["bobs-own-identity"]
    wider["targets"][0]["resources"] = [
        {"apiGroups": ["", "apps"], "resources": ["configmaps", "deployments"], "operations": ["*"]}
    ]
    hash_of_wider = approvals.spec_hash(wider)

    # In one patch: the new plan and his approval of it.
    both = {
        "spec": {
            **wider,
            "approvals": [
                {
                    "approver": BOB[0],
                    "specHash": hash_of_wider,
                    "approvedAt": crds.rfc3339(now()),
                    "policies": [world.a],
                }
            ],
        }
    }
    refused(world.merge_patch(name, both, BOB), "only the requester alice@example.com may change")
    # In two steps: the plan first.
    refused(
        world.merge_patch(name, {"spec": {"identities": wider["identities"]}}, BOB),
        "only the requester",
    )
    # Nor may a cluster admin rewrite someone's plan.
    refused(
        world.merge_patch(name, {"spec": {"description": "admin edit"}}, None), "only the requester"
    )
    assert world.body(name)["spec"]["identities"] == [world.identity]


# -- 4. relabelling or deleting a namespace is controlled by the policy it leaves -------------------


def test_4_relabelling_or_deleting_a_namespace_out_of_a_policy_is_controlled(world: World) -> None:
    label = f"nwa-{world.id}/controlled"
    selector = {"matchLabels": {label: "true"}}
    p = world.policy(
        world.a, selector=selector, approvers="change-approvers", break_glass="sre-oncall"
    )
    admitted(world.kubectl("create", "namespace", world.pay))
    admitted(world.kubectl("label", "namespace", world.pay, f"{label}=true"))
    world.setup(policies=[p])

    message = denied(world.kubectl("label", "namespace", world.pay, f"{label}-", who=DAVE))
    assert f"UPDATE namespaces {world.pay}" in message and f"policy {world.a}" in message
    denied(world.kubectl("delete", "namespace", world.pay, "--wait=false", who=DAVE))
    # The API server lets /status and /finalize change a namespace's labels: same control.
    unlabel = json.dumps({"metadata": {"labels": {label: None}}})
    out = world.kubectl(
        "patch", "namespace", world.pay, "--subresource=status", "-p", unlabel, who=DAVE
    )
    assert f"changegate denied UPDATE namespaces/status {world.pay}" in out.stderr, out.stderr
    current = json.loads(world.kubectl("get", "namespace", world.pay, "-o", "json").stdout)
    del current["metadata"]["labels"][label]
    out = world.kubectl(
        "replace",
        "--raw",
        f"/api/v1/namespaces/{world.pay}/finalize",
        "-f",
        "-",
        input=json.dumps(current),
        who=DAVE,
    )
    assert f"changegate denied UPDATE namespaces/finalize {world.pay}" in out.stderr, out.stderr
    # Into scope is a scope change too.
    denied(world.kubectl("label", "namespace", world.ledger, f"{label}=true", who=DAVE))
    # Other label changes are not.
    admitted(world.kubectl("label", "namespace", world.pay, "cost-center=42", who=DAVE))
    labels = json.loads(world.kubectl("get", "namespace", world.pay, "-o", "json").stdout)
    assert labels["metadata"]["labels"][label] == "true"

    # Taking a namespace out of change control is a change like any other: with an approved
    # window for updating that namespace, designated personnel may do it.
    name = f"nwa-{world.id}-release"
    rule = {"apiGroups": [""], "resources": ["namespaces"], "operations": ["UPDATE"]}
    admitted(world.create(world.window(name, namespaces=[world.pay], rules=[rule]), who=ALICE))
    world.approve(name, BOB)
    e2e_helpers.eventually(
        lambda: admitted(world.kubectl("label", "namespace", world.pay, f"{label}-", who=ALICE))
    )


def test_4_a_policy_that_lists_a_namespace_controls_its_deletion(world: World) -> None:
    world.setup()
    denied(world.kubectl("delete", "namespace", world.pay, "--wait=false", who=DAVE))


# -- 5. a new namespace never races the index into "not controlled" --------------------------------


def test_5_a_workload_right_after_its_labelled_namespace_is_never_uncontrolled(
    world: World,
) -> None:
    label = f"nwa-{world.id}/controlled"
    admitted(world.kubectl("create", "namespace", world.pay))
    admitted(world.kubectl("label", "namespace", world.pay, f"{label}=true"))
    p = world.policy(
        world.a,
        selector={"matchLabels": {label: "true"}},
        approvers="change-approvers",
        break_glass="sre-oncall",
    )
    world.setup(policies=[p])
    api = kubernetes.client.CoreV1Api(
        kubernetes.config.new_client_from_config(
            config_file=str(world.cp.identity(DAVE[0], list(DAVE[1])).kubeconfig)
        )
    )
    outcomes: list[str] = []
    for i in range(20):
        ns = f"nwa-{world.id}-race-{i}"
        api.create_namespace({"metadata": {"name": ns, "labels": {label: "true"}}})
        try:
            api.create_namespaced_config_map(
                ns, {"metadata": {"name": "sneak"}, "data": {"k": "v"}}
            )
            outcomes.append("admitted")
        except kubernetes.client.exceptions.ApiException as e:
            assert e.status == 403 and "changegate denied" in str(e.body), e.body
            # Decided from the labels read from the API server, not merely "retry".
            assert "no approved change window" in str(e.body), e.body
            outcomes.append("denied")
    assert outcomes == ["denied"] * 20


# -- 6. an approved window does not grow after approval ---------------------------------------------


def test_6_an_approval_never_covers_a_namespace_its_selector_picks_up_later(world: World) -> None:
    tag = f"nwa-{world.id}/team"
    world.setup(
        policies=[
            world.policy(
                world.a,
                namespaces=[world.pay, world.ledger],
                approvers="change-approvers",
                break_glass="sre-oncall",
            )
        ]
    )
    admitted(world.kubectl("label", "namespace", world.pay, f"{tag}=pay"))
    name = f"nwa-{world.id}-grows"
    admitted(world.create(world.window(name, selector={"matchLabels": {tag: "pay"}}), who=ALICE))
    said = world.approve(name, BOB)
    assert world.pay in said  # bob is shown which namespaces he signs for
    e2e_helpers.eventually(lambda: admitted(world.configmap(world.pay, "ok", ALICE)))

    admitted(world.kubectl("label", "namespace", world.ledger, f"{tag}=pay"))

    def ledger_denied() -> None:
        message = denied(world.configmap(world.ledger, "grown", ALICE))
        assert f"no approval covers {world.ledger}" in message, message

    e2e_helpers.eventually(ledger_denied)


# -- 7. paths with the same effect -----------------------------------------------------------------

PODS = {"apiGroups": [""], "resources": ["pods"], "operations": ["UPDATE", "DELETE"]}
DEPLOYMENTS = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web"},
    "spec": {
        "containers": [
            {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}
        ]
    },
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    },
}


def test_7_eviction_debug_resize_and_scale_are_controlled_with_delete_and_update(
    world: World,
) -> None:
    world.setup(
        policies=[
            world.policy(
                world.a,
                namespaces=[world.pay],
                approvers="change-approvers",
                break_glass="sre-oncall",
                rules=[CONFIGMAPS, PODS, DEPLOYMENTS],
            )
        ]
    )
    ns = world.pay
    admitted(world.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(POD)))
    admitted(world.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(DEPLOYMENT)))

    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web", "namespace": ns},
    }
    out = world.kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{ns}/pods/web/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
        who=DAVE,
    )
    assert "changegate denied CREATE pods/eviction" in out.stderr, out.stderr
    out = world.kubectl("debug", "-n", ns, "web", "--image=busybox", "--", "true", who=DAVE)
    assert "changegate denied UPDATE pods/ephemeralcontainers" in out.stderr, out.stderr
    resize = json.dumps(
        {"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "200m"}}}]}}
    )
    out = world.kubectl(
        "patch", "pod", "web", "-n", ns, "--subresource=resize", "-p", resize, who=DAVE
    )
    assert "changegate denied UPDATE pods/resize" in out.stderr, out.stderr
    out = world.kubectl("scale", "deployment", "web", "-n", ns, "--replicas=5", who=DAVE)
    assert "changegate denied UPDATE deployments.apps/scale" in out.stderr, out.stderr

    # A window for deleting pods lets its holder evict them: the same action, by another door.
    name = f"nwa-{world.id}-evict"
    admitted(world.create(world.window(name, namespaces=[ns], rules=[PODS]), who=ALICE))
    world.approve(name, BOB)

    def evicted() -> None:
        out = world.kubectl(
            "create",
            "--raw",
            f"/api/v1/namespaces/{ns}/pods/web/eviction",
            "-f",
            "-",
            input=json.dumps(eviction),
            who=ALICE,
        )
        assert "changegate" not in out.stderr, out.stderr

    e2e_helpers.eventually(evicted)


def test_7_a_status_write_that_changes_labels_or_annotations_is_an_update(world: World) -> None:
    services = {"apiGroups": [""], "resources": ["services"], "operations": ["CREATE", "UPDATE"]}
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }
    admitted(world.kubectl("create", "namespace", world.pay))
    admitted(world.kubectl("create", "-n", world.pay, "-f", "-", input=json.dumps(svc)))
    world.setup(
        policies=[
            world.policy(
                world.a,
                namespaces=[world.pay],
                approvers="change-approvers",
                break_glass="sre-oncall",
                rules=[CONFIGMAPS, services],
            )
        ]
    )
    # An annotation that would make a cloud load balancer public, written through /status.
    public = json.dumps(
        {
            "metadata": {
                "annotations": {"service.beta.kubernetes.io/load-balancer-internal": "false"}
            }
        }
    )
    out = world.kubectl(
        "patch", "service", "lb", "-n", world.pay, "--subresource=status", "-p", public, who=DAVE
    )
    assert "changegate denied UPDATE services/status" in out.stderr, out.stderr
    # A write of status alone is never gated (controllers keep working when changegate is down).
    status_only = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}})
    admitted(
        world.kubectl(
            "patch",
            "service",
            "lb",
            "-n",
            world.pay,
            "--subresource=status",
            "-p",
            status_only,
            who=DAVE,
        )
    )


def test_7_applying_a_partial_workloads_policy_warns_which_doors_it_leaves_open(
    world: World,
) -> None:
    partial = world.policy(
        world.a,
        namespaces=[world.pay],
        approvers="change-approvers",
        break_glass="sre-oncall",
        rules=[
            DEPLOYMENTS,
            {"apiGroups": [""], "resources": ["pods/exec"], "operations": ["CONNECT"]},
        ],
    )
    out = admitted(world.kubectl("apply", "-f", "-", input=json.dumps(partial)))
    assert "Warning: changegate: policy" in out.stderr
    for door in ("pods", "jobs.batch", "horizontalpodautoscalers", "pods/attach", "kubectl debug"):
        assert door in out.stderr, out.stderr
    # The shipped example is a complete workloads policy: nothing to warn about.
    example = (REPO / "examples" / "changepolicy-payments-prod.yaml").read_text()
    renamed = example.replace("name: payments-prod", f"name: nwa-{world.id}-example")
    out = admitted(world.kubectl("apply", "-f", "-", input=renamed))
    assert "Warning" not in out.stderr, out.stderr
    admitted(world.kubectl("delete", "changepolicy", f"nwa-{world.id}-example"))


# -- 12. the webhook enforces the approval rules itself --------------------------------------------


def test_12_straight_to_the_webhook_an_approver_cannot_redate_his_approval(
    world: World, changegate: e2e_helpers.Changegate
) -> None:
    world.setup()
    name = f"nwa-{world.id}-redate"
    admitted(world.create(world.window(name, namespaces=[world.pay]), who=ALICE))
    world.approve(name, BOB)
    old = world.body(name)
    new = json.loads(json.dumps(old))
    new["spec"]["approvals"][0]["approvedAt"] = "2020-01-01T00:00:00Z"
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "changegate.io", "version": "v1alpha1", "kind": "ChangeWindow"},
            "resource": {
                "group": "changegate.io",
                "version": "v1alpha1",
                "resource": "changewindows",
            },
            "name": name,
            "operation": "UPDATE",
            "userInfo": {"username": BOB[0], "groups": list(BOB[1])},
            "object": new,
            "oldObject": old,
        },
    }
    ctx = ssl.create_default_context(cafile=str(changegate.workdir / "certs" / "ca.crt"))
    request = urllib.request.Request(
        f"{changegate.url}/validate",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=ctx, timeout=10) as r:
        answer = json.load(r)["response"]
    assert answer["allowed"] is False
    assert "existing approvals cannot be altered" in answer["status"]["message"]


# -- 13. a policy caps how long and how broad a window may be ---------------------------------------


def test_13_a_policy_caps_window_length_and_breadth_and_approve_warns(world: World) -> None:
    limits = {"maxDuration": "8h", "maxLifetime": "30d", "allowWildcards": False}
    world.setup(
        policies=[
            world.policy(
                world.a,
                namespaces=[world.pay],
                approvers="change-approvers",
                break_glass="sre-oncall",
                windowLimits=limits,
            ),
            world.policy(
                world.b,
                namespaces=[world.ledger],
                approvers="db-approvers",
                break_glass="dba-oncall",
            ),
        ]
    )
    century = world.window(f"nwa-{world.id}-century", namespaces=[world.pay], hours=24 * 365 * 100)
    refused(
        world.create(century, who=ALICE),
        "more than maxLifetime 30d",
        f"windowLimits of policy {world.a}",
    )
    always = world.window(f"nwa-{world.id}-always", namespaces=[world.pay])
    always["spec"]["schedule"] = {
        "cron": "* * * * *",
        "duration": "2h",
        "timeZone": "UTC",
        "notBefore": crds.rfc3339(now()),
        "notAfter": crds.rfc3339(now() + datetime.timedelta(days=7)),
    }
    refused(world.create(always, who=ALICE), "open without end")
    everything = world.window(
        f"nwa-{world.id}-all",
        selector={},
        rules=[{"apiGroups": ["*"], "resources": ["*/*"], "operations": ["*"]}],
    )
    refused(world.create(everything, who=ALICE), "selects every namespace")

    # Policy B sets no limits: a broad window is accepted, but its approver is warned first.
    broad = world.window(
        f"nwa-{world.id}-broad",
        namespaces=[world.ledger],
        rules=[{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}],
        hours=72,
    )
    admitted(world.create(broad, who=ALICE))
    said = world.approve(f"nwa-{world.id}-broad", DAN)
    assert "warning: broad window" in said and "warning: long window" in said
