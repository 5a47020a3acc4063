"""The admission HTTPS server: routes, the request path of a review, and its lifecycle.

Our own small aiohttp app instead of kopf's admission server, because kopf's answers unknown
paths with ``allowed: true``, keeps aiohttp's 1 MiB body limit and makes self-signed
certificates through oscrypto (broken on OpenSSL 3).

The request path is: refuse compressed bodies -> wait for room in the memory budget
(``budget.Gate``) -> read body -> ``codec.parse_review`` (decoded and schema-checked in one
pass) -> ``codec.request_from_review`` -> ``decide.decide`` against the store's current
snapshot -> ``responses.build_response``, encoded to bytes in one step. It runs
on the event loop thread: a decision is ~100 µs of pure computation on an immutable snapshot,
cheaper than a hop to a thread pool, and it never calls the Kubernetes API -- everything a
decision needs is already in the index the operator keeps. Large reviews are parsed on a
worker thread (``budget.Worker``) so they do not stall the small ones, and reviews nested
deeper than the fast parser goes are parsed and decided there, on a stack made for them.

Only a real decision can produce ``allowed: true``. Everything else is an HTTP error with a
plain-text reason (400 for a malformed review, 404/405 for wrong routes, 408 for a body that
does not arrive, 413 for a body bigger than the API server can send or than a replica may
parse, 415 for a compressed body, 503 when the budget stays full, 500 if the engine fails),
which the API server turns into a denial under failurePolicy Fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Final

import msgspec
from aiohttp import hdrs, web

from controller import store as stores
from controller.admission import budget, codec, decisionlog, responses, tls
from controller.admission import metrics as metrics_mod
from controller.model import review
from controller.policy import decide
from controller.policy.request import STARTING_MESSAGE

logger = logging.getLogger("changegate.admission")


Clock = Callable[[], datetime.datetime]
OnDecision = Callable[[decide.Request, decide.Decision], None]
NamespaceReader = Callable[[str], Awaitable[Mapping[str, str] | None]]
"""Reads a namespace's labels from the API server (None: it does not exist). Used only for a
namespace the index has not seen yet, when a policy picks namespaces by label."""

#: How long a review may wait for a namespace's labels (the webhook's timeout is 5 s).
NAMESPACE_READ_SECONDS: Final = 2.0

#: Where the operator finds the metrics of an app it built (to set window phases).
METRICS: Final = web.AppKey("changegate_metrics", metrics_mod.Metrics)
#: The app's memory budget for review bodies (what is in flight, for tests and metrics).
GATE: Final = web.AppKey("changegate_gate", budget.Gate)


_encode_json: Final = msgspec.json.Encoder().encode


def utcnow() -> datetime.datetime:
    """The controller's clock: the only one decisions read (tests inject their own)."""
    return datetime.datetime.now(datetime.UTC)


def _here(run: Callable[[], decide.Decision]) -> decide.Decision:
    return run()


class _Routes:
    """The handlers, sharing the store, the clock, the callback, the metrics and the budget."""

    def __init__(
        self,
        *,
        store: stores.Store,
        clock: Clock,
        on_decision: OnDecision | None,
        metrics: metrics_mod.Metrics,
        limits: budget.Limits,
        namespace_reader: NamespaceReader | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.on_decision = on_decision
        self.metrics = metrics
        self.namespace_reader = namespace_reader
        self._reading: dict[str, asyncio.Future[Mapping[str, str] | None]] = {}
        self.limits = limits
        self.gate = budget.Gate(limits)
        self.worker = budget.Worker()

    async def validate(self, http: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            # Before a byte of the body is read: aiohttp would inflate it while reading.
            codec.check_content_encoding(http.headers.getall(hdrs.CONTENT_ENCODING, []))
            length = http.content_length
            if length is not None and length > self.limits.max_body_bytes:
                raise self._too_large(length)
            if length is not None and length <= self.limits.small_body_bytes:
                async with self.gate.small(length):
                    body = await self._read(http)
                    try:
                        admission_request = codec.parse_review(body)
                    except codec.DeepReview:
                        async with self.gate.large():
                            return await self._answer_large(body, started=started)
                    return await self._answer(admission_request, started=started)
            async with self.gate.large():
                body = await self._read(http)
                return await self._answer_large(body, started=started)
        except codec.ReviewError as e:
            self.metrics.observe_bad_review(code=e.http_status)
            return web.Response(status=e.http_status, text=e.message + "\n")

    async def _read(self, http: web.Request) -> bytearray:
        """The body, up to ``max_body_bytes`` and ``read_seconds``, kept in the buffer it is read
        into (parsers take a bytearray as they are: no copy to bytes)."""
        limit = self.limits.max_body_bytes
        content = http.content
        # Usually the whole review came in with the headers: take it without arming a timer.
        body = bytearray(content.read_nowait())
        if len(body) > limit:
            raise self._too_large(len(body))
        if content.at_eof():
            return body
        try:
            async with asyncio.timeout(self.limits.read_seconds):
                while chunk := await content.readany():
                    if len(body) + len(chunk) > limit:
                        raise self._too_large(len(body) + len(chunk))
                    body += chunk
        except (ConnectionError, web.RequestPayloadError):
            # Answered like any other bad body (and counted), not logged as a server error.
            raise codec.BodyIncomplete(
                "the caller hung up before sending the whole review body"
            ) from None
        except TimeoutError:
            raise codec.BodyTimeout(
                f"changegate stopped waiting for the review body after {self.limits.read_seconds:g} s"
            ) from None
        return body

    def _too_large(self, size: int) -> codec.BodyTooLarge:
        return codec.BodyTooLarge(
            f"AdmissionReview body of {size} bytes or more is larger than any the API server "
            f"sends ({self.limits.max_body_bytes} bytes: two objects at etcd's 1.5 MiB limit, "
            "JSON-escaped, and the requester's identity)"
        )

    async def _answer_large(self, body: bytearray, *, started: float) -> web.StreamResponse:
        """Parse on the worker thread (inside the large lane); decide deep reviews there too."""

        def parse() -> tuple[review.AdmissionRequest, bool]:
            self.gate.check_fits(body)
            try:
                return codec.parse_review(body), False
            except codec.DeepReview:
                pass
            self.gate.check_fits(body, deep=True)  # the stdlib parser needs more
            with budget.deep_recursion():
                return codec.parse_deep_review(body), True

        admission_request, deep = await self.worker.run(parse)
        if not deep:
            return await self._answer(admission_request, started=started)

        def decide_deep(run: Callable[[], decide.Decision]) -> decide.Decision:
            def on_worker() -> decide.Decision:
                with budget.deep_recursion():
                    return run()

            return self.worker.call(on_worker)

        return await self._answer(admission_request, started=started, decide_with=decide_deep)

    async def _answer(
        self,
        admission_request: review.AdmissionRequest,
        *,
        started: float,
        decide_with: Callable[[Callable[[], decide.Decision]], decide.Decision] = _here,
    ) -> web.StreamResponse:
        now = self.clock()
        try:
            request = codec.request_from_review(admission_request)
            if self.store.ready:
                snapshot = self.store.snapshot()
                decision = decide_with(lambda: decide.decide(request, snapshot=snapshot, now=now))
                if decision.reason is decide.Reason.UNKNOWN_NAMESPACE:
                    # The index has not seen this namespace yet (created a moment ago): never
                    # decide "not controlled" from that; read its labels and decide again.
                    labels = await self._namespace_labels(request.namespace)
                    if labels is not None:
                        decision = decide_with(
                            lambda: decide.decide(
                                request, snapshot=snapshot, now=now, namespace_labels=labels
                            )
                        )
            else:
                decision = decide.Decision.starting()
            answer = responses.build_response(uid=request.uid, decision=decision)
        except Exception:
            # decide() promises never to raise; if it does anyway, answer with an HTTP error so
            # the API server applies failurePolicy (deny) instead of us guessing an answer.
            logger.exception("could not decide review %s", admission_request.uid)
            self.metrics.observe_bad_review(code=500)
            return web.Response(
                status=500, text="changegate could not decide this request; see its log\n"
            )

        latency = time.perf_counter() - started
        self.metrics.observe_decision(decision=decision, dry_run=request.dry_run, seconds=latency)
        decisionlog.emit(request=request, decision=decision, now=now, latency_s=latency)
        self._notify(request, decision)
        # Encoded straight to bytes (aiohttp's json_response goes through json.dumps to str
        # and then encodes that: twice the work on every answer).
        return web.Response(body=_encode_json(answer), content_type="application/json")

    async def _namespace_labels(self, namespace: str) -> Mapping[str, str] | None:
        """The namespace's labels from the API server, or None (keep the UnknownNamespace
        denial: no reader, not found, or no answer within ``NAMESPACE_READ_SECONDS``).

        Concurrent reviews in the same new namespace (``kubectl apply`` of a whole directory)
        share one read.
        """
        if self.namespace_reader is None:
            return None
        pending = self._reading.get(namespace)
        if pending is None:
            pending = asyncio.ensure_future(self.namespace_reader(namespace))
            self._reading[namespace] = pending
            pending.add_done_callback(lambda _: self._reading.pop(namespace, None))
        try:
            async with asyncio.timeout(NAMESPACE_READ_SECONDS):
                return await asyncio.shield(pending)
        except Exception as e:  # fail closed: the denial asks to retry
            logger.warning("could not read namespace %s for a review: %r", namespace, e)
            return None

    def _notify(self, request: decide.Request, decision: decide.Decision) -> None:
        # The answer is already made; a failing Event poster must not change or delay it.
        if self.on_decision is None:
            return
        try:
            self.on_decision(request, decision)
        except Exception:
            logger.exception("on_decision callback failed for review %s", request.uid)

    async def healthz(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def readyz(self, _: web.Request) -> web.StreamResponse:
        ready = self.store.ready
        self.metrics.set_index_ready(ready)
        if not ready:
            return web.Response(status=503, text=STARTING_MESSAGE + "\n")
        return web.Response(text="ok\n")

    async def metrics_text(self, _: web.Request) -> web.StreamResponse:
        self.metrics.set_index_ready(self.store.ready)
        payload, content_type = self.metrics.exposition()
        response = web.Response(body=payload)
        response.headers["Content-Type"] = content_type
        return response


def build_app(
    *,
    store: stores.Store,
    clock: Clock = utcnow,
    on_decision: OnDecision | None = None,
    metrics: metrics_mod.Metrics | None = None,
    limits: budget.Limits | None = None,
    namespace_reader: NamespaceReader | None = None,
) -> web.Application:
    """The admission app, unstarted: tests drive it with aiohttp's test client, ``serve`` runs it.

    ``on_decision`` is called on the event loop after every decision (the operator posts
    Events from it); it must not block, and whatever it raises is logged and ignored.
    ``limits``: the memory budget for review bodies (``budget.Limits()`` by default).
    ``namespace_reader``: how to read the labels of a namespace the index has not seen yet
    (the operator passes an API read; without it such requests are denied with "retry").
    """
    limits = limits if limits is not None else budget.Limits()
    routes = _Routes(
        store=store,
        clock=clock,
        on_decision=on_decision,
        metrics=metrics if metrics is not None else metrics_mod.Metrics(),
        limits=limits,
        namespace_reader=namespace_reader,
    )
    app = web.Application(client_max_size=limits.max_body_bytes)
    app[METRICS] = routes.metrics
    app[GATE] = routes.gate

    async def stop_worker(_: web.Application) -> None:
        routes.worker.shutdown()

    app.on_cleanup.append(stop_worker)
    app.router.add_post("/validate", routes.validate)
    app.router.add_get("/healthz", routes.healthz)
    app.router.add_get("/readyz", routes.readyz)
    app.router.add_get("/metrics", routes.metrics_text)
    return app


def _return_large_buffers_to_the_os() -> None:
    """Have glibc's malloc serve every allocation of 1 MiB or more with its own mmap.

    By default glibc raises that threshold each time such a block is freed (up to 32 MiB), so
    after a few large reviews their bodies and parse buffers come from the heap instead, stay
    resident when freed and fragment it. Measured on a replica deciding 24 MiB reviews: peak
    RSS 200-222 MiB, and ~190 MiB afterwards, against 174 MiB and ~110-130 MiB with the
    threshold pinned. Process-wide, like the memory limit it serves; a no-op without glibc.
    """
    m_mmap_threshold = -3  # from glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(m_mmap_threshold, 1 << 20)


class Server:
    """A running admission server: where it listens, and how to stop it."""

    def __init__(
        self,
        *,
        runner: web.AppRunner,
        host: str,
        port: int,
        reloader: tls.CertReloader,
        reload_task: asyncio.Task[None],
    ) -> None:
        self.host = host
        self.port = port
        self.reloader = reloader
        self._runner = runner
        self._reload_task = reload_task

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def reload_certs(self) -> bool:
        """Check the cert/key files now (as the periodic check would); True if reloaded."""
        return self.reloader.check()

    async def stop(self) -> None:
        """Stop accepting, let in-flight reviews finish, stop watching the cert files."""
        self._reload_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reload_task
        await self._runner.cleanup()


async def serve(
    *,
    app: web.Application,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    reload_interval: float = tls.RELOAD_INTERVAL_SECONDS,
    shutdown_timeout: float = 5.0,
) -> Server:
    """Listen with TLS on ``host:port`` (0 picks a free port) and reload certs as they change."""
    _return_large_buffers_to_the_os()
    context = tls.server_context(cert_file=cert_file, key_file=key_file)
    reloader = tls.CertReloader(context=context, cert_file=cert_file, key_file=key_file)
    # No access log: every review already gets its structured decision line. No transparent
    # decompression: /validate refuses compressed bodies, and aiohttp would otherwise inflate
    # them as they arrive -- and while it discards the unread rest of a refused one.
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, auto_decompress=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=context, backlog=1024)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    task = asyncio.create_task(reloader.run(reload_interval), name="changegate-cert-reload")
    logger.info("admission server listening on https://%s:%d", host, bound_port)
    return Server(runner=runner, host=host, port=bound_port, reloader=reloader, reload_task=task)
