"""Pure builders of what the webhook answers: the AdmissionReview response for a ``Decision``.

Kept free of aiohttp so tests (and the bench) call them directly. What the API server does with
each part, and therefore why it is shaped this way:

- ``status`` of a denial becomes the error the requester sees. kube-apiserver turns a code
  below 400 into 400 and prefixes the message with ``admission webhook "<name>" denied the
  request:``, so we always send an explicit code and reason: ``403 Forbidden`` for a policy
  denial (kubectl prints ``Error from server (Forbidden): ...``), ``503 ServiceUnavailable``
  while the index is not synced, because that denial is transient and clients that honour
  5xx retry on their own (kubectl prints ``Error from server (ServiceUnavailable): ...``).
- ``warnings`` travel back in HTTP ``Warning`` headers, so each must be one printable line;
  the API server may truncate long ones, so we cut them ourselves where we choose.
- ``auditAnnotations`` land in the audit log prefixed with the webhook name; keys must be
  qualified-name parts (<= 63 chars) and values strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Final

from controller.policy import decide

API_VERSION: Final = "admission.k8s.io/v1"

#: Kubernetes accepts warnings up to a few hundred characters; longer ones risk truncation
#: mid-word by the API server, so we cut them here, visibly.
MAX_WARNING_CHARS: Final = 512
#: A handful is plenty; a flood of warnings hides the one that matters.
MAX_WARNINGS: Final = 8
#: Audit values are free text but end up in every audit event; keep them bounded.
MAX_AUDIT_VALUE_CHARS: Final = 1024

_AUDIT_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_SPACES = re.compile(r"\s+")


def status_for(decision: decide.Decision) -> dict[str, Any] | None:
    """The Kubernetes ``Status`` of a denial (``None`` when admitted)."""
    if decision.allowed:
        return None
    message = decision.message or _fallback_message(decision)
    if decision.reason == decide.Reason.STARTING:
        return {"code": 503, "reason": "ServiceUnavailable", "message": message}
    return {"code": 403, "reason": "Forbidden", "message": message}


def _fallback_message(decision: decide.Decision) -> str:
    # decide() always explains a denial; this only guards against an empty message reaching
    # a requester as the bare "denied the request without explanation".
    if decision.field_errors:
        details = "; ".join(f"{path}: {msg}" for path, msg in decision.field_errors)
        return f"changegate denied the request ({decision.reason}): {details}"
    return f"changegate denied the request ({decision.reason})"


def sanitize_warning(text: str) -> str:
    """One printable line of at most ``MAX_WARNING_CHARS`` characters."""
    # Nearly every warning is printable already; only the rest pay the per-character pass.
    # Printable text has no whitespace but " " (every other kind is a separator or control
    # character, which isprintable() refuses), so without a double space there is no run
    # of whitespace for the regex to collapse either.
    if not text.isprintable():
        text = "".join(c if c.isprintable() else " " for c in text)
    line = (_SPACES.sub(" ", text) if "  " in text else text).strip()
    if len(line) > MAX_WARNING_CHARS:
        line = line[: MAX_WARNING_CHARS - 1].rstrip() + "…"
    return line


def warnings_for(decision: decide.Decision) -> list[str]:
    """The decision's warnings, cleaned, de-duplicated, order kept, at most ``MAX_WARNINGS``."""
    out: list[str] = []
    for raw in decision.warnings:
        line = sanitize_warning(raw)
        if line and line not in out:
            out.append(line)
    return out[:MAX_WARNINGS]


def audit_annotations_for(decision: decide.Decision) -> dict[str, str]:
    """Why the API server let a change through (or not), for its audit log.

    Built from the decision's fields so every answer carries the same keys, then overlaid with
    what the engine put in ``audit_annotations`` (it may know more). Empty values are left out;
    keys the API server would reject are dropped rather than failing the whole response.
    """
    base: dict[str, str] = {
        "decision": decision.verdict,
        "reason": str(decision.reason),
    }
    optional: Mapping[str, str | None] = {
        "mode": str(decision.mode) if decision.mode is not None else None,
        "policy": decision.policy,
        "window": decision.window,
        "ticket": decision.ticket,
        "approvers": ",".join(decision.approvers) or None,
        "identity": decision.identity,
        "emergency": "true" if decision.emergency else None,
    }
    base.update({k: v for k, v in optional.items() if v})
    for key, value in decision.audit_annotations.items():
        if value and _valid_audit_key(key):
            base[key] = value if isinstance(value, str) else str(value)
    for key, value in base.items():
        if len(value) > MAX_AUDIT_VALUE_CHARS:
            base[key] = value[: MAX_AUDIT_VALUE_CHARS - 1] + "…"
    return base


@functools.lru_cache(maxsize=256)
def _valid_audit_key(key: str) -> bool:
    # The engine uses a handful of fixed keys; remember the verdict instead of matching each time.
    return _AUDIT_KEY.match(key) is not None


def build_response(*, uid: str, decision: decide.Decision) -> dict[str, Any]:
    """The full ``admission.k8s.io/v1`` AdmissionReview answering review ``uid``, JSON-ready.

    Built as plain dicts rather than through ``review.AdmissionReviewResponse``: this runs for
    every request and the model round trip costs more than the rest of the answer. The shape
    is the model's (camelCase, unset fields left out); a test holds the two together.
    """
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    status = status_for(decision)
    if status is not None:
        response["status"] = status
    warnings = warnings_for(decision)
    if warnings:
        response["warnings"] = warnings
    response["auditAnnotations"] = audit_annotations_for(decision)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
