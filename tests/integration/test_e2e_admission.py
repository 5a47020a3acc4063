"""End to end: a real kube-apiserver calls a real changegate process, as real identities.

changegate runs once for the module (``python -m controller run --local`` with the admin
kubeconfig; in a cluster it has its own service account and RBAC). Every test gets its own
namespace, ChangePolicy and AuthorizedIdentity, so tests do not see each other's windows.
Users act by impersonation (``kubectl --as``), with RBAC granted to their groups.

Time is real: windows are placed relative to now (open = now-1h..now+1h, "tomorrow" =
now+1d..now+1d+1h) and work hours are computed from the current UTC hour.

Changes reach changegate's index through a watch, so the test waits (``eventually``) for the
state it set up to take effect before asserting the outcome it is about.
"""

from __future__ import annotations

import datetime
import json
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import e2e_helpers
import pytest

from controller.devcluster import cluster
from controller.model import crds
from controller.policy import decide

pytestmark = pytest.mark.integration

DEVELOPERS = "developers"
APPROVERS = "change-approvers"
SRE = "sre-oncall"

ALICE = ("alice@example.com", (DEVELOPERS,))  # requester, designated
BOB = ("bob@example.com", (DEVELOPERS, APPROVERS))  # approver
CAROL = ("carol@example.com", (DEVELOPERS,))  # not designated
DAVE = ("dave@example.com", (DEVELOPERS,))  # not an approver
SELF_APPROVER = ("alice@example.com", (DEVELOPERS, APPROVERS))
OPS = ("ops@example.com", (DEVELOPERS, SRE))  # break-glass


RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "e2e-changegate-users"},
        "rules": [
            {
                "apiGroups": ["", "apps"],
                "resources": ["configmaps", "deployments", "pods"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            },
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/status"],
                "verbs": ["get", "update", "patch"],
            },
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
            {
                "apiGroups": ["changegate.io"],
                "resources": ["changewindows"],
                "verbs": ["get", "list", "watch", "create", "update", "patch"],
            },
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "e2e-changegate-users"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "e2e-changegate-users",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DEVELOPERS},
            # Impersonated below to show the control plane is never gated.
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": "system:kube-controller-manager",
            },
        ],
    },
]


# What the test policy controls and the test windows cover: the same rules, so a window
# covers everything the policy gates.
CONTROLLED: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE", "DELETE"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "operations": ["CREATE", "UPDATE", "DELETE"],
    },
    {"apiGroups": [""], "resources": ["pods/exec"], "operations": ["CONNECT"]},
]


NOW = datetime.datetime.now(datetime.UTC)
OPEN = (NOW - datetime.timedelta(hours=1), NOW + datetime.timedelta(hours=1))
TOMORROW = (NOW + datetime.timedelta(days=1), NOW + datetime.timedelta(days=1, hours=1))


class World:
    """One test's namespace, policy and identity, and the verbs the tests use."""

    def __init__(self, cp: cluster.ControlPlane, ns: str) -> None:
        self.cp = cp
        self.ns = ns
        self.policy = f"{ns}-policy"
        self.identity = f"{ns}-oncall"

    # -- plumbing ---------------------------------------------------------------------------

    def kubectl(
        self, *args: str, who: tuple[str, tuple[str, ...]] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if who is None:
            return self.cp.kubectl(*args, input=input)
        return self.cp.kubectl(*args, as_user=who[0], as_groups=who[1], input=input)

    def create(
        self, obj: dict[str, Any], *, who: tuple[str, tuple[str, ...]] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", who=who, input=json.dumps(obj))

    def admin_apply(self, obj: dict[str, Any]) -> None:
        out = self.kubectl("apply", "-f", "-", input=json.dumps(obj))
        assert out.returncode == 0, out.stderr

    def configmap(
        self, name: str, *, who: tuple[str, tuple[str, ...]], dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["create", "configmap", name, "-n", self.ns, "--from-literal=k=v"]
        if dry_run:
            args.append("--dry-run=server")
        return self.kubectl(*args, who=who)

    # -- the CRs ------------------------------------------------------------------------------

    def make_policy(self, *, enforcement: str = "Enforce", **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangePolicy",
            "metadata": {"name": self.policy},
            "spec": {
                "match": {
                    "resources": CONTROLLED,
                    "namespaces": [self.ns],
                },
                "enforcement": enforcement,
                "approval": {"required": 1, "approverGroups": [APPROVERS]},
                "ticketPattern": "^CHG-[0-9]+$",
                "breakGlass": {"groups": [SRE], "maxDuration": "2h"},
                "message": {"contact": "#change-management"},
                **spec,
            },
        }

    def make_identity(self, *, work_hours: dict[str, Any] | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "subjects": [
                {"kind": "User", "name": ALICE[0]},
                {"kind": "Group", "name": SRE},
            ]
        }
        if work_hours is not None:
            spec["workHours"] = work_hours
        return {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "AuthorizedIdentity",
            "metadata": {"name": self.identity},
            "spec": spec,
        }

    def make_window(
        self,
        name: str,
        *,
        span: tuple[datetime.datetime, datetime.datetime] = OPEN,
        requester: str = ALICE[0],
        emergency: str | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "ticket": "CHG-42",
            "description": f"e2e {name}",
            "requester": requester,
            "identities": [self.identity],
            "targets": [
                {
                    "namespaces": [self.ns],
                    "resources": CONTROLLED,
                }
            ],
            "schedule": {"start": crds.rfc3339(span[0]), "end": crds.rfc3339(span[1])},
        }
        if emergency:
            spec["emergency"] = {"reason": emergency, "policies": [self.policy]}
        return {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": name},
            "spec": spec,
        }

    def request_window(self, name: str, **kw: Any) -> None:
        out = self.create(self.make_window(name, **kw), who=ALICE)
        assert out.returncode == 0, out.stderr

    def window(self, name: str) -> dict[str, Any]:
        out = self.kubectl("get", "changewindow", name, "-o", "json")
        assert out.returncode == 0, out.stderr
        body: dict[str, Any] = json.loads(out.stdout)
        return body

    def spec_hash(self, name: str) -> str:
        """The specHash changegate publishes in status (what an approver signs)."""

        def published() -> str:
            body = self.window(name)
            status = body.get("status") or {}
            assert status.get("specHash"), f"no specHash yet: {status}"
            assert status.get("observedGeneration") == body["metadata"]["generation"]
            return str(status["specHash"])

        return e2e_helpers.eventually(published)

    def approve(
        self, name: str, *, who: tuple[str, tuple[str, ...]] = BOB, approver: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        body = self.window(name)
        approvals = list(body["spec"].get("approvals") or [])
        approvals.append(
            {
                "approver": approver or who[0],
                "specHash": self.spec_hash(name),
                "approvedAt": crds.rfc3339(datetime.datetime.now(datetime.UTC)),
                "policies": [self.policy],
            }
        )
        patch = json.dumps({"spec": {"approvals": approvals}})
        return self.kubectl("patch", "changewindow", name, "--type=merge", "-p", patch, who=who)

    def approved_window(self, name: str, **kw: Any) -> None:
        self.request_window(name, **kw)
        out = self.approve(name)
        assert out.returncode == 0, out.stderr

    def wait_controlled(self) -> None:
        """Until changegate gates this namespace (the admin has no window: denied)."""

        def gated() -> None:
            out = self.configmap("probe", who=None, dry_run=True)
            assert "changegate" in out.stderr, out.stderr

        e2e_helpers.eventually(gated)

    def setup(
        self, *, policy: dict[str, Any] | None = None, identity: dict[str, Any] | None = None
    ) -> World:
        out = self.kubectl("create", "namespace", self.ns)
        assert out.returncode == 0, out.stderr
        self.admin_apply(identity or self.make_identity())
        self.admin_apply(policy or self.make_policy())
        self.wait_controlled()
        return self


@pytest.fixture(scope="module")
def changegate(
    controlplane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_helpers.Changegate]:
    cp = controlplane
    for obj in RBAC:
        out = cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
        assert out.returncode == 0, out.stderr
    with e2e_helpers.running_changegate(cp, workdir=tmp_path_factory.mktemp("changegate")) as cg:
        yield cg


@pytest.fixture
def world(controlplane: cluster.ControlPlane, changegate: e2e_helpers.Changegate) -> World:
    return World(controlplane, f"e2e-{uuid.uuid4().hex[:8]}")


def denied(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, f"expected a denial, got: {out.stdout}"
    assert "changegate denied" in out.stderr, out.stderr
    return out.stderr


def admitted(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, out.stderr
    return out


# -- windows, approvals, designated personnel ---------------------------------------------------


def test_change_inside_an_approved_window_is_admitted(world: World) -> None:
    world.setup()
    name = f"{world.ns}-w"
    world.approved_window(name)
    e2e_helpers.eventually(lambda: admitted(world.configmap("inside", who=ALICE)))

    def active_with_events() -> None:
        status = world.window(name)["status"]
        assert (status["phase"], status["approved"], status["approvals"]) == ("Active", True, "1/1")
        out = world.kubectl(
            "get",
            "events",
            "-n",
            "default",
            f"--field-selector=involvedObject.name={name}",
            "-o",
            "json",
        )
        reasons = {e["reason"] for e in json.loads(out.stdout)["items"]}
        assert {"Approved", "Opened"} <= reasons, reasons

    e2e_helpers.eventually(active_with_events)


def test_change_outside_the_window_is_denied_with_the_next_opening(world: World) -> None:
    world.setup()
    world.approved_window(f"{world.ns}-w", span=TOMORROW)
    message = e2e_helpers.eventually(
        lambda: _assert_contains(denied(world.configmap("early", who=ALICE)), "opens")
    )
    assert "CHG-42" in message


def _assert_contains(text: str, needle: str) -> str:
    assert needle in text, text
    return text


def test_requester_not_designated_is_denied(world: World) -> None:
    world.setup()
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(lambda: admitted(world.configmap("ok", who=ALICE)))
    message = denied(world.configmap("carols", who=CAROL))
    assert "not designated" in message


def test_repeated_denials_are_one_change_denied_event(world: World) -> None:
    world.setup()
    for _ in range(5):  # a retry loop
        denied(world.configmap("retry", who=CAROL))

    def one_event() -> None:
        out = world.kubectl(
            "get",
            "events",
            "-n",
            world.ns,
            "--field-selector=reason=ChangeDenied,involvedObject.name=retry",
            "-o",
            "json",
        )
        items = json.loads(out.stdout)["items"]
        assert len(items) == 1, items
        assert items[0]["type"] == "Warning"
        assert "changegate denied" in items[0]["message"]

    e2e_helpers.eventually(one_event)


def test_change_outside_work_hours_is_denied(world: World) -> None:
    # Work hours two to three hours from now, every day: now is outside them.
    start = (NOW + datetime.timedelta(hours=2)).strftime("%H:00")
    end = (NOW + datetime.timedelta(hours=3)).strftime("%H:00")
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    hours = {"timeZone": "UTC", "weekly": [{"days": days, "start": start, "end": end}]}
    world.setup(identity=world.make_identity(work_hours=hours))
    world.approved_window(f"{world.ns}-w")
    message = e2e_helpers.eventually(
        lambda: _assert_contains(denied(world.configmap("late", who=ALICE)), "work hours")
    )
    assert ALICE[0] in message


def test_change_inside_work_hours_is_admitted(world: World) -> None:
    start = (NOW - datetime.timedelta(hours=1)).strftime("%H:00")
    end = (NOW + datetime.timedelta(hours=2)).strftime("%H:00")
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    hours = {"timeZone": "UTC", "weekly": [{"days": days, "start": start, "end": end}]}
    world.setup(identity=world.make_identity(work_hours=hours))
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(lambda: admitted(world.configmap("ontime", who=ALICE)))


def test_blackout_denies_even_inside_an_approved_window(world: World) -> None:
    blackout = {
        "name": "e2e-freeze",
        "schedule": {"start": crds.rfc3339(OPEN[0]), "end": crds.rfc3339(OPEN[1])},
    }
    world.setup(policy=world.make_policy(blackouts=[blackout]))
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(
        lambda: _assert_contains(denied(world.configmap("frozen", who=ALICE)), "e2e-freeze")
    )


def test_window_without_approval_does_not_admit(world: World) -> None:
    world.setup()
    world.request_window(f"{world.ns}-w")
    world.spec_hash(f"{world.ns}-w")  # the window is in the index
    message = denied(world.configmap("unapproved", who=ALICE))
    assert "not approved" in message


def test_requester_cannot_approve_their_own_window(world: World) -> None:
    world.setup()
    world.request_window(f"{world.ns}-w")
    out = world.approve(f"{world.ns}-w", who=SELF_APPROVER)
    assert out.returncode != 0
    assert "cannot approve their own window" in out.stderr


def test_approval_by_a_non_approver_is_rejected(world: World) -> None:
    world.setup()
    world.request_window(f"{world.ns}-w")
    out = world.approve(f"{world.ns}-w", who=DAVE)
    assert out.returncode != 0
    assert "not in an approver group" in out.stderr


def test_spec_edit_after_approval_makes_the_approval_stale(world: World) -> None:
    world.setup()
    name = f"{world.ns}-w"
    world.approved_window(name)
    e2e_helpers.eventually(lambda: admitted(world.configmap("before", who=ALICE)))
    patch = json.dumps({"spec": {"description": "widened scope"}})
    admitted(world.kubectl("patch", "changewindow", name, "--type=merge", "-p", patch, who=ALICE))
    message = e2e_helpers.eventually(lambda: denied(world.configmap("after", who=ALICE)))
    assert "stale" in message

    def status_not_approved() -> None:
        assert world.window(name)["status"]["approved"] is False

    e2e_helpers.eventually(status_not_approved)


# -- break-glass, enforcement modes -------------------------------------------------------------


def test_emergency_window_admits_and_raises_a_warning_event(world: World) -> None:
    world.setup()
    now = datetime.datetime.now(datetime.UTC)
    window = world.make_window(
        f"{world.ns}-inc",
        span=(now, now + datetime.timedelta(hours=1)),
        requester=OPS[0],
        emergency="INC-77 payments down",
    )
    admitted(world.create(window, who=OPS))
    e2e_helpers.eventually(lambda: admitted(world.configmap("hotfix", who=OPS)))

    def warning_event() -> None:
        out = world.kubectl(
            "get", "events", "-n", world.ns, "--field-selector=reason=EmergencyChange", "-o", "json"
        )
        items = json.loads(out.stdout)["items"]
        assert items, "no EmergencyChange Event yet"
        assert items[0]["type"] == "Warning"
        assert items[0]["reportingComponent"] == "changegate.io/changegate"

    e2e_helpers.eventually(warning_event)


def test_warn_mode_admits_with_a_warning(world: World) -> None:
    world.kubectl("create", "namespace", world.ns)
    world.admin_apply(world.make_identity())
    world.admin_apply(world.make_policy(enforcement="Warn"))

    def warned() -> None:
        out = admitted(world.configmap(f"warned-{uuid.uuid4().hex[:4]}", who=CAROL))
        assert "Warning:" in out.stderr and "changegate" in out.stderr, out.stderr

    e2e_helpers.eventually(warned)


def test_audit_mode_admits_without_a_warning(world: World) -> None:
    world.kubectl("create", "namespace", world.ns)
    world.admin_apply(world.make_identity())
    # Warn first, to know the policy is in the index; then Audit, until the warning is gone.
    world.admin_apply(world.make_policy(enforcement="Warn"))
    e2e_helpers.eventually(
        lambda: _assert_contains(world.configmap("w", who=CAROL, dry_run=True).stderr, "changegate")
    )
    world.admin_apply(world.make_policy(enforcement="Audit"))

    def silent() -> None:
        out = admitted(world.configmap("a", who=CAROL, dry_run=True))
        assert "changegate" not in out.stderr, out.stderr

    e2e_helpers.eventually(silent)
    out = admitted(world.configmap("audited", who=CAROL))
    assert out.stderr == ""


# -- request shapes ------------------------------------------------------------------------------


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "shell"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}


def test_exec_is_gated_as_connect(world: World) -> None:
    world.setup()
    admitted(world.kubectl("create", "-n", world.ns, "-f", "-", input=json.dumps(POD)))
    out = world.kubectl("exec", "-n", world.ns, "shell", "--", "true", who=CAROL)
    assert "changegate denied CONNECT pods/exec" in denied(out)

    world.approved_window(f"{world.ns}-w")

    def allowed_by_changegate() -> None:
        # No kubelet: an admitted exec still fails, but not because of changegate.
        out = world.kubectl("exec", "-n", world.ns, "shell", "--", "true", who=ALICE)
        assert out.returncode != 0
        assert "changegate" not in out.stderr, out.stderr

    e2e_helpers.eventually(allowed_by_changegate)


def test_no_op_reapply_is_admitted(world: World) -> None:
    world.setup()
    world.approved_window(f"{world.ns}-w")
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gitops", "namespace": world.ns},
            "data": {"k": "v"},
        }
    )
    apply = ("apply", "--server-side", "--field-manager=gitops", "-f", "-")
    e2e_helpers.eventually(lambda: admitted(world.kubectl(*apply, who=ALICE, input=manifest)))
    # Someone without a window re-applies the same manifest: nothing changes, so admitted...
    admitted(world.kubectl(*apply, who=CAROL, input=manifest))
    admitted(world.kubectl(*apply, who=CAROL, input=manifest))
    # ...while a real change by them is still denied.
    changed = manifest.replace('"v"', '"v2"')
    denied(world.kubectl(*apply, who=CAROL, input=changed))


def test_server_dry_run_tells_the_truth(world: World) -> None:
    world.setup()
    denied(world.configmap("dry", who=CAROL, dry_run=True))
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(lambda: admitted(world.configmap("dry", who=ALICE, dry_run=True)))
    # A dry run changes nothing.
    assert world.kubectl("get", "configmap", "dry", "-n", world.ns).returncode != 0


def test_status_subresource_writes_are_not_gated(world: World) -> None:
    world.setup()
    world.approved_window(f"{world.ns}-w")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": world.ns},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    e2e_helpers.eventually(lambda: admitted(world.create(deployment, who=ALICE)))
    patch = json.dumps({"status": {"observedGeneration": 1}})
    admitted(
        world.kubectl(
            "patch",
            "deployment",
            "web",
            "-n",
            world.ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
            who=CAROL,
        )
    )
    # The same user changing the object itself is gated.
    spec_patch = json.dumps({"spec": {"replicas": 3}})
    denied(
        world.kubectl(
            "patch",
            "deployment",
            "web",
            "-n",
            world.ns,
            "--type=merge",
            "-p",
            spec_patch,
            who=CAROL,
        )
    )


def test_control_plane_identities_are_not_gated(world: World) -> None:
    world.setup()
    admitted(world.configmap("kcm", who=("system:kube-controller-manager", ())))


# -- lifecycle: runtime policies, fail closed -----------------------------------------------------


def test_policy_added_at_runtime_is_enforced_without_restart(world: World) -> None:
    world.kubectl("create", "namespace", world.ns)
    admitted(world.configmap("before", who=CAROL))
    world.admin_apply(world.make_identity())
    world.admin_apply(world.make_policy())
    e2e_helpers.eventually(lambda: denied(world.configmap("after", who=CAROL)))


def test_webhook_down_fails_closed_but_control_plane_still_works(
    world: World, changegate: e2e_helpers.Changegate
) -> None:
    world.setup()
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(lambda: admitted(world.configmap("up", who=ALICE)))
    assert changegate.stop() == 0  # SIGTERM is a clean shutdown
    try:
        out = world.configmap("down", who=ALICE)
        assert out.returncode != 0
        assert "failed calling webhook" in out.stderr, out.stderr
        admitted(world.configmap("kcm", who=("system:kube-controller-manager", ())))
    finally:
        changegate.start()
    e2e_helpers.eventually(lambda: admitted(world.configmap("back", who=ALICE)))


# -- observability ------------------------------------------------------------------------------


def _scrape(cg: e2e_helpers.Changegate) -> str:
    ctx = ssl.create_default_context(cafile=str(cg.workdir / "certs" / "ca.crt"))
    with urllib.request.urlopen(f"{cg.url}/metrics", context=ctx, timeout=5) as r:
        text: str = r.read().decode()
        return text


def test_metrics_count_decisions_and_windows_by_phase(
    world: World, changegate: e2e_helpers.Changegate
) -> None:
    world.setup()
    denied(world.configmap("before", who=ALICE))
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(lambda: admitted(world.configmap("inside", who=ALICE)))

    def exported() -> None:
        text = _scrape(changegate)
        active = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('changegate_windows{phase="Active"}')
        ]
        assert active and active[0] >= 1, "no Active windows exported"
        assert 'decision="deny"' in text and 'reason="NoWindow"' in text
        assert 'decision="allow"' in text and 'reason="Window"' in text
        assert "changegate_admission_duration_seconds_bucket" in text
        assert "changegate_index_ready 1.0" in text

    e2e_helpers.eventually(exported)


# -- one table of exemptions: the decision's, and the API server's CEL agrees ------------------

EXEMPTION_CASES = [
    ("system:kube-controller-manager", ()),
    ("system:kube-scheduler", ()),
    ("system:node:worker-1", ("system:nodes",)),
    (
        "system:serviceaccount:kube-system:replicaset-controller",
        ("system:serviceaccounts:kube-system",),
    ),
    # Not exempt: look-alikes and ordinary users.
    ("system:kube-controller-manager-impostor", ()),
    ("system:serviceaccount:default:builder", ("system:serviceaccounts:default",)),
    ("alice@example.com", (DEVELOPERS,)),
]


def test_the_webhooks_match_conditions_skip_exactly_the_identities_the_decision_exempts(
    world: World, changegate: e2e_helpers.Changegate
) -> None:
    """The matchConditions (CEL, compiled and evaluated by the real API server) are built from
    the decision's own exemption sets; a request reaches changegate iff the decision would not
    exempt its identity, so the cluster heals without changegate and nobody else skips it."""
    world.setup()
    grant = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{world.ns}-exemption-cases"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "e2e-changegate-users",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
            for user, _ in EXEMPTION_CASES
        ],
    }
    world.admin_apply(grant)
    names = {}
    for i, (user, groups) in enumerate(EXEMPTION_CASES):
        names[f"exemption-{i}"] = (user, groups)
        world.kubectl(
            "create",
            "configmap",
            f"exemption-{i}",
            "-n",
            world.ns,
            "--from-literal=k=v",
            "--dry-run=server",
            who=(user, groups),
        )

    def reached() -> set[str]:
        seen = set()
        for line in changegate.log_text().splitlines():
            if '"logger":"changegate.decisions"' in line and world.ns in line:
                entry = json.loads(line)
                if entry.get("name") in names:
                    seen.add(entry["name"])
        return seen

    expected = {
        name
        for name, (user, groups) in names.items()
        if not decide.is_builtin_exempt(user=user, groups=groups)
    }
    assert 2 < len(expected) < len(names)  # the table has both kinds

    def agree() -> None:
        assert reached() == expected

    e2e_helpers.eventually(agree)
