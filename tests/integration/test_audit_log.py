"""The API server's audit log is the durable record: read it, as an auditor would.

The local control plane writes an audit log with the recommended policy
(docs/audit-policy.yaml). A real changegate answers a real kube-apiserver while users act
by impersonation, then these tests read the log the API server wrote: first the raw events
(parsed here with plain ``json``, independently of the report's reader), to pin what
changegate's annotations look like there; then ``kubectl changegate report --audit-log``
over the same files, run as the auditor's command.

One story is played once for the module (``story``), and each test checks one thing it left
in the log. The gap test stops changegate and deletes its webhook configuration, so it runs
last and restarts changegate before it ends.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import e2e_helpers
import pytest
from test_e2e_admission import (
    ALICE,
    BOB,
    CAROL,
    NOW,
    OPS,
    RBAC,
    World,
    admitted,
    denied,
)

from controller.devcluster import cluster

pytestmark = pytest.mark.integration

P = "controlled.changegate.io/"


# -- reading the real log --------------------------------------------------------------------


def raw_events(cp: cluster.ControlPlane) -> Iterator[dict[str, Any]]:
    """Every complete event in the live audit log and its rotated (gzip) predecessors."""
    for path in cp.audit_log_files():
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        for line in data.splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue  # the live file's last line may be half written


def find(cp: cluster.ControlPlane, *, ns: str, name: str, verb: str = "create") -> dict[str, Any]:
    """The ResponseComplete event of the request on ``ns/name`` (waits for it to be written)."""

    def written() -> dict[str, Any]:
        found = [
            e
            for e in raw_events(cp)
            if e["stage"] == "ResponseComplete"
            and e["verb"] == verb
            and (e.get("objectRef") or {}).get("namespace") == ns
            and (e.get("objectRef") or {}).get("name") == name
        ]
        assert len(found) == 1, f"{len(found)} events for {verb} {ns}/{name}"
        return found[0]

    return e2e_helpers.eventually(written)  # the audit event for verb ns/name


def changegate(event: dict[str, Any]) -> dict[str, str]:
    """changegate's annotations on an event, without the webhook-name prefix."""
    return {k[len(P) :]: v for k, v in (event.get("annotations") or {}).items() if k.startswith(P)}


def report(cp: cluster.ControlPlane, *args: str) -> dict[str, Any]:
    """``kubectl changegate report --audit-log <the log's files> -o json``, as a command."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli.main",
            "report",
            "--audit-log",
            *map(str, cp.audit_log_files()),
            "--changegate-namespace",
            e2e_helpers.NAMESPACE,
            "-o",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def in_namespace(rows: list[dict[str, Any]], ns: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows if r["namespace"] == ns}


# -- the story -------------------------------------------------------------------------------


@dataclasses.dataclass
class Story:
    enforce: World  # Enforce mode: a window, a denial, a dry-run, an emergency
    warn: World  # Warn mode: admitted denials, one outside work hours
    since: str


@pytest.fixture(scope="module")
def running(
    controlplane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_helpers.Changegate]:
    for obj in RBAC:
        out = controlplane.kubectl("apply", "-f", "-", input=json.dumps(obj))
        assert out.returncode == 0, out.stderr
    with e2e_helpers.running_changegate(
        controlplane, workdir=tmp_path_factory.mktemp("changegate")
    ) as cg:
        yield cg


@pytest.fixture(scope="module")
def story(controlplane: cluster.ControlPlane, running: e2e_helpers.Changegate) -> Story:
    since = datetime.datetime.now(datetime.UTC).isoformat()
    suffix = uuid.uuid4().hex[:6]

    enforce = World(controlplane, f"audit-{suffix}").setup()
    enforce.approved_window(f"{enforce.ns}-w")
    e2e_helpers.eventually(lambda: admitted(enforce.configmap("inside", who=ALICE)))
    denied(enforce.configmap("carols", who=CAROL))
    admitted(enforce.configmap("dry", who=ALICE, dry_run=True))
    now = datetime.datetime.now(datetime.UTC)
    incident = enforce.make_window(
        f"{enforce.ns}-inc",
        span=(now, now + datetime.timedelta(hours=1)),
        requester=OPS[0],
        emergency="INC-9 checkout down",
    )
    admitted(enforce.create(incident, who=OPS))
    e2e_helpers.eventually(lambda: admitted(enforce.configmap("fix", who=OPS)))

    # Work hours two to three hours from now, every day: now is outside them.
    hours = {
        "timeZone": "UTC",
        "weekly": [
            {
                "days": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
                "start": (NOW + datetime.timedelta(hours=2)).strftime("%H:00"),
                "end": (NOW + datetime.timedelta(hours=3)).strftime("%H:00"),
            }
        ],
    }
    warn = World(controlplane, f"audit-warn-{suffix}")
    warn.setup(
        policy=warn.make_policy(enforcement="Warn"),
        identity=warn.make_identity(work_hours=hours),
    )
    warn.approved_window(f"{warn.ns}-w")

    def late() -> None:
        out = admitted(warn.configmap("late", who=ALICE))
        assert "work hours" in out.stderr, out.stderr

    e2e_helpers.eventually(late)
    admitted(warn.configmap("warned", who=CAROL))
    return Story(enforce=enforce, warn=warn, since=since)


# -- what the API server recorded ------------------------------------------------------------


def test_admitted_change_records_window_ticket_approvers_identity_policy_decision(
    controlplane: cluster.ControlPlane, story: Story
) -> None:
    w = story.enforce
    event = find(controlplane, ns=w.ns, name="inside")
    assert event["responseStatus"]["code"] == 201
    assert event["impersonatedUser"]["username"] == ALICE[0]
    assert changegate(event) == {
        "decision": "allow",
        "reason": "Window",
        "mode": "Enforce",
        "policy": w.policy,
        "window": f"{w.ns}-w",
        "ticket": "CHG-42",
        "approvers": BOB[0],
        "identity": w.identity,
    }


def test_every_admitted_controlled_change_says_why(
    controlplane: cluster.ControlPlane, story: Story
) -> None:
    namespaces = {story.enforce.ns, story.warn.ns}
    admitted_changes = [
        e
        for e in raw_events(controlplane)
        if e["stage"] == "ResponseComplete"
        and (e.get("objectRef") or {}).get("namespace") in namespaces
        and e["objectRef"].get("resource") == "configmaps"
        and e["responseStatus"]["code"] < 400
    ]
    assert len(admitted_changes) >= 6  # inside, dry, fix, late, warned, and the setup probes
    for event in admitted_changes:
        marks = changegate(event)
        assert {"decision", "reason", "mode", "policy"} <= set(marks), event
        if marks["reason"] in ("Window", "OutsideWorkHours"):
            assert {"window", "ticket", "identity"} <= set(marks), event
        if marks["reason"] == "Window":
            assert marks["approvers"] == BOB[0], event


def test_denial_records_the_reason(controlplane: cluster.ControlPlane, story: Story) -> None:
    w = story.enforce
    event = find(controlplane, ns=w.ns, name="carols")
    assert event["responseStatus"]["code"] == 403
    assert changegate(event) == {
        "decision": "deny",
        "reason": "NotDesignated",
        "mode": "Enforce",
        "policy": w.policy,
        "window": f"{w.ns}-w",  # the window that got furthest
        "ticket": "CHG-42",
    }
    assert "not designated" in event["responseStatus"]["message"]


def test_emergency_change_is_marked(controlplane: cluster.ControlPlane, story: Story) -> None:
    w = story.enforce
    marks = changegate(find(controlplane, ns=w.ns, name="fix"))
    assert (marks["reason"], marks["emergency"], marks["window"]) == (
        "Emergency",
        "true",
        f"{w.ns}-inc",
    )
    assert "emergency" not in changegate(find(controlplane, ns=w.ns, name="inside"))


def test_dry_run_is_distinguishable(controlplane: cluster.ControlPlane, story: Story) -> None:
    w = story.enforce
    dry = find(controlplane, ns=w.ns, name="dry")
    assert changegate(dry)["dryRun"] == "true"
    assert "dryRun=All" in dry["requestURI"]
    real = find(controlplane, ns=w.ns, name="inside")
    assert "dryRun" not in changegate(real)
    assert "dryRun" not in real["requestURI"]


def test_warn_mode_admission_records_the_denial_and_its_mode(
    controlplane: cluster.ControlPlane, story: Story
) -> None:
    w = story.warn
    late = find(controlplane, ns=w.ns, name="late")
    assert late["responseStatus"]["code"] == 201
    marks = changegate(late)
    assert (marks["decision"], marks["mode"], marks["reason"]) == (
        "deny",
        "Warn",
        "OutsideWorkHours",
    )


def test_window_writes_keep_their_bodies(controlplane: cluster.ControlPlane, story: Story) -> None:
    w = story.enforce
    created = [
        e
        for e in raw_events(controlplane)
        if e["stage"] == "ResponseComplete"
        and e["verb"] == "create"
        and (e.get("objectRef") or {}).get("resource") == "changewindows"
        and e["objectRef"].get("name") == f"{w.ns}-w"
    ]
    (event,) = created
    assert event["level"] == "RequestResponse"
    assert event["responseObject"]["spec"]["requester"] == ALICE[0]


# -- what the report makes of it ----------------------------------------------------------


def test_report_lists_each_controlled_change_and_the_exceptions(
    controlplane: cluster.ControlPlane, story: Story
) -> None:
    doc = report(controlplane, "--since", story.since)
    e, w = story.enforce, story.warn
    rows = in_namespace(doc["changes"], e.ns)
    assert {"inside", "carols", "fix"} <= set(rows)
    assert "dry" not in rows  # a dry-run is not a change
    inside = rows["inside"]
    assert (inside["user"], inside["decision"], inside["window"], inside["ticket"]) == (
        ALICE[0],
        "allow",
        f"{e.ns}-w",
        "CHG-42",
    )
    assert (inside["approvers"], inside["admitted"], inside["exception"]) == ([BOB[0]], True, None)
    assert (rows["carols"]["reason"], rows["carols"]["admitted"]) == ("NotDesignated", False)

    exceptions = doc["exceptions"]
    assert set(in_namespace(exceptions["unreviewedEmergency"], e.ns)) == {"fix"}
    assert set(in_namespace(exceptions["outsideWorkHours"], w.ns)) == {"late"}
    assert set(in_namespace(exceptions["withoutWindow"], w.ns)) == {"warned"}
    assert in_namespace(exceptions["withoutWindow"], e.ns) == {}


def test_reviewing_the_emergency_window_clears_the_exception(
    controlplane: cluster.ControlPlane, story: Story
) -> None:
    e = story.enforce
    admitted(e.approve(f"{e.ns}-inc"))
    doc = report(controlplane, "--since", story.since)
    assert in_namespace(doc["exceptions"]["unreviewedEmergency"], e.ns) == {}
    (inc,) = [x for x in doc["windows"] if x["name"] == f"{e.ns}-inc"]
    assert inc["emergency"]["reason"] == "INC-9 checkout down"
    assert [h["action"] for h in inc["history"]] == ["created", "approved"]


def test_deleted_window_keeps_its_full_record(
    controlplane: cluster.ControlPlane, story: Story
) -> None:
    e = story.enforce
    name = f"{e.ns}-gone"
    e.approved_window(name)
    # The requester edits the plan: bob's approval is stale; bob approves the new spec.
    body = e.window(name)
    patch = json.dumps({"spec": {"description": "e2e edited"}})
    admitted(e.kubectl("patch", "changewindow", name, "--type=merge", "-p", patch, who=ALICE))
    e2e_helpers.eventually(lambda: _hash_changed(e, name, body))
    admitted(e.approve(name))
    admitted(e.kubectl("delete", "changewindow", name))
    assert "NotFound" in e.kubectl("get", "changewindow", name).stderr

    doc = report(controlplane, "--since", story.since)
    (record,) = [x for x in doc["windows"] if x["name"] == name]
    assert (record["requester"], record["ticket"], record["description"]) == (
        ALICE[0],
        "CHG-42",
        "e2e edited",
    )
    assert record["deleted"] is not None
    history = [(h["user"], h["action"]) for h in record["history"]]
    assert history == [
        (ALICE[0], "created"),
        (BOB[0], "approved"),
        (ALICE[0], "edited"),
        (ALICE[0], "approvals-stale"),
        (BOB[0], "approved"),
        (cluster.ADMIN_USER, "deleted"),
    ]
    approvals = [h["approval"] for h in record["history"] if h["action"] == "approved"]
    assert [a["policies"] for a in approvals] == [[e.policy], [e.policy]]
    assert approvals[0]["specHash"] != approvals[1]["specHash"]


def _hash_changed(w: World, name: str, before: dict[str, Any]) -> None:
    status = w.window(name).get("status") or {}
    assert status.get("specHash") not in (None, before["status"]["specHash"])


def test_change_made_while_the_webhook_configuration_was_gone_is_a_gap(
    controlplane: cluster.ControlPlane, story: Story, running: e2e_helpers.Changegate
) -> None:
    e = story.enforce
    running.stop()
    try:
        controlplane.kubectl(
            "delete", "validatingwebhookconfiguration", "changegate", "--ignore-not-found"
        )
        # Nothing calls changegate now: RBAC alone decides.
        admitted(e.configmap("unguarded", who=CAROL))
    finally:
        running.start()

    doc = report(controlplane, "--since", story.since)
    gaps = in_namespace(doc["exceptions"]["withoutWindow"], e.ns)
    assert set(gaps) == {"unguarded"}
    assert (
        gaps["unguarded"]["user"],
        gaps["unguarded"]["decision"],
        gaps["unguarded"]["reason"],
    ) == (
        CAROL[0],
        None,
        "NoDecision",
    )
    deletions = [
        c
        for c in doc["changeControl"]
        if c["resource"] == "validatingwebhookconfigurations" and c["verb"] == "delete"
    ]
    assert deletions, doc["changeControl"]
    # And changegate is back: the same change is denied again.
    e2e_helpers.eventually(lambda: denied(e.configmap("after", who=CAROL)))
