"""The review codec: bytes from the API server in, a validated ``AdmissionRequest`` out.

A review we cannot read is answered with an HTTP error and a plain explanation, never with an
AdmissionReview: the API server then applies the webhook's failurePolicy (Fail by default),
so a broken or hostile caller can never talk its way into ``allowed: true``.

What the API server can legitimately send is derived from its own limits, below, and every
such review is read: up to ``MAX_BODY_BYTES`` of body, JSON nested as deep as Kubernetes
allows (``MAX_JSON_DEPTH``). The fast path decodes the body straight into the typed review
(msgspec, ``model.review``): one pass that parses and schema-checks every byte. It stops at the
interpreter's recursion limit; deeper reviews go to ``parse_deep_review`` (the stdlib parser,
then the same types checked over the parsed objects), which the server runs on a thread whose
stack is big enough for them.
"""

from __future__ import annotations

import json
import re
from typing import Final, NoReturn

import msgspec

from controller.model import review
from controller.policy.request import Request

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


_DECODER: Final = msgspec.json.Decoder(review.AdmissionReview, strict=False)
"""Lax where pydantic's lax mode was (``"dryRun": "true"``), strict about shapes and names."""

#: Deepest review decoded (and then decided) on the calling thread, the event loop's: the
#: decoder and a decision's comparisons recurse in C once per level, and while a deep review
#: is being parsed the interpreter's recursion limit is raised for every thread
#: (``budget.deep_recursion``), so the depth must be bounded here, not by that limit.
FAST_MAX_DEPTH: Final = 200

_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"{}[]")


def parse_review(body: bytes | bytearray) -> review.AdmissionRequest:
    """Decode and validate a raw AdmissionReview body; return its request, or raise
    ``MalformedReview``.

    One pass: the JSON is parsed and checked against ``review.AdmissionReview`` together,
    ``object``/``oldObject`` built as plain dicts along the way. Raises ``DeepReview`` when the
    body is nested deeper than this parser goes on the calling thread's recursion limit.
    """
    if not body:
        raise MalformedReview("malformed AdmissionReview: the request body is empty")
    if not nested_at_most(body, FAST_MAX_DEPTH):
        raise DeepReview(f"nested deeper than {FAST_MAX_DEPTH} levels, or unbalanced")
    try:
        return _DECODER.decode(body).request
    except RecursionError:
        raise DeepReview("nested deeper than the fast parser goes") from None
    except msgspec.ValidationError as e:
        raise MalformedReview(explain(e)) from None
    except msgspec.DecodeError as e:
        raise MalformedReview(_invalid_json(e)) from None


def request_from_review(r: review.AdmissionRequest) -> Request:
    """The review's request as the decision core reads it (the wire model stays on this side)."""
    return Request(
        uid=r.uid,
        user=r.user_info.username,
        groups=tuple(r.user_info.groups),
        operation=r.operation,
        api_group=r.resource.group,
        api_version=r.resource.version,
        resource=r.resource.resource,
        subresource=r.sub_resource or "",
        kind=r.kind.kind,
        namespace=r.namespace or "",
        name=r.name or "",
        dry_run=bool(r.dry_run),
        object=r.object,
        old_object=r.old_object,
    )


def nested_at_most(body: bytes | bytearray, depth: int) -> bool:
    """Whether the JSON in ``body`` nests at most ``depth`` levels (False: maybe deeper).

    Byte operations only, no parse: most reviews have fewer brackets than ``depth`` at all.
    Otherwise strings are cut out (escaped backslashes and quotes first, so every quote left
    delimits one) -- brackets inside them must not hide structure -- and matched bracket pairs
    are removed innermost first, at most two levels a round. Input that is not balanced JSON
    answers False and is left to the careful parser, which refuses it.
    """
    if body.count(b"{") + body.count(b"[") <= depth:
        return True
    text = bytes(body).replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(text.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    for _ in range(depth // 2):
        if not brackets:
            return True
        inner = brackets.replace(b"{}", b"").replace(b"[]", b"")
        if inner == brackets:
            return False
        brackets = inner
    return not brackets


def parse_deep_review(body: bytes | bytearray) -> review.AdmissionRequest:
    """Like ``parse_review``, for reviews nested up to ``MAX_JSON_DEPTH`` levels.

    The stdlib parser recurses once per level in C, and so do the comparisons a decision then
    makes of ``object`` and ``oldObject``: call this (and decide the review) only on a thread
    whose stack and recursion limit allow ``MAX_JSON_DEPTH`` levels -- deeper input then ends
    in RecursionError, answered as a 400, never in a crashed process. The parsed objects are
    checked against the same types (``msgspec.convert``), not parsed again.
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
        return msgspec.convert(parsed, review.AdmissionReview, strict=False).request
    except msgspec.ValidationError as e:
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


_HEADER: Final = (
    "malformed AdmissionReview (want apiVersion admission.k8s.io/v1, kind AdmissionReview): "
)
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def explain(error: msgspec.ValidationError) -> str:
    """One line naming the bad field by its wire path (``request.userInfo``), without values.

    Input values are left out on purpose: they can be megabytes of someone's Secret.
    """
    match = _AT.match(str(error))
    assert match is not None  # the pattern matches any text
    message, path = match["msg"], (match["path"] or "").lstrip(".")
    missing = _MISSING.match(message)
    if missing:
        path = f"{path}.{missing['field']}" if path else missing["field"]
        message = "required"
    elif message.startswith("Invalid enum value"):
        message = "unsupported value"  # msgspec quotes the value: do not echo it
    elif message.startswith("Expected `str` of length >= 1"):
        message = "must not be empty"
    elif message.startswith("Expected `object"):
        message = "Input should be an object"
    text = f"{_HEADER}{path or 'body'}: {message}"
    if len(text) > _MAX_EXPLANATION_CHARS:
        text = text[: _MAX_EXPLANATION_CHARS - 1] + "…"
    return text


def _invalid_json(error: msgspec.DecodeError) -> str:
    detail = str(error).removeprefix("JSON is malformed: ")
    return f"{_HEADER}invalid JSON ({detail})"[:_MAX_EXPLANATION_CHARS]
