"""The recommended audit policy: the one docs/operations.md shows is the one the tests run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from controller.devcluster import cluster

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "docs" / "audit-policy.yaml"


def _rules() -> list[dict[str, Any]]:
    policy = yaml.safe_load(POLICY.read_text())
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy")
    rules: list[dict[str, Any]] = policy["rules"]
    return rules


def _first_match(*, group: str, resource: str, verb: str) -> str:
    """The level of the first rule matching (as kube-apiserver picks: first match wins)."""
    for rule in _rules():
        if "verbs" in rule and verb not in rule["verbs"]:
            continue
        if "resources" in rule and not any(
            r.get("group", "") == group and resource in r.get("resources", [])
            for r in rule["resources"]
        ):
            continue
        return str(rule["level"])
    return "None"


def test_operations_doc_shows_the_policy_the_local_control_plane_runs() -> None:
    assert cluster.AUDIT_POLICY == POLICY
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc[doc.index("### The policy") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    assert block.group(1) == POLICY.read_text()


def test_policy_keeps_bodies_of_changegates_own_objects_and_annotations_of_the_rest() -> None:
    levels = {
        ("changegate.io", "changewindows", "delete"): "RequestResponse",
        ("changegate.io", "changewindows", "patch"): "RequestResponse",
        ("changegate.io", "changepolicies", "create"): "RequestResponse",
        ("changegate.io", "changewindows/status", "patch"): "Metadata",
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "delete",
        ): "RequestResponse",
        ("apps", "deployments", "patch"): "Metadata",
        ("", "secrets", "update"): "Metadata",
        ("", "pods/exec", "get"): "Metadata",  # kubectl exec over WebSocket
        ("", "pods/exec", "create"): "Metadata",
        ("", "configmaps", "get"): "None",
        ("coordination.k8s.io", "leases", "update"): "None",
    }
    found = {k: _first_match(group=k[0], resource=k[1], verb=k[2]) for k in levels}
    assert found == levels
