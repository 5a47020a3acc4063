"""What the operator calls on the official kubernetes client, as Protocols.

Each I/O shell takes the narrowest of these instead of a whole generated API class: its
signature then says which requests it makes (and so which RBAC rules it needs), mypy checks
every call against it, and a test passes a small fake with just those methods.
``kubernetes.client.CoreV1Api`` and friends satisfy them structurally (``run.py`` builds
them); nothing here imports the client.

Only the arguments changegate passes are listed; the generated methods take more, all
optional. Two things stay ``Any``, deliberately:

- Bodies (``Body``): changegate writes plain JSON dicts. The generated signatures name their
  models (``V1Secret``, ``V1Lease``) but serialise a dict the same way, and a dict keeps a
  field the client's models do not know yet (see ``webhook.WebhookReconciler``).
- Answers: a generated model, or with ``_preload_content=False`` the raw HTTP response
  (read as ``.data``) -- the generated return types do not say which. Callers read two or
  three fields of each.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

Body: TypeAlias = Any
"""A request body: a JSON object as a dict (see the module docstring)."""

Timeout: TypeAlias = float | tuple[float, float] | None
"""``_request_timeout``: total seconds, or (connect, read)."""


class Secrets(Protocol):
    """``CoreV1Api``, as the certificate Secret's manager uses it (``certs.py``)."""

    def read_namespaced_secret(self, name: str, namespace: str) -> Any: ...

    def create_namespaced_secret(self, namespace: str, body: Body) -> Any: ...

    def replace_namespaced_secret(self, name: str, namespace: str, body: Body) -> Any: ...


class Events(Protocol):
    """``CoreV1Api``, as the Event poster uses it (``events.py``)."""

    def create_namespaced_event(self, namespace: str, body: Body) -> Any: ...

    def patch_namespaced_event(self, name: str, namespace: str, body: Body) -> Any: ...


class Namespaces(Protocol):
    """``CoreV1Api``, as the admission server's namespace reader and the resync use it."""

    def read_namespace(self, name: str, *, _request_timeout: Timeout = ...) -> Any: ...

    def list_namespace(
        self, *, limit: int | None = ..., _continue: str | None = ..., _preload_content: bool = ...
    ) -> Any: ...


class Leases(Protocol):
    """``CoordinationV1Api``, as the leader election uses it (``leader.py``)."""

    def read_namespaced_lease(self, name: str, namespace: str) -> Any: ...

    def create_namespaced_lease(self, namespace: str, body: Body) -> Any: ...

    def replace_namespaced_lease(self, name: str, namespace: str, body: Body) -> Any: ...

    def patch_namespaced_lease(self, name: str, namespace: str, body: Body) -> Any: ...


class WebhookConfigurations(Protocol):
    """``AdmissionregistrationV1Api``, as the webhook reconciler and its watch use it.

    Always with ``_preload_content=False``: the objects are read and written as raw JSON
    (``webhook.WebhookReconciler`` says why). The watch also hands the list method to
    ``kubernetes.watch.Watch``, which calls it with its own watch arguments.
    """

    def read_validating_webhook_configuration(
        self, name: str, *, _preload_content: bool = ...
    ) -> Any: ...

    def create_validating_webhook_configuration(
        self, body: Body, *, _preload_content: bool = ...
    ) -> Any: ...

    def replace_validating_webhook_configuration(
        self, name: str, body: Body, *, _preload_content: bool = ...
    ) -> Any: ...

    def list_validating_webhook_configuration(
        self, *, field_selector: str | None = ..., _preload_content: bool = ...
    ) -> Any: ...


class ClusterCustomObjects(Protocol):
    """``CustomObjectsApi`` for changegate's cluster-scoped kinds: the resync, the status writes."""

    def get_cluster_custom_object(
        self, group: str, version: str, plural: str, name: str
    ) -> Any: ...

    def list_cluster_custom_object(
        self,
        group: str,
        version: str,
        plural: str,
        *,
        limit: int | None = ...,
        _continue: str | None = ...,
        _preload_content: bool = ...,
    ) -> Any: ...

    def patch_cluster_custom_object_status(
        self, group: str, version: str, plural: str, name: str, body: Body
    ) -> Any: ...
