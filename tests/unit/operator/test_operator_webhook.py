"""The ValidatingWebhookConfiguration builder: what the API server sends to changegate."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from controller import pki
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
    # Nobody is exempt from the four-eyes rules: set, and empty, so one added by hand is drift.
    assert hooks(build())[webhook.CRDS_WEBHOOK]["matchConditions"] == []


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
        # A namespace relabel or deletion can move objects out of a policy's scope.
        {
            "operations": ["DELETE", "UPDATE"],
            "apiGroups": [""],
            "apiVersions": ["*"],
            "resources": ["namespaces", "namespaces/finalize", "namespaces/status"],
            "scope": "*",
        },
        # Scaling is an update by another path: sent with the update it is equivalent to.
        {
            "operations": ["UPDATE"],
            "apiGroups": ["apps"],
            "apiVersions": ["*"],
            "resources": [
                "deployments",
                "deployments/scale",
                "deployments/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            "scope": "*",
        },
    ]


def test_paths_with_the_same_effect_as_a_controlled_one_are_sent() -> None:
    pods = {"apiGroups": [""], "resources": ["pods"], "operations": ["UPDATE", "DELETE"]}
    rules = hooks(build(policy("p", pods)))[webhook.CONTROLLED_WEBHOOK]["rules"]
    sent = {(op, r) for rule in rules for op in rule["operations"] for r in rule["resources"]}
    assert {
        ("CREATE", "pods/eviction"),
        ("UPDATE", "pods/ephemeralcontainers"),
        ("UPDATE", "pods/resize"),
        ("UPDATE", "pods/scale"),
    } <= sent


def test_status_writes_are_sent_only_when_they_change_metadata() -> None:
    """/status can change labels and annotations (the API server allows it), which has the
    effect of an update: such writes are sent; status-only writes never are."""
    config = build(policy("p", {**DEPLOYMENTS, "resources": ["*/*"]}))
    controlled = hooks(config)[webhook.CONTROLLED_WEBHOOK]
    (condition,) = [
        c for c in controlled["matchConditions"] if c["name"] == "status-only-if-metadata-changes"
    ]
    for field in ("labels", "annotations", "finalizers", "ownerReferences"):
        assert f"object.metadata.{field} != oldObject.metadata.{field}" in condition["expression"]
    sent = {r for rule in controlled["rules"] for r in rule["resources"]}
    assert "deployments/status" in build_sent(DEPLOYMENTS)
    assert "*/*" in sent


def build_sent(rule: dict[str, Any]) -> set[str]:
    config = build(policy("p", rule))
    return {
        r
        for w in config["webhooks"]
        if w["name"] == webhook.CONTROLLED_WEBHOOK
        for rule_ in w["rules"]
        for r in rule_["resources"]
    }


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


# -- drift: the whole object is ours ----------------------------------------------------------


def desired_config() -> dict[str, Any]:
    return build(
        policy("p", DEPLOYMENTS, EXEC),
        self_username=webhook.service_account_username("changegate", "changegate"),
    )


def as_stored(config: dict[str, Any]) -> dict[str, Any]:
    """What a GET returns after the API server stored ``config`` (v1 defaulting, omitempty).

    Checked against the real API server in tests/integration/test_webhook_selfheal.py.
    """
    stored = copy.deepcopy(config)
    stored["metadata"] |= {
        "uid": "0b0d2f7c-9a1e-4c53-a3a8-0d6f4e0c1f00",
        "resourceVersion": "4711",
        "generation": 3,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "changegate", "operation": "Update"}],
    }
    for hook in stored["webhooks"]:
        if not hook["matchConditions"]:
            del hook["matchConditions"]  # omitempty
    return stored


@pytest.mark.parametrize("name", [webhook.CONTROLLED_WEBHOOK, webhook.CRDS_WEBHOOK])
def test_every_webhook_sets_every_field(name: str) -> None:
    # What the builder leaves unset, an admin could set without it counting as drift.
    assert set(hooks(desired_config())[name]) == set(webhook.WEBHOOK_FIELDS)


def test_the_configuration_as_the_api_server_stores_it_is_not_drift() -> None:
    desired = desired_config()
    assert webhook.drift(as_stored(desired), desired) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failurePolicy", None),
        ("matchPolicy", None),
        ("namespaceSelector", None),
        ("objectSelector", None),
        ("timeoutSeconds", None),
        ("matchConditions", None),
        ("objectSelector", {"matchLabels": {}}),
        ("objectSelector", {"matchExpressions": []}),
    ],
    ids=lambda v: repr(v),
)
def test_server_defaults_are_not_drift(field: str, value: Any) -> None:
    """A field the API server fills in or omits compares equal to the builder's value.

    Only where the builder's value *is* the default: an absent timeoutSeconds is 10, not 5.
    """
    desired = build(policy("p", DEPLOYMENTS), timeout_seconds=10)
    live = as_stored(desired)
    for hook in live["webhooks"]:
        if field == "matchConditions" and hook["name"] == webhook.CONTROLLED_WEBHOOK:
            continue  # not empty there: absent would be drift (see below)
        if field == "namespaceSelector" and hook["name"] == webhook.CONTROLLED_WEBHOOK:
            continue
        if value is None:
            hook.pop(field, None)
        else:
            hook[field] = value
    assert webhook.drift(live, desired) == []


BYPASS = {"matchLabels": {"changegate.io/skip": "true"}}
CONDITION = {"name": "skip-bots", "expression": "request.userInfo.username != 'bot'"}


def _tamper(hook: dict[str, Any], field: str, change: Any) -> None:
    if callable(change):
        change(hook)
    else:
        hook[field] = change


# Each owned field of each webhook, changed as an admin (or an attacker with RBAC on the
# object) might: every one must be seen, and named.
DRIFTS: list[tuple[str, str, Any]] = [
    (hook, field, change)
    for hook in (webhook.CONTROLLED_WEBHOOK, webhook.CRDS_WEBHOOK)
    for field, change in [
        ("objectSelector", BYPASS),
        ("namespaceSelector", BYPASS),
        ("failurePolicy", "Ignore"),
        ("matchPolicy", "Exact"),
        ("sideEffects", "NoneOnDryRun"),
        ("timeoutSeconds", 1),
        ("timeoutSeconds", None),  # removed: the API server makes it 10
        ("admissionReviewVersions", ["v1beta1", "v1"]),
        ("matchConditions", [CONDITION]),
        ("rules", lambda h: h["rules"].pop()),
        ("rules", lambda h: h["rules"][0].update(operations=["DELETE"])),
        ("rules", lambda h: h["rules"][0].update(resources=["nothing"])),
        ("rules", lambda h: h["rules"][0].update(scope="Namespaced")),
        ("rules", lambda h: h["rules"].append({**h["rules"][0], "apiGroups": ["x.io"]})),
        ("clientConfig", lambda h: h["clientConfig"].update(caBundle="QUJD")),
        ("clientConfig", lambda h: h["clientConfig"].update(url="https://evil.example/")),
        (
            "clientConfig",
            lambda h: h.update(
                clientConfig={
                    "caBundle": h["clientConfig"]["caBundle"],
                    "service": {"namespace": "x", "name": "y", "path": "/validate", "port": 443},
                }
            ),
        ),
    ]
] + [
    (webhook.CONTROLLED_WEBHOOK, "matchConditions", None),
    (webhook.CONTROLLED_WEBHOOK, "matchConditions", lambda h: h["matchConditions"].pop()),
    (webhook.CONTROLLED_WEBHOOK, "namespaceSelector", None),
]


@pytest.mark.parametrize(("hook", "field", "change"), DRIFTS)
def test_every_owned_field_drift_is_detected(hook: str, field: str, change: Any) -> None:
    desired = desired_config()
    live = as_stored(desired)
    (target,) = [h for h in live["webhooks"] if h["name"] == hook]
    if change is None:
        target.pop(field)
    else:
        _tamper(target, field, change)
    assert webhook.drift(live, desired) == [f"webhooks[{hook}].{field}"]
    assert webhook.needs_update(live, desired) is True


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["webhooks"].pop(0),
        lambda c: c["webhooks"].pop(),
        lambda c: c["webhooks"].clear(),
        lambda c: c["webhooks"].append({**c["webhooks"][0], "name": "extra.example.com"}),
        lambda c: c["webhooks"][0].update(name="renamed.changegate.io"),
        lambda c: c["webhooks"].reverse(),
    ],
    ids=["first-removed", "last-removed", "all-removed", "extra", "renamed", "reordered"],
)
def test_missing_extra_renamed_or_reordered_webhooks_are_drift(change: Any) -> None:
    desired = desired_config()
    live = as_stored(desired)
    change(live)
    assert webhook.drift(live, desired) == ["webhooks[*].name"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m["labels"].clear(), ["metadata.labels[app.kubernetes.io/managed-by]"]),
        (
            lambda m: m["labels"].update({"app.kubernetes.io/managed-by": "helm"}),
            ["metadata.labels[app.kubernetes.io/managed-by]"],
        ),
        (
            lambda m: m.update(
                ownerReferences=[
                    {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "1"}
                ]
            ),
            ["metadata.ownerReferences"],
        ),
        (lambda m: m["labels"].update(team="platform"), []),  # not ours: left alone
        (lambda m: m.update(annotations={"note": "hi"}), []),
    ],
    ids=["label-removed", "label-changed", "owner-added", "foreign-label", "annotation"],
)
def test_metadata_we_own_is_compared(change: Any, expected: list[str]) -> None:
    desired = desired_config()
    live = as_stored(desired)
    change(live["metadata"])
    assert webhook.drift(live, desired) == expected


def test_reconciler_creates_when_absent() -> None:
    assert webhook.drift(None, build()) == ["(absent)"]
    assert webhook.needs_update(None, build()) is True


# -- the reconciler and the watch --------------------------------------------------------------


class _Response:
    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()


class FakeAdmissionApi:
    """Just enough of AdmissionregistrationV1Api for the reconciler's bookkeeping."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] | None = None
        self.version = 0
        self.writes = 0

    def read_validating_webhook_configuration(self, name: str, **_: Any) -> _Response:
        from kubernetes.client.exceptions import ApiException

        if self.stored is None:
            raise ApiException(status=404)
        return _Response(self.stored)

    def _store(self, body: dict[str, Any]) -> _Response:
        self.version += 1
        self.writes += 1
        self.stored = as_stored(body)
        self.stored["metadata"]["resourceVersion"] = str(self.version)
        return _Response(self.stored)

    def create_validating_webhook_configuration(self, body: dict[str, Any], **_: Any) -> _Response:
        return self._store(body)

    def replace_validating_webhook_configuration(
        self, name: str, body: dict[str, Any], **_: Any
    ) -> _Response:
        return self._store(body)


async def test_own_write_seen_by_the_watch_asks_for_nothing() -> None:
    api = FakeAdmissionApi()
    reconciler = webhook.WebhookReconciler(api=api)
    desired = desired_config()
    assert await reconciler.reconcile(desired) is True
    assert reconciler.observe(api.stored) is False  # the event our create caused
    assert await reconciler.reconcile(desired) is False
    assert api.writes == 1


async def test_a_change_seen_by_the_watch_is_repaired_at_once() -> None:
    api = FakeAdmissionApi()
    reconciler = webhook.WebhookReconciler(api=api)  # re-reads only every 300 s by itself
    desired = desired_config()
    await reconciler.reconcile(desired)
    assert api.stored is not None
    tampered = copy.deepcopy(api.stored)
    tampered["webhooks"][0]["objectSelector"] = BYPASS
    tampered["metadata"]["resourceVersion"] = "99"
    api.stored = tampered
    assert reconciler.observe(tampered) is True
    assert await reconciler.reconcile(desired) is True
    assert webhook.drift(api.stored, desired) == []


async def test_a_deletion_seen_by_the_watch_is_repaired_at_once() -> None:
    api = FakeAdmissionApi()
    reconciler = webhook.WebhookReconciler(api=api)
    desired = desired_config()
    await reconciler.reconcile(desired)
    api.stored = None
    assert reconciler.observe(None) is True
    assert await reconciler.reconcile(desired) is True
    assert api.stored is not None and api.writes == 2


async def test_a_change_seen_during_a_pass_is_not_confirmed_away() -> None:
    """The watch reports a change while the pass is reading: the next pass must re-read."""
    api = FakeAdmissionApi()
    reconciler = webhook.WebhookReconciler(api=api)
    desired = desired_config()
    await reconciler.reconcile(desired)
    stored = api.stored
    assert stored is not None
    read = api.read_validating_webhook_configuration

    def read_then_tamper(name: str, **kw: Any) -> _Response:
        response = read(name, **kw)  # the pass reads the good object...
        tampered = copy.deepcopy(stored)  # ...and someone changes it right after
        tampered["webhooks"][0]["failurePolicy"] = "Ignore"
        tampered["metadata"]["resourceVersion"] = "77"
        api.stored = tampered
        reconciler.observe(tampered)  # (the event loop would run this between the two)
        return response

    api.read_validating_webhook_configuration = read_then_tamper  # type: ignore[method-assign]
    reconciler.observe({"metadata": {"resourceVersion": "76"}})  # force the next pass to read
    assert await reconciler.reconcile(desired) is False  # it saw the good object
    api.read_validating_webhook_configuration = read  # type: ignore[method-assign]
    assert await reconciler.reconcile(desired) is True  # not skipped as "confirmed recently"
    assert webhook.drift(api.stored, desired) == []


def test_live_bundle_trusts_a_certificate_once_every_webhook_carries_its_ca() -> None:
    old, new = pki.make_ca(common_name="old"), pki.make_ca(common_name="new")
    leaf = pki.make_serving_cert(ca=new, hosts=["127.0.0.1"])
    now = [100.0]
    live = webhook.LiveBundle(clock=lambda: now[0])

    def config(*bundles: bytes) -> dict[str, Any]:
        return {
            "webhooks": [
                {"clientConfig": {"caBundle": base64.b64encode(b).decode()}} for b in bundles
            ]
        }

    assert live.trusts(leaf.cert_pem) is False  # nothing seen yet
    assert live.observe(config(old.cert_pem, old.cert_pem)) is True
    assert live.trusts(leaf.cert_pem) is False
    both = old.cert_pem + new.cert_pem
    assert live.observe(config(both, old.cert_pem)) is True
    assert live.trusts(leaf.cert_pem) is False  # one webhook still has only the old CA
    assert live.observe(config(both, both)) is True
    assert live.observe(config(both, both)) is False  # unchanged
    assert live.trusts(leaf.cert_pem, settle=1.0) is False  # the API server may lag a moment
    now[0] += 1.0
    assert live.trusts(leaf.cert_pem, settle=1.0) is True
    assert live.observe(None) is True  # deleted: trusts nothing
    assert live.trusts(leaf.cert_pem) is False
