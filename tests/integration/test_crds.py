"""The CRDs as the real API server enforces them.

What can be checked without knowing who asks (shapes, enums, patterns, the two schedule
forms, immutable requester, append-only approvals) is rejected by the API server itself, so a
bad object never reaches the controller, even while the webhook is down — and the error names
the field, as ``kubectl`` prints it. Everything here goes through the pinned kubectl as the
admin; no webhook is involved.

Objects are cluster-scoped and the control plane is shared by the session, so every object
gets a unique name, policies match only a namespace nobody uses, and what is created is
deleted again.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.devcluster import cluster

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD_NAMES = (
    "changepolicies.changegate.io",
    "authorizedidentities.changegate.io",
    "changewindows.changegate.io",
)
API_VERSION = "changegate.io/v1alpha1"
HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64
UNUSED_NAMESPACE = "changegate-crd-test-nobody-uses-this"


@pytest.fixture(scope="module")
def cp(controlplane: cluster.ControlPlane) -> cluster.ControlPlane:
    """The shared control plane with changegate's CRDs applied and Established."""
    applied = controlplane.kubectl("apply", "-f", str(CRD_DIR))
    assert applied.returncode == 0, applied.stderr
    waited = controlplane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in CRD_NAMES)
    )
    assert waited.returncode == 0, waited.stderr
    return controlplane


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(cp: cluster.ControlPlane, obj: dict[str, Any], *flags: str) -> tuple[int, str, str]:
    """``kubectl create -f -``; returns (exit code, stdout, stderr)."""
    r = cp.kubectl("create", "-f", "-", *flags, input=json.dumps(obj))
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def created(cp: cluster.ControlPlane) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Create objects for real, and delete them after the test."""
    made: list[tuple[str, str]] = []

    def _create(obj: dict[str, Any]) -> None:
        code, _, err = create(cp, obj)
        assert code == 0, err
        made.append((obj["kind"].lower(), obj["metadata"]["name"]))

    yield _create
    for kind, name in made:
        cp.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false")


# -- valid objects ---------------------------------------------------------------------------------


def window(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ticket": "CHG-1234",
        "description": "Roll out payments v2.3",
        "requester": "alice@example.com",
        "identities": ["payments-oncall"],
        "targets": [
            {
                "namespaces": [UNUSED_NAMESPACE],
                "resources": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
                ],
            }
        ],
        "schedule": {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
    }
    base.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "ChangeWindow",
        "metadata": {"name": name},
        "spec": base,
    }


def policy(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "match": {
            "resources": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
            ],
            "namespaces": [UNUSED_NAMESPACE],
        }
    }
    base.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "ChangePolicy",
        "metadata": {"name": name},
        "spec": base,
    }


def identity(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "subjects": [{"kind": "User", "name": "alice@example.com"}],
        "workHours": {
            "timeZone": "Asia/Seoul",
            "weekly": [{"days": ["Mon", "Tue"], "start": "09:00", "end": "18:00"}],
        },
    }
    base.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "AuthorizedIdentity",
        "metadata": {"name": name},
        "spec": base,
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_accepted_by_the_api_server(cp: cluster.ControlPlane, path: Path) -> None:
    r = cp.kubectl("apply", "--dry-run=server", "-f", str(path), "-o", "json")
    assert r.returncode == 0, r.stderr
    stored = json.loads(r.stdout)
    # Nothing the user wrote is pruned: the server keeps every field of the example.
    assert _paths(stored["spec"]) >= _paths(yaml.safe_load(path.read_text())["spec"])


def _paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        return {p for k, v in node.items() for p in _paths(v, f"{prefix}.{k}")} | {prefix}
    if isinstance(node, list):
        return {p for i, v in enumerate(node) for p in _paths(v, f"{prefix}[{i}]")} | {prefix}
    return {prefix}


@pytest.mark.parametrize(
    ("obj", "field", "default"),
    [
        (policy("p"), "enforcement", "Enforce"),
        (policy("p"), "approval", {"required": 1}),
        (
            policy("p", approval={"approverGroups": ["change-approvers"]}),
            "approval",
            {"required": 1, "approverGroups": ["change-approvers"]},
        ),
        (
            policy("p", breakGlass={"groups": ["sre-oncall"]}),
            "breakGlass",
            {"groups": ["sre-oncall"], "maxDuration": "4h"},
        ),
        (identity("i"), "suspended", False),
    ],
)
def test_api_server_fills_in_the_documented_defaults(
    cp: cluster.ControlPlane, obj: dict[str, Any], field: str, default: Any
) -> None:
    obj = copy.deepcopy(obj)
    obj["metadata"]["name"] = unique(obj["metadata"]["name"])
    code, out, err = create(cp, obj, "--dry-run=server", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["spec"][field] == default


def test_window_spec_is_stored_as_written_so_its_hash_is_stable(cp: cluster.ControlPlane) -> None:
    obj = window(unique("as-written"))
    del obj["spec"]["description"]
    code, out, err = create(cp, obj, "--dry-run=server", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["spec"] == obj["spec"]


# -- invalid objects are rejected, naming the field -----------------------------------------------

ONE_OFF = {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"}
RECURRING = {"cron": "0 22 * * 2,4", "duration": "2h", "timeZone": "Asia/Seoul"}
SA_WITHOUT_NAMESPACE = [{"kind": "ServiceAccount", "name": "argocd-application-controller"}]
TARGET_WITHOUT_NAMESPACES = [
    {"resources": [{"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}]}
]


def _without_schedule(name: str) -> dict[str, Any]:
    obj = window(name)
    del obj["spec"]["schedule"]
    return obj


def _hours(**weekly: Any) -> dict[str, Any]:
    return {
        "timeZone": "Asia/Seoul",
        "weekly": [{"days": ["Mon"], "start": "09:00", "end": "18:00", **weekly}],
    }


REJECTED: list[tuple[str, Callable[[str], dict[str, Any]], str, str]] = [
    # (rule, object builder, field path kubectl prints, what it says)
    (
        "schedule_has_both_forms",
        lambda n: window(n, schedule={**ONE_OFF, **RECURRING}),
        "spec.schedule",
        "use either start/end or cron/duration/timeZone, not both",
    ),
    ("schedule_is_missing", _without_schedule, "spec.schedule", "Required value"),
    (
        "schedule_is_empty",
        lambda n: window(n, schedule={}),
        "spec.schedule",
        "give start and end, or cron, duration and timeZone",
    ),
    (
        "one_off_end_before_start",
        lambda n: window(
            n, schedule={"start": "2026-12-02T00:00:00+09:00", "end": "2026-12-01T22:00:00+09:00"}
        ),
        "spec.schedule.end",
        "end must be after start",
    ),
    (
        "one_off_end_equal_to_start_in_another_offset",
        lambda n: window(
            n, schedule={"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-01T13:00:00Z"}
        ),
        "spec.schedule.end",
        "end must be after start",
    ),
    (
        "one_off_without_end",
        lambda n: window(n, schedule={"start": "2026-12-01T22:00:00+09:00"}),
        "spec.schedule",
        "a one-off schedule needs both start and end",
    ),
    (
        "recurring_without_time_zone",
        lambda n: window(n, schedule={"cron": "0 22 * * 2", "duration": "2h"}),
        "spec.schedule",
        "a recurring schedule needs cron, duration and timeZone",
    ),
    (
        "recurring_cron_with_four_fields",
        lambda n: window(n, schedule={**RECURRING, "cron": "0 22 * *"}),
        "spec.schedule.cron",
        "should match",
    ),
    (
        "recurring_duration_in_words",
        lambda n: window(n, schedule={**RECURRING, "duration": "2 hours"}),
        "spec.schedule.duration",
        "should match",
    ),
    (
        "start_is_not_a_timestamp",
        lambda n: window(n, schedule={**ONE_OFF, "start": "tomorrow 22:00"}),
        "spec.schedule.start",
        "date-time",
    ),
    (
        "ticket_is_empty",
        lambda n: window(n, ticket=""),
        "spec.ticket",
        "should be at least 1 chars long",
    ),
    (
        "target_without_namespaces",
        lambda n: window(n, targets=TARGET_WITHOUT_NAMESPACES),
        "spec.targets[0].namespaces",
        "a target needs namespaces and/or namespaceSelector",
    ),
    (
        "approval_hash_is_not_sha256",
        lambda n: window(n, approvals=[{"approver": "bob@example.com", "specHash": "md5:abc"}]),
        "spec.approvals[0].specHash",
        "should match",
    ),
    (
        "emergency_without_reason",
        lambda n: window(n, emergency={"reason": ""}),
        "spec.emergency.reason",
        "should be at least 1 chars long",
    ),
    (
        "weekday_is_spelled_out",
        lambda n: identity(n, workHours=_hours(days=["Monday"])),
        "spec.workHours.weekly[0].days[0]",
        'Unsupported value: "Monday"',
    ),
    (
        "clock_time_without_leading_zero",
        lambda n: identity(n, workHours=_hours(start="9:00")),
        "spec.workHours.weekly[0].start",
        "should match",
    ),
    (
        "clock_time_24_00",
        lambda n: identity(n, workHours=_hours(end="24:00")),
        "spec.workHours.weekly[0].end",
        "should match",
    ),
    (
        "service_account_subject_without_namespace",
        lambda n: identity(n, subjects=SA_WITHOUT_NAMESPACE),
        "spec.subjects[0].namespace",
        "namespace is required for kind ServiceAccount",
    ),
    (
        "user_subject_with_namespace",
        lambda n: identity(
            n, subjects=[{"kind": "User", "name": "alice", "namespace": "payments"}]
        ),
        "spec.subjects[0].namespace",
        "namespace is only allowed for kind ServiceAccount",
    ),
    (
        "exempt_service_account_without_namespace",
        lambda n: policy(n, exemptSubjects=SA_WITHOUT_NAMESPACE),
        "spec.exemptSubjects[0].namespace",
        "namespace is required for kind ServiceAccount",
    ),
    (
        "enforcement_is_not_enforce_warn_or_audit",
        lambda n: policy(n, enforcement="Block"),
        "spec.enforcement",
        'Unsupported value: "Block"',
    ),
    (
        "operation_is_not_an_admission_operation",
        lambda n: policy(
            n,
            match={
                "resources": [{"apiGroups": [""], "resources": ["pods"], "operations": ["PATCH"]}]
            },
        ),
        "spec.match.resources[0].operations[0]",
        'Unsupported value: "PATCH"',
    ),
    (
        "approvals_required_above_ten",
        lambda n: policy(n, approval={"required": 11}),
        "spec.approval.required",
        "should be less than or equal to 10",
    ),
    (
        "blackout_with_schedule_and_holidays",
        lambda n: policy(
            n,
            blackouts=[
                {
                    "name": "freeze",
                    "schedule": ONE_OFF,
                    "holidays": {"country": "KR", "timeZone": "Asia/Seoul"},
                }
            ],
        ),
        "spec.blackouts[0]",
        "a blackout needs exactly one of schedule or holidays",
    ),
    (
        "blackout_with_neither",
        lambda n: policy(n, blackouts=[{"name": "freeze"}]),
        "spec.blackouts[0]",
        "a blackout needs exactly one of schedule or holidays",
    ),
    (
        "holiday_country_in_lower_case",
        lambda n: policy(
            n, blackouts=[{"name": "kr", "holidays": {"country": "kr", "timeZone": "Asia/Seoul"}}]
        ),
        "spec.blackouts[0].holidays.country",
        "should match",
    ),
    (
        "blackout_schedule_end_before_start",
        lambda n: policy(
            n,
            blackouts=[
                {"name": "freeze", "schedule": {"start": ONE_OFF["end"], "end": ONE_OFF["start"]}}
            ],
        ),
        "spec.blackouts[0].schedule.end",
        "end must be after start",
    ),
]


@pytest.mark.parametrize(("rule", "build", "field", "says"), REJECTED, ids=[r[0] for r in REJECTED])
def test_invalid_object_is_rejected_naming_the_field(
    cp: cluster.ControlPlane,
    rule: str,
    build: Callable[[str], dict[str, Any]],
    field: str,
    says: str,
) -> None:
    code, _, err = create(cp, build(unique(rule.replace("_", "-"))), "--dry-run=server")
    assert code != 0
    assert "is invalid" in err
    assert f"{field}: " in err, err
    assert says in err, err


# -- updates: immutable requester, append-only approvals -------------------------------------------

BOB_A = {"approver": "bob@example.com", "specHash": HASH_A, "approvedAt": "2026-11-29T07:00:00Z"}
DAN_A = {"approver": "dan@example.com", "specHash": HASH_A}


def patch(cp: cluster.ControlPlane, name: str, ops: list[dict[str, Any]]) -> tuple[int, str]:
    r = cp.kubectl("patch", "changewindow", name, "--type=json", "-p", json.dumps(ops))
    return r.returncode, r.stderr


def approvals_of(cp: cluster.ControlPlane, name: str) -> list[dict[str, Any]]:
    r = cp.kubectl("get", "changewindow", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout)["spec"].get("approvals", []))


def test_requester_cannot_be_changed(
    cp: cluster.ControlPlane, created: Callable[[dict[str, Any]], None]
) -> None:
    name = unique("requester")
    created(window(name))
    code, err = patch(
        cp, name, [{"op": "replace", "path": "/spec/requester", "value": "mallory@example.com"}]
    )
    assert code != 0
    assert "spec.requester: " in err and "immutable" in err, err
    # Other fields stay editable (the approvals go stale, which is the controller's business).
    code, err = patch(cp, name, [{"op": "replace", "path": "/spec/description", "value": "v2.4"}])
    assert code == 0, err


APPROVAL_UPDATES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]] = [
    # (what the update does, JSON patch on approvals [BOB_A, DAN_A], approvals after | None = rejected)
    (
        "append_an_approval",
        [
            {
                "op": "add",
                "path": "/spec/approvals/-",
                "value": {"approver": "eve@example.com", "specHash": HASH_A},
            }
        ],
        [BOB_A, DAN_A, {"approver": "eve@example.com", "specHash": HASH_A}],
    ),
    (
        "approve_the_new_hash_keeping_the_stale_approval",
        [
            {
                "op": "add",
                "path": "/spec/approvals/-",
                "value": {"approver": "bob@example.com", "specHash": HASH_B},
            }
        ],
        [BOB_A, DAN_A, {"approver": "bob@example.com", "specHash": HASH_B}],
    ),
    ("remove_an_approval", [{"op": "remove", "path": "/spec/approvals/0"}], [DAN_A]),
    ("remove_all_approvals", [{"op": "remove", "path": "/spec/approvals"}], []),
    (
        "alter_approved_at",
        [
            {
                "op": "replace",
                "path": "/spec/approvals/0/approvedAt",
                "value": "2026-11-30T07:00:00Z",
            }
        ],
        None,
    ),
    (
        "alter_spec_hash",
        [{"op": "replace", "path": "/spec/approvals/0/specHash", "value": HASH_B}],
        None,
    ),
    (
        "alter_the_last_spec_hash",
        [{"op": "replace", "path": "/spec/approvals/1/specHash", "value": HASH_B}],
        None,
    ),
    (
        "alter_approver_in_place",
        [{"op": "replace", "path": "/spec/approvals/0/approver", "value": "eve@example.com"}],
        None,
    ),
    (
        "insert_before_existing_approvals",
        [
            {
                "op": "add",
                "path": "/spec/approvals/0",
                "value": {"approver": "eve@example.com", "specHash": HASH_A},
            }
        ],
        None,
    ),
    (
        "append_a_duplicate",
        [{"op": "add", "path": "/spec/approvals/-", "value": DAN_A}],
        None,
    ),
]


@pytest.mark.parametrize(
    ("change", "ops", "after"), APPROVAL_UPDATES, ids=[u[0] for u in APPROVAL_UPDATES]
)
def test_existing_approvals_may_be_removed_or_appended_to_but_not_altered(
    cp: cluster.ControlPlane,
    created: Callable[[dict[str, Any]], None],
    change: str,
    ops: list[dict[str, Any]],
    after: list[dict[str, Any]] | None,
) -> None:
    name = unique(change.replace("_", "-"))
    created(window(name, approvals=[BOB_A, DAN_A]))
    code, err = patch(cp, name, ops)
    if after is None:
        assert code != 0
        assert "spec.approvals" in err, err
        assert approvals_of(cp, name) == [BOB_A, DAN_A]
    else:
        assert code == 0, err
        assert approvals_of(cp, name) == after


# -- what kubectl shows ----------------------------------------------------------------------------


def test_kubectl_get_changewindows_shows_phase_ticket_approvals_and_next_open_close(
    cp: cluster.ControlPlane, created: Callable[[dict[str, Any]], None]
) -> None:
    name = unique("columns")
    created(window(name, ticket="CHG-4242"))
    status = {
        "phase": "Scheduled",
        "approvals": "0/1",
        "approved": False,
        "nextOpen": "2026-12-01T13:00:00Z",
        "nextClose": "2026-12-01T15:00:00Z",
    }
    r = cp.kubectl(
        "patch", "changewindow", name, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cp.kubectl("get", "changewindows", name)
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "TICKET",
        "APPROVALS",
        "NEXT",
        "OPEN",
        "NEXT",
        "CLOSE",
        "AGE",
    ]
    # Future instants are shown as timestamps, not as a date column's "<invalid>".
    assert row.split()[:6] == [
        name,
        "Scheduled",
        "CHG-4242",
        "0/1",
        "2026-12-01T13:00:00Z",
        "2026-12-01T15:00:00Z",
    ]


def test_status_is_a_subresource_so_spec_writes_do_not_touch_it(
    cp: cluster.ControlPlane, created: Callable[[dict[str, Any]], None]
) -> None:
    name = unique("subresource")
    created(window(name))
    r = cp.kubectl(
        "patch", "changewindow", name, "--type=merge", "-p", '{"status": {"phase": "Active"}}'
    )
    assert r.returncode == 0, r.stderr
    got = cp.kubectl("get", "changewindow", name, "-o", "jsonpath={.status.phase}")
    assert got.stdout == ""


@pytest.mark.parametrize(
    ("short", "kind", "build"),
    [
        ("cgpol", "ChangePolicy", policy),
        ("cgid", "AuthorizedIdentity", identity),
        ("cgw", "ChangeWindow", window),
        ("cw", "ChangeWindow", window),
    ],
)
def test_short_names_and_the_changegate_category_resolve(
    cp: cluster.ControlPlane,
    created: Callable[[dict[str, Any]], None],
    short: str,
    kind: str,
    build: Callable[[str], dict[str, Any]],
) -> None:
    name = unique(short)
    created(build(name))
    r = cp.kubectl("get", short, name, "-o", "jsonpath={.kind}")
    assert (r.returncode, r.stdout) == (0, kind), r.stderr
    r = cp.kubectl("get", "changegate", "-o", "name")
    assert r.returncode == 0, r.stderr
    assert f"{kind.lower()}.changegate.io/{name}" in r.stdout.split()


def test_kubectl_explain_documents_the_fields(cp: cluster.ControlPlane) -> None:
    r = cp.kubectl("explain", "changewindow.spec.requester")
    assert r.returncode == 0, r.stderr
    assert "must equal the authenticated user who creates" in " ".join(r.stdout.split())
