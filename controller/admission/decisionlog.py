"""One structured JSON log line per decision, on logger ``changegate.decisions``.

Log shippers index these fields; auditors grep them. The API server's audit log has the same
story through ``auditAnnotations``, but only if auditing is on -- this line is always there.

The line is made on every admission request, so ``emit`` is built for speed without changing
what a handler receives: the JSON text is formatted directly (byte for byte what encoding
``record()`` gives -- a test holds the two together) and the ``LogRecord`` is made from a
template of the attributes that are the same for every decision line (level, source
location, process), setting only the ones that change (message, times, thread). A record
factory installed with ``logging.setLogRecordFactory`` is still honoured: then the record is
made by ``Logger.makeRecord`` as usual.
"""

from __future__ import annotations

import datetime
import json
import json.encoder
import logging
import os
import threading
import time
from typing import Any

from controller.policy import decide, explain

logger = logging.getLogger("changegate.decisions")

#: The encoder the line's strings go through: ``ensure_ascii=False`` as for the whole line.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_string: Any = json.encoder.encode_basestring  # the C encoder of one JSON string (no escaping \u)


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
        "resource": _resource(request),
        "namespace": request.namespace,
        "name": request.name,
        "decision": decision.verdict,
        "allowed": decision.allowed,
        "reason": str(decision.reason),
        "policy": decision.policy,
        "window": decision.window,
        "ticket": decision.ticket,
        "mode": str(decision.mode) if decision.mode is not None else None,
        "dryRun": request.dry_run,
        "latency_ms": round(latency_s * 1000, 3),
    }


def line(
    *,
    request: decide.Request,
    decision: decide.Decision,
    now: datetime.datetime,
    latency_s: float,
) -> str:
    """``record()`` as one compact JSON line, formatted directly instead of through a dict."""
    q = _string
    mode = decision.mode
    return (
        f'{{"ts":{q(now.isoformat())},"uid":{q(request.uid)},"user":{q(request.user)},'
        f'"operation":{q(request.operation)},"resource":{q(_resource(request))},'
        f'"namespace":{q(request.namespace)},"name":{q(request.name)},'
        f'"decision":{_ALLOW if decision.verdict == "allow" else _DENY},'
        f'"allowed":{"true" if decision.allowed else "false"},"reason":{q(str(decision.reason))},'
        f'"policy":{_optional(decision.policy)},"window":{_optional(decision.window)},'
        f'"ticket":{_optional(decision.ticket)},'
        f'"mode":{"null" if mode is None else q(str(mode))},'
        f'"dryRun":{"true" if request.dry_run else "false"},'
        f'"latency_ms":{round(latency_s * 1000, 3)!r}}}'
    )


_ALLOW = '"allow"'
_DENY = '"deny"'


def _resource(request: decide.Request) -> str:
    return explain.resource_label(
        api_group=request.api_group, resource=request.resource, subresource=request.subresource
    )


def _optional(value: str | None) -> str:
    return "null" if value is None else str(_string(value))


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
    text = line(request=request, decision=decision, now=now, latency_s=latency_s)
    if _SLOW_RECORDS or logging.getLogRecordFactory() is not logging.LogRecord:
        # makeRecord + handle is logger.info without findCaller's stack walk, which costs as
        # much as the rest of the line; the source location of this one call site tells nobody
        # anything.
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, (), None))
        return
    logger.handle(_DecisionRecord(text))


class _DecisionRecord(logging.LogRecord):
    """A LogRecord at INFO from this module, with every attribute ``LogRecord.__init__`` sets.

    The ones that are the same for every decision line come from a record made by
    ``LogRecord.__init__`` itself (``_template``); the rest are computed here as it does.
    """

    def __init__(self, msg: str) -> None:
        ct = time.time()
        self.__dict__.update(_template())
        self.msg = msg
        self.created = ct
        self.msecs = int((ct - int(ct)) * 1000) + 0.0
        self.relativeCreated = (ct - _START) * 1000
        if logging.logThreads:
            self.thread = threading.get_ident()
            self.threadName = threading.current_thread().name


def _made_by_logging() -> dict[str, Any]:
    return dict(vars(logging.LogRecord(logger.name, logging.INFO, __file__, 0, "", (), None)))


_templates: dict[tuple[int, bool, bool], dict[str, Any]] = {}


def _template() -> dict[str, Any]:
    """The constant attributes, for this process (a forked child has its own pid and name)
    and logging's switches as they are now."""
    key = (os.getpid(), bool(logging.logProcesses), bool(logging.logMultiprocessing))
    template = _templates.get(key)
    if template is None:
        _templates.clear()
        template = _templates[key] = _made_by_logging()
    return template


_first = _made_by_logging()
#: When logging's clock started: what ``relativeCreated`` counts from.
_START: float = getattr(logging, "_startTime", _first["created"] - _first["relativeCreated"] / 1000)
#: A Python whose LogRecord has per-call attributes this module does not set (taskName, 3.12+)
#: gets every record from ``makeRecord``.
_SLOW_RECORDS = "taskName" in _first
