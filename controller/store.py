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

Each version of an object is validated once. A ChangeWindow's ``status`` is changegate's own
output, not an input of any decision: it is kept as the API server last reported it
(``observed_windows``, what the reconciler compares its next status with) and never validated,
and an event that changes nothing but the status (every status write the reconciler makes comes
back as one) neither validates the window again nor makes the snapshot stale -- so the
compiled window, its timeline and caches survive it.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import pydantic

from controller.model import crds
from controller.model import errors as model_errors
from controller.policy import approvals, index, status

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
        # specHash of each window's spec as stored (what approvals sign), computed when its
        # event arrives: the raw spec itself is not kept (a second copy of every window).
        self._spec_hashes: dict[str, str] = {}
        # Windows changed since the last build (None: rebuild every window next time).
        self._changed_windows: set[str] | None = None
        self._versions: dict[tuple[str, str], str] = {}  # resourceVersion last applied
        # Every ChangeWindow the watch reported, valid or not: its status and generation.
        self._observed: dict[str, status.Observed] = {}
        self._namespaces: dict[str, Mapping[str, str]] = {}
        self._synced: set[str] = set()
        self._ready = False  # kinds are only ever added to _synced, so once True it stays
        self._snapshot: index.Snapshot | None = None
        self._stale = True
        self._lock = threading.Lock()  # guards the dicts; held for O(1) work or a shallow copy
        self._build_lock = threading.Lock()  # one build at a time
        self.rebuild_in_background = False
        """Set by the operator, which then rebuilds in a worker thread after every change
        (``snapshot()`` no longer builds on the caller's thread)."""
        self.errors: dict[tuple[str, str], list[tuple[str, str]]] = {}
        """Field errors of objects currently left out, by (kind, name)."""
        self.validated: dict[str, int] = dict.fromkeys(KINDS[:3], 0)
        """Bodies validated into models so far, per kind (``work()``)."""
        self.builds = 0
        """Snapshots built so far."""
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
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        with self._lock:
            if event == "upsert" and version and self._versions.get((kind, name)) == version:
                # This very version again (a re-list, the watch after the initial sync).
                return self.errors.get((kind, name), [])
            if event == "delete":
                self._versions.pop((kind, name), None)
            elif version:
                self._versions[(kind, name)] = version
            if kind == "Namespace" and event == "upsert":
                raw_labels = meta.get("labels") if isinstance(meta, Mapping) else None
                labels = dict(raw_labels) if isinstance(raw_labels, Mapping) else {}
                # Namespaces change often (annotations, status); only labels matter here,
                # and a label change re-resolves every selector, so skip the no-ops.
                if self._namespaces.get(name) != labels:
                    self._namespaces[name] = labels
                    self._stale = True
                return []
            # One digest of the spec per window event: to tell a status-only event, and kept.
            digest = (
                _digest(body.get("spec")) if kind == "ChangeWindow" and event == "upsert" else None
            )
            if digest is not None and self._status_only(name, body, digest):
                return self.errors.get((kind, name), [])
            self.errors.pop((kind, name), None)
            self._stale = True
            if kind == "ChangeWindow" and self._changed_windows is not None:
                self._changed_windows.add(name)
            if event == "delete":
                self._forget(kind, name)
                return []
            errors = self._upsert(kind, name, body)
            if errors:
                self._forget(kind, name)
                self.errors[(kind, name)] = errors
            if kind == "ChangeWindow":
                self._observed[name] = _observed(body, errors, spec_digest=digest)
            return errors

    def _status_only(self, name: str, body: Mapping[str, Any], digest: bytes) -> bool:
        """Whether ``body`` differs from the window we hold in its status alone; if so, keep
        the new status and nothing else (no validation, the snapshot stays current)."""
        held = self._observed.get(name)
        if held is None:
            return False
        meta = body.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        same = (
            held.uid == meta.get("uid")
            and held.generation == meta.get("generation")
            and held.spec_digest == digest
        )
        if same:
            self._observed[name] = _observed(body, held.errors, spec_digest=held.spec_digest)
        return same

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
                self._spec_hashes[name] = approvals.spec_hash(
                    spec if isinstance(spec, Mapping) else {}
                )
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
            self._spec_hashes.pop(name, None)
            self._observed.pop(name, None)
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

    def observed_windows(self) -> dict[str, status.Observed]:
        """Every ChangeWindow as the watch last reported it (status, generation, field errors
        when it is left out of the index): with the published snapshot, all the reconciler
        reads. A shallow copy; the records are immutable."""
        with self._lock:
            return dict(self._observed)

    def snapshot(self) -> index.Snapshot:
        """The snapshot to decide against -- the one getter, for the webhook, the reconciler
        and the CLI alike.

        With ``rebuild_in_background`` (the operator) this is the last snapshot published by
        ``rebuild``, without waiting: the request path never builds, nor waits on a build in
        another thread, once a first snapshot exists. Without it (tests, the CLI) the reader
        rebuilds first if anything changed.
        """
        current = self._snapshot
        if current is not None and (self.rebuild_in_background or not self._stale):
            return current
        return self.rebuild()

    def rebuild(self) -> index.Snapshot:
        """Build and publish a new immutable snapshot if anything changed since the last one
        (once after any number of changes); return the newest.

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
                namespaces = dict(self._namespaces)
                changed: dict[str, crds.ChangeWindow | None] | None = None
                if previous is not None and self._changed_windows is not None:
                    # Only what changed since ``previous``: the build then costs the changes.
                    changed = {n: self._windows.get(n) for n in self._changed_windows}
                    windows: list[crds.ChangeWindow] = []
                    spec_hashes = {
                        n: self._spec_hashes[n] for n in changed if n in self._spec_hashes
                    }
                else:
                    windows = list(self._windows.values())
                    spec_hashes = dict(self._spec_hashes)
                self._changed_windows = set()
                self._stale = False
            try:
                built = index.Snapshot.build(
                    policies=policies,
                    identities=identities,
                    windows=windows,
                    namespaces=namespaces,
                    window_spec_hashes=spec_hashes,
                    builtin_exemptions=self._builtin_exemptions,
                    self_subject=self._self_subject,
                    previous=previous,
                    changed_windows=changed,
                )
            except BaseException:
                with self._lock:  # what this build was to take in must not be lost
                    self._changed_windows = None
                    self._stale = True
                raise
            self._snapshot = built
            self.builds += 1
            self.windows_compiled += built.windows_compiled
            return built


def _validate_window(body: Mapping[str, Any]) -> crds.ChangeWindow:
    """Validate a ChangeWindow without its ``status``: ours to rewrite, read by no decision
    (``observed_windows`` keeps it raw), so a malformed one is not fatal and none costs a
    validation."""
    window = crds.ChangeWindow.model_validate({k: v for k, v in body.items() if k != "status"})
    return crds.share_equal_parts(window)  # ~3 KB less per window held


def _digest(spec: object) -> bytes | None:
    """A digest of a whole raw spec, approvals included (None: not encodable, never equal)."""
    try:
        return hashlib.blake2b(
            msgspec.json.encode(spec, order="deterministic"), digest_size=16
        ).digest()
    except (TypeError, ValueError, OverflowError):
        return None


def _shared_json(value: Any) -> Any:
    """``value`` (parsed JSON) with its keys and short strings interned, and equal flat
    objects one object.

    Every window's status repeats the same keys and values (``phase``, ``conditions``,
    ``lastTransitionTime``, ``Approved``, the same instant for all windows a pass wrote), but
    each event's JSON was parsed on its own: 10,000 observed statuses held ~25 MB, mostly
    copies of the same few strings -- and of the same conditions (most windows' ``Valid`` and
    ``Approved`` conditions are equal, transition time included, after a pass wrote them).
    Observed statuses are read, never changed (``plan_status_writes`` copies what it keeps),
    so sharing them is safe.
    """
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= 64 else value
    if isinstance(value, Mapping):
        shared = {sys.intern(str(k)): _shared_json(v) for k, v in value.items()}
        return _shared_flat(shared) if len(shared) <= _FLAT_KEYS else shared
    if isinstance(value, list):
        return [_shared_json(v) for v in value]
    return value


_FLAT_KEYS = 8
_FLAT_LIMIT = 1_024
#: Only objects with this much text at most are shared (a condition's message is a line): the
#: table keeps what it holds alive after the window is gone, and a status may be 1.5 MiB.
_FLAT_MAX_CHARS = 1_024
_flat: crds.CanonicalTable[tuple[tuple[str, type, object], ...], dict[str, Any]] = (
    crds.CanonicalTable(_FLAT_LIMIT)
)


def _shared_flat(value: dict[str, Any]) -> dict[str, Any]:
    """One object for equal flat JSON objects (every value a string, number, bool or null).

    The table is bounded: past ``_FLAT_LIMIT`` entries (conditions carry transition times, so
    old ones stop recurring) it starts afresh; objects already shared stay shared. Objects
    with more than ``_FLAT_MAX_CHARS`` of text are never in it.
    """
    items = []
    chars = 0
    for k, v in value.items():
        if not (v is None or isinstance(v, str | int | float)):
            return value
        if isinstance(v, str):
            chars += len(v)
            if chars > _FLAT_MAX_CHARS:
                return value
        items.append((k, type(v), v))  # the type too: True == 1, but they are not the same JSON
    return _flat.share(tuple(items), value)


def _observed(
    body: Mapping[str, Any],
    errors: Sequence[tuple[str, str]],
    *,
    spec_digest: bytes | None,
) -> status.Observed:
    meta = body.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    current = body.get("status")
    generation = meta.get("generation")
    uid = meta.get("uid")
    return status.Observed(
        status=_shared_json(current) if isinstance(current, Mapping) else {},
        generation=generation if isinstance(generation, int) else None,
        errors=tuple(errors),
        uid=uid if isinstance(uid, str) else None,
        spec_digest=spec_digest,
    )
