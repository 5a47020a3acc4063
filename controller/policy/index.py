"""Snapshot: an immutable, indexed view of policies, identities, windows and namespaces.

The webhook decides every request from one Snapshot, with no API call and no scan over every
window: windows are indexed by (namespace, apiGroup, resource) — with the rule's own
wildcards as keys, so a lookup is a few dict probes (see ``matching.resource_patterns``) —
policies by (apiGroup, resource), identities by subject. Window targets that use a
``namespaceSelector`` are indexed by resource only and their selector is evaluated per request
against the namespace's current labels, so a namespace relabel needs no re-index.

Expensive derived values are computed lazily and kept: a window's compiled Timeline (cron
parsing), its specHash (canonical JSON + SHA-256), and the last "open interval" answer of each
timeline together with the span of time it stays true. Decisions at nearby times then cost a
comparison instead of a cron walk. These caches are pure functions of immutable inputs, so
sharing them between snapshots (``Snapshot.build(previous=...)``) is safe; the store uses
that to rebuild after a watch event without recompiling 10,000 windows.

specHash. Given (``window_spec_hashes``, from the store) or computed from ``raw_window_specs``,
the hash is of the spec exactly as the API server stores it — what the operator publishes
and approvers sign. Without either (tests, tools) the spec is re-serialised from the model
(``approvals.model_spec``: by alias, no None, no defaults); the two agree only when the raw
spec was written in canonical forms (``2h`` not ``120m``, no explicit empty lists), so the
operator always has the store hash the raw specs.
"""

from __future__ import annotations

import datetime
import gc
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from controller.model import crds
from controller.policy import approvals, limits, matching, schedules

FAR_FUTURE = datetime.datetime.max.replace(tzinfo=datetime.UTC)
_EMPTY_LABELS: Mapping[str, str] = {}
_MEMO_LIMIT = 100_000


class CachedTimeline:
    """A Timeline that remembers its last answer and for how long it stays true.

    ``interval_at(t)`` is constant on [lo, hi): inside an interval that is the interval
    itself; outside, it is from ``t`` up to the next interval's start. Repeated questions in
    that span (the common case: many requests in the same minute) cost two comparisons.
    The timeline itself is built on first use, so a snapshot of 10,000 windows does not parse
    10,000 crons up front.
    """

    __slots__ = ("_at", "_factory", "_next", "_timeline")

    compiled: ClassVar[int] = 0
    """Timelines built so far, process-wide (a figure for the operator's metrics and bench:
    a watch event should compile only the timelines of what it changed)."""

    def __init__(self, factory: Callable[[], schedules.Timeline]) -> None:
        self._factory = factory
        self._timeline: schedules.Timeline | None = None
        # Each cached answer is one tuple, replaced whole: the webhook (event loop) and the
        # status planner (a worker thread) may ask at once, and must never see half of one.
        self._at: tuple[datetime.datetime, datetime.datetime, schedules.Interval | None] | None
        self._at = None  # (lo, hi, interval_at answer on [lo, hi))
        self._next: tuple[datetime.datetime, schedules.Interval | None] | None = None

    @property
    def timeline(self) -> schedules.Timeline:
        if self._timeline is None:
            self._timeline = self._factory()
            CachedTimeline.compiled += 1
        return self._timeline

    def interval_at(self, t: datetime.datetime) -> schedules.Interval | None:
        cached = self._at
        if cached is not None and cached[0] <= t < cached[1]:
            return cached[2]
        timeline = self.timeline
        interval = timeline.interval_at(t)
        if interval is not None:
            lo, hi = interval.start, interval.end
        else:
            upcoming = self.next_interval(t)
            lo, hi = t, (upcoming.start if upcoming is not None else FAR_FUTURE)
        self._at = (lo, hi, interval)
        return interval

    def is_open(self, t: datetime.datetime) -> bool:
        return self.interval_at(t) is not None

    def next_interval(self, t: datetime.datetime) -> schedules.Interval | None:
        """Cached too: no interval starts in (t0, t] while t < next.start, so the answer for
        t0 holds for every t in [t0, next.start)."""
        cached = self._next
        if cached is not None and cached[0] <= t and (cached[1] is None or t < cached[1].start):
            return cached[1]
        upcoming = self.timeline.next_interval(t)
        self._next = (t, upcoming)
        return upcoming


class CompiledWindow:
    """A ChangeWindow with its timeline and specHash, computed once and kept."""

    __slots__ = (
        "_approvers",
        "_hash",
        "_limits",
        "emergency",
        "name",
        "targets",
        "timeline",
        "uses_selector",
        "window",
    )

    def __init__(self, window: crds.ChangeWindow, spec_hash: str | None) -> None:
        """``spec_hash``: of the spec as the API server stores it (the store computes it when
        the event arrives and keeps no raw spec); None: hashed from the model when asked."""
        self.name = window.metadata.name
        self.window = window
        schedule = window.spec.schedule
        self.timeline = CachedTimeline(lambda: schedules.from_schedule(schedule))
        self.targets = tuple(matching.CompiledTarget(t) for t in window.spec.targets)
        self.emergency = window.spec.emergency is not None
        self.uses_selector = any(t.selector is not None for t in self.targets)
        self._hash = spec_hash
        # policy name -> (the policy version counted under, its state): a policy edit (trusted
        # keys, required count) is counted afresh.
        self._approvers: dict[str, tuple[crds.ChangePolicy, approvals.ApprovalState]] = {}
        self._limits: dict[
            str, tuple[crds.ChangePolicy, Mapping[str, Mapping[str, str]], tuple[str, ...]]
        ] = {}

    def approval_state(
        self, policy: CompiledPolicy, *, namespace: str | None = None
    ) -> approvals.ApprovalState:
        """Approval state under ``policy``; counted once per (window, policy version).

        ``namespace`` restricts the count to approvals that recorded it (a request covered
        only through a selector); that is not memoised, the list is at most 32 entries.
        """
        if namespace is not None:
            return approvals.approval_state(
                self.window, current_hash=self.spec_hash, policy=policy.policy, namespace=namespace
            )
        cached = self._approvers.get(policy.name)
        if cached is not None and cached[0] is policy.policy:
            return cached[1]
        state = approvals.approval_state(
            self.window, current_hash=self.spec_hash, policy=policy.policy
        )
        self._approvers[policy.name] = (policy.policy, state)
        return state

    def limit_violations(self, policy: CompiledPolicy, snapshot: Snapshot) -> tuple[str, ...]:
        """How this window breaks ``policy``'s windowLimits (empty: it does not).

        Memoised per policy name while the policy version and the namespaces (selectors
        resolve against their labels) are the very objects it was computed for: compiled
        windows outlive snapshots, so anything else could answer from a stale view.
        """
        limits_ = policy.policy.spec.window_limits
        if limits_ is None:
            return ()
        cached = self._limits.get(policy.name)
        if cached is not None and cached[0] is policy.policy and cached[1] is snapshot.namespaces:
            return cached[2]
        found = tuple(
            limits.violations(
                limits_, self.window, covered=lambda: snapshot.window_namespaces(self.window)
            )
        )
        self._limits[policy.name] = (policy.policy, snapshot.namespaces, found)
        return found

    def approval_namespace(
        self,
        *,
        api_group: str,
        resource: str,
        subresource: str,
        operation: str,
        namespace: str,
        name: str,
    ) -> str | None:
        """The namespace an approval must have recorded to cover this request, or None.

        None when a target lists the request's namespace by name (what the approver signed
        names it) or the request is cluster-scoped; otherwise the window covers the request
        only through a selector, so only approvals that saw the namespace count.
        """
        if not namespace:
            return None
        patterns = matching.resource_patterns(resource, subresource)
        for t in self.targets:
            if namespace in t.namespaces and t.covers(
                api_group=api_group,
                patterns=patterns,
                operation=operation,
                namespace=namespace,
                name=name,
                labels=_EMPTY_LABELS,
            ):
                return None
        return namespace

    def reusable_for(self, window: crds.ChangeWindow, spec_hash: str | None) -> bool:
        """Whether this compiled form serves ``window`` (the same model object, and the same
        specHash when one is given) in the next snapshot."""
        return self.window is window and spec_hash in (None, self._hash)

    @property
    def spec_hash(self) -> str:
        if self._hash is None:
            self._hash = approvals.spec_hash(approvals.model_spec(self.window.spec))
        return self._hash

    def covers(
        self,
        *,
        api_group: str,
        resource: str,
        subresource: str,
        operation: str,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
    ) -> bool:
        patterns = matching.resource_patterns(resource, subresource)
        return any(
            t.covers(
                api_group=api_group,
                patterns=patterns,
                operation=operation,
                namespace=namespace,
                name=name,
                labels=labels,
            )
            for t in self.targets
        )


class CompiledPolicy:
    """A ChangePolicy with compiled ticket pattern and cached blackout timelines."""

    __slots__ = (
        "blackouts",
        "effective",
        "exclude",
        "name",
        "namespaces",
        "policy",
        "rules",
        "scoped",
        "selector",
        "ticket_re",
    )

    def __init__(self, policy: crds.ChangePolicy) -> None:
        self.name = policy.metadata.name
        self.policy = policy
        match = policy.spec.match
        self.effective = matching.effective_rules(match.resources)
        self.rules = tuple(matching.CompiledRule.of(r) for r in self.effective)
        self.namespaces = frozenset(match.namespaces)
        self.exclude = frozenset(match.exclude_namespaces)
        self.selector = match.namespace_selector
        self.scoped = bool(self.namespaces) or self.selector is not None
        pattern = policy.spec.ticket_pattern
        self.ticket_re: re.Pattern[str] | None = re.compile(pattern) if pattern else None
        self.blackouts: tuple[tuple[crds.Blackout, CachedTimeline], ...] = tuple(
            (b, CachedTimeline(_blackout_factory(b))) for b in policy.spec.blackouts
        )

    def covers_namespace(self, namespace: str, labels: Mapping[str, str]) -> bool:
        """Namespaces and selector are a union, minus ``excludeNamespaces``; neither means
        every namespace; "" (cluster-scoped) only then (see ``matching``)."""
        if not namespace:
            return not self.scoped
        if namespace in self.exclude:
            return False
        if not self.scoped or namespace in self.namespaces:
            return True
        return self.selector is not None and matching.selector_matches(self.selector, labels)

    def ticket_ok(self, ticket: str) -> bool:
        return self.ticket_re is None or self.ticket_re.search(ticket) is not None

    def active_blackout(
        self, t: datetime.datetime
    ) -> tuple[crds.Blackout, schedules.Interval] | None:
        for blackout, timeline in self.blackouts:
            interval = timeline.interval_at(t)
            if interval is not None:
                return blackout, interval
        return None


def _blackout_factory(b: crds.Blackout) -> Callable[[], schedules.Timeline]:
    return lambda: schedules.blackout(b)


class CompiledIdentity:
    """An AuthorizedIdentity with its (cached) work-hours timeline."""

    __slots__ = ("identity", "name", "work_hours")

    def __init__(self, identity: crds.AuthorizedIdentity) -> None:
        self.name = identity.metadata.name
        self.identity = identity
        wh = identity.spec.work_hours
        self.work_hours: CachedTimeline | None = (
            CachedTimeline(lambda: schedules.work_hours(wh)) if wh is not None else None
        )

    def matches(self, *, user: str, groups: Iterable[str]) -> bool:
        return any(
            matching.subject_matches(s, user=user, groups=groups)
            for s in self.identity.spec.subjects
        )

    def expired(self, t: datetime.datetime) -> bool:
        until = self.identity.spec.valid_until
        return until is not None and t >= until

    @property
    def zone(self) -> str | None:
        wh = self.identity.spec.work_hours
        return wh.time_zone if wh is not None else None


_K = TypeVar("_K")
_V = TypeVar("_V")
_Key4 = tuple[str, str, str, str]
_Key2 = tuple[str, str]


class _WindowIndex:
    """The window lookups of one snapshot, copy-on-write between snapshots.

    Windows are indexed by (namespace, group, resource, operation) straight from each rule,
    so an entry found by a probe already covers the request's namespace, group, resource and
    operation: only ``names`` is left to check (the entry carries them). Selector targets are
    resolved against the namespaces we know, once per distinct selector. A namespace we do not
    know has no labels, so a selector that matches an empty label set (NotIn, DoesNotExist,
    ``{}``) could cover it, and ``{}`` also covers cluster-scoped objects: those stay in a
    per-resource list that is checked per request.

    ``copy()`` shares the buckets; after it, every change replaces a bucket instead of
    mutating it, so the snapshot the copy came from never changes under a reader.
    """

    __slots__ = ("by_namespace", "by_selector", "namespaces", "owned", "resolved")

    def __init__(self, namespaces: Mapping[str, Mapping[str, str]]) -> None:
        self.namespaces = namespaces
        self.by_namespace: dict[_Key4, list[_Entry]] = {}
        self.by_selector: dict[_Key2, list[_Entry]] = {}
        self.resolved: dict[str, tuple[str, ...] | None] = {}
        self.owned: set[object] | None = None  # None: every bucket is ours (a fresh index)

    def copy(self, namespaces: Mapping[str, Mapping[str, str]] | None = None) -> _WindowIndex:
        """A copy sharing the buckets; with new ``namespaces``, selectors resolve afresh (the
        caller then re-adds the windows that use selectors)."""
        other = _WindowIndex(self.namespaces if namespaces is None else namespaces)
        other.by_namespace = dict(self.by_namespace)
        other.by_selector = dict(self.by_selector)
        if namespaces is None:
            other.resolved = self.resolved  # a function of the (same) namespaces
        other.owned = set()  # buckets copied since: ours to append to
        return other

    def _selected(self, selector: crds.LabelSelector) -> tuple[str, ...] | None:
        key = selector.model_dump_json()
        if key not in self.resolved:
            self.resolved[key] = (
                None
                if matching.selector_matches(selector, _EMPTY_LABELS)
                else tuple(
                    ns
                    for ns, labels in self.namespaces.items()
                    if matching.selector_matches(selector, labels)
                )
            )
        return self.resolved[key]

    def _entries(self, w: CompiledWindow) -> tuple[list[tuple[_Key4, frozenset[str]]], list[_Key2]]:
        by_ns: list[tuple[_Key4, frozenset[str]]] = []
        by_sel: list[_Key2] = []
        for target, compiled in zip(w.window.spec.targets, w.targets, strict=True):
            keys = _rule_op_keys(matching.effective_rules(target.resources))
            selector = target.namespace_selector
            selected = self._selected(selector) if selector is not None else ()
            if selected is None:
                by_sel.extend((g, r) for g, r, _ in keys)
                continue  # the per-request check covers its listed namespaces too
            for ns in (*target.namespaces, *selected):
                by_ns.extend(((ns, g, r, op), compiled.names) for g, r, op in keys)
        return by_ns, by_sel

    def add(self, w: CompiledWindow) -> None:
        by_ns, by_sel = self._entries(w)
        # One entry per distinct ``names``, shared by every key it is filed under (a window
        # is filed under ~14 keys: a tuple each was ~0.7 KB per window).
        entries: dict[frozenset[str], _Entry] = {_ALL_NAMES: (w, _ALL_NAMES)}
        for key4, names in by_ns:
            _push(self.by_namespace, key4, entries.setdefault(names, (w, names)), owned=self.owned)
        for key2 in by_sel:
            _push(self.by_selector, key2, entries[_ALL_NAMES], owned=self.owned)

    def remove(self, w: CompiledWindow, *, resolved_by: _WindowIndex | None = None) -> None:
        """Remove ``w``'s entries, as ``resolved_by`` (default: this index) placed them."""
        by_ns, by_sel = (resolved_by or self)._entries(w)
        for key4, _ in by_ns:
            _drop(self.by_namespace, key4, w, owned=self.owned)
        for key2 in by_sel:
            _drop(self.by_selector, key2, w, owned=self.owned)


def _same(now: Mapping[str, object], before: Mapping[str, object]) -> bool:
    """The same compiled objects under the same names (identity: reused, not rebuilt)."""
    return len(now) == len(before) and all(before.get(n) is v for n, v in now.items())


_Entry = tuple[CompiledWindow, frozenset[str]]  # (window, names it is limited to; empty: all)
_ALL_NAMES = matching.NO_NAMES  # a target without names: the one empty set they all share


def _push(
    index: dict[_K, list[_Entry]], key: _K, entry: _Entry, *, owned: set[object] | None
) -> None:
    """Append ``entry`` under ``key``; a bucket shared with an older snapshot is copied first
    (once: the copy is then ours, so a burst of changes stays linear)."""
    bucket = index.get(key)
    if bucket is None:
        index[key] = [entry]
        if owned is not None:
            owned.add((id(index), key))
        return
    if bucket[-1][0] is entry[0] and bucket[-1][1] == entry[1]:
        return  # the same window and names under the same key again (two rules or targets)
    if owned is not None and (id(index), key) not in owned:
        bucket = index[key] = list(bucket)
        owned.add((id(index), key))
    bucket.append(entry)


def _drop(
    index: dict[_K, list[_Entry]], key: _K, window: CompiledWindow, *, owned: set[object] | None
) -> None:
    bucket = index.get(key)
    if bucket is None:
        return
    kept = [e for e in bucket if e[0] is not window]
    if kept:
        index[key] = kept
        if owned is not None:
            owned.add((id(index), key))
    else:
        del index[key]


NAMESPACE_SCOPE_CHANGES = crds.ResourceRule(
    api_groups=[""],
    resources=["namespaces", *(f"namespaces/{sub}" for sub in matching.STATUS_LIKE)],
    operations=[crds.Operation.UPDATE, crds.Operation.DELETE],
)
"""Changes of a Namespace object that can move it across a policy's scope (``decide``): its
labels change through an update, ``/status`` or ``/finalize``; deleting it removes it."""

INCREMENTAL_LIMIT = 2_000
"""Above this many changed windows a full re-index is as cheap as patching the old one."""


class Snapshot:
    """Immutable view the webhook decides from. Build it with ``Snapshot.build``."""

    def __init__(
        self,
        *,
        policies: dict[str, CompiledPolicy],
        identities: dict[str, CompiledIdentity],
        windows: dict[str, CompiledWindow],
        namespaces: Mapping[str, Mapping[str, str]],
        builtin_exemptions: bool,
        self_subject: crds.Subject | None,
        window_index: _WindowIndex | None = None,
        windows_compiled: int | None = None,
        window_models: dict[str, crds.ChangeWindow] | None = None,
        same_policies_as: Snapshot | None = None,
        same_identities_as: Snapshot | None = None,
    ) -> None:
        self.compiled_policies = policies
        self.compiled_identities = identities
        self.compiled_windows = windows
        self.policies: Mapping[str, crds.ChangePolicy] = {n: p.policy for n, p in policies.items()}
        self.identities: Mapping[str, crds.AuthorizedIdentity] = {
            n: i.identity for n, i in identities.items()
        }
        self.windows: Mapping[str, crds.ChangeWindow] = (
            window_models
            if window_models is not None
            else {n: w.window for n, w in windows.items()}
        )
        self.namespaces = namespaces
        self.builtin_exemptions = builtin_exemptions
        self.self_subject = self_subject
        self.windows_compiled = len(windows) if windows_compiled is None else windows_compiled
        """How many of ``compiled_windows`` this build made (the rest came from ``previous``)."""

        # An index of unchanged inputs is the previous snapshot's (never mutated once built).
        self._policies_by_resource: dict[_Key2, list[CompiledPolicy]]
        if same_policies_as is not None:
            self._policies_by_resource = same_policies_as._policies_by_resource
        else:
            self._policies_by_resource = {}
            for p in sorted(policies.values(), key=lambda p: p.name):
                for key in _rule_keys(p.effective):
                    bucket = self._policies_by_resource.setdefault(key, [])
                    if not bucket or bucket[-1] is not p:
                        bucket.append(p)

        if window_index is None:
            window_index = _WindowIndex(namespaces)
            for w in windows.values():
                window_index.add(w)
        self._windex = window_index
        self._windows_by_namespace = window_index.by_namespace
        self._windows_by_selector = window_index.by_selector

        self._identities_by_subject: dict[_Key2, list[CompiledIdentity]]
        if same_identities_as is not None:
            self._identities_by_subject = same_identities_as._identities_by_subject
        else:
            self._identities_by_subject = {}
            for i in sorted(identities.values(), key=lambda i: i.name):
                for s in i.identity.spec.subjects:
                    _add(self._identities_by_subject, matching.subject_key(s), i)

        self._policies_for_window: dict[str, tuple[CompiledPolicy, ...]] = {}
        # Memos: answers that depend only on this immutable snapshot and a small key. Bounded,
        # so odd keys (typos, many CRDs, many users) cannot grow them without limit.
        self._controlling_by_rule: dict[tuple[str, str, str, str], tuple[CompiledPolicy, ...]] = {}
        self._controlling: dict[tuple[str, str, str, str, str], tuple[CompiledPolicy, ...]] = {}
        self._identities_memo: dict[tuple[str, tuple[str, ...]], tuple[CompiledIdentity, ...]] = {}
        self._selector_memo: dict[str, frozenset[str]] = {}
        self._covering: dict[
            tuple[str, str, str, str, str], tuple[tuple[_Entry, ...], tuple[list[_Entry], ...]]
        ] = {}

    @classmethod
    def build(
        cls,
        *,
        policies: Iterable[crds.ChangePolicy],
        identities: Iterable[crds.AuthorizedIdentity],
        windows: Iterable[crds.ChangeWindow],
        namespaces: Mapping[str, Mapping[str, str]],
        raw_window_specs: Mapping[str, Mapping[str, Any]] | None = None,
        window_spec_hashes: Mapping[str, str] | None = None,
        builtin_exemptions: bool = True,
        self_subject: crds.Subject | None = None,
        previous: Snapshot | None = None,
        changed_windows: Mapping[str, crds.ChangeWindow | None] | None = None,
    ) -> Snapshot:
        """Index the given objects. ``previous`` lends what did not change.

        Each window's specHash comes from ``window_spec_hashes`` (the store's, computed from
        the raw spec when its event arrived) or is computed here from ``raw_window_specs``
        (tests, tools); a window in neither is hashed from its model.

        ``changed_windows`` (with ``previous``): only these windows changed since ``previous``
        (None: deleted); ``windows`` is then not read, and the build costs the changes, not
        every window (a Python loop over 10,000 windows was ~15 ms per watch event).

        "Unchanged" is object identity (``is``) of the model and an equal specHash: the store keeps
        the same objects until a watch event replaces them, so this is exact and O(1) per
        object. Compiled windows/policies/identities (timelines, hashes, caches) are reused;
        the window index is patched for the changed windows instead of rebuilt, unless the
        namespaces (and so the selector resolution) changed.
        """
        # Building allocates hundreds of thousands of small objects next to a million
        # long-lived ones (the models); letting the cyclic GC walk them all several times
        # mid-build tripled the build time. Nothing built here forms reference cycles.
        paused = gc.isenabled()
        gc.disable()
        try:
            return cls._build(
                policies=policies,
                identities=identities,
                windows=windows,
                namespaces=namespaces,
                spec_hashes={
                    **{n: approvals.spec_hash(r) for n, r in (raw_window_specs or {}).items()},
                    **(window_spec_hashes or {}),
                },
                builtin_exemptions=builtin_exemptions,
                self_subject=self_subject,
                previous=previous,
                changed_windows=changed_windows,
            )
        finally:
            if paused:
                gc.enable()

    @classmethod
    def _build(
        cls,
        *,
        policies: Iterable[crds.ChangePolicy],
        identities: Iterable[crds.AuthorizedIdentity],
        windows: Iterable[crds.ChangeWindow],
        namespaces: Mapping[str, Mapping[str, str]],
        spec_hashes: Mapping[str, str],
        builtin_exemptions: bool,
        self_subject: crds.Subject | None,
        previous: Snapshot | None,
        changed_windows: Mapping[str, crds.ChangeWindow | None] | None = None,
    ) -> Snapshot:
        prev_p = previous.compiled_policies if previous is not None else {}
        prev_i = previous.compiled_identities if previous is not None else {}
        prev_w = previous.compiled_windows if previous is not None else {}

        cp: dict[str, CompiledPolicy] = {}
        for p in policies:
            old_p = prev_p.get(p.metadata.name)
            cp[p.metadata.name] = (
                old_p if old_p is not None and old_p.policy is p else CompiledPolicy(p)
            )
        ci: dict[str, CompiledIdentity] = {}
        for i in identities:
            old_i = prev_i.get(i.metadata.name)
            ci[i.metadata.name] = (
                old_i if old_i is not None and old_i.identity is i else CompiledIdentity(i)
            )
        cw: dict[str, CompiledWindow]
        added: list[CompiledWindow] = []
        removed: list[CompiledWindow] = []
        models: dict[str, crds.ChangeWindow] | None = None
        if previous is not None and changed_windows is not None:
            cw = dict(prev_w)
            models = dict(previous.windows)
            for name, w in changed_windows.items():
                old_w = prev_w.get(name)
                given = spec_hashes.get(name)
                if w is None:
                    if old_w is not None:
                        del cw[name], models[name]
                        removed.append(old_w)
                    continue
                if old_w is not None and old_w.reusable_for(w, given):
                    continue
                cw[name] = CompiledWindow(w, given)
                models[name] = w
                added.append(cw[name])
                if old_w is not None:
                    removed.append(old_w)
        else:
            cw = {}
            for w in windows:
                name = w.metadata.name
                given = spec_hashes.get(name)
                old_w = prev_w.get(name)
                if old_w is not None and old_w.reusable_for(w, given):
                    cw[name] = old_w
                else:
                    cw[name] = CompiledWindow(w, given)
                    added.append(cw[name])
            removed = [w for n, w in prev_w.items() if cw.get(n) is not w]

        current: Mapping[str, Mapping[str, str]] = dict(namespaces)
        window_index: _WindowIndex | None = None
        if previous is not None:
            same_namespaces = previous.namespaces == current
            if same_namespaces:
                current = previous.namespaces  # share it: snapshots never mutate it
            # Namespace labels changed: windows with selectors move between namespaces.
            reresolve = (
                []
                if same_namespaces
                else [w for n, w in prev_w.items() if w.uses_selector and cw.get(n) is w]
            )
            if len(removed) + len(added) + len(reresolve) <= INCREMENTAL_LIMIT:
                old_index = previous._windex
                window_index = old_index.copy(None if same_namespaces else current)
                for old in (*removed, *reresolve):
                    window_index.remove(old, resolved_by=old_index)
                for new in (*added, *reresolve):
                    window_index.add(new)
        return cls(
            policies=cp,
            identities=ci,
            windows=cw,
            namespaces=current,
            builtin_exemptions=builtin_exemptions,
            self_subject=self_subject,
            window_index=window_index,
            windows_compiled=len(added),
            window_models=models,
            same_policies_as=previous if previous is not None and _same(cp, prev_p) else None,
            same_identities_as=previous if previous is not None and _same(ci, prev_i) else None,
        )

    # -- lookups ---------------------------------------------------------------------------

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        return self.namespaces.get(namespace, _EMPTY_LABELS) if namespace else _EMPTY_LABELS

    def controlling_policies(
        self,
        *,
        api_group: str,
        resource: str,
        subresource: str,
        operation: str,
        namespace: str,
        labels: Mapping[str, str] | None = None,
    ) -> tuple[CompiledPolicy, ...]:
        """Every policy whose ``match`` covers the request, in name order.

        The rule part is memoised per (group, resource, subresource, operation) — a small key
        space that real traffic repeats; the namespace part is a set lookup or a selector.
        ``labels`` overrides the index's labels for the namespace (read from the API server
        when the index has not seen it yet); such answers are not memoised.
        """
        by_rule = self._by_rule(
            api_group=api_group, resource=resource, subresource=subresource, operation=operation
        )
        if not by_rule:
            return by_rule
        if labels is not None:
            return tuple(p for p in by_rule if p.covers_namespace(namespace, labels))
        memo_key = (api_group, resource, subresource, operation, namespace)
        memo = self._controlling.get(memo_key)
        if memo is None:
            ns_labels = self.namespace_labels(namespace)
            memo = tuple(p for p in by_rule if p.covers_namespace(namespace, ns_labels))
            if len(self._controlling) >= _MEMO_LIMIT:
                self._controlling.clear()
            self._controlling[memo_key] = memo
        return memo

    def _by_rule(
        self, *, api_group: str, resource: str, subresource: str, operation: str
    ) -> tuple[CompiledPolicy, ...]:
        """Policies whose rules (equivalent paths included) match, whatever the namespace."""
        rule_key = (api_group, resource, subresource, operation)
        by_rule = self._controlling_by_rule.get(rule_key)
        if by_rule is None:
            patterns = matching.resource_patterns(resource, subresource)
            seen: dict[str, CompiledPolicy] = {}
            for key in _request_keys(api_group, resource, subresource):
                for p in self._policies_by_resource.get(key, ()):
                    if p.name not in seen and any(
                        r.covers(api_group=api_group, patterns=patterns, operation=operation)
                        for r in p.rules
                    ):
                        seen[p.name] = p
            by_rule = tuple(seen[n] for n in sorted(seen))
            if len(self._controlling_by_rule) >= _MEMO_LIMIT:
                self._controlling_by_rule.clear()  # bounded: odd keys cannot grow it forever
            self._controlling_by_rule[rule_key] = by_rule
        return by_rule

    def prime(self, now: datetime.datetime) -> None:
        """Compile every timeline and fill its open-interval cache for ``now``.

        Decisions do this lazily; priming once after the initial sync (and the caches
        surviving later rebuilds via ``previous``) keeps the first request that touches a
        recurring window from paying for its cron walk.
        """
        for w in self.compiled_windows.values():
            w.timeline.interval_at(now)
        for i in self.compiled_identities.values():
            if i.work_hours is not None:
                i.work_hours.interval_at(now)
        for p in self.compiled_policies.values():
            p.active_blackout(now)

    def covering_windows(
        self,
        *,
        api_group: str,
        resource: str,
        subresource: str,
        operation: str,
        namespace: str,
        name: str,
    ) -> list[CompiledWindow]:
        """Every window with a target covering the request, in name order.

        The dict probes for (namespace, group, resource, operation) are memoised per snapshot,
        already merged per window and in name order, so a repeated request (the API server
        sends the same object's UPDATEs over and over) costs a filter on ``names``. Targets
        whose selector could match an unknown namespace are still checked per request.
        """
        memo_key = (namespace, api_group, resource, subresource, operation)
        probed = self._covering.get(memo_key)
        if probed is None:
            probed = self._probe_windows(
                api_group=api_group,
                resource=resource,
                subresource=subresource,
                operation=operation,
                namespace=namespace,
            )
            if len(self._covering) >= _MEMO_LIMIT:
                self._covering.clear()
            self._covering[memo_key] = probed
        entries, selector_lists = probed
        if not selector_lists:
            return [w for w, names in entries if not names or name in names]
        found = {w.name: w for w, names in entries if not names or name in names}
        labels = self.namespace_labels(namespace)
        for listed in selector_lists:
            for w, _ in listed:
                if w.name not in found and w.covers(
                    api_group=api_group,
                    resource=resource,
                    subresource=subresource,
                    operation=operation,
                    namespace=namespace,
                    name=name,
                    labels=labels,
                ):
                    found[w.name] = w
        return [found[n] for n in sorted(found)]

    def _probe_windows(
        self,
        *,
        api_group: str,
        resource: str,
        subresource: str,
        operation: str,
        namespace: str,
    ) -> tuple[tuple[_Entry, ...], tuple[list[_Entry], ...]]:
        """The namespace-indexed entries for a request, one per window in name order (its
        ``names`` merged: a window covers a name if any of its entries does), and the
        selector buckets to check per request."""
        merged: dict[str, _Entry] = {}
        by_namespace = self._windows_by_namespace
        selector_lists: list[list[_Entry]] = []
        for g, r in _request_keys(api_group, resource, subresource):
            if namespace:
                for op in (operation, "*"):
                    for w, names in by_namespace.get((namespace, g, r, op), ()):
                        seen = merged.get(w.name)
                        if seen is None:
                            merged[w.name] = (w, names)
                        elif seen[1] and names:
                            merged[w.name] = (w, seen[1] | names)
                        elif seen[1]:
                            merged[w.name] = (w, _ALL_NAMES)
            listed = self._windows_by_selector.get((g, r))
            if listed:
                selector_lists.append(listed)
        return tuple(merged[n] for n in sorted(merged)), tuple(selector_lists)

    def identities_for(self, *, user: str, groups: Iterable[str]) -> tuple[CompiledIdentity, ...]:
        """Identities with a subject matching the user, in name order."""
        memo_key = (user, tuple(groups))
        memo = self._identities_memo.get(memo_key)
        if memo is not None:
            return memo
        found: dict[str, CompiledIdentity] = {}
        for key in matching.request_subject_keys(user=user, groups=memo_key[1]):
            for i in self._identities_by_subject.get(key, ()):
                found[i.name] = i
        result = tuple(found[n] for n in sorted(found))
        if len(self._identities_memo) >= _MEMO_LIMIT:
            self._identities_memo.clear()
        self._identities_memo[memo_key] = result
        return result

    def policies_for_window(self, window: crds.ChangeWindow) -> tuple[CompiledPolicy, ...]:
        """Policies that control some target of ``window`` (whose approval rules apply).

        A target's namespaces are its listed ones plus those whose current labels match its
        selector; a policy with no namespace scope controls every namespace.
        """
        name = window.metadata.name
        compiled = self.compiled_windows.get(name)
        cacheable = compiled is not None and compiled.window is window
        if cacheable and name in self._policies_for_window:
            return self._policies_for_window[name]
        result = tuple(
            p
            for p in sorted(self.compiled_policies.values(), key=lambda p: p.name)
            if any(self._policy_controls_target(p, t) for t in window.spec.targets)
        )
        if cacheable:
            self._policies_for_window[name] = result
        return result

    def _policy_controls_target(self, p: CompiledPolicy, target: crds.WindowTarget) -> bool:
        match = p.policy.spec.match
        rules = matching.effective_rules(target.resources)
        # A target that names namespace updates or deletions (relabelling, deleting) concerns
        # the policies whose scope that moves. Only when named: a wildcard target would
        # otherwise make every label-selected policy an approver of every broad window; its
        # relabels stay controlled, they just cannot be approved through it.
        scope_change = any(
            "namespaces" in r.resources and matching.rules_overlap(NAMESPACE_SCOPE_CHANGES, r)
            for r in rules
        )
        if not scope_change and not any(
            matching.rules_overlap(a, b) for a in p.effective for b in rules
        ):
            return False
        if not match.namespaces and match.namespace_selector is None:
            return True
        if scope_change and p.selector is not None:
            return True  # a relabel can move any namespace into or out of its scope
        return any(
            p.covers_namespace(ns, self.namespace_labels(ns))
            for ns in self.target_namespaces(target)
        )

    def target_namespaces(self, target: crds.WindowTarget) -> set[str]:
        """The namespaces a target covers now: listed ones, plus those whose current labels
        match its selector (an empty selector: every namespace known)."""
        namespaces = set(target.namespaces)
        if target.namespace_selector is not None:
            namespaces.update(self._selected_namespaces(target.namespace_selector))
        return namespaces

    def _selected_namespaces(self, selector: crds.LabelSelector) -> frozenset[str]:
        """The known namespaces ``selector`` matches, memoised per snapshot: the status of
        every selector window asks for each policy it may fall under, and a scan of 1,000
        namespaces per question made a relabel's status pass take seconds."""
        key = selector.model_dump_json()
        found = self._selector_memo.get(key)
        if found is None:
            found = frozenset(
                ns
                for ns, labels in self.namespaces.items()
                if matching.selector_matches(selector, labels)
            )
            if len(self._selector_memo) >= _MEMO_LIMIT:
                self._selector_memo.clear()
            self._selector_memo[key] = found
        return found

    def window_namespaces(self, window: crds.ChangeWindow) -> set[str]:
        """Every namespace ``window`` covers now (what an approver of it sees)."""
        covered: set[str] = set()
        for target in window.spec.targets:
            covered |= self.target_namespaces(target)
        return covered

    def knows_namespace(self, namespace: str) -> bool:
        """Whether the index has seen ``namespace`` (its labels are known)."""
        return namespace in self.namespaces

    def label_scoped(
        self, *, api_group: str, resource: str, subresource: str, operation: str
    ) -> bool:
        """Whether some policy matching the request's rule picks namespaces by label, so the
        namespace's labels decide whether the request is controlled."""
        return any(
            p.selector is not None
            for p in self._by_rule(
                api_group=api_group, resource=resource, subresource=subresource, operation=operation
            )
        )

    def scope_changes(
        self,
        namespace: str,
        *,
        old_labels: Mapping[str, str],
        new_labels: Mapping[str, str] | None,
    ) -> tuple[CompiledPolicy, ...]:
        """Policies whose scope a change of ``namespace`` moves: for a relabel
        (``new_labels``) those that cover it before and not after or the reverse; for a
        deletion (``new_labels`` None) every policy that covers it before, by its labels then.
        """
        found = []
        for p in sorted(self.compiled_policies.values(), key=lambda p: p.name):
            before = p.covers_namespace(namespace, old_labels)
            if new_labels is None:
                if before:
                    found.append(p)
            elif before != p.covers_namespace(namespace, new_labels):
                found.append(p)
        return tuple(found)


def _rule_keys(rules: Iterable[crds.ResourceRule]) -> list[_Key2]:
    keys: list[_Key2] = []
    for rule in rules:
        for g in rule.api_groups:
            for r in rule.resources:
                if (g, r) not in keys:
                    keys.append((g, r))
    return keys


def _rule_op_keys(rules: Iterable[crds.ResourceRule]) -> list[tuple[str, str, str]]:
    keys: list[tuple[str, str, str]] = []
    for rule in rules:
        for g in rule.api_groups:
            for r in rule.resources:
                for op in rule.operations:
                    if (g, r, str(op)) not in keys:
                        keys.append((g, r, str(op)))
    return keys


def _request_keys(api_group: str, resource: str, subresource: str) -> list[_Key2]:
    return [
        (g, r)
        for g in matching.group_patterns(api_group)
        for r in matching.resource_patterns(resource, subresource)
    ]


def _add(index: dict[_K, list[_V]], key: _K, value: _V) -> None:
    bucket = index.get(key)
    if bucket is None:
        index[key] = [value]
    elif bucket[-1] is not value:
        bucket.append(value)
