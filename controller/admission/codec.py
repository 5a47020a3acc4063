"""The review codec: bytes from the API server in, a validated ``AdmissionRequest`` out.

A review we cannot read is answered with HTTP 400 and a plain explanation, never with an
AdmissionReview: the API server then applies the webhook's failurePolicy (Fail by default),
so a broken or hostile caller can never talk its way into ``allowed: true``.
"""

from __future__ import annotations

from typing import Any, cast

import pydantic
import pydantic_core

from controller.model import review
from controller.policy import decide

#: Largest review body we read. The API server sends ``object`` and ``oldObject`` (each up to
#: etcd's ~1.5 MiB object limit) plus the review envelope; 8 MiB leaves room for both with
#: JSON escaping. aiohttp's default (1 MiB) would refuse big ConfigMaps and Secrets.
MAX_BODY_BYTES = 8 * 1024 * 1024

#: Keep the 400 body short: it is read by people debugging a caller, not by a program.
_MAX_EXPLANATION_CHARS = 1000


class ReviewError(Exception):
    """A request to ``/validate`` that cannot be decided; ``http_status`` says why at the edge."""

    http_status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedReview(ReviewError):
    """Not JSON, not an ``admission.k8s.io/v1`` AdmissionReview, or missing what a decision needs."""

    http_status = 400


def parse_request(body: bytes) -> decide.Request:
    """The ``decide.Request`` of a raw AdmissionReview body, or raise ``MalformedReview``.

    What ``decide.request_from_review(parse_review(body))`` gives, without building the
    pydantic models for the reviews the API server actually sends: after one JSON parse,
    ``_plain_request`` reads a review whose every field the decision reads or the model
    checks has exactly the type the model wants (str, bool, list of str, object or null, by
    its wire name). Anything else -- a missing or mistyped field, a field given by its
    Python name, a value the model would coerce ("true" for a bool) -- goes through
    ``parse_review`` and the model as before, so it is accepted, coerced or refused (with
    the same message) exactly as it was. Saves the envelope's validation (~6 us) and the
    request conversion per review.
    """
    if body:
        try:
            data = pydantic_core.from_json(body)
        except ValueError:
            data = None
        request = _plain_request(data)
        if request is not None:
            return request
    return decide.request_from_review(parse_review(body))


_API_VERSION = "admission.k8s.io/v1"
_OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
#: Python names the model also accepts (populate_by_name) where they differ from the wire
#: names; a review using one is left to the model, which knows which of the two wins.
_PYTHON_NAMES = frozenset(
    {
        "api_version",
        "sub_resource",
        "request_kind",
        "request_resource",
        "request_sub_resource",
        "user_info",
        "old_object",
        "dry_run",
    }
)


def _plain_request(data: Any) -> decide.Request | None:
    """The request of an already parsed review that the model would take as it is; None for
    every review that needs the model to accept, coerce or refuse it."""
    if (
        type(data) is not dict
        or data.get("apiVersion") != _API_VERSION
        or data.get("kind") != "AdmissionReview"
        or "api_version" in data
    ):
        return None
    r = data.get("request")
    if type(r) is not dict or not _PYTHON_NAMES.isdisjoint(r):
        return None
    uid = r.get("uid")
    kind = r.get("kind")
    resource = r.get("resource")
    user = r.get("userInfo")
    operation = r.get("operation")
    if (
        type(uid) is not str
        or not uid
        or type(operation) is not str
        or operation not in _OPERATIONS
        or not _group_version(kind, "kind")
        or not _group_version(resource, "resource")
        or not _optional_group_version(r.get("requestKind"), "kind")
        or not _optional_group_version(r.get("requestResource"), "resource")
        or type(user) is not dict
    ):
        return None
    sub_resource = r.get("subResource", "")
    name = r.get("name", "")
    namespace = r.get("namespace", "")
    dry_run = r.get("dryRun", False)
    username = user.get("username", "")
    groups = user.get("groups", [])
    obj = r.get("object")
    old = r.get("oldObject")
    if (
        type(sub_resource) is not str
        or type(name) is not str
        or type(namespace) is not str
        or type(dry_run) is not bool
        or type(r.get("requestSubResource", "")) not in _STR_OR_NONE
        or type(obj) not in _OBJECT_OR_NONE
        or type(old) not in _OBJECT_OR_NONE
        or type(r.get("options")) not in _OBJECT_OR_NONE
        or type(username) is not str
        or type(user.get("uid")) not in _STR_OR_NONE
        or type(groups) is not list
        or not all(type(g) is str for g in groups)
        or not _string_lists(user.get("extra", {}))
    ):
        return None
    resource_d = cast(dict[str, str], resource)
    return decide.Request(
        uid=uid,
        user=username,
        groups=tuple(groups),
        operation=operation,
        api_group=resource_d.get("group", ""),
        api_version=resource_d["version"],
        resource=resource_d["resource"],
        subresource=sub_resource,
        kind=cast(dict[str, str], kind)["kind"],
        namespace=namespace,
        name=name,
        dry_run=dry_run,
        object=obj,
        old_object=old,
    )


_STR_OR_NONE = (str, type(None))
_OBJECT_OR_NONE = (dict, type(None))


def _group_version(value: Any, last: str) -> bool:
    return (
        type(value) is dict
        and type(value.get("group", "")) is str
        and type(value.get("version")) is str
        and type(value.get(last)) is str
    )


def _optional_group_version(value: Any, last: str) -> bool:
    return value is None or _group_version(value, last)


def _string_lists(value: Any) -> bool:
    return type(value) is dict and all(
        type(v) is list and all(type(s) is str for s in v) for v in value.values()
    )


def parse_review(body: bytes) -> review.AdmissionRequest:
    """Validate a raw AdmissionReview body and return its request, or raise ``MalformedReview``.

    Fast path: parse the JSON once (``pydantic_core.from_json``) and validate the resulting
    dicts with the same model. In Python mode ``object``/``oldObject`` (``dict[str, Any]``)
    are checked to be objects and copied one level deep, their contents passed through as
    parsed; validating the body as JSON cost ~30 us for a 3.6 KB Deployment review against
    ~24 us this way, most of it for the two objects nobody reads more than a few keys of.
    On JSON-derived input the two modes accept the same reviews (a test holds them together);
    whatever the fast path refuses is validated again as JSON, whose messages ("Input should
    be an object") are the ones a caller reads.
    """
    if not body:
        raise MalformedReview("malformed AdmissionReview: the request body is empty")
    try:
        return review.AdmissionReview.model_validate(pydantic_core.from_json(body)).request
    except (ValueError, pydantic.ValidationError):  # (ValidationError is a ValueError too)
        pass
    try:
        parsed = review.AdmissionReview.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise MalformedReview(explain(e)) from None
    return parsed.request


def explain(error: pydantic.ValidationError) -> str:
    """One line naming every bad field by its wire path (``request.userInfo``), without values.

    Input values are left out on purpose: they can be megabytes of someone's Secret.
    """
    problems: list[str] = []
    for item in error.errors(include_url=False, include_input=False):
        if item["type"] == "json_invalid":
            problems.append(f"invalid JSON ({item['msg'].removeprefix('Invalid JSON: ')})")
            continue
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {_field_message(item)}")
    text = "malformed AdmissionReview (want apiVersion admission.k8s.io/v1, kind AdmissionReview): "
    text += "; ".join(problems)
    if len(text) > _MAX_EXPLANATION_CHARS:
        text = text[: _MAX_EXPLANATION_CHARS - 1] + "…"
    return text


def _field_message(item: pydantic_core.ErrorDetails) -> str:
    if item["type"] == "missing":
        return "required"
    if item["type"] == "string_too_short":
        return "must not be empty"
    return str(item["msg"])
