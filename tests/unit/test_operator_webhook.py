"""The ValidatingWebhookConfiguration builder: what the API server sends to changegate."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from controller.model import crds
from controller.operator import webhook

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def policy(name: str, *rules: dict[str, Any]) -> crds.ChangePolicy:
    return crds.ChangePolicy.model_validate(
        {"metadata": {"name": name}, "spec": {"match": {"resources": list(rules)}}}
    )


DEPLOYMENTS = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
EXEC = {"apiGroups": [""], "resources": ["pods/exec"], "operations": ["CONNECT"]}


def build(*policies: crds.ChangePolicy, **kw: Any) -> dict[str, Any]:
    kw.setdefault("url", "https://127.0.0.1:8443/validate")
    return webhook.build_webhook_configuration(
        policies=policies, ca_bundle=CA, namespace="changegate", **kw
    )


def hooks(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in config["webhooks"]}


def test_no_policy_leaves_only_the_crd_webhook() -> None:
    config = build()
    assert list(hooks(config)) == [webhook.CRDS_WEBHOOK]


def test_crd_webhook_gates_create_and_update_of_changegate_resources() -> None:
    (rule,) = hooks(build())[webhook.CRDS_WEBHOOK]["rules"]
    assert rule["apiGroups"] == ["changegate.io"]
    assert rule["operations"] == ["CREATE", "UPDATE"]
    assert rule["resources"] == ["authorizedidentities", "changepolicies", "changewindows"]
    assert "matchConditions" not in hooks(build())[webhook.CRDS_WEBHOOK]


def test_controlled_rules_are_the_union_of_policy_matches() -> None:
    config = build(
        policy("a", DEPLOYMENTS, EXEC),
        policy("b", {**DEPLOYMENTS, "resources": ["statefulsets", "deployments"]}),
    )
    rules = hooks(config)[webhook.CONTROLLED_WEBHOOK]["rules"]
    assert rules == [
        {
            "operations": ["CONNECT"],
            "apiGroups": [""],
            "apiVersions": ["*"],
            "resources": ["pods/exec"],
            "scope": "*",
        },
        {
            "operations": ["UPDATE"],
            "apiGroups": ["apps"],
            "apiVersions": ["*"],
            "resources": ["deployments", "statefulsets"],
            "scope": "*",
        },
    ]


@pytest.mark.parametrize(
    ("resources", "sent"),
    [
        (["deployments", "deployments/status"], ["deployments"]),
        (["*/status", "deployments/scale"], ["deployments/scale"]),
        (["deployments/status"], None),
    ],
)
def test_status_subresources_are_never_sent(resources: list[str], sent: list[str] | None) -> None:
    config = build(policy("p", {**DEPLOYMENTS, "resources": resources}))
    controlled = hooks(config).get(webhook.CONTROLLED_WEBHOOK)
    if sent is None:
        assert controlled is None
    else:
        assert controlled is not None
        assert [r["resources"] for r in controlled["rules"]] == [sent]


def test_wildcard_rules_still_skip_status_with_a_match_condition() -> None:
    config = build(policy("p", {**DEPLOYMENTS, "resources": ["*/*"]}))
    conditions = hooks(config)[webhook.CONTROLLED_WEBHOOK]["matchConditions"]
    assert any("subResource != 'status'" in c["expression"] for c in conditions)


def test_wildcard_operation_absorbs_the_others() -> None:
    config = build(policy("p", {**DEPLOYMENTS, "operations": ["UPDATE", "*"]}))
    assert hooks(config)[webhook.CONTROLLED_WEBHOOK]["rules"][0]["operations"] == ["*"]


def test_own_namespace_and_kube_system_are_excluded() -> None:
    selector = hooks(build(policy("p", DEPLOYMENTS)))[webhook.CONTROLLED_WEBHOOK][
        "namespaceSelector"
    ]
    assert selector == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["changegate", "kube-system"],
            }
        ]
    }


def test_builtin_exemptions_are_match_conditions() -> None:
    config = build(
        policy("p", DEPLOYMENTS),
        self_username=webhook.service_account_username("changegate", "changegate"),
    )
    expressions = " ".join(
        c["expression"] for c in hooks(config)[webhook.CONTROLLED_WEBHOOK]["matchConditions"]
    )
    for identity in (
        "system:kube-controller-manager",
        "system:kube-scheduler",
        "system:nodes",
        "system:serviceaccounts:kube-system",
        "system:serviceaccount:changegate:changegate",
    ):
        assert f"'{identity}'" in expressions


def test_builtin_exemptions_can_be_switched_off() -> None:
    config = build(policy("p", DEPLOYMENTS), builtin_exemptions=False)
    expressions = " ".join(
        c["expression"] for c in hooks(config)[webhook.CONTROLLED_WEBHOOK]["matchConditions"]
    )
    assert "system:kube-controller-manager" not in expressions
    assert "system:nodes" not in expressions


def test_match_conditions_tolerate_absent_fields() -> None:
    # The API server omits empty fields (no subresource, no groups): an unguarded access would
    # be a CEL error, and with failurePolicy Fail a denial of every plain request.
    for condition in hooks(build(policy("p", DEPLOYMENTS)))[webhook.CONTROLLED_WEBHOOK][
        "matchConditions"
    ]:
        assert condition["expression"].startswith("!has(")


@pytest.mark.parametrize("name", [webhook.CONTROLLED_WEBHOOK, webhook.CRDS_WEBHOOK])
def test_common_webhook_settings(name: str) -> None:
    hook = hooks(build(policy("p", DEPLOYMENTS)))[name]
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] == 5
    assert hook["failurePolicy"] == "Fail"
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == CA
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:8443/validate"


def test_failure_policy_and_timeout_are_configurable() -> None:
    config = build(policy("p", DEPLOYMENTS), failure_policy="Ignore", timeout_seconds=3)
    assert {w["failurePolicy"] for w in config["webhooks"]} == {"Ignore"}
    assert {w["timeoutSeconds"] for w in config["webhooks"]} == {3}


def test_in_cluster_client_config_points_at_the_service() -> None:
    config = build(
        policy("p", DEPLOYMENTS),
        url=None,
        service=webhook.ServiceRef(namespace="changegate", name="changegate"),
    )
    assert hooks(config)[webhook.CRDS_WEBHOOK]["clientConfig"]["service"] == {
        "namespace": "changegate",
        "name": "changegate",
        "path": "/validate",
        "port": 443,
    }


def test_exactly_one_of_url_or_service() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        build(url=None)


def test_policy_order_does_not_change_the_configuration() -> None:
    a, b = policy("a", DEPLOYMENTS), policy("b", EXEC)
    assert build(a, b) == build(b, a)


@pytest.mark.parametrize(
    ("live_change", "expected"),
    [
        (lambda c: c, False),
        (lambda c: {**c, "webhooks": c["webhooks"][:1]}, True),
        (
            lambda c: {
                **c,
                "webhooks": [{**w, "objectSelector": {}} for w in c["webhooks"]],
            },
            False,
        ),
        (
            lambda c: {
                **c,
                "webhooks": [{**w, "failurePolicy": "Ignore"} for w in c["webhooks"]],
            },
            True,
        ),
    ],
    ids=["same", "webhook-missing", "server-defaults-ignored", "field-drifted"],
)
def test_reconciler_rewrites_only_on_drift(live_change: Any, expected: bool) -> None:
    desired = build(policy("p", DEPLOYMENTS))
    assert webhook.needs_update(live_change(desired), desired) is expected


def test_reconciler_creates_when_absent() -> None:
    assert webhook.needs_update(None, build()) is True
