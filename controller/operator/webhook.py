"""The ValidatingWebhookConfiguration ``changegate``: a pure builder and the reconciler around it.

The builder is a plain function of the policies and the connection details, so tests call it
directly and the reconciler only compares and sends. Two webhooks:

``controlled.changegate.io``
    Every request a ChangePolicy might control: the union of the policies' ``match.resources``.
    It excludes changegate's own namespace and kube-system with a namespaceSelector and skips
    the built-in exemptions with matchConditions, so the cluster keeps healing even when
    changegate is down and failurePolicy is Fail. Status subresources are never sent.
    With no policies there is nothing to control, and a webhook without rules is invalid,
    so the webhook is left out.

``crds.changegate.io``
    CREATE/UPDATE of changegate's own CRs (requester binding, approvals, break-glass).
    They are cluster-scoped, so a namespaceSelector would not apply; and nobody is exempt,
    because the four-eyes rule must hold for everyone.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from controller.model import crds

logger = logging.getLogger(__name__)

NAME = "changegate"
CONTROLLED_WEBHOOK = "controlled.changegate.io"
CRDS_WEBHOOK = "crds.changegate.io"
PATH = "/validate"

KUBE_CONTROLLER_MANAGER = "system:kube-controller-manager"
KUBE_SCHEDULER = "system:kube-scheduler"
NODES_GROUP = "system:nodes"
KUBE_SYSTEM_SERVICE_ACCOUNTS = "system:serviceaccounts:kube-system"

FailurePolicy = Literal["Fail", "Ignore"]


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceRef:
    """Where the API server reaches changegate in-cluster."""

    namespace: str
    name: str
    port: int = 443


def service_account_username(namespace: str, name: str) -> str:
    """The username the API server authenticates a service account as."""
    return f"system:serviceaccount:{namespace}:{name}"


def _is_status(resource: str) -> bool:
    # "deployments/status" and "*/status": status writes are never gated, so never sent.
    return resource.partition("/")[2] == "status"


def controlled_rules(policies: Iterable[crds.ChangePolicy]) -> list[dict[str, Any]]:
    """The union of the policies' ``match.resources`` as webhook rules, deterministic.

    Rules with the same operations and API groups are merged into one, so the configuration
    stays small and stable when many policies control the same kinds.
    """
    merged: dict[tuple[tuple[str, ...], tuple[str, ...]], set[str]] = {}
    for policy in policies:
        for rule in policy.spec.match.resources:
            resources = {r for r in rule.resources if not _is_status(r)}
            if not resources:
                continue
            operations = tuple(sorted({str(op) for op in rule.operations}))
            if "*" in operations:
                operations = ("*",)
            groups = tuple(sorted(set(rule.api_groups)))
            merged.setdefault((operations, groups), set()).update(resources)
    return [
        {
            "operations": list(operations),
            "apiGroups": list(groups),
            "apiVersions": ["*"],
            "resources": sorted(resources),
            "scope": "*",
        }
        for (operations, groups), resources in sorted(merged.items())
    ]


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def exemption_match_conditions(
    *, builtin_exemptions: bool = True, self_username: str | None = None
) -> list[dict[str, str]]:
    """matchConditions that keep exempt identities and status writes away from the webhook.

    They mirror what ``decide`` would answer anyway (Exempt, StatusSubresource); sending them
    to the API server too means those requests do not depend on changegate being up.
    """
    conditions = [
        # Wildcard rules ("*/*", "pods/*") cannot exclude status by themselves.
        {
            "name": "not-status-subresource",
            "expression": "!has(request.subResource) || request.subResource != 'status'",
        },
    ]
    users = [KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER] if builtin_exemptions else []
    if self_username:
        users.append(self_username)
    if users:
        conditions.append(
            {
                "name": "not-exempt-user",
                "expression": "!has(request.userInfo.username)"
                f" || !(request.userInfo.username in {_cel_list(users)})",
            }
        )
    if builtin_exemptions:
        groups = [NODES_GROUP, KUBE_SYSTEM_SERVICE_ACCOUNTS]
        conditions.append(
            {
                "name": "not-exempt-group",
                "expression": "!has(request.userInfo.groups)"
                f" || !request.userInfo.groups.exists(g, g in {_cel_list(groups)})",
            }
        )
    return conditions


def _client_config(
    *, ca_bundle: bytes | str, url: str | None, service: ServiceRef | None
) -> dict[str, Any]:
    if (url is None) == (service is None):
        raise ValueError("give exactly one of url or service")
    pem = ca_bundle.encode() if isinstance(ca_bundle, str) else ca_bundle
    config: dict[str, Any] = {"caBundle": base64.b64encode(pem).decode()}
    if url is not None:
        config["url"] = url
    elif service is not None:
        config["service"] = {
            "namespace": service.namespace,
            "name": service.name,
            "path": PATH,
            "port": service.port,
        }
    return config


def build_webhook_configuration(
    *,
    policies: Iterable[crds.ChangePolicy],
    ca_bundle: bytes | str,
    url: str | None = None,
    service: ServiceRef | None = None,
    namespace: str,
    failure_policy: FailurePolicy = "Fail",
    timeout_seconds: int = 5,
    builtin_exemptions: bool = True,
    self_username: str | None = None,
) -> dict[str, Any]:
    """The desired ValidatingWebhookConfiguration, JSON-ready.

    ``namespace`` is changegate's own namespace (excluded, with kube-system, so the cluster and
    changegate itself can always be repaired). ``ca_bundle`` is PEM.
    """
    client_config = _client_config(ca_bundle=ca_bundle, url=url, service=service)
    common: dict[str, Any] = {
        "clientConfig": client_config,
        "failurePolicy": failure_policy,
        "sideEffects": "None",  # Events are best-effort observations; dry-run is decided too.
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": timeout_seconds,
        "matchPolicy": "Equivalent",
    }
    webhooks: list[dict[str, Any]] = []
    rules = controlled_rules(policies)
    if rules:
        webhooks.append(
            {
                "name": CONTROLLED_WEBHOOK,
                **common,
                "rules": rules,
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": sorted({namespace, "kube-system"}),
                        }
                    ]
                },
                "matchConditions": exemption_match_conditions(
                    builtin_exemptions=builtin_exemptions, self_username=self_username
                ),
            }
        )
    webhooks.append(
        {
            "name": CRDS_WEBHOOK,
            **common,
            "rules": [
                {
                    "operations": ["CREATE", "UPDATE"],
                    "apiGroups": [crds.GROUP],
                    "apiVersions": ["*"],
                    "resources": sorted(crds.PLURALS.values()),
                    "scope": "Cluster",
                }
            ],
        }
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": NAME,
            "labels": {"app.kubernetes.io/managed-by": "changegate"},
        },
        "webhooks": webhooks,
    }


def needs_update(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the live configuration differs from the desired one in what we manage.

    The API server fills in defaults (objectSelector, reinvocation...), so only the fields the
    builder sets are compared — otherwise every pass would rewrite the object.
    """
    if current is None:
        return True
    live = current.get("webhooks") or []
    want = desired["webhooks"]
    if len(live) != len(want):
        return True
    return any(any(lw.get(key) != ww[key] for key in ww) for lw, ww in zip(live, want, strict=True))


class WebhookReconciler:
    """Keeps the live ValidatingWebhookConfiguration equal to the desired one.

    Uses the synchronous kubernetes client in a worker thread: one small object, written only
    by the leader and only when it differs, so the blocking client is not worth replacing.
    """

    def __init__(self, *, api: Any, recheck_after: float = 300.0) -> None:
        self._api = api  # kubernetes.client.AdmissionregistrationV1Api
        self._recheck_after = recheck_after
        self._confirmed: dict[str, Any] | None = None
        self._confirmed_at = 0.0

    async def reconcile(self, desired: Mapping[str, Any]) -> bool:
        """Create or replace the configuration if it differs; True when it wrote.

        The reconciler runs after every index change (most are windows and namespaces, which
        do not change the configuration), so an unchanged desired configuration confirmed
        recently is not re-read; drift by someone else is still repaired within recheck_after.
        """
        wanted = dict(desired)
        fresh = time.monotonic() - self._confirmed_at < self._recheck_after
        if fresh and wanted == self._confirmed:
            return False
        wrote = await asyncio.to_thread(self._reconcile_sync, wanted)
        self._confirmed, self._confirmed_at = wanted, time.monotonic()
        return wrote

    def _reconcile_sync(self, desired: dict[str, Any]) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            current = self._api.read_validating_webhook_configuration(NAME)
        except ApiException as e:
            if e.status != 404:
                raise
            self._api.create_validating_webhook_configuration(desired)
            logger.info("created ValidatingWebhookConfiguration %s", NAME)
            return True
        live = self._api.api_client.sanitize_for_serialization(current)
        if not needs_update(live, desired):
            return False
        body = dict(desired)
        body["metadata"] = {
            **desired["metadata"],
            "resourceVersion": live["metadata"]["resourceVersion"],
        }
        self._api.replace_validating_webhook_configuration(NAME, body)
        logger.info(
            "updated ValidatingWebhookConfiguration %s",
            NAME,
            extra={"webhooks": [w["name"] for w in desired["webhooks"]]},
        )
        return True
