"""One structured JSON log line per decision, on logger ``changegate.decisions``.

Log shippers index these fields; auditors grep them. The API server's audit log has the same
story through ``auditAnnotations``, but only if auditing is on -- this line is always there.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from controller.policy import decide

logger = logging.getLogger("changegate.decisions")

#: One encoder for every line: ``json.dumps`` with options builds a new JSONEncoder per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def resource_name(request: decide.Request) -> str:
    """``deployments.apps``, ``pods/exec``, ``deployments.apps/scale`` -- as kubectl names them."""
    name = f"{request.resource}.{request.api_group}" if request.api_group else request.resource
    return f"{name}/{request.subresource}" if request.subresource else name


def record(
    *,
    request: decide.Request,
    decision: decide.Decision,
    now: datetime.datetime,
    latency_s: float,
) -> dict[str, Any]:
    """The fields of one decision's log line (pure, so tests read it without a logger)."""
    return {
        "ts": now.isoformat(),
        "uid": request.uid,
        "user": request.user,
        "operation": request.operation,
        "resource": resource_name(request),
        "namespace": request.namespace,
        "name": request.name,
        "decision": "allow" if decision.allowed else "deny",
        "reason": str(decision.reason),
        "policy": decision.policy,
        "window": decision.window,
        "ticket": decision.ticket,
        "mode": str(decision.mode) if decision.mode is not None else None,
        "dryRun": request.dry_run,
        "latency_ms": round(latency_s * 1000, 3),
    }


def emit(
    *,
    request: decide.Request,
    decision: decide.Decision,
    now: datetime.datetime,
    latency_s: float,
) -> None:
    """Log the decision at INFO, building the line only when someone listens."""
    if not logger.isEnabledFor(logging.INFO):
        return
    line = record(request=request, decision=decision, now=now, latency_s=latency_s)
    text = _encode(line)
    # makeRecord + handle is logger.info without findCaller's stack walk, which costs as much
    # as the rest of the line; the source location of this one call site tells nobody anything.
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, (), None))
