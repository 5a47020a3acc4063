"""The review codec: bytes from the API server in, a validated ``AdmissionRequest`` out.

A review we cannot read is answered with HTTP 400 and a plain explanation, never with an
AdmissionReview: the API server then applies the webhook's failurePolicy (Fail by default),
so a broken or hostile caller can never talk its way into ``allowed: true``.
"""

from __future__ import annotations

from typing import Any, Final

import pydantic
import pydantic_core

from controller.model import review

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


#: The two fields that are most of a review's bytes: the object after and before the change.
#: Their content is the API server's business (it has validated them); we only need each to be
#: a JSON object or absent, and read a few keys from them.
_OBJECT_FIELDS: Final = (("object", "object"), ("oldObject", "old_object"))
_ABSENT: Final = object()


def parse_review(body: bytes) -> review.AdmissionRequest:
    """Validate a raw AdmissionReview body and return its request, or raise ``MalformedReview``.

    Fast path: parse the JSON once, hand ``object``/``oldObject`` over as the parsed dicts and
    let pydantic validate only the envelope around them (request metadata, userInfo, kind and
    resource). Letting pydantic validate the two objects too made it walk and copy every key of
    a 3 KB Deployment twice per review -- most of the codec's cost. Whatever the fast path does
    not accept goes through ``AdmissionReview.model_validate_json`` on the whole body, which
    either accepts it (so no review is refused that the full model takes) or explains it.
    """
    if not body:
        raise MalformedReview("malformed AdmissionReview: the request body is empty")
    fast = _parse_envelope(body)
    if fast is not None:
        return fast
    try:
        parsed = review.AdmissionReview.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise MalformedReview(explain(e)) from None
    return parsed.request


def _parse_envelope(body: bytes) -> review.AdmissionRequest | None:
    """The request of a well-formed review, or None to leave it to the full model."""
    try:
        doc = pydantic_core.from_json(body)
    except ValueError:
        return None
    if type(doc) is not dict:
        return None
    request = doc.get("request")
    if type(request) is not dict or "old_object" in request:
        return None  # (a field by its Python name as well: the full model decides which wins)
    objects: list[tuple[str, Any]] = []
    for key, field in _OBJECT_FIELDS:
        value = request.pop(key, _ABSENT)
        if value is _ABSENT:
            continue
        if value is not None and type(value) is not dict:
            return None  # not an object: the full model explains why
        objects.append((field, value))
    try:
        admission_request = review.AdmissionReview.model_validate(doc).request
    except pydantic.ValidationError:
        return None
    for field, value in objects:
        setattr(admission_request, field, value)
    return admission_request


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
