"""Hostile input on the webhook port (SPEC failure posture): bounded memory, compressed bodies
refused, and every review the API server can legitimately send decided.

Reviews are built the way the API server builds them: Go's encoding/json writes ``<``, ``>``
and ``&`` as ``\\u003c``/``\\u003e``/``\\u0026``, so a ConfigMap of such characters grows
sixfold on the wire; and Kubernetes decodes JSON nested up to 10,000 levels, so a custom
resource with ``x-kubernetes-preserve-unknown-fields`` can be that deep.

Requests go through aiohttp's test client; the ones that must stall mid-body use a raw socket.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import json
import logging
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pydantic_core
import pytest
from aiohttp import test_utils, web

from controller import store as stores
from controller.admission import budget, codec, server, tls
from controller.policy import approvals

NOW = datetime.datetime(2026, 12, 1, 14, 0, tzinfo=datetime.UTC)
ALICE = ("alice@example.com", ["payments-ops"])  # designated, inside an approved window
MALLORY = ("mallory@example.com", ["dev"])  # not designated

ETCD_MAX_REQUEST_BYTES = 1536 * 1024
CONTROLLED = [
    {"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]},
    {"apiGroups": ["deep.example.com"], "resources": ["nests"], "operations": ["CREATE", "UPDATE"]},
]


def _synced_store() -> stores.Store:
    window_spec: dict[str, Any] = {
        "ticket": "CHG-1",
        "description": "big and deep objects",
        "requester": ALICE[0],
        "identities": ["payments-oncall"],
        "targets": [{"namespaces": ["payments"], "resources": CONTROLLED}],
        "schedule": {"start": "2026-12-01T13:00:00Z", "end": "2026-12-01T15:00:00Z"},
    }
    objects = {
        "ChangePolicy": {
            "metadata": {"name": "payments-prod", "uid": "uid-p", "resourceVersion": "1"},
            "spec": {
                "match": {"resources": CONTROLLED, "namespaces": ["payments"]},
                "approval": {"required": 1, "approverGroups": ["change-approvers"]},
            },
        },
        "AuthorizedIdentity": {
            "metadata": {"name": "payments-oncall", "resourceVersion": "1"},
            "spec": {"subjects": [{"kind": "User", "name": ALICE[0]}]},
        },
        "ChangeWindow": {
            "metadata": {"name": "chg-1", "resourceVersion": "1"},
            "spec": {
                **window_spec,
                "approvals": [
                    {
                        "approver": "bob@example.com",
                        "specHash": approvals.spec_hash(window_spec),
                        "approvedAt": "2026-11-30T09:00:00Z",
                        "policies": ["payments-prod"],
                    }
                ],
            },
        },
        "Namespace": {"metadata": {"name": "payments"}},
    }
    store = stores.Store()
    for kind, body in objects.items():
        api_version = "v1" if kind == "Namespace" else "changegate.io/v1alpha1"
        assert store.apply(kind, "upsert", {"apiVersion": api_version, "kind": kind, **body}) == []
        store.mark_synced(kind)
    assert store.ready
    return store


# -- reviews as the API server writes them ------------------------------------------------------

_OBJECT, _OLD_OBJECT = "@object@", "@old-object@"


def go_json(value: Any) -> str:
    """Compact JSON with Go's HTML escaping, as the API server encodes an AdmissionReview."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def review_body(
    *,
    resource: tuple[str, str, str],
    operation: str = "UPDATE",
    user: tuple[str, list[str]] = ALICE,
    object_json: str | None,
    old_object_json: str | None,
) -> bytes:
    """An AdmissionReview whose objects are given as JSON text (too deep for json.dumps)."""
    group, version, plural = resource
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": "Object"},
        "resource": {"group": group, "version": version, "resource": plural},
        "name": "big",
        "namespace": "payments",
        "operation": operation,
        "userInfo": {"username": user[0], "groups": user[1]},
        "object": _OBJECT if object_json is not None else None,
        "oldObject": _OLD_OBJECT if old_object_json is not None else None,
    }
    text = go_json(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    )
    text = text.replace(f'"{_OBJECT}"', object_json or "null", 1)
    return text.replace(f'"{_OLD_OBJECT}"', old_object_json or "null", 1).encode()


CONFIGMAPS = ("", "v1", "configmaps")
NESTS = ("deep.example.com", "v1", "nests")


def configmap(value: str) -> str:
    return go_json(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "big", "namespace": "payments", "resourceVersion": "7"},
            "data": {"k": value},
        }
    )


def nested(levels: int, leaf: str = "1") -> str:
    """JSON text of ``levels`` objects, each the only member of the one around it."""
    return '{"a":' * levels + leaf + "}" * levels


def nest(levels: int, *, leaf: str = "1", resource_version: str = "1", pad: str = "") -> str:
    """A custom resource ``levels`` deep in all (the object itself is the first level)."""
    head = go_json(
        {
            "apiVersion": "deep.example.com/v1",
            "kind": "Nest",
            "metadata": {
                "name": "big",
                "namespace": "payments",
                "resourceVersion": resource_version,
            },
            "pad": pad,
            "spec": "@spec@",
        }
    )
    return head.replace('"@spec@"', nested(levels - 1, leaf))


# -- plumbing -------------------------------------------------------------------------------------

Client = test_utils.TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def client_for() -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    async def make(*, limits: budget.Limits | None = None) -> Client:
        app = server.build_app(store=_synced_store(), clock=lambda: NOW, limits=limits)
        client = test_utils.TestClient(test_utils.TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def decided(client: Client, body: bytes, **headers: str) -> dict[str, Any]:
    resp = await client.post(
        "/validate", data=body, headers={"Content-Type": "application/json", **headers}
    )
    assert resp.status == 200, (resp.status, (await resp.text())[:300])
    answer: dict[str, Any] = await resp.json()
    return answer["response"]


async def refused(client: Client, body: Any, status: int, **headers: str) -> str:
    resp = await client.post(
        "/validate", data=body, headers={"Content-Type": "application/json", **headers}
    )
    raw = await resp.read()
    assert resp.status == status, (resp.status, raw[:300])
    assert resp.content_type == "text/plain"
    assert b'"allowed"' not in raw
    return raw.decode()


async def eventually(check: Callable[[], bool]) -> None:
    """Until ``check()`` holds: the server takes up a request on its own schedule."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never got there")


class Stalled:
    """A POST /validate over a raw socket that announces a body and sends only part of it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, client: Client, *, content_length: int, sent: bytes) -> Stalled:
        assert client.port is not None
        reader, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /validate HTTP/1.1\r\nHost: changegate\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {content_length}\r\n\r\n".encode()
            + sent
        )
        await writer.drain()
        return cls(reader, writer)

    async def status_line(self) -> str:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout=60)
        return head.decode().strip()

    async def hang_up(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def gate_of(client: Client) -> budget.Gate:
    app = client.app
    assert app is not None
    return app[server.GATE]


# -- compressed bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding", ["gzip", "deflate", "x-gzip", "GZIP", "gzip, identity", "identity, gzip"]
)
async def test_compressed_review_is_refused_with_415_never_decided(
    client_for: ClientFactory, encoding: str
) -> None:
    # A review that would be admitted, gzipped: compressed, it must not be read at all.
    client = await client_for()
    body = review_body(
        resource=CONFIGMAPS, object_json=configmap("new"), old_object_json=configmap("old")
    )
    text = await refused(client, gzip.compress(body), 415, **{"Content-Encoding": encoding})
    assert "does not accept compressed reviews" in text


async def test_served_replica_never_inflates_a_body(tmp_path: Path) -> None:
    # serve() turns aiohttp's transparent decompression off: every coding reaches /validate
    # and its 415, including the ones aiohttp would have tried (and failed) to decode itself.
    _, cert, key = tls.ensure_dev_certs(tmp_path)
    app = server.build_app(store=_synced_store(), clock=lambda: NOW)
    served = await server.serve(app=app, host="127.0.0.1", port=0, cert_file=cert, key_file=key)
    body = review_body(
        resource=CONFIGMAPS, object_json=configmap("new"), old_object_json=configmap("old")
    )
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            for encoding in ("gzip", "br", "zstd"):
                async with session.post(
                    f"{served.url}/validate",
                    data=gzip.compress(body),
                    headers={"Content-Encoding": encoding},
                ) as resp:
                    text = await resp.text()
                    assert (resp.status, encoding) == (415, encoding), text
                    assert "does not accept compressed reviews" in text
    finally:
        await served.stop()


@pytest.mark.parametrize("encoding", [None, "identity", "Identity", ""])
async def test_uncompressed_review_is_decided(
    client_for: ClientFactory, encoding: str | None
) -> None:
    client = await client_for()
    body = review_body(
        resource=CONFIGMAPS, object_json=configmap("new"), old_object_json=configmap("old")
    )
    headers = {} if encoding is None else {"Content-Encoding": encoding}
    response = await decided(client, body, **headers)
    assert (response["allowed"], response["auditAnnotations"]["reason"]) == (True, "Window")


# -- the body bound ---------------------------------------------------------------------------------


def test_body_bound_is_two_escaped_etcd_objects_and_an_escaped_identity_from_1_mib_of_headers() -> (
    None
):
    assert codec.MAX_BODY_BYTES == 2 * 6 * ETCD_MAX_REQUEST_BYTES + 6 * (1 << 20) + 64 * 1024


@pytest.mark.parametrize(
    ("user", "allowed", "reason"),
    [(ALICE, True, "Window"), (MALLORY, False, "NotDesignated")],
    ids=["designated-in-window", "not-designated"],
)
async def test_largest_review_the_api_server_can_send_is_decided(
    client_for: ClientFactory, user: tuple[str, list[str]], allowed: bool, reason: str
) -> None:
    # Both objects at etcd's limit, every byte one that Go escapes to six, and an identity
    # as large as 1 MiB of request headers can carry, escaped too.
    client = await client_for()
    value = ETCD_MAX_REQUEST_BYTES - 512  # what is left of the stored object for its data
    groups = [*user[1], "&" * ((1 << 20) - 1024)]
    body = review_body(
        resource=CONFIGMAPS,
        user=(user[0], groups),
        object_json=configmap("<" * value),
        old_object_json=configmap(">" * value),
    )
    assert 3 * (8 << 20) > len(body) > 3 * (7 << 20)  # far past the 8 MiB this used to refuse
    assert len(body) <= codec.MAX_BODY_BYTES
    response = await decided(client, body)
    assert (response["allowed"], response["auditAnnotations"]["reason"]) == (allowed, reason)
    if not allowed:
        assert response["status"]["message"].startswith("changegate denied UPDATE configmaps")


async def test_body_larger_than_the_bound_is_413_before_it_is_read(
    client_for: ClientFactory,
) -> None:
    client = await client_for(limits=budget.Limits(read_seconds=60))
    # Announced too large: refused on the Content-Length alone (the body never comes).
    request = await Stalled.open(client, content_length=codec.MAX_BODY_BYTES + 1, sent=b"{")
    try:
        assert await request.status_line() == "HTTP/1.1 413 Request Entity Too Large"
    finally:
        await request.hang_up()


async def test_chunked_body_larger_than_the_bound_is_413(client_for: ClientFactory) -> None:
    client = await client_for()
    chunk = b" " * (1 << 20)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(codec.MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    text = await refused(client, chunks(), 413)
    assert "larger than any the API server sends" in text


async def test_review_too_dense_to_parse_within_the_budget_is_413(
    client_for: ClientFactory,
) -> None:
    # 4 MiB of empty objects parse to ~100 MiB of dicts: never parsed, refused with a reason.
    client = await client_for()
    dense = '{"x":[' + ",".join(["{}"] * (2 << 20)) + "]}"
    body = review_body(resource=NESTS, operation="CREATE", object_json=dense, old_object_json=None)
    text = await refused(client, body, 413)
    assert "MiB a review may use" in text
    response = await decided(  # the replica goes on deciding
        client,
        review_body(
            resource=CONFIGMAPS, object_json=configmap("a"), old_object_json=configmap("b")
        ),
    )
    assert response["allowed"] is True


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("<" * ((16 << 20) // 6), 200),
        ("a" * (16 << 20), 200),
        ("\U0001f600" + "a" * ((16 << 20) - 4), 413),
    ],
    ids=["escaped", "ascii", "ascii-and-an-emoji"],
)
async def test_large_review_is_parsed_only_if_its_text_fits_at_its_width(
    client_for: ClientFactory, value: str, status: int
) -> None:
    # 16 MiB of text: at one byte a character it fits; one emoji makes the str four bytes a
    # character, and no review the API server sends is that big with raw non-ASCII text.
    client = await client_for()
    body = review_body(
        resource=CONFIGMAPS, operation="CREATE", object_json=configmap(value), old_object_json=None
    )
    assert (16 << 20) <= len(body) < (17 << 20)
    if status == 200:
        assert (await decided(client, body))["allowed"] is True
    else:
        assert "MiB a review may use" in await refused(client, body, status)


@pytest.mark.parametrize(
    "item",
    [b"{}", b'{"":{}}', b'{"k":"v"}', b"[[[]]]", b"[1.5]", b'"abc\\u003c"', b"null", b"-1"],
)
@pytest.mark.parametrize("deep", [False, True], ids=["fast", "deep"])
def test_parsed_size_bound_covers_the_objects_a_parse_makes(item: bytes, deep: bool) -> None:
    body = b"[" + b",".join([item] * 5000) + b"]"
    tracemalloc.start()
    try:
        if deep:
            json.loads(body)
        else:
            pydantic_core.from_json(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(body) + peak <= codec.parsed_size_bound(body, deep=deep)


# -- waiting for room ---------------------------------------------------------------------------------


async def test_small_reviews_wait_for_room_and_get_503_when_it_stays_taken(
    client_for: ClientFactory,
) -> None:
    body = review_body(
        resource=CONFIGMAPS, object_json=configmap("a"), old_object_json=configmap("b")
    )
    limits = budget.Limits(
        small_body_bytes=2 * len(body), small_budget_bytes=2 * len(body), wait_seconds=0.2
    )
    client = await client_for(limits=limits)
    gate = gate_of(client)
    # A caller that announces a body filling the whole budget and never finishes it.
    hog = await Stalled.open(client, content_length=2 * len(body), sent=b"{")
    await eventually(lambda: gate.small_bytes_in_use == 2 * len(body))
    text = await refused(client, body, 503)
    assert "changegate is busy" in text
    await hog.hang_up()
    await eventually(lambda: gate.small_bytes_in_use == 0)
    response = await decided(client, body)
    assert response["allowed"] is True


async def test_one_large_review_at_a_time(client_for: ClientFactory) -> None:
    body = review_body(
        resource=CONFIGMAPS, object_json=configmap("a"), old_object_json=configmap("b")
    )
    limits = budget.Limits(small_body_bytes=64, small_budget_bytes=64, wait_seconds=0.2)
    client = await client_for(limits=limits)
    gate = gate_of(client)
    hog = await Stalled.open(client, content_length=len(body), sent=body[:10])
    await eventually(lambda: gate.large_in_use)
    text = await refused(client, body, 503)
    assert "another large review" in text
    await hog.hang_up()
    await eventually(lambda: not gate.large_in_use)
    response = await decided(client, body)
    assert response["allowed"] is True


async def test_body_that_does_not_arrive_is_408(client_for: ClientFactory) -> None:
    client = await client_for(limits=budget.Limits(read_seconds=0.2))
    gate = gate_of(client)
    request = await Stalled.open(client, content_length=100, sent=b'{"apiVersion"')
    try:
        assert await request.status_line() == "HTTP/1.1 408 Request Timeout"
    finally:
        await request.hang_up()
    await eventually(lambda: gate.small_bytes_in_use == 0)


async def test_caller_hanging_up_mid_body_frees_its_room_and_is_no_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Over TLS, as served: a hostile caller can hang up at will, so it must not log errors.
    _, cert, key = tls.ensure_dev_certs(tmp_path)
    app = server.build_app(store=_synced_store(), clock=lambda: NOW)
    served = await server.serve(app=app, host="127.0.0.1", port=0, cert_file=cert, key_file=key)
    gate = app[server.GATE]
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    try:
        with caplog.at_level(logging.ERROR):
            _, writer = await asyncio.open_connection("127.0.0.1", served.port, ssl=ctx)
            writer.write(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            await writer.drain()
            await eventually(lambda: gate.small_bytes_in_use == 1000)
            writer.close()
            await eventually(lambda: gate.small_bytes_in_use == 0)
            await asyncio.sleep(0.05)  # let aiohttp finish with the connection
    finally:
        await served.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_byte_budget_grants_in_arrival_order() -> None:
    gate = budget.ByteBudget(100)
    await gate.acquire(60)
    big = asyncio.create_task(gate.acquire(80))
    await asyncio.sleep(0)
    small = asyncio.create_task(gate.acquire(10))  # would fit now, but the big one came first
    await asyncio.sleep(0)
    assert not big.done() and not small.done()
    gate.release(60)
    await asyncio.gather(big, small)
    assert gate.used == 90


async def test_byte_budget_waiter_that_gives_up_lets_the_next_one_in() -> None:
    gate = budget.ByteBudget(100)
    await gate.acquire(60)
    big = asyncio.create_task(gate.acquire(80))
    await asyncio.sleep(0)
    small = asyncio.create_task(gate.acquire(10))
    await asyncio.sleep(0)
    big.cancel()
    await asyncio.sleep(0)
    await small
    assert gate.used == 70
    with pytest.raises(ValueError, match="can never fit"):
        await gate.acquire(101)


def test_limits_that_could_never_admit_a_body_are_refused() -> None:
    with pytest.raises(ValueError, match="small_budget_bytes"):
        budget.Limits(small_body_bytes=2 << 20, small_budget_bytes=1 << 20)
    with pytest.raises(ValueError, match="large_budget_bytes"):
        budget.Limits(large_budget_bytes=codec.MAX_BODY_BYTES - 1)


# -- depth ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "allowed", "reason"),
    [(ALICE, True, "Window"), (MALLORY, False, "NotDesignated")],
    ids=["designated-in-window", "not-designated"],
)
@pytest.mark.parametrize("pad", [0, 12 << 20], ids=["small-body", "large-body"])
async def test_custom_resource_as_deep_as_kubernetes_allows_is_decided(
    client_for: ClientFactory, user: tuple[str, list[str]], allowed: bool, reason: str, pad: int
) -> None:
    client = await client_for()
    obj = nest(codec.MAX_OBJECT_DEPTH, pad="<" * (pad // 6))
    body = review_body(
        resource=NESTS, operation="CREATE", user=user, object_json=obj, old_object_json=None
    )
    response = await decided(client, body)
    assert (response["allowed"], response["auditAnnotations"]["reason"]) == (allowed, reason)


@pytest.mark.parametrize(
    ("new_leaf", "resource_version", "allowed", "reason"),
    [("1", "2", True, "NoOp"), ("2", "1", False, "NotDesignated")],
    ids=["bookkeeping-only", "innermost-value-changed"],
)
async def test_deep_update_is_compared_all_the_way_down(
    client_for: ClientFactory, new_leaf: str, resource_version: str, allowed: bool, reason: str
) -> None:
    client = await client_for()
    body = review_body(
        resource=NESTS,
        user=MALLORY,
        object_json=nest(codec.MAX_OBJECT_DEPTH, leaf=new_leaf, resource_version=resource_version),
        old_object_json=nest(codec.MAX_OBJECT_DEPTH),
    )
    response = await decided(client, body)
    assert (response["allowed"], response["auditAnnotations"]["reason"]) == (allowed, reason)


async def test_json_deeper_than_kubernetes_allows_is_400_and_the_replica_goes_on(
    client_for: ClientFactory,
) -> None:
    client = await client_for()
    body = review_body(
        resource=NESTS, operation="CREATE", object_json=nest(30_000), old_object_json=None
    )
    text = await refused(client, body, 400)
    assert "nested deeper than Kubernetes allows (10000 levels)" in text
    response = await decided(
        client,
        review_body(
            resource=CONFIGMAPS, object_json=configmap("a"), old_object_json=configmap("b")
        ),
    )
    assert response["allowed"] is True


def test_deep_parser_reads_the_same_review_as_the_fast_one() -> None:
    body = review_body(resource=NESTS, object_json=nest(50, leaf='"<&>"'), old_object_json=nest(50))
    with budget.deep_recursion():
        assert codec.parse_deep_review(body) == codec.parse_review(body)


@pytest.mark.parametrize(
    ("leaf", "explanation"),
    [("NaN", "invalid JSON (NaN is not JSON"), ("1,", "invalid JSON (Expecting")],
)
def test_deep_parser_refuses_what_is_not_json(leaf: str, explanation: str) -> None:
    body = review_body(resource=NESTS, object_json=nest(500, leaf=leaf), old_object_json=None)
    with pytest.raises(codec.DeepReview):
        codec.parse_review(body)
    with budget.deep_recursion(), pytest.raises(codec.MalformedReview) as caught:
        codec.parse_deep_review(body)
    assert explanation in caught.value.message
