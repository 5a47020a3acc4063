"""kubectl's vocabulary in changegate's terms: verbs, resources, and the request they make.

Plain functions of their inputs, testable without a cluster: ``kubectl changegate can-i patch
deploy web`` must become exactly the ``Request`` the API server would have sent the webhook
for ``kubectl patch deploy web``.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.cli import flags
from controller.policy import request

# kubectl verb -> (admission operation, subresource the verb implies).
# `apply` may create or update; an update is what a window for a running service is about,
# so can-i answers for UPDATE (ask `can-i create` for the first apply).
# `scale` goes through the scale subresource, as kubectl does; `rollout restart`, `label`,
# `annotate`, `set image` are patches of the object itself.
VERBS: Mapping[str, tuple[request.Operation, str]] = {
    "create": ("CREATE", ""),
    "update": ("UPDATE", ""),
    "patch": ("UPDATE", ""),
    "apply": ("UPDATE", ""),
    "edit": ("UPDATE", ""),
    "replace": ("UPDATE", ""),
    "label": ("UPDATE", ""),
    "annotate": ("UPDATE", ""),
    "set": ("UPDATE", ""),
    "rollout": ("UPDATE", ""),
    "scale": ("UPDATE", "scale"),
    "delete": ("DELETE", ""),
    "exec": ("CONNECT", "exec"),
    "attach": ("CONNECT", "attach"),
    "port-forward": ("CONNECT", "portforward"),
    "portforward": ("CONNECT", "portforward"),
    "proxy": ("CONNECT", "proxy"),
}
OPERATIONS: tuple[request.Operation, ...] = typing.get_args(request.Operation)


def operation_for(verb: str, *, subresource: str | None = None) -> tuple[request.Operation, str]:
    """``(operation, subresource)`` for a kubectl verb; ``subresource`` overrides the implied one.

    Admission operation names (``UPDATE``) are accepted as verbs too.
    """
    key = verb.strip()
    op: request.Operation
    if key.upper() in OPERATIONS:
        op, implied = OPERATIONS[OPERATIONS.index(key.upper())], ""
    elif key.lower() in VERBS:
        op, implied = VERBS[key.lower()]
    else:
        known = ", ".join(sorted(VERBS))
        raise flags.UsageError(
            f"unknown verb {verb!r}: use one of {known} (or CREATE/UPDATE/DELETE/CONNECT)"
        )
    return op, implied if subresource is None else subresource


# -- resources -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One API resource as discovery describes it."""

    group: str
    version: str
    resource: str  # plural
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        """``deployments.apps``, ``configmaps`` — kubectl's fully qualified spelling."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


def _r(
    group: str, version: str, resource: str, kind: str, *short: str, sub: tuple[str, ...] = ()
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version=version,
        resource=resource,
        kind=kind,
        singular=kind.lower(),
        short_names=short,
        subresources=sub,
    )


# Used only when discovery is unavailable (old API server, no permission): the resources a
# change policy usually controls, with kubectl's short names.
BUILTIN_RESOURCES: tuple[ResourceInfo, ...] = (
    _r("apps", "v1", "deployments", "Deployment", "deploy", sub=("scale", "status")),
    _r("apps", "v1", "statefulsets", "StatefulSet", "sts", sub=("scale", "status")),
    _r("apps", "v1", "daemonsets", "DaemonSet", "ds", sub=("status",)),
    _r("apps", "v1", "replicasets", "ReplicaSet", "rs", sub=("scale", "status")),
    _r(
        "",
        "v1",
        "pods",
        "Pod",
        "po",
        sub=("exec", "attach", "portforward", "proxy", "log", "status"),
    ),
    _r("", "v1", "services", "Service", "svc", sub=("proxy", "status")),
    _r("", "v1", "configmaps", "ConfigMap", "cm"),
    _r("", "v1", "secrets", "Secret"),
    _r("", "v1", "serviceaccounts", "ServiceAccount", "sa"),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", "pvc"),
    _r("batch", "v1", "jobs", "Job", sub=("status",)),
    _r("batch", "v1", "cronjobs", "CronJob", "cj", sub=("status",)),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", "ing", sub=("status",)),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", "netpol"),
    _r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", "hpa"),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", "pdb"),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
)


def resources_from_discovery(docs: Iterable[Mapping[str, Any]]) -> list[ResourceInfo]:
    """Flatten aggregated discovery (``apidiscovery.k8s.io/v2``) documents.

    Versions come in preference order, so the first version that serves a resource wins.
    """
    out: list[ResourceInfo] = []
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        for group_doc in doc.get("items") or ():
            group = str((group_doc.get("metadata") or {}).get("name") or "")
            for version_doc in group_doc.get("versions") or ():
                version = str(version_doc.get("version") or "")
                for res in version_doc.get("resources") or ():
                    plural = str(res.get("resource") or "")
                    if not plural or (group, plural) in seen:
                        continue
                    seen.add((group, plural))
                    kind = str((res.get("responseKind") or {}).get("kind") or "")
                    out.append(
                        ResourceInfo(
                            group=group,
                            version=version,
                            resource=plural,
                            kind=kind,
                            namespaced=res.get("scope") != "Cluster",
                            singular=str(res.get("singularResource") or kind.lower()),
                            short_names=tuple(res.get("shortNames") or ()),
                            subresources=tuple(
                                str(s.get("subresource"))
                                for s in res.get("subresources") or ()
                                if s.get("subresource")
                            ),
                        )
                    )
    return out


def split_resource(token: str) -> tuple[str, str | None, str]:
    """``deployments.apps/scale`` -> ``("deployments", "apps", "scale")``.

    No dot means "any group" (``None``); a trailing dot (``configmaps.``) pins the core group.
    """
    text = token.strip()
    if not text:
        raise flags.UsageError("empty resource name")
    base, _, sub = text.partition("/")
    name, dot, group = base.partition(".")
    return name.lower(), (group.lower() if dot else None), sub.lower()


def resolve_resource(token: str, known: Sequence[ResourceInfo]) -> tuple[ResourceInfo, str]:
    """The resource ``token`` names (plural, singular, short name or Kind; optionally
    ``.group``), plus any ``/subresource`` it carries.

    Like kubectl, a bare name prefers the core group, then the first group that has it; an
    unknown or ambiguous name is an error rather than a guess, because a wrong group would
    give a confidently wrong answer.
    """
    name, group, sub = split_resource(token)
    matches = [
        r
        for r in known
        if (group is None or r.group == group)
        and name in (r.resource, r.singular, r.kind.lower(), *r.short_names)
    ]
    if not matches:
        raise flags.UsageError(
            f"the server doesn't have a resource type {token!r}"
            " (use plural.group, e.g. deployments.apps)"
        )
    core = [r for r in matches if r.group == ""]
    chosen = core[0] if core else matches[0]
    if sub and chosen.subresources and sub not in chosen.subresources:
        raise flags.UsageError(f"{chosen.qualified} has no subresource {sub!r}")
    return chosen, sub


# -- can-i -------------------------------------------------------------------------------------


def build_request(
    *,
    verb: str,
    resource: ResourceInfo,
    subresource: str | None,
    namespace: str,
    name: str,
    user: str,
    groups: Sequence[str],
) -> request.Request:
    """The AdmissionReview request the API server would send for ``kubectl VERB RESOURCE NAME``.

    No object bodies: can-i asks about a change, not a specific patch, so it must not be
    mistaken for a metadata-only no-op update (which is always allowed).
    """
    op, sub = operation_for(verb, subresource=subresource)
    if op == "CONNECT" and resource.resource != "pods" and subresource is None:
        raise flags.UsageError(f"{verb} works on pods, not {resource.qualified}")
    return request.Request(
        uid="kubectl-changegate-can-i",
        user=user,
        groups=tuple(groups),
        operation=op,
        api_group=resource.group,
        api_version=resource.version,
        resource=resource.resource,
        subresource=sub,
        kind=resource.kind,
        namespace=namespace if resource.namespaced else "",
        name=name,
        dry_run=False,
        object=None,
        old_object=None,
    )
