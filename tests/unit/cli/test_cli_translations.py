"""kubectl's vocabulary -> changegate's: verbs, resources, window manifests, approval patches."""

from __future__ import annotations

import datetime

import pytest

from controller.cli import bodies, flags, kube, kubectl
from controller.model import crds
from controller.policy import approvals

KNOWN = kubectl.BUILTIN_RESOURCES


@pytest.mark.parametrize(
    ("verb", "subresource", "expected"),
    [
        ("create", None, ("CREATE", "")),
        ("apply", None, ("UPDATE", "")),
        ("patch", None, ("UPDATE", "")),
        ("edit", None, ("UPDATE", "")),
        ("scale", None, ("UPDATE", "scale")),
        ("delete", None, ("DELETE", "")),
        ("exec", None, ("CONNECT", "exec")),
        ("attach", None, ("CONNECT", "attach")),
        ("port-forward", None, ("CONNECT", "portforward")),
        ("UPDATE", None, ("UPDATE", "")),
        ("update", "status", ("UPDATE", "status")),
        ("scale", "", ("UPDATE", "")),
    ],
)
def test_kubectl_verbs_map_to_admission_operations(
    verb: str, subresource: str | None, expected: tuple[str, str]
) -> None:
    assert kubectl.operation_for(verb, subresource=subresource) == expected


def test_unknown_verb_is_a_usage_error_naming_the_known_ones() -> None:
    with pytest.raises(flags.UsageError, match="create"):
        kubectl.operation_for("frobnicate")


@pytest.mark.parametrize(
    ("token", "group", "plural", "sub"),
    [
        ("deployments", "apps", "deployments", ""),
        ("deployments.apps", "apps", "deployments", ""),
        ("deploy", "apps", "deployments", ""),
        ("deployment", "apps", "deployments", ""),
        ("Deployment", "apps", "deployments", ""),
        ("deployments.apps/scale", "apps", "deployments", "scale"),
        ("cm", "", "configmaps", ""),
        ("configmaps.", "", "configmaps", ""),
        ("pods/exec", "", "pods", "exec"),
        ("ing", "networking.k8s.io", "ingresses", ""),
    ],
)
def test_resources_resolve_by_plural_singular_short_name_or_kind(
    token: str, group: str, plural: str, sub: str
) -> None:
    info, got_sub = kubectl.resolve_resource(token, KNOWN)
    assert (info.group, info.resource, got_sub) == (group, plural, sub)


@pytest.mark.parametrize("token", ["widgets", "deployments.batch", "deployments/exec"])
def test_unknown_resources_are_refused_not_guessed(token: str) -> None:
    with pytest.raises(flags.UsageError):
        kubectl.resolve_resource(token, KNOWN)


def test_bare_name_prefers_the_core_group_like_kubectl() -> None:
    known = (
        kubectl.ResourceInfo(group="metrics.example", version="v1", resource="pods", kind="Pod"),
        kubectl.ResourceInfo(group="", version="v1", resource="pods", kind="Pod"),
    )
    info, _ = kubectl.resolve_resource("pods", known)
    assert info.group == ""


def test_aggregated_discovery_is_flattened_with_preferred_version_first() -> None:
    doc = {
        "kind": "APIGroupDiscoveryList",
        "items": [
            {
                "metadata": {"name": "apps"},
                "versions": [
                    {
                        "version": "v1",
                        "resources": [
                            {
                                "resource": "deployments",
                                "responseKind": {
                                    "group": "apps",
                                    "version": "v1",
                                    "kind": "Deployment",
                                },
                                "scope": "Namespaced",
                                "singularResource": "deployment",
                                "shortNames": ["deploy"],
                                "subresources": [
                                    {"subresource": "scale"},
                                    {"subresource": "status"},
                                ],
                            }
                        ],
                    },
                    {
                        "version": "v1beta1",
                        "resources": [{"resource": "deployments", "scope": "Namespaced"}],
                    },
                ],
            },
            {
                "metadata": {"name": "changegate.io"},
                "versions": [
                    {
                        "version": "v1alpha1",
                        "resources": [
                            {
                                "resource": "changewindows",
                                "responseKind": {"kind": "ChangeWindow"},
                                "scope": "Cluster",
                                "shortNames": ["cw"],
                            }
                        ],
                    }
                ],
            },
        ],
    }
    found = kubectl.resources_from_discovery([doc])
    assert [(r.group, r.version, r.resource) for r in found] == [
        ("apps", "v1", "deployments"),
        ("changegate.io", "v1alpha1", "changewindows"),
    ]
    assert found[0].subresources == ("scale", "status")
    assert found[1].namespaced is False
    assert kubectl.resolve_resource("cw", found)[0].kind == "ChangeWindow"


def test_can_i_request_is_what_the_api_server_would_send() -> None:
    info, _ = kubectl.resolve_resource("deploy", KNOWN)
    req = kubectl.build_request(
        verb="scale",
        resource=info,
        subresource=None,
        namespace="payments",
        name="web",
        user="alice@example.com",
        groups=("payments-ops", "system:authenticated"),
    )
    assert (req.operation, req.api_group, req.api_version, req.resource, req.subresource) == (
        "UPDATE",
        "apps",
        "v1",
        "deployments",
        "scale",
    )
    assert (req.kind, req.namespace, req.name, req.user) == (
        "Deployment",
        "payments",
        "web",
        "alice@example.com",
    )
    assert req.groups == ("payments-ops", "system:authenticated")
    # No object bodies: an UPDATE with equal bodies would be a bookkeeping no-op (always allowed).
    assert req.object is None and req.old_object is None


def test_exec_on_something_other_than_pods_is_refused() -> None:
    info, _ = kubectl.resolve_resource("deployments", KNOWN)
    with pytest.raises(flags.UsageError, match="pods"):
        kubectl.build_request(
            verb="exec",
            resource=info,
            subresource=None,
            namespace="a",
            name="b",
            user="u",
            groups=(),
        )


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-12-01T22:00:00+09:00", True),
        ("2026-12-01T13:00:00Z", True),
        ("2026-12-01T22:00:00", False),
        ("tomorrow", False),
    ],
)
def test_times_must_carry_an_offset(text: str, ok: bool) -> None:
    if ok:
        assert flags.parse_time(text).utcoffset() is not None
    else:
        with pytest.raises(flags.UsageError):
            flags.parse_time(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("2w", 14 * 86400), ("90m", 5400)]
)
def test_report_periods(text: str, seconds: int) -> None:
    assert flags.parse_since(text) == datetime.timedelta(seconds=seconds)


def test_resource_rules_group_resources_by_api_group() -> None:
    picked = [
        kubectl.resolve_resource(t, KNOWN) for t in ("deploy", "deployments/scale", "cm", "sts")
    ]
    assert bodies.resource_rules(picked, ["update", "DELETE"]) == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "deployments/scale", "statefulsets"],
            "operations": ["UPDATE", "DELETE"],
        },
        {"apiGroups": [""], "resources": ["configmaps"], "operations": ["UPDATE", "DELETE"]},
    ]


def test_resource_rules_refuse_unknown_operations() -> None:
    with pytest.raises(flags.UsageError):
        bodies.resource_rules([kubectl.resolve_resource("cm", KNOWN)], ["PATCH"])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
            {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
        ),
        (
            {"cron": "0 22 * * 2,4", "duration": "2h", "time_zone": "Asia/Seoul"},
            {"cron": "0 22 * * 2,4", "duration": "2h", "timeZone": "Asia/Seoul"},
        ),
    ],
)
def test_schedule_flags_give_exactly_one_form(
    flags: dict[str, str], expected: dict[str, str]
) -> None:
    args = {"start": None, "end": None, "cron": None, "duration": None, "time_zone": None, **flags}
    assert bodies.schedule_from_flags(**args) == expected


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"start": "2026-12-01T22:00:00Z"},
        {"start": "2026-12-01T22:00:00Z", "end": "2026-12-01T21:00:00Z"},
        {"start": "2026-12-01T22:00:00Z", "end": "2026-12-01T23:00:00Z", "cron": "0 1 * * *"},
        {"cron": "0 1 * * *", "duration": "1h"},
    ],
)
def test_bad_schedule_flags_are_usage_errors(given: dict[str, str]) -> None:
    args = {"start": None, "end": None, "cron": None, "duration": None, "time_zone": None, **given}
    with pytest.raises(flags.UsageError):
        bodies.schedule_from_flags(**args)


def test_requested_window_is_a_valid_change_window_with_the_requester_filled_in() -> None:
    rules = bodies.resource_rules([kubectl.resolve_resource("deploy", KNOWN)], ["UPDATE"])
    body = bodies.window_body(
        name=None,
        ticket="CHG-1234",
        description="Roll out payments v2.3",
        requester="alice@example.com",
        identities=["payments-oncall"],
        namespaces=["payments"],
        rules=rules,
        object_names=["web", "api"],
        schedule={"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
    )
    assert body["metadata"] == {"generateName": "chg-1234-"}
    window = crds.ChangeWindow.model_validate({**body, "metadata": {"name": "x"}})
    assert window.spec.requester == "alice@example.com"
    assert window.spec.targets[0].names == ["web", "api"]
    assert window.spec.approvals == []
    assert "approvals" not in body["spec"] and "emergency" not in body["spec"]


def test_emergency_window_carries_its_reason() -> None:
    body = bodies.window_body(
        name="bg-1",
        ticket="EMERGENCY",
        description="",
        requester="sre@example.com",
        identities=["sre"],
        namespaces=["payments"],
        rules=[dict(bodies.ALL_RESOURCES)],
        schedule={"start": "2026-12-01T22:00:00Z", "end": "2026-12-01T23:00:00Z"},
        emergency_reason="INC-77 payments down",
    )
    window = crds.ChangeWindow.model_validate(body)
    assert (
        window.spec.emergency is not None and window.spec.emergency.reason == "INC-77 payments down"
    )
    assert "description" not in body["spec"]


def test_approval_patch_tests_what_the_approver_saw_before_appending() -> None:
    entry = {
        "approver": "bob",
        "specHash": approvals.spec_hash({"ticket": "T"}),
        "approvedAt": "2026-12-01T00:00:00Z",
    }
    first = bodies.approval_patch(spec={"ticket": "T"}, entry=entry)
    assert first == [
        {"op": "test", "path": "/spec", "value": {"ticket": "T"}},
        {"op": "add", "path": "/spec/approvals", "value": [entry]},
    ]
    earlier = [{"approver": "carol", "specHash": entry["specHash"]}]
    second = bodies.approval_patch(spec={"ticket": "T", "approvals": earlier}, entry=entry)
    assert second == [
        {"op": "test", "path": "/spec", "value": {"ticket": "T", "approvals": earlier}},
        {"op": "add", "path": "/spec/approvals/-", "value": entry},
    ]


@pytest.mark.parametrize(
    ("user", "groups", "expected"),
    [
        (None, (), {}),
        ("alice", (), {"Impersonate-User": "alice"}),
        ("alice", ("g1",), {"Impersonate-User": "alice", "Impersonate-Group": "g1"}),
    ],
)
def test_impersonation_headers(
    user: str | None, groups: tuple[str, ...], expected: dict[str, str]
) -> None:
    assert kube.impersonation_headers(user, groups) == expected


def test_several_groups_travel_as_distinct_spellings_of_one_header() -> None:
    headers = kube.impersonation_headers("alice", ("g1", "g2", "g3"))
    group_headers = {k: v for k, v in headers.items() if k.lower() == "impersonate-group"}
    assert sorted(group_headers.values()) == ["g1", "g2", "g3"]
    assert len(group_headers) == 3  # three distinct dict keys, one header line each


def test_groups_without_a_user_are_refused() -> None:
    with pytest.raises(kube.CliError):
        kube.impersonation_headers(None, ("g1",))
