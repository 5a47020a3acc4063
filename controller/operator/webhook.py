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

The whole object is changegate's: the builder sets every field of every webhook (selectors
and matchConditions included, even when empty), and ``drift`` compares all of them, in the
form the API server stores them, so an ``objectSelector`` or a ``failurePolicy: Ignore`` added
by hand is repaired like a deleted rule. Configuration objects are never sent to webhooks, so
nothing but RBAC stops such an edit; what changegate adds is that it does not last:
``ConfigurationWatch`` reports every change (and the deletion) of the object within the
watch's latency, and the leader's reconciler writes it back at once.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from controller import pki
from controller.model import crds
from controller.operator import kubeapi
from controller.policy import decide, index, matching

logger = logging.getLogger(__name__)

NAME = "changegate"
CONTROLLED_WEBHOOK = "controlled.changegate.io"
CRDS_WEBHOOK = "crds.changegate.io"
PATH = "/validate"


FailurePolicy = Literal["Fail", "Ignore"]

#: The labels changegate puts on the configuration; ``drift`` restores them if changed.
LABELS = {"app.kubernetes.io/managed-by": "changegate"}

#: Every field of an admissionregistration.k8s.io/v1 ValidatingWebhook. The builder sets each
#: one, so every one of them is compared; a field a newer API server adds is not ours and is
#: left alone (comparing it would rewrite the object on every pass).
WEBHOOK_FIELDS = (
    "name",
    "clientConfig",
    "rules",
    "failurePolicy",
    "matchPolicy",
    "namespaceSelector",
    "objectSelector",
    "sideEffects",
    "timeoutSeconds",
    "admissionReviewVersions",
    "matchConditions",
)

#: What the API server stores for a field that was not sent (its v1 defaults; an empty
#: matchConditions list is omitted from the stored object).
_SERVER_DEFAULTS: dict[str, Any] = {
    "failurePolicy": "Fail",
    "matchPolicy": "Equivalent",
    "namespaceSelector": {},
    "objectSelector": {},
    "timeoutSeconds": 10,
    "matchConditions": [],
}


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceRef:
    """Where the API server reaches changegate in-cluster."""

    namespace: str
    name: str
    port: int = 443


def service_account_username(namespace: str, name: str) -> str:
    """The username the API server authenticates a service account as."""
    return f"system:serviceaccount:{namespace}:{name}"


def controlled_rules(policies: Iterable[crds.ChangePolicy]) -> list[dict[str, Any]]:
    """The union of the policies' ``match.resources`` as webhook rules, deterministic.

    Every path with the same effect as a rule (``matching.effective_rules``: scale, eviction,
    ephemeral containers, resize, and status -- which a matchCondition lets through only when
    the write changes metadata) is sent too, and namespace updates and deletions whenever any
    policy exists. Rules with the same operations and API groups are merged into one, so
    the configuration stays small and stable when many policies control the same kinds.
    """
    merged: dict[tuple[tuple[str, ...], tuple[str, ...]], set[str]] = {}
    rules = [r for p in policies for r in matching.effective_rules(p.spec.match.resources)]
    if rules:
        # Something is controlled, so its scope is too: relabelling or deleting a namespace
        # can move it out of a policy's scope, which that policy controls (``decide``).
        rules.append(index.NAMESPACE_SCOPE_CHANGES)
    for rule in rules:
        resources = set(rule.resources)
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
        # A status write reaches changegate only when it changes metadata (which /status can):
        # controllers' status-only writes never depend on changegate being up.
        {"name": "status-only-if-metadata-changes", "expression": status_match_expression()},
    ]
    # The same sets the decision exempts (``decide.BUILTIN_EXEMPT_*``): one list, two places.
    users = sorted(decide.BUILTIN_EXEMPT_USERS) if builtin_exemptions else []
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
        groups = sorted(decide.BUILTIN_EXEMPT_GROUPS)
        conditions.append(
            {
                "name": "not-exempt-group",
                "expression": "!has(request.userInfo.groups)"
                f" || !request.userInfo.groups.exists(g, g in {_cel_list(groups)})",
            }
        )
    return conditions


def status_match_expression() -> str:
    """CEL: not a status-like subresource, or one whose write changes the metadata that
    ``decide`` gates (``matching.STATUS_VISIBLE_METADATA``) -- the same rule, in two places
    that must agree (a test evaluates both on the same cases against the API server)."""
    changed = " || ".join(
        f"(has(object.metadata.{f}) != has(oldObject.metadata.{f}))"
        f" || (has(object.metadata.{f}) && object.metadata.{f} != oldObject.metadata.{f})"
        for f in matching.STATUS_VISIBLE_METADATA
    )
    return (
        "!has(request.subResource) || !(request.subResource in"
        f" {_cel_list(matching.STATUS_LIKE)}) || request.operation != 'UPDATE' || {changed}"
    )


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
    changegate itself can always be repaired). ``ca_bundle`` is PEM. Every field of every
    webhook is set, the empty ones too: what is not set here could be set by someone else
    without it counting as drift.
    """
    client_config = _client_config(ca_bundle=ca_bundle, url=url, service=service)
    common: dict[str, Any] = {
        "clientConfig": client_config,
        "failurePolicy": failure_policy,
        "sideEffects": "None",  # Events are best-effort observations; dry-run is decided too.
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": timeout_seconds,
        "matchPolicy": "Equivalent",
        # Objects are never skipped by their labels: whoever may label an object must not
        # thereby take it out of change control.
        "objectSelector": {},
    }
    webhooks: list[dict[str, Any]] = []
    rules = controlled_rules(policies)
    if rules:
        webhooks.append(
            {
                "name": CONTROLLED_WEBHOOK,
                **copy.deepcopy(common),
                "rules": rules,
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": sorted({namespace, *decide.NEVER_SENT_NAMESPACES}),
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
            **copy.deepcopy(common),  # no dict shared between webhooks
            "rules": [
                {
                    "operations": ["CREATE", "UPDATE"],
                    "apiGroups": [crds.GROUP],
                    "apiVersions": ["*"],
                    "resources": sorted(crds.PLURALS.values()),
                    "scope": "Cluster",
                }
            ],
            # Cluster-scoped objects: a namespaceSelector matches them always; set empty so a
            # selector added by hand is drift. Nobody is exempt: no matchConditions.
            "namespaceSelector": {},
            "matchConditions": [],
        }
    )
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": dict(LABELS)},
        "webhooks": webhooks,
    }


def _selector(value: Any) -> Any:
    # {"matchLabels": {}} and {} select the same; the API server stores the latter.
    if not isinstance(value, Mapping):
        return value
    return {k: v for k, v in value.items() if v not in (None, {}, [])}


def _rule(rule: Any) -> Any:
    if not isinstance(rule, Mapping):
        return rule
    return {**rule, "scope": rule.get("scope") or "*"}


def _client(config: Any) -> Any:
    if not isinstance(config, Mapping) or not isinstance(config.get("service"), Mapping):
        return config
    service = config["service"]
    return {**config, "service": {**service, "port": service.get("port") or 443}}


def stored_form(hook: Mapping[str, Any]) -> dict[str, Any]:
    """One webhook as the API server stores it: defaults filled in, empty values normalised.

    Applied to both the live and the desired webhook, so a field the server defaulted or
    omitted (an empty ``matchConditions``, ``objectSelector: {}``) compares equal to what the
    builder set, and any difference left is a real one.
    """
    form: dict[str, Any] = {}
    for field in WEBHOOK_FIELDS:
        value = hook.get(field)
        form[field] = _SERVER_DEFAULTS.get(field) if value is None else value
    form["namespaceSelector"] = _selector(form["namespaceSelector"])
    form["objectSelector"] = _selector(form["objectSelector"])
    form["rules"] = [_rule(r) for r in form["rules"] or []]
    form["clientConfig"] = _client(form["clientConfig"])
    return form


def drift(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> list[str]:
    """What in the live configuration differs from the desired one, as readable paths.

    Empty when nothing we own differs. Compared: our labels; ownerReferences (an owner that
    does not exist makes the garbage collector delete the configuration); the webhooks' names
    in order (an extra, missing, renamed or reordered webhook); and every field of each webhook.
    """
    if current is None:
        return ["(absent)"]
    found: list[str] = []
    metadata = current.get("metadata") or {}
    labels = metadata.get("labels") or {}
    want_labels = (desired.get("metadata") or {}).get("labels") or {}
    found += [f"metadata.labels[{k}]" for k, v in sorted(want_labels.items()) if labels.get(k) != v]
    if metadata.get("ownerReferences"):
        found.append("metadata.ownerReferences")
    live = list(current.get("webhooks") or [])
    want = list(desired["webhooks"])
    if [w.get("name") for w in live] != [w["name"] for w in want]:
        found.append("webhooks[*].name")
        return found
    for lw, ww in zip(live, want, strict=True):
        have, should = stored_form(lw), stored_form(ww)
        found += [f"webhooks[{ww['name']}].{f}" for f in WEBHOOK_FIELDS if have[f] != should[f]]
    return found


def needs_update(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the live configuration differs from the desired one in anything we own."""
    return bool(drift(current, desired))


def _resource_version(body: Mapping[str, Any] | None) -> str | None:
    if body is None:
        return None
    version = (body.get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


class WebhookReconciler:
    """Keeps the live ValidatingWebhookConfiguration equal to the desired one.

    Uses the synchronous kubernetes client in a worker thread: one small object, written only
    by the leader and only when it differs, so the blocking client is not worth replacing.
    Objects are read and written as raw JSON, not through the client's models, so a field the
    client does not know yet (matchConditions on an older client) is not silently dropped and
    then seen as drift forever.
    """

    def __init__(self, *, api: kubeapi.WebhookConfigurations, recheck_after: float = 300.0) -> None:
        self._api = api
        self._recheck_after = recheck_after
        self._confirmed: dict[str, Any] | None = None
        self._confirmed_at = 0.0
        self._written: str | None = None  # resourceVersion of our last write
        self._last: dict[str, Any] | None = None  # what the last pass made the object
        self._observed = 0  # bumped when the watch shows something we have not confirmed
        self._lock = asyncio.Lock()

    def observe(self, live: Mapping[str, Any] | None) -> bool:
        """The watch saw the live configuration (None: it is gone). True if it needs a pass.

        Our own write comes back as a watch event too: it carries the resourceVersion we got
        back, or at least matches what we confirmed, so it asks for nothing -- that is what
        keeps a write from triggering the next one.
        """
        version = _resource_version(live)
        if version is not None and version == self._written:
            return False
        if self._confirmed is not None and live is not None and not drift(live, self._confirmed):
            return False
        self._confirmed = None
        self._observed += 1
        return True

    async def reconcile(self, desired: Mapping[str, Any]) -> bool:
        """Create or replace the configuration if it differs; True when it wrote.

        The reconciler runs after every index change (most are windows and namespaces, which
        do not change the configuration), so an unchanged desired configuration confirmed
        recently is not re-read. The watch (``observe``) withdraws that confirmation as soon as
        the live object changes; ``recheck_after`` only covers a watch that is down.
        """
        async with self._lock:
            wanted = dict(desired)
            fresh = time.monotonic() - self._confirmed_at < self._recheck_after
            if fresh and wanted == self._confirmed:
                return False
            observed = self._observed
            # Same desired object as last time, yet a difference: someone else changed it.
            repair = wanted == self._last
            wrote = await asyncio.to_thread(self._reconcile_sync, wanted, repair=repair)
            self._last = wanted
            # A change seen while we were reading or writing may postdate what we confirmed.
            if observed == self._observed:
                self._confirmed, self._confirmed_at = wanted, time.monotonic()
            return wrote

    def _read(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._api.read_validating_webhook_configuration(NAME, _preload_content=False)
        except ApiException as e:
            if e.status != 404:
                raise
            return None
        body: dict[str, Any] = json.loads(response.data)
        return body

    def _reconcile_sync(
        self, desired: dict[str, Any], *, repair: bool = False, attempts: int = 3
    ) -> bool:
        from kubernetes.client.exceptions import ApiException

        for _ in range(attempts):
            live = self._read()
            differs = drift(live, desired)
            if not differs:
                return False
            try:
                stored = self._write(desired, live)
            except ApiException as e:
                if e.status == 409:  # changed (or created) under us: read it again
                    continue
                raise
            self._written = _resource_version(stored)
            extra = {"drift": differs, "webhooks": [w["name"] for w in desired["webhooks"]]}
            if repair:  # an audit trail of tampering (or of a fight with another writer)
                logger.warning(
                    "%s ValidatingWebhookConfiguration %s: it was %s by someone else",
                    "recreated" if live is None else "restored",
                    NAME,
                    "deleted" if live is None else "changed",
                    extra=extra,
                )
            else:
                verb = "created" if live is None else "updated"
                logger.info("%s ValidatingWebhookConfiguration %s", verb, NAME, extra=extra)
            left = drift(stored, desired)
            if left:
                # Our comparison and the API server's defaults disagree: every pass would
                # rewrite it. Loud, because it is a bug; the watch still ignores our own write.
                logger.error(
                    "the API server stores %s differently than written", NAME, extra={"drift": left}
                )
            return True
        raise RuntimeError(f"ValidatingWebhookConfiguration {NAME} kept changing under us")

    def _write(self, desired: dict[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
        if live is None:
            response = self._api.create_validating_webhook_configuration(
                desired, _preload_content=False
            )
        else:
            body = dict(desired)
            # The whole object is ours: labels and owner references others added go too.
            body["metadata"] = {
                **desired["metadata"],
                "resourceVersion": live["metadata"]["resourceVersion"],
            }
            response = self._api.replace_validating_webhook_configuration(
                NAME, body, _preload_content=False
            )
        stored: dict[str, Any] = json.loads(response.data)
        return stored


class LiveBundle:
    """The caBundles the API server holds for changegate's webhooks, as the watch last saw them.

    The TLS reloader asks ``trusts`` before it serves a certificate from a new CA: serving it
    earlier would fail every review until the bundle follows (see controller/admission/tls.py).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._bundles: tuple[bytes, ...] = ()
        self._since = 0.0

    def observe(self, live: Mapping[str, Any] | None) -> bool:
        """Record the live configuration; True if its caBundles changed."""
        hooks = (live or {}).get("webhooks") or []
        bundles = tuple(
            base64.b64decode((h.get("clientConfig") or {}).get("caBundle") or "") for h in hooks
        )
        if bundles == self._bundles:
            return False
        self._bundles, self._since = bundles, self._clock()
        return True

    def trusts(self, chain_pem: bytes, *, settle: float = 0.0) -> bool:
        """Whether every webhook's caBundle has trusted ``chain_pem`` for ``settle`` seconds.

        ``settle`` covers the API server's own watch of the configuration, which may see a new
        bundle a moment after ours does.
        """
        if not self._bundles or self._clock() - self._since < settle:
            return False
        return all(pki.issuers(chain_pem, bundle) for bundle in self._bundles)


OnLive = Callable[[Mapping[str, Any] | None], None]


class ConfigurationWatch:
    """Reports every state of the ValidatingWebhookConfiguration ``changegate``; None = gone.

    A plain list+watch with ``fieldSelector=metadata.name=changegate``, not a kopf handler:
    RBAC honours ``resourceNames`` for list/watch only when the request selects the name, so
    the operator needs no read access to other webhook configurations. Every (re)list reports
    the current state, so a deletion during a broken watch is not missed.

    The synchronous client blocks, so the watch runs in a daemon thread (it must not hold up
    the process's exit the way a worker-pool thread would) and hands each state to the event
    loop with ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        *,
        api: kubeapi.WebhookConfigurations,
        on_event: OnLive,
        name: str = NAME,
        timeout_seconds: int = 60,
        retry_after: float = 1.0,
    ) -> None:
        self._api = api
        self._on_event = on_event
        self._name = name
        self._timeout = timeout_seconds
        self._retry_after = retry_after

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def deliver(live: Mapping[str, Any] | None) -> None:
            loop.call_soon_threadsafe(self._on_event, live)

        thread = threading.Thread(
            target=self._run_sync,
            args=(deliver, stop),
            name="changegate-webhook-watch",
            daemon=True,
        )
        thread.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            stop.set()

    def _run_sync(self, deliver: OnLive, stop: threading.Event) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        new_watch: Any = watch.Watch  # untyped library; keep the Any in one place

        selector = f"metadata.name={self._name}"
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    listed = json.loads(
                        self._api.list_validating_webhook_configuration(
                            field_selector=selector, _preload_content=False
                        ).data
                    )
                    items = listed.get("items") or []
                    deliver(items[0] if items else None)
                    version = listed["metadata"]["resourceVersion"]
                stream = new_watch()
                for event in stream.stream(
                    self._api.list_validating_webhook_configuration,
                    field_selector=selector,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self._timeout,
                    _request_timeout=self._timeout + 15,
                ):
                    obj: dict[str, Any] = event["raw_object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        deliver(None if event["type"] == "DELETED" else obj)
                    if stop.is_set():
                        stream.stop()
                        break
            except RuntimeError:  # the event loop is closed: the process is shutting down
                return
            except ApiException as e:
                version = None
                if e.status != 410:  # 410 Gone: the version expired; list again
                    logger.warning("watch of %s failed: %s", self._name, e)
                    stop.wait(self._retry_after)
            except Exception as e:
                version = None
                logger.warning("watch of %s failed: %s", self._name, e)
                stop.wait(self._retry_after)
