"""One changegate replica: the kopf watches, the leader's reconciler, Events and the server.

Everything runs in one asyncio loop. Startup order: the certificates are in place first (in
``secret`` mode the Secret is read or created and its files written), then the admission
server listens (it answers "changegate is starting" and /readyz 503 until the index syncs),
then kopf lists and watches. Shutdown on SIGTERM/SIGINT: stop accepting and drain in-flight reviews, then stop
kopf, release the Lease and cancel the background tasks.

Kubernetes I/O outside kopf (status, Events, Lease, webhook configuration, the certificate
Secret) uses the official synchronous client in worker threads: a handful of small writes,
none on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import kopf
import kubernetes
import msgspec
import uvloop

from controller import store as stores
from controller.admission import server as admission
from controller.admission import tls
from controller.model import crds
from controller.operator import certs, events, handlers, heap, kubeapi, leader, reconciler, webhook

logger = logging.getLogger(__name__)

#: local: dev certificates made in cert_dir; secret: changegate manages a Secret (self-managed);
#: files: tls.crt/tls.key/ca.crt mounted into cert_dir by someone else (cert-manager).
CertMode = Literal["local", "secret", "files"]
CERT_MODES: tuple[CertMode, ...] = ("local", "secret", "files")


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """What ``changegate run`` was asked to do (flags and CHANGEGATE_* environment)."""

    kubeconfig: Path | None = None
    listen_host: str = "0.0.0.0"
    port: int = 8443
    cert_dir: Path = Path("/var/run/changegate/certs")
    namespace: str = "changegate"
    service_account: str = "changegate"
    service_name: str = "changegate"
    failure_policy: webhook.FailurePolicy = "Fail"
    local: bool = False
    cert_mode: CertMode | None = None  # None: "local" with ``local``, else "files"
    cert_secret: str = "changegate-tls"
    builtin_exemptions: bool = True
    instance: str = dataclasses.field(
        default_factory=lambda: (
            os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        )
    )

    @property
    def certificates(self) -> CertMode:
        """Where the serving certificate comes from (``cert_mode``, or the default for it)."""
        return self.cert_mode or ("local" if self.local else "files")

    @property
    def self_username(self) -> str:
        return webhook.service_account_username(self.namespace, self.service_account)


def _api_client(config: Config) -> Any:
    loader: Any = kubernetes.config  # untyped library; keep the Any in one place
    if config.kubeconfig is not None:
        return loader.new_client_from_config(config_file=str(config.kubeconfig))
    try:
        loader.load_incluster_config()
    except loader.ConfigException:
        loader.load_kube_config()
    return kubernetes.client.ApiClient()


def _certificates(
    config: Config, *, api: Any, clock: Callable[[], datetime.datetime]
) -> tuple[Callable[[], bytes], certs.SecretCertificates | None]:
    """The caBundle provider, and the Secret manager in ``secret`` mode (not yet started).

    ``local`` makes dev certificates for 127.0.0.1; ``files`` reads what is mounted (e.g. by
    cert-manager); ``secret`` issues and rotates them in a Secret (controller/operator/certs.py).
    In every mode the bundle is read again on each reconcile pass, and the TLS reloader
    reports a changed ca.crt at once (``tls.CertReloader.follow_ca``), so a rotated CA reaches
    the webhook configuration within seconds and without a restart.
    """
    if config.certificates == "secret":
        managed = certs.SecretCertificates(
            core_api=kubernetes.client.CoreV1Api(api),
            namespace=config.namespace,
            name=config.cert_secret,
            hosts=certs.service_hosts(service=config.service_name, namespace=config.namespace),
            cert_dir=config.cert_dir,
            clock=clock,
        )
        return managed.ca_bundle, managed
    if config.certificates == "local":
        ca_file, _, _ = tls.ensure_dev_certs(config.cert_dir, ("127.0.0.1", "localhost"))
    else:
        ca_file = config.cert_dir / certs.CA_CRT
    return ca_file.read_bytes, None


class _Meta(msgspec.Struct):
    name: str = ""


class _Item(msgspec.Struct):
    metadata: _Meta = msgspec.field(default_factory=_Meta)


class _ListMeta(msgspec.Struct):
    continue_: str | None = msgspec.field(default=None, name="continue")


class _NameList(msgspec.Struct):
    items: list[_Item] = msgspec.field(default_factory=list)
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)


_NAMES = msgspec.json.Decoder(_NameList)
"""A list response read for its names alone."""


#: Objects per page when listing (the initial sync, the resync, kopf's own listing): one page
#: at a time is in memory, never a whole kind.
LIST_PAGE = 500


def _kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # kopf lists every kind again before it watches (all 10,000 windows in one response by
    # default: ~200 MB of parsed JSON at once, whose freed pages the allocator then keeps);
    # in pages, as the initial sync lists.
    settings.watching.chunk_size = LIST_PAGE
    # kopf's own Events about handler progress would be noise next to ours.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # kopf runs one worker task per object that had an event and keeps it, with the object's
    # last body, until it has idled ``idle_timeout`` (5 s by default). Its re-list before
    # watching delivers every object at once, so at 10,000 windows 12,000 such workers (~8 KB
    # each) lived together: +120 MB of RSS within seconds of a start, and the allocator kept
    # the pages after they were freed. Our handlers only hand the event to the Store (~0.1 ms),
    # so a worker has nothing to wait for: a new event after it exited starts a new one. Measured
    # (bench/operator.py, 10,000 windows): settled RSS 369 -> 294 MB after a first start, 376
    # -> ~275 MB after a restart; 1 s still left 303 MB.
    settings.queueing.idle_timeout = 0.1
    return settings


def namespace_reader(core_api: kubeapi.Namespaces) -> admission.NamespaceReader:
    """Read a namespace's labels for the admission server (a namespace its index has not
    seen yet); None when it does not exist. One GET, in a worker thread, bounded."""

    def read(name: str) -> Mapping[str, str] | None:
        try:
            ns = core_api.read_namespace(name, _request_timeout=admission.NAMESPACE_READ_SECONDS)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise
        return dict(ns.metadata.labels or {})

    async def reader(name: str) -> Mapping[str, str] | None:
        return await asyncio.to_thread(read, name)

    return reader


def main(config: Config) -> None:
    """Run one replica on uvloop until SIGTERM/SIGINT.

    uvloop (which kopf supports) rather than asyncio's own loop: the admission server's
    socket, TLS and HTTP handling is a large share of what a review costs, and that share is
    smaller on it (bench/admission.py measures both servers on the same loop).
    """
    uvloop.run(run(config))


async def run(config: Config) -> None:
    """Run one replica until SIGTERM/SIGINT."""
    if config.kubeconfig is not None:
        # kopf's login reads the same kubeconfig as our own client.
        os.environ["KUBECONFIG"] = str(config.kubeconfig)
    api = _api_client(config)
    clock = admission.utcnow
    self_subject = crds.Subject(
        kind="ServiceAccount", namespace=config.namespace, name=config.service_account
    )
    store = stores.Store(builtin_exemptions=config.builtin_exemptions, self_subject=self_subject)
    ca_bundle, managed = _certificates(config, api=api, clock=clock)
    if managed is not None:
        # The files must be in place before the server loads them.
        await asyncio.to_thread(managed.start)
    cert_file, key_file = config.cert_dir / certs.TLS_CRT, config.cert_dir / certs.TLS_KEY

    poster = events.EventPoster(
        core_api=kubernetes.client.CoreV1Api(api), instance=config.instance, clock=clock
    )
    elector = leader.LeaderElector(
        coordination_api=kubernetes.client.CoordinationV1Api(api),
        namespace=config.namespace,
        identity=config.instance,
        clock=clock,
    )
    app = admission.build_app(
        store=store,
        clock=clock,
        on_decision=poster.on_decision,
        namespace_reader=namespace_reader(kubernetes.client.CoreV1Api(api)),
    )
    server = await admission.serve(
        app=app, host=config.listen_host, port=config.port, cert_file=cert_file, key_file=key_file
    )
    reloader = server.reloader
    settings = reconciler.WebhookSettings(
        # The CA files' bundle, plus the CA of the certificate still being served while a
        # rotation is under way (controller/admission/tls.py says why and in what order).
        ca_bundle=lambda: reloader.bundle(ca_bundle()),
        namespace=config.namespace,
        url=f"https://127.0.0.1:{server.port}/validate" if config.local else None,
        service=None
        if config.local
        else webhook.ServiceRef(namespace=config.namespace, name=config.service_name),
        failure_policy=config.failure_policy,
        builtin_exemptions=config.builtin_exemptions,
        self_username=config.self_username,
    )
    admission_api = kubernetes.client.AdmissionregistrationV1Api(api)
    loop_ = reconciler.Reconciler(
        store=store,
        custom_api=kubernetes.client.CustomObjectsApi(api),
        webhooks=webhook.WebhookReconciler(api=admission_api),
        webhook_settings=settings,
        poster=poster,
        elector=elector,
        clock=clock,
        # The leader sees every window's status; standby replicas export no phase counts.
        on_phases=app[admission.METRICS].set_window_phases,
    )

    metrics = app[admission.METRICS]
    metrics.count_work(store.work)
    metrics.count_work(lambda: loop_.work)

    rebuild = asyncio.Event()

    def on_change(kind: handlers.Kind, event: str, body: Any) -> None:
        # The reconciler is poked once the rebuilt snapshot is published, not here: it plans
        # from that snapshot. An event that changed nothing the index holds (a window's status,
        # a namespace's annotations) builds nothing and pokes nobody.
        rebuild.set()

    def on_synced() -> None:
        rebuild.set()  # events that arrived while the sync built the first snapshot
        loop_.poke()

    watches = handlers.Watches(store=store, on_change=on_change, on_synced=on_synced)
    custom: kubeapi.ClusterCustomObjects = kubernetes.client.CustomObjectsApi(api)
    core: kubeapi.Namespaces = kubernetes.client.CoreV1Api(api)

    def list_names(kind: handlers.Kind) -> set[str]:
        """The names of every object of a kind, for the periodic resync. Only the names are
        decoded (msgspec skips the rest of each object): parsing 10,000 whole windows every
        five minutes was seconds of CPU on a replica that is otherwise idle."""
        names: set[str] = set()
        token: str | None = None
        while True:
            page: dict[str, Any] = {"limit": LIST_PAGE, "_preload_content": False}
            if token:
                page["_continue"] = token
            if kind == "Namespace":
                raw = core.list_namespace(**page)
            else:
                raw = custom.list_cluster_custom_object(
                    crds.GROUP, crds.VERSION, crds.PLURALS[kind], **page
                )
            listed = _NAMES.decode(raw.data)
            names.update(item.metadata.name for item in listed.items)
            token = listed.metadata.continue_
            if not token:
                return names

    def list_page(
        kind: handlers.Kind, token: str | None
    ) -> tuple[list[Mapping[str, Any]], str | None]:
        page: dict[str, Any] = {"limit": LIST_PAGE, **({"_continue": token} if token else {})}
        if kind == "Namespace":
            listed = core.list_namespace(**page)
            items: list[Mapping[str, Any]] = [
                {
                    "metadata": {
                        "name": ns.metadata.name,
                        "labels": ns.metadata.labels or {},
                        "resourceVersion": ns.metadata.resource_version,
                    }
                }
                for ns in listed.items
            ]
            return items, listed.metadata._continue
        answer = custom.list_cluster_custom_object(
            crds.GROUP, crds.VERSION, crds.PLURALS[kind], **page
        )
        return answer.get("items", []), answer.get("metadata", {}).get("continue")

    def exists(kind: handlers.Kind, name: str) -> bool:
        try:
            if kind == "Namespace":
                core.read_namespace(name)
            else:
                custom.get_cluster_custom_object(crds.GROUP, crds.VERSION, crds.PLURALS[kind], name)
        except kubernetes.client.exceptions.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # The webhook configuration defends itself: every replica watches it (a standby must know
    # the live caBundle before it serves a new certificate, and must not act on a stale
    # confirmation once it leads); the leader repairs it.
    live_bundle = webhook.LiveBundle()

    def on_webhook_configuration(live: Any) -> None:
        loop_.webhook_observed(live)
        if live_bundle.observe(live):
            # A held certificate may be trusted now: check once the API server has it too.
            loop.call_later(tls.TRUST_SETTLE_SECONDS + 0.05, server.reload_certs)

    def on_certificates() -> None:
        loop_.webhook_changed()
        # The previous CA leaves the bundle once its grace is over.
        loop.call_later(tls.RETIRED_CA_GRACE_SECONDS + 1.0, loop_.webhook_changed)

    reloader.follow_ca(
        ca_file=config.cert_dir / certs.CA_CRT,
        trusted=lambda chain: live_bundle.trusts(chain, settle=tls.TRUST_SETTLE_SECONDS),
        on_change=on_certificates,
    )

    tasks = [
        asyncio.create_task(poster.run(), name="changegate-events"),
        asyncio.create_task(elector.run(), name="changegate-lease"),
        asyncio.create_task(loop_.run(), name="changegate-reconciler"),
        asyncio.create_task(loop_.run_webhook(), name="changegate-webhook"),
        asyncio.create_task(
            webhook.ConfigurationWatch(api=admission_api, on_event=on_webhook_configuration).run(),
            name="changegate-webhook-watch",
        ),
        asyncio.create_task(
            handlers.keep_snapshot_fresh(store, rebuild, on_rebuilt=loop_.poke),
            name="changegate-snapshot",
        ),
        asyncio.create_task(
            handlers.forget_vanished(watches, list_names=list_names, exists=exists),
            name="changegate-resync",
        ),
        asyncio.create_task(
            # After the initial sync, kopf's re-list, a burst of events or a pass that rewrote
            # many statuses.
            heap.trim_after_work(lambda: watches.events + loop_.work["status_writes"]),
            name="changegate-heap-trim",
        ),
    ]
    if managed is not None:
        tasks.append(
            asyncio.create_task(
                managed.run(leading=lambda: elector.leading, on_change=loop_.webhook_changed),
                name="changegate-certs",
            )
        )
    kopf_stop = asyncio.Event()

    async def sync_then_watch() -> None:
        # List first, then let kopf watch (handlers.py says why not kopf's index barrier).
        await handlers.initial_sync(watches, list_page=list_page)
        await kopf.operator(
            registry=handlers.build_registry(watches, kubeconfig=config.kubeconfig),
            settings=_kopf_settings(),
            standalone=True,  # every replica watches; writes are guarded by our Lease
            clusterwide=True,
            stop_flag=kopf_stop,
        )

    operator = asyncio.create_task(sync_then_watch(), name="changegate-kopf")
    logger.info(
        "changegate running",
        extra={"port": server.port, "local": config.local, "cert_mode": config.certificates},
    )
    stopper = asyncio.create_task(stop.wait())
    # kopf installs its own SIGTERM/SIGINT handlers and returns when signalled: either way out
    # of this wait means shut down.
    await asyncio.wait({stopper, operator}, return_when=asyncio.FIRST_COMPLETED)
    if operator.done() and not operator.cancelled() and operator.exception() is not None:
        logger.error("kopf failed", exc_info=operator.exception())

    logger.info("shutting down: draining in-flight reviews")
    await server.stop()
    kopf_stop.set()
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
        await asyncio.wait_for(operator, timeout=10)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    logger.info("stopped")
