"""A work plan approved in the task-tracking system becomes an approved window (issue 9, part 4).

docs/integrations.md's worked example, run against the real API server and a real changegate:
the platform team trusts the tracker's public keys in a ChangePolicy; alice requests a window
for her ticket; bob approves the ticket *in the tracker*, whose automation (a service account
that may patch windows and is no approver) signs the approval with the tracker's key and
appends it with ``kubectl changegate sign-approval --append``; alice's change is admitted.
Every way a signed approval can be wrong is refused with a message naming the check.
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e_helpers
import pytest

from controller.cli import main as cli
from controller.devcluster import cluster
from controller.policy import approvals, signatures

pytestmark = pytest.mark.integration

ALICE = ("alice@example.com", ("developers",))
TRACKER = ("system:serviceaccount:tracker:automation", ("system:serviceaccounts",))
CONFIGMAPS = {"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]}

RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: signed-developer}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list, create, update, patch]}
- {apiGroups: [changegate.io], resources: [changewindows], verbs: [get, list, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: signed-developer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: signed-developer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: developers}]
---
# The tracker's automation: reads windows and appends approvals; in no approver group.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: signed-tracker}
rules:
- {apiGroups: [changegate.io], resources: [changewindows], verbs: [get, list, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: signed-tracker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: signed-tracker}
subjects: [{kind: ServiceAccount, name: automation, namespace: tracker}]
"""


@pytest.fixture(scope="module")
def changegate(
    controlplane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_helpers.Changegate]:
    controlplane.kubectl("apply", "-f", "-", input=RBAC, check=True)
    with e2e_helpers.running_changegate(controlplane, workdir=tmp_path_factory.mktemp("sig")) as cg:
        yield cg


class Tracker:
    """The tracker's side: its keys, and its automation's kubeconfig."""

    def __init__(self, cp: cluster.ControlPlane, workdir: Path) -> None:
        self.ed_private, self.ed_public = signatures.new_key_pair("ed25519")
        self.ec_private, self.ec_public = signatures.new_key_pair("p256")
        self.ed_file = workdir / "tracker-ed25519.pem"
        self.ed_file.write_bytes(self.ed_private)
        self.ec_file = workdir / "tracker-p256.pem"
        self.ec_file.write_bytes(self.ec_private)
        self.kubeconfig = cp.identity(TRACKER[0], list(TRACKER[1])).kubeconfig

    def cli(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(
            [*args, "--kubeconfig", str(self.kubeconfig)], out=out, err=err, stdin=io.StringIO("")
        )
        return code, out.getvalue(), err.getvalue()


class World:
    def __init__(self, cp: cluster.ControlPlane, tracker: Tracker) -> None:
        self.cp = cp
        self.tracker = tracker
        self.id = uuid.uuid4().hex[:6]
        self.ns = f"sig-{self.id}"
        self.policy = f"sig-{self.id}-prod"
        self.identity = f"sig-{self.id}-oncall"

    def kubectl(
        self, *args: str, who: tuple[str, tuple[str, ...]] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if who is None:
            return self.cp.kubectl(*args, input=input)
        return self.cp.kubectl(*args, as_user=who[0], as_groups=who[1], input=input)

    def setup(self) -> World:
        assert self.kubectl("create", "namespace", self.ns).returncode == 0
        docs = [
            {
                "apiVersion": "changegate.io/v1alpha1",
                "kind": "AuthorizedIdentity",
                "metadata": {"name": self.identity},
                "spec": {"subjects": [{"kind": "User", "name": ALICE[0]}]},
            },
            {
                "apiVersion": "changegate.io/v1alpha1",
                "kind": "ChangePolicy",
                "metadata": {"name": self.policy},
                "spec": {
                    "match": {"resources": [CONFIGMAPS], "namespaces": [self.ns]},
                    "approval": {
                        "required": 1,
                        "approverGroups": ["change-approvers"],
                        "trustedIssuers": [
                            {
                                "name": "servicenow",
                                "keys": [
                                    {"keyId": "sn-2026", "publicKey": self.tracker.ed_public},
                                    {"keyId": "sn-2027", "publicKey": self.tracker.ec_public},
                                ],
                            }
                        ],
                    },
                    "ticketPattern": "^CHG-[0-9]+$",
                },
            },
        ]
        for doc in docs:
            out = self.kubectl("apply", "-f", "-", input=json.dumps(doc))
            assert out.returncode == 0, out.stderr

        def gated() -> None:
            out = self.configmap("probe", who=None, dry_run=True)
            assert "changegate" in out.stderr, out.stderr

        e2e_helpers.eventually(gated)
        return self

    def configmap(
        self, name: str, *, who: tuple[str, tuple[str, ...]] | None, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["create", "configmap", name, "-n", self.ns, "--from-literal=k=v"]
        if dry_run:
            args.append("--dry-run=server")
        return self.kubectl(*args, who=who)

    def request(self, name: str, ticket: str = "CHG-1234") -> None:
        now = datetime.datetime.now(datetime.UTC)
        window = {
            "apiVersion": "changegate.io/v1alpha1",
            "kind": "ChangeWindow",
            "metadata": {"name": name},
            "spec": {
                "ticket": ticket,
                "requester": ALICE[0],
                "identities": [self.identity],
                "targets": [{"namespaces": [self.ns], "resources": [CONFIGMAPS]}],
                "schedule": {
                    "start": signatures.timestamp(now - datetime.timedelta(minutes=5)),
                    "end": signatures.timestamp(now + datetime.timedelta(hours=1)),
                },
            },
        }
        out = self.kubectl("create", "-f", "-", input=json.dumps(window), who=ALICE)
        assert out.returncode == 0, out.stderr

    def spec(self, name: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(
            self.kubectl("get", "changewindow", name, "-o", "json").stdout
        )
        return body["spec"]

    def append(self, name: str, entry: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """What a tracker's own automation would do with an entry it built."""
        approvals_ = self.spec(name).get("approvals")
        path = "/spec/approvals/-" if approvals_ else "/spec/approvals"
        value = entry if approvals_ else [entry]
        patch = json.dumps([{"op": "add", "path": path, "value": value}])
        return self.kubectl("patch", "changewindow", name, "--type=json", "-p", patch, who=TRACKER)


@pytest.fixture
def world(
    controlplane: cluster.ControlPlane, changegate: e2e_helpers.Changegate, tmp_path: Path
) -> World:
    return World(controlplane, Tracker(controlplane, tmp_path)).setup()


def test_a_plan_approved_in_the_tracker_becomes_an_approved_window(world: World) -> None:
    name = f"sig-{world.id}-chg"
    world.request(name)
    denied = world.configmap("before", who=ALICE)
    assert "changegate denied" in denied.stderr, denied.stderr

    code, out, err = world.tracker.cli(
        "sign-approval",
        name,
        "--key",
        str(world.tracker.ed_file),
        "--key-id",
        "sn-2026",
        "--issuer",
        "servicenow",
        "--approver",
        "bob@example.com",
        "--policy",
        world.policy,
        "--append",
    )
    assert code == 0, err
    entry = json.loads(out)
    assert entry["signature"]["window"] == name and entry["approver"] == "bob@example.com"
    stored = world.spec(name)["approvals"]
    assert stored == [entry]

    def admitted() -> None:
        out = world.configmap("after", who=ALICE)
        assert out.returncode == 0, out.stderr

    e2e_helpers.eventually(admitted)


def test_the_python_function_signs_with_either_key_and_rotation_keeps_old_approvals(
    world: World,
) -> None:
    name = f"sig-{world.id}-py"
    world.request(name)
    spec_hash = approvals.spec_hash(world.spec(name))
    entry = signatures.sign_approval(
        private_key_pem=world.tracker.ec_private,
        issuer="servicenow",
        key_id="sn-2027",
        window=name,
        spec_hash=spec_hash,
        ticket="CHG-1234",
        approver="bob@example.com",
        policies=[world.policy],
    )
    out = world.append(name, entry)
    assert out.returncode == 0, out.stderr
    e2e_helpers.eventually(lambda: _ok(world.configmap("py", who=ALICE)))


def _ok(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stderr


def test_every_wrong_signed_approval_is_refused_naming_the_check(world: World) -> None:
    name = f"sig-{world.id}-bad"
    world.request(name)
    spec_hash = approvals.spec_hash(world.spec(name))

    def entry(**kw: Any) -> dict[str, Any]:
        args: dict[str, Any] = {
            "private_key_pem": world.tracker.ed_private,
            "issuer": "servicenow",
            "key_id": "sn-2026",
            "window": name,
            "spec_hash": spec_hash,
            "ticket": "CHG-1234",
            "approver": "bob@example.com",
            "policies": [world.policy],
        }
        args.update(kw)
        return signatures.sign_approval(**args)

    tampered = entry()
    tampered["approver"] = "mallory@example.com"
    stolen_key, _ = signatures.new_key_pair("ed25519")
    other_hash = entry(spec_hash="sha256:" + "1" * 64)
    other_hash["specHash"] = spec_hash
    cases = {
        "bad signature": (
            {
                **entry(),
                "signature": {
                    **entry()["signature"],
                    "value": entry(private_key_pem=stolen_key)["signature"]["value"],
                },
            },
            "does not verify with key sn-2026 of issuer servicenow",
        ),
        "tampered approver": (tampered, "does not verify"),
        "unknown key id": (entry(key_id="sn-2019"), "has no key 'sn-2019'"),
        "untrusted issuer": (entry(issuer="jira"), "does not trust approval issuer 'jira'"),
        "over another hash": (other_hash, "made over another specHash"),
        "replayed for another window": (
            entry(window="some-other-window"),
            "cannot be replayed for another window",
        ),
        "requester approving": (
            entry(approver=ALICE[0]),
            "the requester cannot approve their own window",
        ),
    }
    seen: dict[str, str] = {}
    for what, (bad, says) in cases.items():
        out = world.append(name, bad)
        assert out.returncode != 0, what
        assert says in out.stderr, (what, out.stderr)
        seen[what] = out.stderr.strip().splitlines()[-1]
    assert world.spec(name).get("approvals") is None
    # The messages users see, for the record (pytest -s prints them).
    for what, message in seen.items():
        print(f"{what}: {message}")
