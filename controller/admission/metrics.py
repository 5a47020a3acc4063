"""Prometheus metrics of the admission server, in a registry of their own.

A private ``CollectorRegistry`` (not prometheus_client's global one) keeps tests independent
and lets two servers live in one process. ``/metrics`` exposes this registry only.

Dry-run requests (``kubectl apply --dry-run=server``) are decided like any other request and
counted in ``changegate_decisions_total`` under ``dry_run="true"``, so dashboards that count
admitted changes filter ``dry_run="false"``; they never count as emergency changes.

Two words, as in the audit annotations and the decision log line: ``decision`` is the
policies' verdict (``allow``/``deny``), ``allowed`` the webhook's answer (``true``/``false``).
They differ only when a Warn or Audit policy admits what it would deny: ``decision="deny"``,
``allowed="true"``, ``mode="Warn"``/``"Audit"`` -- exactly the "what would Enforce break" query a
platform team runs before switching a policy to Enforce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import prometheus_client
from prometheus_client import metrics_core

from controller.model import crds
from controller.policy import decide

#: Admission sits on the API server's request path: the interesting range is sub-millisecond
#: to the API server's webhook timeout (10 s by default, we aim well under 20 ms).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip


class Metrics:
    """The admission server's metrics; the operator sets window phases through it."""

    def __init__(self, registry: prometheus_client.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self.decisions = prometheus_client.Counter(
            "changegate_decisions_total",
            "Admission decisions by verdict, answer, reason, deciding policy and its enforcement mode.",
            ["decision", "allowed", "reason", "policy", "mode", "dry_run"],
            registry=self.registry,
        )
        self.duration = prometheus_client.Histogram(
            "changegate_admission_duration_seconds",
            "Time from receiving a review to having its answer, in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.windows = prometheus_client.Gauge(
            "changegate_windows",
            "ChangeWindows by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.index_ready = prometheus_client.Gauge(
            "changegate_index_ready",
            "1 when the in-memory index has listed every kind and decisions are served.",
            registry=self.registry,
        )
        self.emergency_changes = prometheus_client.Counter(
            "changegate_emergency_changes_total",
            "Changes admitted through a break-glass window (dry runs excluded).",
            ["policy", "window"],
            registry=self.registry,
        )
        self.bad_reviews = prometheus_client.Counter(
            "changegate_bad_reviews_total",
            "Requests to /validate answered with an HTTP error instead of a decision.",
            ["code"],
            registry=self.registry,
        )
        for phase in crds.Phase:
            self.windows.labels(phase=str(phase)).set(0)
        self._decision_children: dict[tuple[str, ...], prometheus_client.Counter] = {}
        self._work = _WorkCollector()
        self.registry.register(self._work)

    def count_work(self, read: Callable[[], Mapping[str, int]]) -> None:
        """Export ``read()``'s running totals as ``changegate_work_total{what}``, read at
        scrape time (the store's validations and compilations, the reconciler's passes)."""
        self._work.sources.append(read)

    def observe_decision(self, *, decision: decide.Decision, dry_run: bool, seconds: float) -> None:
        """Count one answered review and its latency."""
        key = (
            decision.verdict,
            "true" if decision.allowed else "false",
            str(decision.reason),
            decision.policy or "",
            str(decision.mode) if decision.mode is not None else "",
            "true" if dry_run else "false",
        )
        # labels() validates and locks on every call; the label sets are few (policies x
        # reasons x modes), so their children are looked up once and kept.
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(*key)
        child.inc()
        self.duration.observe(seconds)
        if decision.emergency and decision.allowed and not dry_run:
            self.emergency_changes.labels(
                policy=decision.policy or "", window=decision.window or ""
            ).inc()

    def observe_bad_review(self, *, code: int) -> None:
        self.bad_reviews.labels(code=str(code)).inc()

    def set_window_phases(self, counts: Mapping[str, int]) -> None:
        """Replace the per-phase window counts; phases missing from ``counts`` read 0."""
        for phase in {str(p) for p in crds.Phase} | set(counts):
            self.windows.labels(phase=phase).set(counts.get(phase, 0))

    def set_index_ready(self, ready: bool) -> None:
        self.index_ready.set(1 if ready else 0)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of this registry and its content type."""
        return prometheus_client.generate_latest(
            self.registry
        ), prometheus_client.CONTENT_TYPE_LATEST


class _WorkCollector:
    """``changegate_work_total{what}``: running totals kept as plain ints by the pure layers
    (which must not import prometheus_client), read when scraped."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Mapping[str, int]]] = []

    def collect(self) -> Iterator[metrics_core.Metric]:
        family = metrics_core.CounterMetricFamily(
            "changegate_work",
            "Work this replica has done since it started: objects validated, windows and "
            "timelines compiled, reconcile passes, window statuses computed and written.",
            labels=["what"],
        )
        totals: dict[str, int] = {}
        for read in self.sources:
            totals.update(read())
        for what, value in sorted(totals.items()):
            family.add_metric([what], value)
        yield family

    def describe(self) -> list[metrics_core.Metric]:
        return []  # collected on demand: no fixed set of samples to check at registration
