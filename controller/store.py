"""The mutable holder the operator feeds and the webhook reads — pure data, no I/O.

The operator calls ``apply`` for every watch event and ``mark_synced`` once a kind's initial
list is in; the webhook calls ``snapshot()`` per request and decides from the immutable
Snapshot it gets, so a decision never sees a half-applied event.

Copy-on-write, lazily: ``apply`` only updates plain dicts (O(1)) and marks the snapshot
stale; the next ``snapshot()`` rebuilds the index once, however many events arrived in
between, and reuses every compiled window/policy/identity whose object did not change
(``Snapshot.build(previous=...)``), so cron parsing and spec hashing are never redone for
untouched windows. bench/decide.py measures both halves at 10,000 windows.

An object that does not validate is left out of the index — and a previously valid version of
it is removed: an invalid window must not keep granting what its last valid version granted.
Its field errors are returned (and kept in ``errors``) so the operator can report them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Literal

import pydantic

from controller.model import crds
from controller.model import errors as model_errors
from controller.policy import index

Kind = Literal["ChangePolicy", "AuthorizedIdentity", "ChangeWindow", "Namespace"]
KINDS: tuple[Kind, ...] = ("ChangePolicy", "AuthorizedIdentity", "ChangeWindow", "Namespace")


class Store:
    def __init__(
        self, *, builtin_exemptions: bool = True, self_subject: crds.Subject | None = None
    ) -> None:
        self._builtin_exemptions = builtin_exemptions
        self._self_subject = self_subject
        self._policies: dict[str, crds.ChangePolicy] = {}
        self._identities: dict[str, crds.AuthorizedIdentity] = {}
        self._windows: dict[str, crds.ChangeWindow] = {}
        self._raw_specs: dict[str, Mapping[str, Any]] = {}
        self._namespaces: dict[str, Mapping[str, str]] = {}
        self._synced: set[str] = set()
        self._ready = False  # kinds are only ever added to _synced, so once True it stays
        self._snapshot: index.Snapshot | None = None
        self._stale = True
        self._lock = threading.Lock()  # guards the dicts; held for O(1) work or a shallow copy
        self._build_lock = threading.Lock()  # one build at a time
        self.rebuild_in_background = False
        """Set by the operator, which then rebuilds in a worker thread after every change
        (``published()`` no longer builds on the caller's thread)."""
        self.errors: dict[tuple[str, str], list[tuple[str, str]]] = {}
        """Field errors of objects currently left out, by (kind, name)."""
        self.validated: dict[str, int] = dict.fromkeys(KINDS[:3], 0)
        """Bodies validated into models so far, per kind (``work()``)."""
        self.windows_compiled = 0
        """Windows compiled by snapshot builds so far (the rest were reused)."""

    def work(self) -> dict[str, int]:
        """What this store has done so far: validations per kind, windows and timelines
        compiled (the operator exports these; a watch event should cost only its object)."""
        counts = {f"{kind}_validated": n for kind, n in self.validated.items()}
        counts["windows_compiled"] = self.windows_compiled
        counts["timelines_compiled"] = index.CachedTimeline.compiled
        return counts

    def apply(
        self,
        kind: Kind,
        event: Literal["upsert", "delete"],
        body: Mapping[str, Any],
    ) -> list[tuple[str, str]]:
        """Apply one watch event; return field errors if the object was left out."""
        meta = body.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or not name:
            return [("metadata.name", "missing")]
        with self._lock:
            self.errors.pop((kind, name), None)
            if kind == "Namespace" and event == "upsert":
                raw_labels = meta.get("labels") if isinstance(meta, Mapping) else None
                labels = dict(raw_labels) if isinstance(raw_labels, Mapping) else {}
                # Namespaces change often (annotations, status); only labels matter here,
                # and a label change re-resolves every selector, so skip the no-ops.
                if self._namespaces.get(name) != labels:
                    self._namespaces[name] = labels
                    self._stale = True
                return []
            self._stale = True
            if event == "delete":
                self._forget(kind, name)
                return []
            errors = self._upsert(kind, name, body)
            if errors:
                self._forget(kind, name)
                self.errors[(kind, name)] = errors
            return errors

    def _upsert(self, kind: Kind, name: str, body: Mapping[str, Any]) -> list[tuple[str, str]]:
        if kind in self.validated:
            self.validated[kind] += 1
        try:
            if kind == "ChangePolicy":
                self._policies[name] = crds.ChangePolicy.model_validate(dict(body))
            elif kind == "AuthorizedIdentity":
                self._identities[name] = crds.AuthorizedIdentity.model_validate(dict(body))
            elif kind == "ChangeWindow":
                self._windows[name] = _validate_window(body)
                spec = body.get("spec")
                self._raw_specs[name] = dict(spec) if isinstance(spec, Mapping) else {}
            else:
                return [("kind", f"unknown kind {kind!r}")]
        except pydantic.ValidationError as e:
            return model_errors.field_errors(e)
        return []

    def _forget(self, kind: Kind, name: str) -> None:
        if kind == "ChangePolicy":
            self._policies.pop(name, None)
        elif kind == "AuthorizedIdentity":
            self._identities.pop(name, None)
        elif kind == "ChangeWindow":
            self._windows.pop(name, None)
            self._raw_specs.pop(name, None)
        elif kind == "Namespace":
            self._namespaces.pop(name, None)

    def mark_synced(self, kind: str) -> None:
        with self._lock:
            self._synced.add(kind)
            self._ready = all(k in self._synced for k in KINDS)

    @property
    def ready(self) -> bool:
        """Every kind, Namespace included, has been listed at least once."""
        return self._ready  # read on every admission request: a field, not a scan

    def raw_spec(self, name: str) -> Mapping[str, Any] | None:
        """The ChangeWindow spec as the API server stored it (what specHash is over)."""
        return self._raw_specs.get(name)

    @property
    def latest(self) -> index.Snapshot | None:
        """The last snapshot built, stale or not; None before the first build. Never builds."""
        return self._snapshot

    def published(self) -> index.Snapshot:
        """The snapshot for the request path: the last one built, without waiting.

        With ``rebuild_in_background`` the request path never builds (nor waits on a build in
        another thread) once a first snapshot exists; without it this is ``snapshot()``.
        """
        current = self.latest
        if current is not None and (self.rebuild_in_background or not self._stale):
            return current
        return self.snapshot()

    def snapshot(self) -> index.Snapshot:
        """The current immutable snapshot, rebuilt once after any number of changes.

        The inputs are copied under the lock and the index is built outside it, so ``apply``
        (on the operator's event loop) never waits for a build running in another thread; an
        event that lands during a build marks the store stale again for the next one.
        """
        with self._build_lock:
            with self._lock:
                previous = self._snapshot
                if previous is not None and not self._stale:
                    return previous
                policies = list(self._policies.values())
                identities = list(self._identities.values())
                windows = list(self._windows.values())
                namespaces = dict(self._namespaces)
                raw_specs = dict(self._raw_specs)
                self._stale = False
            built = index.Snapshot.build(
                policies=policies,
                identities=identities,
                windows=windows,
                namespaces=namespaces,
                raw_window_specs=raw_specs,
                builtin_exemptions=self._builtin_exemptions,
                self_subject=self._self_subject,
                previous=previous,
            )
            self._snapshot = built
            self.windows_compiled += built.windows_compiled
            return built


def _validate_window(body: Mapping[str, Any]) -> crds.ChangeWindow:
    """Validate a ChangeWindow; a malformed ``status`` (ours to rewrite) is dropped, not fatal.

    One validation in the common case: at 10,000 windows a second pass or a model copy per
    event shows up in memory and in apply time.
    """
    try:
        return crds.ChangeWindow.model_validate(dict(body))
    except pydantic.ValidationError as e:
        if not all(err["loc"][:1] == ("status",) for err in e.errors()):
            raise
    return crds.ChangeWindow.model_validate({k: v for k, v in body.items() if k != "status"})
