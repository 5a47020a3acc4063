"""The admission server's routes against a real Store (SPEC: admission decision, failure posture).

Requests go through aiohttp's test client (in-process HTTP, no TLS: TLS is pinned in
test_admission_tls.py). The Store is filled the way the operator fills it, through
``Store.apply`` with object-shaped dicts.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import test_utils, web
from prometheus_client import parser

from controller import store as stores
from controller.admission import codec, server
from controller.policy import approvals, decide
from controller.policy.request import STARTING_MESSAGE

NOW = datetime.datetime(2026, 12, 1, 14, 0, tzinfo=datetime.UTC)  # Tue 23:00 in Seoul
UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
STARTING = STARTING_MESSAGE


def _policy(name: str, *, enforcement: str = "Enforce") -> dict[str, Any]:
    return {
        "apiVersion": "changegate.io/v1alpha1",
        "kind": "ChangePolicy",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {
            "match": {
                "resources": [
                    {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
                ],
                "namespaces": ["payments"],
            },
            "enforcement": enforcement,
            "approval": {"required": 1, "approverGroups": ["change-approvers"]},
            "ticketPattern": "^CHG-[0-9]+$",
            "message": {"contact": "#change-management"},
        },
    }


IDENTITY = {
    "apiVersion": "changegate.io/v1alpha1",
    "kind": "AuthorizedIdentity",
    "metadata": {"name": "payments-oncall", "resourceVersion": "1"},
    "spec": {
        "subjects": [{"kind": "User", "name": "alice@example.com"}],
        "workHours": {
            "timeZone": "Asia/Seoul",
            "weekly": [{"days": ["Tue"], "start": "22:00", "end": "02:00"}],
        },
    },
}

WINDOW_SPEC: dict[str, Any] = {
    "ticket": "CHG-1234",
    "description": "Roll out payments v2.3",
    "requester": "alice@example.com",
    "identities": ["payments-oncall"],
    "targets": [
        {
            "namespaces": ["payments"],
            "resources": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}
            ],
        }
    ],
    "schedule": {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
}
WINDOW = {
    "apiVersion": "changegate.io/v1alpha1",
    "kind": "ChangeWindow",
    "metadata": {"name": "chg-1234", "resourceVersion": "1"},
    "spec": {
        **WINDOW_SPEC,
        "approvals": [
            {
                "approver": "bob@example.com",
                "specHash": approvals.spec_hash(WINDOW_SPEC),
                "approvedAt": "2026-11-30T09:00:00Z",
                "policies": ["payments-prod"],
            }
        ],
    },
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}}


def _synced_store(*, enforcement: str = "Enforce") -> stores.Store:
    store = stores.Store()
    for kind, body in (
        ("ChangePolicy", _policy("payments-prod", enforcement=enforcement)),
        ("AuthorizedIdentity", IDENTITY),
        ("ChangeWindow", WINDOW),
        ("Namespace", NAMESPACE),
    ):
        assert store.apply(kind, "upsert", body) == []
    for kind in ("ChangePolicy", "AuthorizedIdentity", "ChangeWindow", "Namespace"):
        store.mark_synced(kind)
    assert store.ready
    return store


def _review(
    *,
    user: str = "alice@example.com",
    groups: tuple[str, ...] = ("payments-ops",),
    dry_run: bool = False,
    replicas: int = 4,
    uid: str = UID,
) -> dict[str, Any]:
    def deployment(n: int) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "payments", "generation": 7},
            "spec": {"replicas": n, "template": {"spec": {"containers": [{"name": "web"}]}}},
        }

    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web",
            "namespace": "payments",
            "operation": "UPDATE",
            "userInfo": {"username": user, "groups": list(groups)},
            "object": deployment(replicas),
            "oldObject": deployment(3),
            "dryRun": dry_run,
        },
    }


ClientFactory = Callable[..., Awaitable[test_utils.TestClient[web.Request, web.Application]]]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    clients: list[test_utils.TestClient[web.Request, web.Application]] = []

    async def make(app: web.Application) -> test_utils.TestClient[web.Request, web.Application]:
        client = test_utils.TestClient(test_utils.TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _validate(client: Any, body: Any) -> dict[str, Any]:
    resp = await client.post("/validate", json=body)
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    return answer["response"]


# -- routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/mutate", 404),
        ("POST", "/", 404),
        ("GET", "/validate/extra", 404),
        ("GET", "/validate", 405),
        ("PUT", "/validate", 405),
        ("POST", "/healthz", 405),
        ("GET", "/healthz", 200),
    ],
)
async def test_only_known_routes_answer_and_nothing_else_is_allowed(
    client_for: ClientFactory, method: str, path: str, status: int
) -> None:
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    resp = await client.request(method, path, data=json.dumps(_review()))
    assert resp.status == status
    assert b'"allowed"' not in await resp.read()


@pytest.mark.parametrize(
    ("body", "explanation"),
    [
        (b"{this is not json", "invalid JSON"),
        (
            json.dumps({**_review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "apiVersion",
        ),
        (
            json.dumps({**_review(), "request": {**_review()["request"], "uid": ""}}).encode(),
            "request.uid",
        ),
        (
            json.dumps(
                {
                    **_review(),
                    "request": {k: v for k, v in _review()["request"].items() if k != "uid"},
                }
            ).encode(),
            "request.uid: required",
        ),
    ],
    ids=["malformed-json", "wrong-api-version", "empty-uid", "missing-uid"],
)
async def test_malformed_review_is_400_with_plain_text_never_an_admission(
    client_for: ClientFactory, body: bytes, explanation: str
) -> None:
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    resp = await client.post("/validate", data=body)
    text = await resp.text()
    assert resp.status == 400
    assert resp.content_type == "text/plain"
    assert explanation in text
    assert "allowed" not in text


async def test_reviews_up_to_the_body_bound_are_decided_and_larger_ones_refused(
    client_for: ClientFactory,
) -> None:
    # How the bound is derived, and reviews built at it the API server's way, are pinned in
    # test_admission_limits.py; here: a body just under it is decided, one just over is not.
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    envelope = len(json.dumps(_review()).encode())
    big = _review()
    pad = codec.MAX_BODY_BYTES - envelope - len(', "blob": ""') - 64
    big["request"]["object"]["metadata"]["annotations"] = {"blob": "x" * pad}
    assert codec.MAX_BODY_BYTES - 128 < len(json.dumps(big).encode()) <= codec.MAX_BODY_BYTES
    response = await _validate(client, big)
    assert response["uid"] == UID
    assert response["allowed"] is True

    huge = _review()
    huge["request"]["object"]["metadata"]["annotations"] = {"blob": "x" * (pad + 128)}
    resp = await client.post("/validate", json=huge)
    assert resp.status == 413
    assert "larger than any the API server sends" in await resp.text()


@pytest.mark.parametrize(
    "python_names",
    [
        {"sub_resource": "status"},  # status subresources are never gated
        {"old_object": "same as object"},  # an UPDATE that changes nothing is a no-op
    ],
    ids=["sub_resource-status", "old_object-equal"],
)
async def test_python_field_names_cannot_make_a_controlled_change_look_harmless(
    client_for: ClientFactory, python_names: dict[str, Any]
) -> None:
    """SPEC failure posture: only the wire field names are accepted."""
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    body = _review(user="mallory@example.com", groups=("dev",))
    request = body["request"]
    del request["oldObject"]
    for name, value in python_names.items():
        request[name] = request["object"] if value == "same as object" else value
    response = await _validate(client, body)
    assert response["allowed"] is False
    assert response["auditAnnotations"]["reason"] == "NotDesignated"


# -- readiness -------------------------------------------------------------------------------


async def test_before_the_index_syncs_every_review_is_denied_as_starting(
    client_for: ClientFactory,
) -> None:
    store = stores.Store()
    store.apply("ChangePolicy", "upsert", _policy("payments-prod"))
    client = await client_for(server.build_app(store=store, clock=lambda: NOW))

    readyz = await client.get("/readyz")
    assert readyz.status == 503
    assert STARTING_MESSAGE in await readyz.text()
    assert (await client.get("/healthz")).status == 200

    for user in ("alice@example.com", "system:kube-controller-manager"):
        response = await _validate(client, _review(user=user))
        assert response["allowed"] is False
        assert response["status"]["message"] == STARTING
        assert response["status"]["code"] == 503
        assert response["auditAnnotations"]["reason"] == "Starting"


async def test_readyz_turns_200_once_every_kind_is_listed(client_for: ClientFactory) -> None:
    store = stores.Store()
    client = await client_for(server.build_app(store=store, clock=lambda: NOW))
    for kind in ("ChangePolicy", "AuthorizedIdentity", "ChangeWindow"):
        store.mark_synced(kind)
        assert (await client.get("/readyz")).status == 503
    store.mark_synced("Namespace")
    assert (await client.get("/readyz")).status == 200
    response = await _validate(client, _review())  # an empty cluster controls nothing
    assert response["allowed"] is True
    assert response["auditAnnotations"]["reason"] == "NotControlled"


# -- decisions -------------------------------------------------------------------------------


async def test_designated_requester_inside_an_approved_window_is_admitted_with_its_trail(
    client_for: ClientFactory,
) -> None:
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    response = await _validate(client, _review())
    assert response["allowed"] is True
    assert "status" not in response
    assert response["auditAnnotations"]["reason"] == "Window"
    assert response["auditAnnotations"]["window"] == "chg-1234"
    assert response["auditAnnotations"]["ticket"] == "CHG-1234"
    assert response["auditAnnotations"]["approvers"] == "bob@example.com"
    assert response["auditAnnotations"]["identity"] == "payments-oncall"


async def test_undesignated_requester_is_denied_403_with_message_and_audit_trail(
    client_for: ClientFactory,
) -> None:
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    response = await _validate(client, _review(user="mallory@example.com", groups=("dev",)))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["reason"] == "Forbidden"
    assert response["status"]["message"].startswith(
        "changegate denied UPDATE deployments.apps payments/web for mallory@example.com"
    )
    assert "\n" not in response["status"]["message"]
    assert response["auditAnnotations"]["decision"] == "deny"
    assert response["auditAnnotations"]["reason"] == "NotDesignated"
    assert response["auditAnnotations"]["policy"] == "payments-prod"


async def test_warn_mode_admits_a_denied_change_with_a_warning(client_for: ClientFactory) -> None:
    store = _synced_store(enforcement="Warn")
    client = await client_for(server.build_app(store=store, clock=lambda: NOW))
    response = await _validate(client, _review(user="mallory@example.com"))
    assert response["allowed"] is True
    assert "status" not in response
    assert len(response["warnings"]) == 1
    assert "mallory@example.com" in response["warnings"][0]
    assert response["auditAnnotations"]["mode"] == "Warn"
    assert response["auditAnnotations"]["reason"] == "NotDesignated"


async def test_window_closing_soon_is_admitted_with_a_warning(client_for: ClientFactory) -> None:
    closing = datetime.datetime(2026, 12, 1, 14, 50, tzinfo=datetime.UTC)  # closes at 15:00Z
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: closing))
    response = await _validate(client, _review())
    assert response["allowed"] is True
    assert len(response["warnings"]) == 1
    assert all(len(w) <= 512 and w.isprintable() for w in response["warnings"])


async def test_clock_is_the_injected_one(client_for: ClientFactory) -> None:
    after = datetime.datetime(2026, 12, 1, 15, 0, tzinfo=datetime.UTC)  # window end, exclusive
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: after))
    response = await _validate(client, _review())
    assert response["allowed"] is False
    assert response["auditAnnotations"]["reason"] == "NoWindow"


# -- side channels: callback, log, metrics ---------------------------------------------------


async def test_failing_on_decision_callback_does_not_change_the_answer(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[decide.Request, decide.Decision]] = []

    def explode(request: decide.Request, decision: decide.Decision) -> None:
        seen.append((request, decision))
        raise RuntimeError("event API is down")

    app = server.build_app(store=_synced_store(), clock=lambda: NOW, on_decision=explode)
    client = await client_for(app)
    with caplog.at_level(logging.ERROR, logger="changegate.admission"):
        admitted = await _validate(client, _review())
        denied = await _validate(client, _review(user="mallory@example.com", uid="u-2"))
    assert admitted["allowed"] is True
    assert denied["allowed"] is False and denied["status"]["code"] == 403
    assert [(r.uid, d.reason) for r, d in seen] == [
        (UID, decide.Reason.WINDOW),
        ("u-2", decide.Reason.NOT_DESIGNATED),
    ]
    assert "on_decision callback failed" in caplog.text


async def test_one_json_log_line_per_decision(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await client_for(server.build_app(store=_synced_store(), clock=lambda: NOW))
    with caplog.at_level(logging.INFO, logger="changegate.decisions"):
        await _validate(client, _review(dry_run=True))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "changegate.decisions"]
    assert len(lines) == 1
    line = lines[0]
    assert {k: line[k] for k in ("uid", "user", "resource", "decision", "reason", "dryRun")} == {
        "uid": UID,
        "user": "alice@example.com",
        "resource": "deployments.apps",
        "decision": "allow",
        "reason": "Window",
        "dryRun": True,
    }
    assert line["ts"] == NOW.isoformat()
    assert line["latency_ms"] >= 0


async def test_metrics_count_decisions_by_verdict_answer_reason_policy_mode_and_dry_run(
    client_for: ClientFactory,
) -> None:
    app = server.build_app(store=_synced_store(), clock=lambda: NOW)
    client = await client_for(app)
    await _validate(client, _review())
    await _validate(client, _review(dry_run=True))
    await _validate(client, _review(user="mallory@example.com"))
    await client.post("/validate", data=b"nope")
    app[server.METRICS].set_window_phases({"Active": 1})

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parser.text_string_to_metric_families(await resp.text())
        for s in family.samples
    }

    def decisions(verdict: str, reason: str, dry_run: str) -> float | None:
        labels = {
            "decision": verdict,
            "allowed": "true" if verdict == "allow" else "false",  # Enforce: the answer agrees
            "reason": reason,
            "policy": "payments-prod",
            "mode": "Enforce",
            "dry_run": dry_run,
        }
        return samples.get(("changegate_decisions_total", tuple(sorted(labels.items()))))

    assert decisions("allow", "Window", "false") == 1
    assert decisions("allow", "Window", "true") == 1
    assert decisions("deny", "NotDesignated", "false") == 1
    assert samples[("changegate_admission_duration_seconds_count", ())] == 3
    assert samples[("changegate_windows", (("phase", "Active"),))] == 1
    assert samples[("changegate_windows", (("phase", "Expired"),))] == 0
    assert samples[("changegate_index_ready", ())] == 1
    assert samples[("changegate_bad_reviews_total", (("code", "400"),))] == 1


# -- a namespace the index has not seen (issue 8, item 5) ------------------------------------


def _store_selecting_by_label() -> stores.Store:
    """A policy that picks namespaces by label, and no namespace known to the index."""
    store = stores.Store()
    policy = _policy("payments-prod")
    policy["spec"]["match"] = {
        "resources": policy["spec"]["match"]["resources"],
        "namespaceSelector": {"matchLabels": {"changegate.io/controlled": "true"}},
    }
    assert store.apply("ChangePolicy", "upsert", policy) == []
    for kind in ("ChangePolicy", "AuthorizedIdentity", "ChangeWindow", "Namespace"):
        store.mark_synced(kind)
    return store


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        pytest.param({"changegate.io/controlled": "true"}, "NoWindow", id="labelled-controlled"),
        pytest.param({}, "NotControlled", id="not-labelled"),
    ],
)
async def test_a_namespace_the_index_has_not_seen_is_decided_from_its_labels(
    client_for: ClientFactory, labels: dict[str, str], reason: str
) -> None:
    asked: list[str] = []

    async def reader(name: str) -> dict[str, str] | None:
        asked.append(name)
        return labels

    app = server.build_app(
        store=_store_selecting_by_label(), clock=lambda: NOW, namespace_reader=reader
    )
    response = await _validate(await client_for(app), _review())
    assert (response["auditAnnotations"]["reason"], asked) == (reason, ["payments"])


async def test_without_the_labels_an_unseen_namespace_is_denied_with_retry(
    client_for: ClientFactory,
) -> None:
    async def failing(name: str) -> dict[str, str] | None:
        raise ConnectionError("API server unreachable")

    for app in (
        server.build_app(store=_store_selecting_by_label(), clock=lambda: NOW),
        server.build_app(
            store=_store_selecting_by_label(), clock=lambda: NOW, namespace_reader=failing
        ),
    ):
        response = await _validate(await client_for(app), _review())
        assert response["allowed"] is False
        assert response["auditAnnotations"]["reason"] == "UnknownNamespace"
        assert "retry" in response["status"]["message"]
