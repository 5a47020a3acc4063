"""Pure translations from kubectl's vocabulary to changegate's: verbs, resources, windows.

Everything here is a plain function of its inputs so it can be tested without a cluster:
``kubectl changegate can-i patch deploy web`` must become exactly the ``decide.Request`` the
API server would have sent the webhook for ``kubectl patch deploy web``.
"""

from __future__ import annotations

import datetime
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.policy import decide, request

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


class UsageError(ValueError):
    """Bad command-line input; the message says what to type instead."""


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
        raise UsageError(
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
        raise UsageError("empty resource name")
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
        raise UsageError(
            f"the server doesn't have a resource type {token!r}"
            " (use plural.group, e.g. deployments.apps)"
        )
    core = [r for r in matches if r.group == ""]
    chosen = core[0] if core else matches[0]
    if sub and chosen.subresources and sub not in chosen.subresources:
        raise UsageError(f"{chosen.qualified} has no subresource {sub!r}")
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
) -> decide.Request:
    """The AdmissionReview request the API server would send for ``kubectl VERB RESOURCE NAME``.

    No object bodies: can-i asks about a change, not a specific patch, so it must not be
    mistaken for a metadata-only no-op update (which is always allowed).
    """
    op, sub = operation_for(verb, subresource=subresource)
    if op == "CONNECT" and resource.resource != "pods" and subresource is None:
        raise UsageError(f"{verb} works on pods, not {resource.qualified}")
    return decide.Request(
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


def parse_time(text: str) -> datetime.datetime:
    """RFC 3339 with an offset or ``Z``; a time without offset is ambiguous, so refused."""
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError as e:
        raise UsageError(
            f"invalid time {text!r}: use RFC 3339, e.g. 2026-12-01T22:00:00+09:00"
        ) from e
    if t.tzinfo is None:
        raise UsageError(f"time {text!r} needs an offset or Z, e.g. 2026-12-01T22:00:00+09:00")
    return t


_SINCE_RE = re.compile(r"^(\d+)([smhdw])$")


def parse_since(text: str) -> datetime.timedelta:
    """``30d``, ``12h``, ``2w`` -> timedelta (report periods are coarse; one unit is enough)."""
    m = _SINCE_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid period {text!r}: use forms like 30d, 12h, 2w")
    n, unit = int(m.group(1)), m.group(2)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[unit]
    return datetime.timedelta(seconds=n * seconds)


# -- request / emergency -------------------------------------------------------------------------

ALL_RESOURCES: Mapping[str, Any] = {
    "apiGroups": ["*"],
    "resources": ["*", "*/*"],
    "operations": ["*"],
}


def resource_rules(
    resources: Sequence[tuple[ResourceInfo, str]], operations: Sequence[str]
) -> list[dict[str, Any]]:
    """Window target rules, one per API group, in first-seen order."""
    by_group: dict[str, list[str]] = {}
    for info, sub in resources:
        names = by_group.setdefault(info.group, [])
        plural = f"{info.resource}/{sub}" if sub else info.resource
        if plural not in names:
            names.append(plural)
    ops = [o.upper() for o in operations]
    for op in ops:
        if op not in (*OPERATIONS, "*"):
            raise UsageError(f"unknown operation {op!r}: use CREATE, UPDATE, DELETE or CONNECT")
    return [
        {"apiGroups": [group], "resources": names, "operations": ops}
        for group, names in by_group.items()
    ]


def schedule_from_flags(
    *,
    start: str | None,
    end: str | None,
    cron: str | None,
    duration: str | None,
    time_zone: str | None,
) -> dict[str, Any]:
    """The ``spec.schedule`` for ``--start/--end`` or ``--cron/--duration/--tz`` (not both)."""
    one_off = start is not None or end is not None
    recurring = cron is not None or duration is not None
    if one_off == recurring:
        raise UsageError("give --start and --end, or --cron, --duration and --tz")
    if one_off:
        if start is None or end is None:
            raise UsageError("a one-off window needs both --start and --end")
        s, e = parse_time(start), parse_time(end)
        if e <= s:
            raise UsageError("--end must be after --start")
        return {"start": _rfc3339(s), "end": _rfc3339(e)}
    if cron is None or duration is None or time_zone is None:
        raise UsageError("a recurring window needs --cron, --duration and --tz")
    return {"cron": cron, "duration": duration, "timeZone": time_zone}


def _rfc3339(t: datetime.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def window_body(
    *,
    name: str | None,
    ticket: str,
    description: str,
    requester: str,
    identities: Sequence[str],
    namespaces: Sequence[str],
    rules: Sequence[Mapping[str, Any]],
    object_names: Sequence[str] = (),
    schedule: Mapping[str, Any],
    emergency_reason: str | None = None,
) -> dict[str, Any]:
    """A ChangeWindow manifest. Without ``name``, the API server generates one from the ticket.

    Optional fields are left out rather than written empty: the specHash covers the spec as
    stored, and approvers should sign exactly what the requester wrote.
    """
    target: dict[str, Any] = {"namespaces": list(namespaces), "resources": [dict(r) for r in rules]}
    if object_names:
        target["names"] = list(object_names)
    spec: dict[str, Any] = {
        "ticket": ticket,
        "requester": requester,
        "identities": list(identities),
        "targets": [target],
        "schedule": dict(schedule),
    }
    if description:
        spec["description"] = description
    if emergency_reason is not None:
        spec["emergency"] = {"reason": emergency_reason}
    metadata: dict[str, Any] = {"name": name} if name else {"generateName": _name_prefix(ticket)}
    return {
        "apiVersion": "changegate.io/v1alpha1",
        "kind": "ChangeWindow",
        "metadata": metadata,
        "spec": spec,
    }


def _name_prefix(ticket: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", ticket.lower()).strip("-")[:40] or "window"
    return f"{slug}-"


def approval_patch(*, spec: Mapping[str, Any], entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch that appends ``entry`` only if the spec is still the one the approver saw.

    The ``test`` is on the whole spec (approvals included), not on the resourceVersion: the
    approver reviewed the spec, and the controller writing the window's status (it does at
    every schedule boundary) or someone labelling it must not turn an approval into a
    conflict. Any spec edit in between makes the API server refuse the patch (HTTP 422).
    """
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/spec", "value": dict(spec)}]
    if spec.get("approvals") is None:
        ops.append({"op": "add", "path": "/spec/approvals", "value": [dict(entry)]})
    else:
        ops.append({"op": "add", "path": "/spec/approvals/-", "value": dict(entry)})
    return ops
