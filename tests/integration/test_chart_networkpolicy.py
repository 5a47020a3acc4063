"""The chart's NetworkPolicy: only the webhook port, and only from the peers a cluster names.

The API server's source addresses are cluster-specific, so ``networkPolicy.from`` is empty by
default, which leaves the port open to every source (the policy then still closes every
other port, and lets the API server in where a namespace denies ingress by default). Once
``from`` is set, only those peers -- plus ``metricsFrom``, for Prometheus, since /metrics is
served on the same port -- may connect.

Rendering is checked structurally; the rendered policies then go to the real kube-apiserver
with ``kubectl apply --dry-run=server``, so their shape is the API server's to judge. The test
cluster runs no network plugin, so enforcement itself is not tested here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_chart import CHART, KUBE_VERSION, ensure_helm, run_helm

from controller.devcluster import cluster

pytestmark = pytest.mark.integration

API_SERVER_PEERS: list[Any] = [
    "10.0.0.0/24",
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "konnectivity-agent"}},
    },
]
PROMETHEUS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


def render(
    helm: Path, *, release: str = "changegate", namespace: str = "changegate-system", **values: Any
) -> list[dict[str, Any]]:
    """The chart's objects for ``values`` (dotted keys, JSON values), as the API server gets them."""
    set_json = [
        arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")
    ]
    result = run_helm(
        helm,
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        *set_json,
    )
    assert result.returncode == 0, result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def policies(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def deployment(objects: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    (found,) = [o for o in objects if o["kind"] == "Deployment"]
    return found


def only_rule(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    (rule,) = policy["spec"]["ingress"]
    return rule


def test_default_policy_opens_only_the_webhook_port(helm: Path) -> None:
    objects = render(helm)
    (policy,) = policies(objects)
    pods = deployment(objects)
    assert policy["metadata"]["name"] == "changegate"
    assert policy["metadata"]["namespace"] == "changegate-system"
    assert policy["spec"]["podSelector"] == pods["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress: the API server must be reachable
    (container,) = pods["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    # No `from`: every source may reach this one port, as without a policy; no other port.
    assert only_rule(policy) == {"ports": [{"protocol": "TCP", "port": port["containerPort"]}]}


def test_from_admits_only_the_api_server_and_the_metrics_scrapers(helm: Path) -> None:
    objects = render(
        helm,
        **{
            "networkPolicy.from": API_SERVER_PEERS,
            "networkPolicy.metricsFrom": [PROMETHEUS],
            "webhook.port": 9443,
        },
    )
    (policy,) = policies(objects)
    assert only_rule(policy) == {
        "ports": [{"protocol": "TCP", "port": 9443}],
        "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}, API_SERVER_PEERS[1], PROMETHEUS],
    }


def test_metrics_peers_alone_do_not_narrow_an_open_port(helm: Path) -> None:
    (policy,) = policies(render(helm, **{"networkPolicy.metricsFrom": [PROMETHEUS]}))
    assert "from" not in only_rule(policy)


def test_disabled_policy_is_not_rendered(helm: Path) -> None:
    assert policies(render(helm, **{"networkPolicy.enabled": False})) == []


@pytest.mark.parametrize("peer", [3, True, ["10.0.0.0/24"]], ids=["number", "bool", "list"])
def test_peer_that_is_neither_cidr_nor_peer_is_refused_with_a_reason(helm: Path, peer: Any) -> None:
    set_json = f"networkPolicy.from={json.dumps([peer])}"
    result = run_helm(helm, "template", "changegate", str(CHART), "--set-json", set_json)
    assert result.returncode != 0
    assert "take CIDRs (strings) or NetworkPolicy peers (maps)" in result.stderr


@pytest.mark.parametrize(
    "values",
    [{}, {"networkPolicy.from": API_SERVER_PEERS, "networkPolicy.metricsFrom": [PROMETHEUS]}],
    ids=["defaults", "restricted"],
)
def test_rendered_policy_is_accepted_by_the_api_server(
    helm: Path, controlplane: cluster.ControlPlane, values: dict[str, Any]
) -> None:
    namespace = "changegate-netpol"
    if controlplane.kubectl("get", "namespace", namespace).returncode != 0:
        created = controlplane.kubectl("create", "namespace", namespace)
        assert created.returncode == 0, created.stderr
    stream = yaml.safe_dump_all(policies(render(helm, namespace=namespace, **values)))
    result = controlplane.kubectl("apply", "--dry-run=server", "-f", "-", input=stream)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == "networkpolicy.networking.k8s.io/changegate created (server dry run)"
    )


def test_malformed_cidr_is_refused_by_the_api_server(
    helm: Path, controlplane: cluster.ControlPlane
) -> None:
    # The chart passes CIDRs through; the API server is the judge of what one is.
    namespace = "changegate-netpol"
    if controlplane.kubectl("get", "namespace", namespace).returncode != 0:
        controlplane.kubectl("create", "namespace", namespace)
    objects = render(helm, namespace=namespace, **{"networkPolicy.from": ["10.0.0.0/33"]})
    result = controlplane.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(policies(objects))
    )
    assert result.returncode != 0
    assert "cidr" in result.stderr.lower()
