"""The CLI's only door to the API server: a thin JSON client over the kubernetes package.

Why not the generated typed APIs: the CLI handles changegate's own objects as plain JSON
(they are validated by ``controller.model``), needs JSON patches with ``test`` operations,
aggregated discovery and multi-valued impersonation headers — all easier to get right as
raw requests than through generated models. We still reuse the kubernetes package for what
it does well: reading kubeconfig (contexts, client certificates, tokens, exec plugins), TLS,
and connection pooling.

Errors leave this module as :class:`CliError` subclasses carrying a message a human can act
on; ``main`` maps them to exit codes. Nothing else in the CLI touches HTTP.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client import exceptions as k8s_exceptions

from controller.model import crds

WINDOWS_PATH = f"/apis/{crds.API_VERSION}/changewindows"
POLICIES_PATH = f"/apis/{crds.API_VERSION}/changepolicies"
IDENTITIES_PATH = f"/apis/{crds.API_VERSION}/authorizedidentities"
NAMESPACES_PATH = "/api/v1/namespaces"
EVENTS_PATH = "/api/v1/events"
SELF_SUBJECT_REVIEW_PATH = "/apis/authentication.k8s.io/v1/selfsubjectreviews"

# Aggregated discovery (GA since Kubernetes 1.30): every group, version and resource, with
# short names and subresources, in two requests instead of one per group-version.
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


class CliError(Exception):
    """An error the CLI reports in one line and exits with code 2."""


class NotFound(CliError):
    pass


class Forbidden(CliError):
    pass


class Rejected(CliError):
    """The API server (or an admission webhook) refused a write; ``message`` says why."""


class Conflict(CliError):
    """Someone else changed the object in between; nothing was written."""


class Unreachable(CliError):
    pass


@dataclass(frozen=True, slots=True)
class Connection:
    """Where and as whom to talk: the kubectl conventions ``--kubeconfig/--context/--as``."""

    kubeconfig: str | None = None
    context: str | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()


def impersonation_headers(as_user: str | None, as_groups: Sequence[str]) -> dict[str, str]:
    """Impersonation headers, one header line per group.

    The kubernetes client keeps headers in a plain dict: one value per name. HTTP header names
    are case-insensitive and repeated lines form a list (RFC 9110 §5.3), and the API server
    (Go's net/http) canonicalises names, so each extra group is sent under a differently-cased
    spelling of ``Impersonate-Group``. This keeps several ``--as-group`` flags working without
    writing our own HTTP stack.
    """
    if as_user is None:
        if as_groups:
            raise CliError("--as-group needs --as (the API server impersonates users, not groups)")
        return {}
    headers = {"Impersonate-User": as_user}
    for i, group in enumerate(as_groups):
        headers[_case_variant("Impersonate-Group", i)] = group
    return headers


def _case_variant(name: str, n: int) -> str:
    """The ``n``-th distinct capitalisation of ``name`` (0 is ``name`` itself)."""
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    if n >= 2 ** len(letters):
        raise CliError(f"too many --as-group values (at most {2 ** len(letters)})")
    chars = list(name)
    for bit, pos in enumerate(letters):
        if n >> bit & 1:
            chars[pos] = chars[pos].swapcase()
    return "".join(chars)


class Kube:
    """Synchronous JSON requests against one API server, as one (possibly impersonated) user."""

    def __init__(self, conn: Connection) -> None:
        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=conn.kubeconfig, context=conn.context, client_configuration=cfg
            )
        except k8s_config.ConfigException as e:
            raise CliError(f"cannot load kubeconfig: {e}") from e
        except FileNotFoundError as e:
            raise CliError(f"cannot load kubeconfig: {e}") from e
        self.conn = conn
        self.server: str = cfg.host
        self._api = k8s_client.ApiClient(cfg)
        for name, value in impersonation_headers(conn.as_user, conn.as_groups).items():
            self._api.set_default_header(name, value)  # type: ignore[no-untyped-call]

    # -- the one request function --------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        """Send one request; return the decoded JSON body or raise a :class:`CliError`."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        url_path = path
        if query:
            url_path += "?" + urllib.parse.urlencode(dict(query))
        method_, url, header_params, body_, _ = self._api.param_serialize(
            method=method,
            resource_path=url_path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method_, url, header_params=header_params, body=body_, _request_timeout=(10, 60)
            )
            response.read()  # type: ignore[no-untyped-call]
        except urllib3.exceptions.HTTPError as e:
            raise Unreachable(f"cannot reach the API server at {self.server}: {_root(e)}") from e
        except k8s_exceptions.ApiException as e:  # raised by some client versions for 4xx/5xx
            raise _error_from_status(
                status=e.status or 0, body=e.body or "", method=method, path=path
            ) from e
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status <= 299:
            raise _error_from_status(status=response.status, body=text, method=method, path=path)
        return json.loads(text) if text else None

    # -- conveniences ------------------------------------------------------------------------

    def list_items(self, path: str, *, query: Mapping[str, str] | None = None) -> list[Any]:
        """All items of a list, following ``continue`` tokens."""
        items: list[Any] = []
        params = dict(query or {})
        params.setdefault("limit", "500")
        while True:
            page = self.request("GET", path, query=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    def whoami(self) -> tuple[str, tuple[str, ...]]:
        """The caller's username and groups as the API server authenticated them.

        Uses SelfSubjectReview (``authentication.k8s.io/v1``, GA in 1.28), which every
        authenticated user may create; it reflects impersonation, so ``--as`` is honoured.
        """
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        review = self.request("POST", SELF_SUBJECT_REVIEW_PATH, body=body)
        info = (review.get("status") or {}).get("userInfo") or {}
        return str(info.get("username", "")), tuple(info.get("groups") or ())

    def discovery(self) -> Iterator[Mapping[str, Any]]:
        """Aggregated discovery documents for the core group and all named groups."""
        for path in ("/api", "/apis"):
            doc = self.request("GET", path, accept=AGGREGATED_DISCOVERY)
            if not isinstance(doc, Mapping) or doc.get("kind") != "APIGroupDiscoveryList":
                raise CliError("the API server does not serve aggregated discovery")
            yield doc


def context_namespace(conn: Connection) -> str:
    """The kubeconfig context's namespace, else ``default`` — as kubectl does."""
    try:
        contexts, active = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=conn.kubeconfig
        )
    except (k8s_config.ConfigException, OSError):
        return "default"
    if conn.context:
        active = next((x for x in contexts if x.get("name") == conn.context), active)
    return str(((active or {}).get("context") or {}).get("namespace") or "default")


def _root(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    return str(reason or e)


def _error_from_status(*, status: int, body: str, method: str, path: str) -> CliError:
    """Turn a Kubernetes ``Status`` reply into an actionable error."""
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = {}
    message = str(doc.get("message") or body or f"HTTP {status}").strip()
    if status == 404:
        details = doc.get("details") or {}
        kind, name = details.get("kind"), details.get("name")
        if kind == "changewindows" and name:
            return NotFound(f"no ChangeWindow named {name}")
        return NotFound(message)
    if status == 403:
        if "admission webhook" in message or "denied the request" in message:
            return Rejected(message)
        return Forbidden(f"permission denied: {message}")
    if status == 401:
        return Forbidden(f"the API server did not accept your credentials: {message}")
    if status == 409:
        return Conflict(message)
    if status == 422 and method == "PATCH" and not (doc.get("details") or {}).get("causes"):
        # A failed JSON-patch ``test`` op comes back as a bare 422 "Invalid" without causes
        # (schema violations list their causes): the object changed since we read it.
        return Conflict(f"the object changed since it was read ({message})")
    return Rejected(f"{method} {path} failed (HTTP {status}): {message}")
