"""Matching semantics: RBAC/webhook-style rules, label selectors, namespaces, subjects."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.model import crds
from controller.policy import index, matching


def rule(groups: list[str], resources: list[str], operations: list[str]) -> crds.ResourceRule:
    return crds.ResourceRule.model_validate(
        {"apiGroups": groups, "resources": resources, "operations": operations}
    )


@pytest.mark.parametrize(
    ("r", "group", "resource", "sub", "op", "expected"),
    [
        (rule(["apps"], ["deployments"], ["UPDATE"]), "apps", "deployments", "", "UPDATE", True),
        (rule(["apps"], ["deployments"], ["UPDATE"]), "", "deployments", "", "UPDATE", False),
        (rule(["apps"], ["deployments"], ["UPDATE"]), "apps", "deployments", "", "DELETE", False),
        (
            rule(["apps"], ["deployments"], ["UPDATE"]),
            "apps",
            "deployments",
            "scale",
            "UPDATE",
            False,
        ),
        (
            rule(["apps"], ["deployments/scale"], ["UPDATE"]),
            "apps",
            "deployments",
            "scale",
            "UPDATE",
            True,
        ),
        (
            rule(["apps"], ["deployments/scale"], ["UPDATE"]),
            "apps",
            "deployments",
            "",
            "UPDATE",
            False,
        ),
        (
            rule(["apps"], ["deployments/*"], ["UPDATE"]),
            "apps",
            "deployments",
            "scale",
            "UPDATE",
            True,
        ),
        (rule(["apps"], ["deployments/*"], ["UPDATE"]), "apps", "deployments", "", "UPDATE", False),
        (rule(["*"], ["*"], ["*"]), "batch", "jobs", "", "CONNECT", True),
        (rule(["*"], ["*"], ["*"]), "", "pods", "exec", "CONNECT", False),
        (rule(["*"], ["*/*"], ["*"]), "", "pods", "exec", "CONNECT", True),
        (rule(["*"], ["*/*"], ["*"]), "", "pods", "", "DELETE", True),
        (
            rule([""], ["*/scale"], ["UPDATE"]),
            "",
            "replicationcontrollers",
            "scale",
            "UPDATE",
            True,
        ),
        (rule([""], ["pods/exec"], ["CONNECT"]), "", "pods", "exec", "CONNECT", True),
        (rule([""], ["pods/exec"], ["CONNECT"]), "", "pods", "attach", "CONNECT", False),
    ],
)
def test_resource_rules_follow_kubernetes_webhook_rule_semantics(
    r: crds.ResourceRule, group: str, resource: str, sub: str, op: str, expected: bool
) -> None:
    got = matching.CompiledRule(r).covers(
        api_group=group, patterns=matching.resource_patterns(resource, sub), operation=op
    )
    assert got is expected


def selector(body: dict[str, Any]) -> crds.LabelSelector:
    return crds.LabelSelector.model_validate(body)


@pytest.mark.parametrize(
    ("sel", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        (
            {"matchLabels": {"x": "y"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_label_selectors_and_all_their_terms(
    sel: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert matching.selector_matches(selector(sel), labels) is expected


@given(st.dictionaries(st.sampled_from("abc"), st.sampled_from("12"), max_size=3))
def test_match_labels_equals_subset_oracle(labels: dict[str, str]) -> None:
    want = {"a": "1", "b": "2"}
    oracle = all(labels.get(k) == v for k, v in want.items())
    assert matching.selector_matches(selector({"matchLabels": want}), labels) is oracle


def match(body: dict[str, Any]) -> crds.PolicyMatch:
    return crds.PolicyMatch.model_validate(
        {"resources": [{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}], **body}
    )


@pytest.mark.parametrize(
    ("m", "namespace", "labels", "expected"),
    [
        ({}, "anything", {}, True),
        ({}, "", {}, True),  # neither: cluster-scoped too
        ({"namespaces": ["payments"]}, "payments", {}, True),
        ({"namespaces": ["payments"]}, "other", {}, False),
        ({"namespaces": ["payments"]}, "", {}, False),  # scoped policies skip cluster-scoped
        ({"namespaceSelector": {"matchLabels": {"t": "p"}}}, "x", {"t": "p"}, True),
        ({"namespaceSelector": {"matchLabels": {"t": "p"}}}, "", {}, False),
        (
            {"namespaces": ["a"], "namespaceSelector": {"matchLabels": {"t": "p"}}},
            "b",
            {"t": "p"},
            True,
        ),
        ({"excludeNamespaces": ["kube-system"]}, "kube-system", {}, False),
        ({"namespaceSelector": {}, "excludeNamespaces": ["sandbox"]}, "sandbox", {}, False),
    ],
)
def test_policy_namespaces_are_a_union_minus_excluded(
    m: dict[str, Any], namespace: str, labels: dict[str, str], expected: bool
) -> None:
    policy = crds.ChangePolicy(
        metadata=crds.ObjectMeta(name="p"), spec=crds.ChangePolicySpec(match=match(m))
    )
    assert index.CompiledPolicy(policy).covers_namespace(namespace, labels) is expected


def target(body: dict[str, Any]) -> crds.WindowTarget:
    return crds.WindowTarget.model_validate(
        {
            "resources": [{"apiGroups": [""], "resources": ["configmaps"], "operations": ["*"]}],
            **body,
        }
    )


@pytest.mark.parametrize(
    ("t", "namespace", "name", "expected"),
    [
        ({"namespaces": ["a"]}, "a", "cm", True),
        ({"namespaces": ["a"], "names": ["cm"]}, "a", "cm", True),
        ({"namespaces": ["a"], "names": ["cm"]}, "a", "other", False),
        ({"namespaces": ["a"], "names": ["cm"]}, "a", "", False),  # generateName: no name yet
        ({"namespaces": ["a"]}, "", "cm", False),
        ({"namespaceSelector": {}}, "", "cm", True),  # empty selector: everywhere
    ],
)
def test_window_targets_cover_namespaces_resources_and_names(
    t: dict[str, Any], namespace: str, name: str, expected: bool
) -> None:
    got = matching.CompiledTarget(target(t)).covers(
        api_group="",
        patterns=matching.resource_patterns("configmaps", ""),
        operation="UPDATE",
        namespace=namespace,
        name=name,
        labels={},
    )
    assert got is expected


def test_create_name_comes_from_object_metadata() -> None:
    assert matching.request_object_name(name="", obj={"metadata": {"name": "web"}}) == "web"
    assert matching.request_object_name(name="", obj={"metadata": {"generateName": "web-"}}) == ""


@pytest.mark.parametrize(
    ("subject", "user", "groups", "expected"),
    [
        ({"kind": "User", "name": "alice"}, "alice", (), True),
        ({"kind": "User", "name": "alice"}, "bob", ("alice",), False),
        ({"kind": "Group", "name": "ops"}, "bob", ("ops",), True),
        (
            {"kind": "ServiceAccount", "namespace": "argocd", "name": "ctl"},
            "system:serviceaccount:argocd:ctl",
            (),
            True,
        ),
        (
            {"kind": "ServiceAccount", "namespace": "argocd", "name": "ctl"},
            "system:serviceaccount:other:ctl",
            (),
            False,
        ),
    ],
)
def test_subjects_match_users_groups_and_service_accounts(
    subject: dict[str, Any], user: str, groups: tuple[str, ...], expected: bool
) -> None:
    s = crds.Subject.model_validate(subject)
    assert matching.subject_matches(s, user=user, groups=groups) is expected
    keyed = matching.subject_key(s) in matching.request_subject_keys(user=user, groups=groups)
    assert keyed is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (rule(["apps"], ["deployments"], ["UPDATE"]), rule(["apps"], ["deployments"], ["*"]), True),
        (
            rule(["apps"], ["deployments"], ["UPDATE"]),
            rule(["apps"], ["deployments"], ["DELETE"]),
            False,
        ),
        (
            rule(["apps"], ["deployments"], ["UPDATE"]),
            rule([""], ["deployments"], ["UPDATE"]),
            False,
        ),
        (rule(["apps"], ["deployments/scale"], ["UPDATE"]), rule(["*"], ["*/*"], ["UPDATE"]), True),
        (
            rule(["apps"], ["deployments/scale"], ["UPDATE"]),
            rule(["apps"], ["*"], ["UPDATE"]),
            False,
        ),
    ],
)
def test_rules_overlap_when_some_request_matches_both(
    a: crds.ResourceRule, b: crds.ResourceRule, expected: bool
) -> None:
    assert matching.rules_overlap(a, b) is expected
    assert matching.rules_overlap(b, a) is expected
