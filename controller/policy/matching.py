"""Who and what a rule covers: policy ``match``, window targets, subjects, label selectors.

The semantics follow Kubernetes wherever Kubernetes already has an answer, so platform teams
can reuse what they know from RBAC and admission webhook rules:

- ``apiGroups: ["*"]`` is every group; ``""`` is the core group.
- ``resources``: ``pods`` is the resource only, ``pods/exec`` one subresource, ``pods/*``
  every subresource of pods, ``*`` every resource (no subresources), ``*/*`` everything,
  ``*/scale`` the scale subresource of every resource.
- ``operations: ["*"]`` is every operation, CONNECT included.
- Label selectors: ``matchLabels`` and ``matchExpressions`` are ANDed; an empty selector
  matches every namespace.

Namespaces. A policy's ``namespaces`` and ``namespaceSelector`` are a union (a namespace is
covered when it is listed *or* its labels match), then ``excludeNamespaces`` is subtracted;
neither set means every namespace. A cluster-scoped request (namespace ``""``) is covered
only by a policy that names neither: a policy scoped to namespaces says nothing about
cluster-scoped objects, so it must not gate them. A window target always names namespaces or
a selector (the CRD requires one); an *empty* ``namespaceSelector: {}`` means "everywhere"
and is the way a window covers cluster-scoped objects.

A namespace the index has not seen (just created, or the watch lags) has no labels, so only
selectors that match an empty label set (``NotIn``/``DoesNotExist``) cover it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controller.model import crds

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


def resource_patterns(resource: str, subresource: str) -> tuple[str, ...]:
    """Every rule ``resources`` entry that covers this resource, wildcards included.

    Used both to match and as index keys, so a lookup is a handful of dict probes instead of
    a scan over every rule.
    """
    if subresource:
        return (f"{resource}/{subresource}", f"{resource}/*", f"*/{subresource}", "*/*")
    return (resource, "*", "*/*")


def group_patterns(api_group: str) -> tuple[str, ...]:
    return (api_group, "*")


def selector_matches(selector: crds.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics: every term must hold; empty selects everything."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In":
            if not present or labels[req.key] not in req.values:
                return False
        elif req.operator == "NotIn":
            if present and labels[req.key] in req.values:
                return False
        elif req.operator == "Exists":
            if not present:
                return False
        elif present:  # DoesNotExist
            return False
    return True


def selector_is_empty(selector: crds.LabelSelector | None) -> bool:
    return selector is not None and not selector.match_labels and not selector.match_expressions


def request_object_name(*, name: str, obj: Mapping[str, Any] | None) -> str:
    """The object's name; on CREATE the API server may only have it in the object's metadata.

    A CREATE with ``generateName`` has no name yet, so it cannot match a target that lists
    ``names`` — such a target is meant to pin specific objects, and a generated one is not.
    """
    if name:
        return name
    if obj:
        meta = obj.get("metadata")
        if isinstance(meta, Mapping):
            value = meta.get("name")
            if isinstance(value, str):
                return value
    return ""


def subject_matches(subject: crds.Subject, *, user: str, groups: Iterable[str]) -> bool:
    """User by username, Group by membership, ServiceAccount by its authenticated username."""
    if subject.kind == "User":
        return subject.name == user
    if subject.kind == "Group":
        return subject.name in groups
    return user == f"{SERVICE_ACCOUNT_PREFIX}{subject.namespace}:{subject.name}"


def subject_key(subject: crds.Subject) -> tuple[str, str]:
    """Index key of a subject; ``request_subject_keys`` yields the same keys for a request."""
    if subject.kind == "ServiceAccount":
        return ("User", f"{SERVICE_ACCOUNT_PREFIX}{subject.namespace}:{subject.name}")
    return (subject.kind, subject.name)


def request_subject_keys(*, user: str, groups: Iterable[str]) -> list[tuple[str, str]]:
    keys = [("User", user)]
    keys.extend(("Group", g) for g in groups)
    return keys


def rules_overlap(a: crds.ResourceRule, b: crds.ResourceRule) -> bool:
    """Whether some request could match both rules (used to find a window's policies)."""
    groups = (
        "*" in a.api_groups or "*" in b.api_groups or bool(set(a.api_groups) & set(b.api_groups))
    )
    if not groups:
        return False
    ops_a = {str(o) for o in a.operations}
    ops_b = {str(o) for o in b.operations}
    if "*" not in ops_a and "*" not in ops_b and not ops_a & ops_b:
        return False
    return any(_resources_overlap(x, y) for x in a.resources for y in b.resources)


def _resources_overlap(x: str, y: str) -> bool:
    if x == "*/*" or y == "*/*":
        return True
    xr, _, xs = x.partition("/")
    yr, _, ys = y.partition("/")
    if bool(xs) != bool(ys):
        return False
    same_resource = xr == "*" or yr == "*" or xr == yr
    same_sub = xs == "*" or ys == "*" or xs == ys
    return same_resource and same_sub


# -- API paths with the same effect ------------------------------------------------------------

SCALE = "scale"
POD_UPDATES = ("pods/ephemeralcontainers", "pods/resize")
"""Subresources that change a running pod as an update of the pod would (``kubectl debug``
adds an ephemeral container; in-place resize changes its resources)."""
POD_EVICTION = "pods/eviction"
"""Evicting a pod deletes it (``kubectl drain``, or a plain POST of an Eviction)."""


STATUS_LIKE = ("status", "finalize")
"""Subresources meant for controllers' bookkeeping -- which the API server nevertheless lets
change an object's metadata (verified against kube-apiserver v1.37: labels and annotations of
pods, services, ingresses, namespaces via ``/status``; a namespace's labels via ``/finalize``)."""

STATUS_VISIBLE_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")
"""The metadata a status-like write can change with an effect beyond status: a label moves a
pod into a Service or a namespace out of a policy, an annotation reconfigures a load balancer
or an ingress, a finalizer or owner reference changes what deletion does."""


def status_write_changes_metadata(
    obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None
) -> bool:
    """Whether a write to a status-like subresource changes ``STATUS_VISIBLE_METADATA``.

    Such a write has the same effect as an update of the object and is decided as one; a
    write that changes only status is never gated. Without both objects nothing can be said,
    so it counts as a change (fail closed).
    """
    if obj is None or old is None:
        return True
    new_meta = obj.get("metadata") or {}
    old_meta = old.get("metadata") or {}
    if not isinstance(new_meta, Mapping) or not isinstance(old_meta, Mapping):
        return True
    return any(
        (new_meta.get(f) or None) != (old_meta.get(f) or None) for f in STATUS_VISIBLE_METADATA
    )


def effective_rules(rules: Sequence[crds.ResourceRule]) -> tuple[crds.ResourceRule, ...]:
    """``rules`` plus every API path with the same effect as something they cover.

    A rule is written in terms of what a person means ("deleting pods", "updating
    deployments"); the API offers other doors to the same room. What controls an action
    controls its equivalents, wherever rules are read (policy match, window targets, the
    webhook's own rules), so a policy and a window always agree on them:

    - UPDATE of ``R`` -> UPDATE of ``R/scale`` (scaling is an update of ``spec.replicas``;
      for every resource, so custom resources with a scale subresource are covered too) and
      of ``R/status`` (which can change labels and annotations; ``decide`` gates such a write
      only when it does, see ``status_write_changes_metadata``);
    - UPDATE of pods -> UPDATE of ``pods/ephemeralcontainers`` and ``pods/resize``;
    - DELETE of pods -> CREATE of ``pods/eviction``.

    Paths with a *related* but different effect (pods/attach next to pods/exec, ReplicaSets
    next to Deployments) are not added: ``validation`` warns about them when a policy is
    applied instead.
    """
    out = list(rules)
    for rule in rules:
        ops = {str(o) for o in rule.operations}
        update = "UPDATE" in ops or "*" in ops
        delete = "DELETE" in ops or "*" in ops
        plain = [r for r in rule.resources if "/" not in r]
        if update and plain:
            out.append(
                crds.ResourceRule(
                    api_groups=list(rule.api_groups),
                    resources=[f"{r}/{sub}" for r in plain for sub in (SCALE, "status")],
                    operations=[crds.Operation.UPDATE],
                )
            )
        core = "" in rule.api_groups or "*" in rule.api_groups
        pods = core and any(r in ("pods", "*", "*/*") for r in rule.resources)
        if pods and update:
            out.append(
                crds.ResourceRule(
                    api_groups=[""], resources=list(POD_UPDATES), operations=[crds.Operation.UPDATE]
                )
            )
        if pods and delete:
            out.append(
                crds.ResourceRule(
                    api_groups=[""], resources=[POD_EVICTION], operations=[crds.Operation.CREATE]
                )
            )
    return tuple(out)


# -- rules and targets, compiled to sets once per snapshot --------------------------------------


class CompiledRule:
    """A ResourceRule as sets, so covering a request is a few hash lookups.

    ``patterns`` is ``resource_patterns(resource, subresource)`` of the request.
    """

    __slots__ = ("__weakref__", "all_groups", "all_ops", "groups", "ops", "resources")

    @classmethod
    def of(cls, rule: crds.ResourceRule) -> CompiledRule:
        """The compiled form of ``rule``, shared by every window and policy that names the
        same rule: thousands of windows name a handful of rules, and each compiled copy held
        three frozensets (~650 bytes; ~11 MB at 10,000 windows). Immutable, so sharing is
        safe; held weakly, so a rule nobody names any more is dropped."""
        key = (
            tuple(rule.api_groups),
            tuple(str(o) for o in rule.operations),
            tuple(rule.resources),
        )
        compiled = _COMPILED_RULES.get(key)
        if compiled is None:
            compiled = _COMPILED_RULES[key] = cls(rule)
        return compiled

    def __init__(self, rule: crds.ResourceRule) -> None:
        self.groups = frozenset(rule.api_groups)
        self.all_groups = "*" in self.groups
        self.ops = frozenset(str(o) for o in rule.operations)
        self.all_ops = "*" in self.ops
        self.resources = frozenset(rule.resources)

    def covers(self, *, api_group: str, patterns: tuple[str, ...], operation: str) -> bool:
        if not (self.all_groups or api_group in self.groups):
            return False
        if not (self.all_ops or operation in self.ops):
            return False
        resources = self.resources
        return any(p in resources for p in patterns)


_COMPILED_RULES: weakref.WeakValueDictionary[
    tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], CompiledRule
] = weakref.WeakValueDictionary()


NO_NAMES: frozenset[str] = frozenset()  # one for every target without names (most of them)


class CompiledTarget:
    """A WindowTarget as sets: what a target covers (``name`` already resolved for CREATE)."""

    __slots__ = ("everywhere", "names", "namespaces", "rules", "selector")

    def __init__(self, target: crds.WindowTarget) -> None:
        self.rules = tuple(CompiledRule.of(r) for r in effective_rules(target.resources))
        self.namespaces = frozenset(target.namespaces)
        self.selector = target.namespace_selector
        self.everywhere = selector_is_empty(target.namespace_selector)
        self.names = frozenset(target.names) if target.names else NO_NAMES

    def covers(
        self,
        *,
        api_group: str,
        patterns: tuple[str, ...],
        operation: str,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
    ) -> bool:
        if self.names and name not in self.names:
            return False
        if not any(
            r.covers(api_group=api_group, patterns=patterns, operation=operation)
            for r in self.rules
        ):
            return False
        if not namespace:
            return self.everywhere
        if namespace in self.namespaces or self.everywhere:
            return True
        return self.selector is not None and selector_matches(self.selector, labels)
