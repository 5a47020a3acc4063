"""The review codec: bytes from the API server in, a validated ``AdmissionRequest`` out.

A review we cannot read is answered with an HTTP error and a plain explanation, never with an
AdmissionReview: the API server then applies the webhook's failurePolicy (Fail by default),
so a broken or hostile caller can never talk its way into ``allowed: true``.

What the API server can legitimately send is derived from its own limits, below, and every
such review is read: up to ``MAX_BODY_BYTES`` of body, JSON nested as deep as Kubernetes
allows (``MAX_JSON_DEPTH``). The fast parser (jiter, through pydantic-core) stops at ~200
levels; deeper reviews go to ``parse_deep_review`` (the stdlib parser), which the server runs
on a thread whose stack is big enough for them.
"""

from __future__ import annotations

import json
from typing import Final, NoReturn

import pydantic
import pydantic_core

from controller.model import review

# -- how big a review the API server can send --------------------------------------------------
#
# An AdmissionReview carries at most two objects (UPDATE: ``object`` and ``oldObject``; DELETE
# and CONNECT send one and a small options object) plus an envelope. Each object was read
# from, or is about to be written to, etcd, whose default ``--max-request-bytes`` is 1.5 MiB:
# no stored object is bigger. The API server encodes the review with Go's encoding/json, which
# writes ``<``, ``>`` and ``&`` as ``\u003c``/``\u003e``/``\u0026``, control bytes as ``\u00XX``
# and each byte of invalid UTF-8 as ``\ufffd``: one stored byte becomes at most 6 bytes (a
# ConfigMap of ``<`` characters, stored as protobuf, grows sixfold; protobuf's field numbers
# becoming JSON field names grow far less). The envelope's only large part is ``userInfo``,
# which comes from the request's headers (or a token in them): the API server reads at most
# 1 MiB of headers (``MaxHeaderBytes``), escaped up to 6x again. The rest (uid, kinds, names
# of at most 253 characters, options) fits in 64 KiB. So:
#
#     2 objects x 1.5 MiB x 6  +  1 MiB x 6  +  64 KiB  =  18 MiB + 6 MiB + 64 KiB
#
# The issue that set this: a ConfigMap of ~900 KB of ``<>&`` updated to another such value
# makes a ~10.6 MiB review, which the old 8 MiB limit answered with 413 (a denied change).
_ETCD_MAX_REQUEST_BYTES: Final = 1536 * 1024  # etcd --max-request-bytes default
_GO_JSON_ESCAPE_FACTOR: Final = 6  # "<" -> "\u003c"
_APISERVER_MAX_HEADER_BYTES: Final = 1 << 20  # what userInfo is authenticated from
_ENVELOPE_FIXED_BYTES: Final = 64 * 1024

#: Largest review body we read (25,231,360 bytes, ~24.1 MiB); larger ones are answered 413.
MAX_BODY_BYTES: Final = (
    2 * _ETCD_MAX_REQUEST_BYTES * _GO_JSON_ESCAPE_FACTOR
    + _APISERVER_MAX_HEADER_BYTES * _GO_JSON_ESCAPE_FACTOR
    + _ENVELOPE_FIXED_BYTES
)

#: Deepest JSON the API server decodes (Go encoding/json's ``maxNestingDepth``, kept by
#: sigs.k8s.io/json, which Kubernetes decodes with): a custom resource with
#: ``x-kubernetes-preserve-unknown-fields`` may be nested this deep, and must be decided.
MAX_OBJECT_DEPTH: Final = 10_000
#: The review wraps the object in two more levels (review -> request -> object); a few spare.
MAX_JSON_DEPTH: Final = MAX_OBJECT_DEPTH + 8

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


class CompressedBody(ReviewError):
    """A body with a Content-Encoding: the API server never compresses reviews, and inflating
    one is how a few KiB of gzip become a GiB of memory."""

    http_status = 415


class BodyTooLarge(ReviewError):
    """Bigger than any review the API server can send (``MAX_BODY_BYTES``), or than we can
    decide in the memory a review may use."""

    http_status = 413


class BodyIncomplete(ReviewError):
    """The caller went away before sending the whole body (nobody reads this answer)."""

    http_status = 400


class BodyTimeout(ReviewError):
    """The body did not arrive in time; the API server would have given up by now."""

    http_status = 408


class Busy(ReviewError):
    """Too many review bytes are in flight on this replica; the API server may retry."""

    http_status = 503


class DeepReview(Exception):
    """The fast parser refused the body for its depth: use ``parse_deep_review`` instead."""


def check_content_encoding(values: list[str]) -> None:
    """Refuse any Content-Encoding but ``identity``, before a byte of the body is read."""
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    refused = [c for c in codings if c not in ("", "identity")]
    if refused:
        raise CompressedBody(
            f"changegate does not accept compressed reviews (Content-Encoding: {refused[0][:40]})"
            "; the API server sends them uncompressed"
        )


def parse_review(body: bytes | bytearray) -> review.AdmissionRequest:
    """Validate a raw AdmissionReview body and return its request, or raise ``MalformedReview``.

    Fast path: parse the JSON once (``pydantic_core.from_json``) and validate the resulting
    dicts with the same model. In Python mode ``object``/``oldObject`` (``dict[str, Any]``)
    are checked to be objects and copied one level deep, their contents passed through as
    parsed; validating the body as JSON cost ~30 us for a 3.6 KB Deployment review against
    ~24 us this way, most of it for the two objects nobody reads more than a few keys of.
    On JSON-derived input the two modes accept the same reviews (a test holds them together);
    whatever the fast path refuses is validated again as JSON, whose messages ("Input should
    be an object") are the ones a caller reads.

    Raises ``DeepReview`` when the body is nested deeper than the fast parser goes.
    """
    if not body:
        raise MalformedReview("malformed AdmissionReview: the request body is empty")
    try:
        return review.AdmissionReview.model_validate(pydantic_core.from_json(body)).request
    except pydantic.ValidationError:
        pass
    except ValueError as e:
        if str(e).startswith("recursion limit exceeded"):
            raise DeepReview(str(e)) from None
    try:
        parsed = review.AdmissionReview.model_validate_json(body)
    except pydantic.ValidationError as e:
        raise MalformedReview(explain(e)) from None
    return parsed.request


def parse_deep_review(body: bytes | bytearray) -> review.AdmissionRequest:
    """Like ``parse_review``, for reviews nested up to ``MAX_JSON_DEPTH`` levels.

    The stdlib parser recurses once per level in C, and so do the comparisons a decision then
    makes of ``object`` and ``oldObject``: call this (and decide the review) only on a thread
    whose stack and recursion limit allow ``MAX_JSON_DEPTH`` levels -- deeper input then ends
    in RecursionError, answered as a 400, never in a crashed process.
    """
    try:
        parsed = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedReview(
            "malformed AdmissionReview: JSON nested deeper than Kubernetes allows "
            f"({MAX_OBJECT_DEPTH} levels)"
        ) from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity
        raise MalformedReview(f"malformed AdmissionReview: invalid JSON ({e})"[:200]) from None
    try:
        return review.AdmissionReview.model_validate(parsed).request
    except pydantic.ValidationError as e:
        raise MalformedReview(explain(e)) from None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# -- what parsing a body costs -----------------------------------------------------------------
#
# Python objects are much bigger than the JSON that describes them: ``[{"":{}},...]`` parses
# to 32 bytes of dicts per byte of body on CPython 3.11 (measured with tracemalloc; ``[{},...]``
# 24x, ``[[],...]`` 21x, a list of numbers 4-10x). That cost is bounded by punctuation: every
# container, member and element is announced by one of ``{ [ : ,``, and each weight below
# covers the most a parse makes for one of them (``{``: an empty dict with room for 5 keys;
# ``:`` or ``,``: one more slot and its value object).
#
# Text costs by width: a Python str holds 1, 2 or 4 bytes a character, by its widest one, and
# the parser decodes each string into a scratch buffer first. So the characters a body spells
# cost at most (1 + width) bytes per body byte (measured on 24 MiB bodies, jiter: escaped
# ``\u003c`` 1.3x, ASCII 2.0x, CJK 1.7x, ASCII with emoji 2.5x; RSS, not just Python objects).
# The stdlib parser (deep reviews) first decodes the whole body to one more str.
_TOKEN_WEIGHTS: Final = ((b"{", 200), (b"[", 80), (b":", 72), (b",", 72))

#: A bound on parsed size per body byte, whatever the JSON: ``{},`` is the densest punctuation
#: (two tokens in three bytes). Used where the body is not yet read (a reservation).
MAX_PARSED_BYTES_PER_BODY_BYTE: Final = 36


def parsed_size_bound(body: bytes | bytearray, *, deep: bool = False) -> int:
    """An upper bound on the memory ``body`` and what parsing it makes take, in bytes.

    ``deep``: for ``parse_deep_review``. Characters inside strings are counted as punctuation
    too: the bound only gets safer. It costs a few ``bytes.count`` passes (~10 ms for 24 MiB),
    paid only by large reviews.
    """
    width = _widest_character_bytes(body)
    text = len(body) * (1 + width + (width if deep else 0))
    return len(body) + text + sum(body.count(token) * weight for token, weight in _TOKEN_WEIGHTS)


def _widest_character_bytes(body: bytes | bytearray) -> int:
    """The most bytes a character of ``body`` may take in a Python str: 1, else 4 (2 or 4).

    Go's encoder writes non-ASCII as raw UTF-8 and escapes only control characters, ``<>&``
    (all ``\\u00XX``, one byte in a str), U+2028/U+2029 and U+FFFD; so the reviews the API
    server sends with escaped text are ASCII with ``\\u00`` escapes alone.
    """
    if body.isascii() and body.count(b"\\u") == body.count(b"\\u00"):
        return 1
    return 4


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
