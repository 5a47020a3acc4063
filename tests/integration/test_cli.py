"""``kubectl changegate`` against a real kube-apiserver, as the people who would run it.

Alice (payments-ops) requests a window, Bob (change-approvers) approves it; ``can-i`` answers
with the decision core on the live objects. Most tests run without the webhook (``can-i``
computes the decision itself; writes are checked by RBAC and the CRD schemas only); the last
one starts changegate and checks that ``can-i`` and the webhook agree.
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import e2e_helpers  # tests/integration/e2e_helpers.py (on sys.path via pytest's rootdir-less import)
import pytest

from controller.cli import bodies, kube, main
from controller.devcluster import cluster
from controller.policy import approvals

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NS = "cli-payments"
POLICY = "cli-payments-prod"
IDENTITY = "cli-payments-oncall"
NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Terminal(io.StringIO):
    """Typed answers on what looks like an interactive terminal."""

    def isatty(self) -> bool:
        return True


def run(
    kubeconfig: Path, *args: str, now: datetime.datetime = NOW, stdin: io.StringIO | None = None
) -> Result:
    """Run the CLI in-process (fast), exactly as the console script would."""
    out, err = io.StringIO(), io.StringIO()
    code = main.main(
        [*args, "--kubeconfig", str(kubeconfig), "--tz", "Asia/Seoul"],
        out=out,
        err=err,
        stdin=stdin if stdin is not None else io.StringIO(""),
        now=now,
    )
    return Result(code, out.getvalue(), err.getvalue())


def rfc3339(t: datetime.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def world(controlplane: cluster.ControlPlane) -> Iterator[cluster.ControlPlane]:
    """CRDs, the recommended read access, a controlled namespace, a policy and an identity."""
    cp = controlplane
    cp.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    cp.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/changewindows.changegate.io",
        "crd/changepolicies.changegate.io",
        "crd/authorizedidentities.changegate.io",
        check=True,
    )
    manifest = textwrap.dedent(
        f"""
        apiVersion: v1
        kind: Namespace
        metadata: {{name: {NS}, labels: {{changegate.io/controlled: "true"}}}}
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {{name: cli-changegate-reader}}
        rules:
        - apiGroups: [changegate.io]
          resources: [changewindows, changepolicies, authorizedidentities]
          verbs: [get, list, watch]
        - apiGroups: [""]
          resources: [namespaces, events]
          verbs: [get, list]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRoleBinding
        metadata: {{name: cli-changegate-reader}}
        roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cli-changegate-reader}}
        subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "cli-users"}}]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {{name: cli-changegate-writer}}
        rules:
        - apiGroups: [changegate.io]
          resources: [changewindows]
          verbs: [create, patch]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRoleBinding
        metadata: {{name: cli-changegate-writer}}
        roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cli-changegate-writer}}
        subjects:
        - {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: cli-payments-ops}}
        - {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: cli-approvers}}
        ---
        apiVersion: changegate.io/v1alpha1
        kind: ChangePolicy
        metadata: {{name: {POLICY}}}
        spec:
          match:
            resources:
            - {{apiGroups: [apps], resources: [deployments, deployments/scale], operations: [CREATE, UPDATE, DELETE]}}
            namespaces: [{NS}]
          approval: {{required: 1, approverGroups: [cli-approvers]}}
          ticketPattern: "^CHG-[0-9]+$"
          breakGlass: {{groups: [cli-sre], maxDuration: 4h}}
        ---
        apiVersion: changegate.io/v1alpha1
        kind: AuthorizedIdentity
        metadata: {{name: {IDENTITY}}}
        spec:
          subjects: [{{kind: User, name: alice@example.com}}, {{kind: User, name: sam@example.com}}]
        """
    )
    cp.kubectl("apply", "-f", "-", input=manifest, check=True)
    yield cp


@pytest.fixture(scope="module")
def alice(world: cluster.ControlPlane) -> Path:
    return world.identity("alice@example.com", ["cli-payments-ops", "cli-users"]).kubeconfig


@pytest.fixture(scope="module")
def bob(world: cluster.ControlPlane) -> Path:
    return world.identity("bob@example.com", ["cli-approvers", "cli-users"]).kubeconfig


def request_window(kubeconfig: Path, name: str, *extra: str) -> Result:
    return run(
        kubeconfig,
        "request",
        "-n",
        NS,
        "--ticket",
        "CHG-1234",
        "--description",
        "Roll out v2.3",
        "--identity",
        IDENTITY,
        "--resource",
        "deploy",
        "--operation",
        "UPDATE",
        "--name",
        "web",
        "--start",
        rfc3339(NOW - datetime.timedelta(hours=1)),
        "--end",
        rfc3339(NOW + datetime.timedelta(hours=1)),
        "--name-window",
        name,
        *extra,
    )


def can_i(kubeconfig: Path, *args: str, now: datetime.datetime = NOW) -> tuple[int, dict[str, Any]]:
    r = run(kubeconfig, "can-i", *args, "-o", "json", now=now)
    assert r.code in (0, 1), r.err
    return r.code, json.loads(r.out)


def test_request_then_approve_by_another_user_flips_can_i_from_not_approved_to_yes(
    world: cluster.ControlPlane, alice: Path, bob: Path
) -> None:
    created = request_window(alice, "cli-chg-1234", "-o", "json")
    assert created.code == 0, created.err
    doc = json.loads(created.out)
    assert doc["window"]["spec"]["requester"] == "alice@example.com"  # from SelfSubjectReview
    assert doc["specHash"] == approvals.spec_hash(doc["window"]["spec"])

    code, answer = can_i(alice, "update", "deployments.apps", "web", "-n", NS)
    assert (code, answer["allowed"], answer["reason"]) == (1, False, "NotApproved")

    own = run(alice, "approve", "cli-chg-1234", "--yes")
    assert own.code == 2 and "four-eyes" in own.err

    needs_yes = run(bob, "approve", "cli-chg-1234")
    assert needs_yes.code == 2 and "--yes" in needs_yes.err

    approved = run(bob, "approve", "cli-chg-1234", "--yes")
    assert approved.code == 0, approved.err
    assert doc["specHash"] in approved.out  # the summary shows what was signed
    stored = json.loads(
        world.kubectl("get", "changewindow", "cli-chg-1234", "-o", "json", check=True).stdout
    )
    assert [(a["approver"], a["specHash"]) for a in stored["spec"]["approvals"]] == [
        ("bob@example.com", doc["specHash"])
    ]

    code, answer = can_i(alice, "update", "deploy", "web", "-n", NS)
    assert (code, answer["allowed"], answer["reason"]) == (0, True, "Window")
    assert answer["window"] == "cli-chg-1234"

    text = run(alice, "can-i", "patch", "deployments", "web", "-n", NS)
    assert text.code == 0 and text.out.splitlines()[0] == "yes"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        # not named by the window's AuthorizedIdentity (impersonated by the admin)
        (
            (
                "update",
                "deploy",
                "web",
                "-n",
                NS,
                "--as",
                "carol@example.com",
                "--as-group",
                "cli-users",
            ),
            "NotDesignated",
        ),
        # after the window closes
        (
            (
                "update",
                "deploy",
                "web",
                "-n",
                NS,
                "--at",
                rfc3339(NOW + datetime.timedelta(hours=3)),
            ),
            "NoWindow",
        ),
        # an object the window does not name
        (("update", "deploy", "api", "-n", NS), "NoWindow"),
        # an operation the window does not cover
        (("delete", "deploy", "web", "-n", NS), "NoWindow"),
    ],
)
def test_can_i_denies_with_the_webhooks_reason_and_exit_code_1(
    world: cluster.ControlPlane, alice: Path, args: tuple[str, ...], reason: str
) -> None:
    _approved_window(world, alice)
    kubeconfig = world.kubeconfig if "--as" in args else alice
    code, answer = can_i(kubeconfig, *args)
    assert (code, answer["allowed"], answer["reason"]) == (1, False, reason)


def test_can_i_allows_what_no_policy_controls(world: cluster.ControlPlane, alice: Path) -> None:
    code, answer = can_i(alice, "update", "configmaps", "x", "-n", NS)
    assert (code, answer["reason"]) == (0, "NotControlled")
    # Without -n: the context's namespace, else "default" (as kubectl), where no policy applies.
    code, answer = can_i(alice, "update", "deploy", "web")
    assert (code, answer["reason"], answer["request"]["namespace"]) == (
        0,
        "NotControlled",
        "default",
    )


def _approved_window(world: cluster.ControlPlane, alice: Path) -> None:
    """The window of the first test, made here too so each test can run alone."""
    got = world.kubectl("get", "changewindow", "cli-chg-1234", "-o", "name")
    if got.returncode != 0:
        assert request_window(alice, "cli-chg-1234").code == 0
        bob = world.identity("bob@example.com", ["cli-approvers", "cli-users"]).kubeconfig
        assert run(bob, "approve", "cli-chg-1234", "--yes").code == 0


def test_list_and_describe_show_phase_approvals_and_identities(
    world: cluster.ControlPlane, alice: Path
) -> None:
    _approved_window(world, alice)
    listed = run(alice, "list", "-o", "json")
    assert listed.code == 0, listed.err
    row = next(r for r in json.loads(listed.out) if r["name"] == "cli-chg-1234")
    assert (row["phase"], row["ticket"], row["approvals"]) == ("Active", "CHG-1234", "1/1")

    table = run(alice, "list")
    line = next(x for x in table.out.splitlines() if x.startswith("cli-chg-1234"))
    assert "Active" in line and "KST (in 1h)" in line  # closes in an hour, local time

    described = run(alice, "describe", "cli-chg-1234")
    assert described.code == 0, described.err
    assert f"{IDENTITY}: User alice@example.com, User sam@example.com" in described.out
    assert f"Policy {POLICY} (Enforce): 1 required from cli-approvers" in described.out
    assert "bob@example.com at" in described.out and "Missing: 0" in described.out
    assert f"namespaces {NS}: deployments.apps [UPDATE] (only web)" in described.out


def test_describe_reports_stale_approvals_after_the_spec_changes(
    world: cluster.ControlPlane, alice: Path, bob: Path
) -> None:
    assert request_window(alice, "cli-chg-stale").code == 0
    assert run(bob, "approve", "cli-chg-stale", "--yes").code == 0
    world.kubectl(
        "patch",
        "changewindow",
        "cli-chg-stale",
        "--type=merge",
        "-p",
        '{"spec":{"description":"changed after approval"}}',
        check=True,
    )
    d = json.loads(run(alice, "describe", "cli-chg-stale", "-o", "json").out)
    assert [a["approver"] for a in d["stale"]] == ["bob@example.com"]
    assert d["valid"] == [] and d["required"] == 1
    code, answer = can_i(alice, "update", "deploy", "web", "-n", NS, "--at", rfc3339(NOW))
    assert code == 0  # the other, still-approved window keeps the change allowed
    assert answer["window"] == "cli-chg-1234"


def test_emergency_window_opens_now_for_the_break_glass_group(
    world: cluster.ControlPlane,
) -> None:
    sam = world.identity("sam@example.com", ["cli-sre", "cli-payments-ops", "cli-users"]).kubeconfig
    r = run(
        sam,
        "emergency",
        "--reason",
        "INC-77 payments down",
        "--duration",
        "1h",
        "-n",
        NS,
        "--name-window",
        "cli-bg-1",
        "-o",
        "json",
    )
    assert r.code == 0, r.err
    spec = json.loads(r.out)["window"]["spec"]
    # Break-glass is per policy: the CLI names the policies whose break-glass sam holds.
    assert spec["emergency"] == {"reason": "INC-77 payments down", "policies": [POLICY]}
    assert spec["identities"] == [IDENTITY]  # found by who sam is
    assert spec["schedule"]["start"] == rfc3339(NOW)
    # Everything in the namespace, any operation, without prior approval.
    code, answer = can_i(sam, "delete", "deploy", "api", "-n", NS)
    assert (code, answer["reason"], answer["emergency"]) == (0, "Emergency", True)


def test_report_lists_windows_for_auditors(world: cluster.ControlPlane, alice: Path) -> None:
    _approved_window(world, alice)
    r = run(alice, "report", "--since", "1d", "-o", "json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    row = next(w for w in data["windows"] if w["name"] == "cli-chg-1234")
    assert (row["ticket"], row["requester"], row["approvers"], row["emergency"]) == (
        "CHG-1234",
        "alice@example.com",
        ["bob@example.com"],
        False,
    )
    assert data["decisions"]["changeDenied"] >= 0


def test_several_as_groups_reach_the_api_server(world: cluster.ControlPlane) -> None:
    k = kube.Kube(
        kube.Connection(
            kubeconfig=str(world.kubeconfig), as_user="zoe", as_groups=("g1", "g2", "g3")
        )
    )
    user, groups = k.whoami()
    assert user == "zoe"
    assert {"g1", "g2", "g3"} <= set(groups)


def test_errors_are_one_line_with_exit_code_2(
    world: cluster.ControlPlane, alice: Path, tmp_path: Path
) -> None:
    unknown = run(alice, "describe", "no-such-window")
    assert (unknown.code, unknown.err.strip()) == (2, "error: no ChangeWindow named no-such-window")
    unknown = run(alice, "approve", "no-such-window", "--yes")
    assert (unknown.code, unknown.err.strip()) == (2, "error: no ChangeWindow named no-such-window")

    dave = world.identity("dave@example.com", ["cli-users"]).kubeconfig
    forbidden = request_window(dave, "cli-dave")
    assert forbidden.code == 2
    assert 'cannot create resource "changewindows"' in forbidden.err

    # The real console script, against a server that is not there.
    config = json.loads(Path(world.kubeconfig).read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(json.dumps(config))
    script = Path(sys.executable).parent / "kubectl-changegate"
    proc = subprocess.run(
        [str(script), "list", "--kubeconfig", str(dead)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "cannot reach the API server at https://127.0.0.1:1" in proc.stderr


def test_approval_patch_fails_safely_when_the_window_changed_since_it_was_read(
    world: cluster.ControlPlane, alice: Path, bob: Path
) -> None:
    assert request_window(alice, "cli-chg-race").code == 0
    k = kube.Kube(kube.Connection(kubeconfig=str(bob)))
    seen = k.request("GET", f"{kube.WINDOWS_PATH}/cli-chg-race")
    # Someone edits the spec after Bob read it.
    world.kubectl(
        "patch",
        "changewindow",
        "cli-chg-race",
        "--type=merge",
        "-p",
        '{"spec":{"description":"edited meanwhile"}}',
        check=True,
    )
    entry = {"approver": "bob@example.com", "specHash": approvals.spec_hash(seen["spec"])}
    patch = bodies.approval_patch(spec=seen["spec"], entry=entry)
    with pytest.raises(kube.Conflict):
        k.request(
            "PATCH",
            f"{kube.WINDOWS_PATH}/cli-chg-race",
            body=patch,
            content_type="application/json-patch+json",
        )
    stored = json.loads(
        world.kubectl("get", "changewindow", "cli-chg-race", "-o", "json", check=True).stdout
    )
    assert not stored["spec"].get("approvals")  # nothing was appended to the edited spec


def test_a_status_write_while_the_approver_reviews_does_not_block_the_approval(
    world: cluster.ControlPlane, alice: Path, bob: Path
) -> None:
    # The controller writes status at every schedule boundary; that is not a change to what
    # the approver reviewed, so it must not turn the approval into a conflict.
    assert request_window(alice, "cli-chg-status").code == 0
    k = kube.Kube(kube.Connection(kubeconfig=str(bob)))
    seen = k.request("GET", f"{kube.WINDOWS_PATH}/cli-chg-status")
    world.kubectl(
        "patch",
        "changewindow",
        "cli-chg-status",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"PendingApproval","approvals":"0/1"}}',
        check=True,
    )
    entry = {"approver": "bob@example.com", "specHash": approvals.spec_hash(seen["spec"])}
    k.request(
        "PATCH",
        f"{kube.WINDOWS_PATH}/cli-chg-status",
        body=bodies.approval_patch(spec=seen["spec"], entry=entry),
        content_type="application/json-patch+json",
    )
    stored = json.loads(
        world.kubectl("get", "changewindow", "cli-chg-status", "-o", "json", check=True).stdout
    )
    assert stored["spec"]["approvals"] == [entry]


def test_approve_asks_on_a_terminal_and_only_yes_approves(
    world: cluster.ControlPlane, alice: Path, bob: Path
) -> None:
    assert request_window(alice, "cli-chg-tty").code == 0
    declined = run(bob, "approve", "cli-chg-tty", stdin=Terminal("n\n"))
    assert declined.code == 2 and "Approve cli-chg-tty as bob@example.com? [y/N]" in declined.out
    stored = json.loads(world.kubectl("get", "changewindow", "cli-chg-tty", "-o", "json").stdout)
    assert not stored["spec"].get("approvals")
    accepted = run(bob, "approve", "cli-chg-tty", stdin=Terminal("y\n"))
    assert accepted.code == 0, accepted.err
    again = run(bob, "approve", "cli-chg-tty", "--yes")
    assert again.code == 0 and "already approved" in again.out


# -- can-i answers what the webhook answers ------------------------------------------------------

ALICE = ("alice@example.com", ("cli-payments-ops", "cli-users"))
CAROL = ("carol@example.com", ("cli-users",))
SIDE_BY_SIDE = [
    # (who, can-i args, the same change through kubectl --dry-run=server)
    (
        ALICE,
        ("patch", "deploy", "web"),
        ("patch", "deployment", "web", "--type=merge", "-p", '{"metadata":{"labels":{"x":"y"}}}'),
    ),
    (
        ALICE,
        ("patch", "deploy", "api"),
        ("patch", "deployment", "api", "--type=merge", "-p", '{"metadata":{"labels":{"x":"y"}}}'),
    ),
    (
        CAROL,
        ("patch", "deploy", "web"),
        ("patch", "deployment", "web", "--type=merge", "-p", '{"metadata":{"labels":{"x":"y"}}}'),
    ),
    (ALICE, ("delete", "deploy", "web"), ("delete", "deployment", "web")),
    (ALICE, ("scale", "deploy", "web"), ("scale", "deployment", "web", "--replicas=3")),
    (ALICE, ("create", "configmaps", "c1"), ("create", "configmap", "c1", "--from-literal=a=b")),
]


def test_can_i_answers_the_same_as_the_webhook(
    world: cluster.ControlPlane, alice: Path, tmp_path: Path
) -> None:
    cp = world
    _approved_window(cp, alice)
    # Only the approved window should speak; the break-glass window would allow everything.
    cp.kubectl("delete", "changewindow", "cli-bg-1", "--ignore-not-found", check=True)
    cp.kubectl("-n", NS, "create", "deployment", "web", "--image=nginx:1.27")
    cp.kubectl("-n", NS, "create", "deployment", "api", "--image=nginx:1.27")
    rbac = textwrap.dedent(
        f"""
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata: {{name: cli-editor, namespace: {NS}}}
        rules:
        - apiGroups: ["", apps]
          resources: [deployments, deployments/scale, configmaps]
          verbs: [get, list, create, update, patch, delete]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {{name: cli-editor, namespace: {NS}}}
        roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: cli-editor}}
        subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: Group, name: cli-users}}]
        """
    )
    cp.kubectl("apply", "-f", "-", input=rbac, check=True)

    with e2e_helpers.running_changegate(cp, workdir=tmp_path / "changegate"):
        for (user, groups), question, change in SIDE_BY_SIDE:
            as_flags = ["--as", user, *[f for g in groups for f in ("--as-group", g)]]
            now = datetime.datetime.now(datetime.UTC)
            code, answer = can_i(cp.kubeconfig, *question, "-n", NS, *as_flags, now=now)
            applied = cp.kubectl(
                "-n", NS, *change, "--dry-run=server", as_user=user, as_groups=groups
            )
            webhook_allowed = applied.returncode == 0
            assert answer["allowed"] is webhook_allowed, (question, user, answer, applied.stderr)
            assert code == (0 if webhook_allowed else 1)
            if not webhook_allowed:
                assert "changegate denied" in applied.stderr, applied.stderr
                assert f"policy {answer['policy']}" in applied.stderr

        # Approvals through the webhook: a non-approver is refused with its reason; an
        # approver's patch (approver = authenticated user, current specHash) is admitted.
        assert request_window(alice, "cli-chg-webhook").code == 0
        ops = cp.identity("olga@example.com", ["cli-payments-ops", "cli-users"]).kubeconfig
        refused = run(ops, "approve", "cli-chg-webhook", "--yes")
        assert refused.code == 2
        # The CLI knows the rules and says so before sending anything ...
        assert "you are not in an approver group (cli-approvers)" in refused.err, refused.err
        # ... and the webhook refuses the same approval written by hand.
        raw = json.loads(cp.kubectl("get", "changewindow", "cli-chg-webhook", "-o", "json").stdout)
        entry = {
            "approver": "olga@example.com",
            "specHash": approvals.spec_hash(raw["spec"]),
            "policies": [POLICY],
        }
        by_hand = cp.kubectl(
            "patch",
            "changewindow",
            "cli-chg-webhook",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"approvals": [entry]}}),
            as_user="olga@example.com",
            as_groups=["cli-payments-ops", "cli-users"],
        )
        assert by_hand.returncode != 0
        assert "not in an approver group of policy" in by_hand.stderr, by_hand.stderr
        bob = cp.identity("bob@example.com", ["cli-approvers", "cli-users"]).kubeconfig
        accepted = run(bob, "approve", "cli-chg-webhook", "--yes")
        assert accepted.code == 0, accepted.err
