"""The review codec: what the webhook refuses to decide, and why (SPEC: malformed reviews -> 400)."""

from __future__ import annotations

import json
from typing import Any

import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st

from controller.admission import codec
from controller.model import review as review_model


def _review(**request_overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "web",
        "namespace": "payments",
        "operation": "UPDATE",
        "userInfo": {"username": "alice@example.com", "groups": ["payments-ops"]},
        "object": {"metadata": {"name": "web"}},
        "oldObject": {"metadata": {"name": "web"}},
        "dryRun": False,
    }
    request.update(request_overrides)
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _without(review: dict[str, Any], key: str) -> dict[str, Any]:
    review = json.loads(json.dumps(review))
    del review["request"][key]
    return review


def test_well_formed_review_parses_to_its_request() -> None:
    request = codec.parse_review(json.dumps(_review()).encode())
    assert (request.uid, request.operation, request.user_info.username) == (
        "705ab4f5-6393-11e8-b7cc-42010a800002",
        "UPDATE",
        "alice@example.com",
    )
    assert request.resource.resource == "deployments"


@pytest.mark.parametrize(
    ("body", "explanation"),
    [
        (b"", "the request body is empty"),
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe\x00", "invalid JSON"),
        (b"[]", "body: Input should be an object"),
        (
            json.dumps({**_review(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "apiVersion: unsupported value",
        ),
        (
            json.dumps({**_review(), "kind": "TokenReview"}).encode(),
            "kind: unsupported value",
        ),
        (
            json.dumps({k: v for k, v in _review().items() if k != "request"}).encode(),
            "request: required",
        ),
        (json.dumps(_without(_review(), "uid")).encode(), "request.uid: required"),
        (json.dumps(_review(uid="")).encode(), "request.uid: must not be empty"),
        (json.dumps(_without(_review(), "userInfo")).encode(), "request.userInfo: required"),
        (json.dumps(_without(_review(), "operation")).encode(), "request.operation: required"),
        (json.dumps(_review(operation="PATCH")).encode(), "request.operation:"),
        (json.dumps(_without(_review(), "resource")).encode(), "request.resource: required"),
    ],
    ids=[
        "empty-body",
        "truncated-json",
        "not-utf8",
        "not-an-object",
        "wrong-api-version",
        "wrong-kind",
        "no-request",
        "missing-uid",
        "empty-uid",
        "missing-user-info",
        "missing-operation",
        "unknown-operation",
        "missing-resource",
    ],
)
def test_review_that_cannot_be_decided_is_a_400_with_a_plain_explanation(
    body: bytes, explanation: str
) -> None:
    with pytest.raises(codec.MalformedReview) as caught:
        codec.parse_review(body)
    assert caught.value.http_status == 400
    assert explanation in caught.value.message
    assert "\n" not in caught.value.message


def test_explanation_never_echoes_request_content() -> None:
    secret = "c3VwZXItc2VjcmV0LXZhbHVl"
    body = json.dumps({**_review(object={"data": {"password": secret}}), "kind": "Nope"})
    with pytest.raises(codec.MalformedReview) as caught:
        codec.parse_review(body.encode())
    assert secret not in caught.value.message


def test_explanation_names_the_first_bad_field_by_its_wire_path() -> None:
    groups = list(range(500))  # 500 errors: every group must be a string
    body = json.dumps(_review(userInfo={"username": "alice", "groups": groups}))
    with pytest.raises(codec.MalformedReview) as caught:
        codec.parse_review(body.encode())
    assert "request.userInfo.groups[0]: Expected `str`, got `int`" in caught.value.message
    assert len(caught.value.message) <= 1000


@pytest.mark.parametrize(
    "review",
    [
        _review(),
        _without(_without(_review(), "object"), "oldObject"),
        _review(object=None, oldObject={"metadata": {"name": "web", "labels": {"a": "b"}}}),
        _review(object={"spec": {"replicas": 3, "ratio": 0.5, "list": [1, {"x": None}]}}),
        _review(dryRun="true", subResource="scale", options={"kind": "UpdateOptions"}),
        _review(old_object={"metadata": {"name": "snake-case alias"}}),
    ],
    ids=["full", "no-objects", "null-object", "nested-object", "lax-fields", "python-name"],
)
def test_fast_and_deep_parsers_read_a_review_alike(review: dict[str, Any]) -> None:
    body = json.dumps(review).encode()
    expected = codec.parse_deep_review(body)
    parsed = codec.parse_review(body)
    assert parsed == expected
    assert (parsed.object, parsed.old_object) == (expected.object, expected.old_object)


def test_lax_fields_read_as_the_api_server_means_them() -> None:
    parsed = codec.parse_review(json.dumps(_review(dryRun="true")).encode())
    assert parsed.dry_run is True


@pytest.mark.parametrize(
    ("python_name", "wire_name", "read_as"),
    [
        ("sub_resource", "subResource", ("sub_resource", "")),
        ("old_object", "oldObject", ("old_object", None)),
        ("dry_run", "dryRun", ("dry_run", False)),
        ("request_sub_resource", "requestSubResource", ("request_sub_resource", None)),
    ],
)
def test_python_field_names_are_unknown_keys_only_wire_names_are_read(
    python_name: str, wire_name: str, read_as: tuple[str, Any]
) -> None:
    value: Any = {"metadata": {"name": "web"}} if "object" in python_name else "status"
    if python_name == "dry_run":
        value = True
    review = _review()
    review["request"].pop(wire_name, None)
    review["request"][python_name] = value
    attribute, default = read_as
    for parse in (codec.parse_review, codec.parse_deep_review):
        request = parse(json.dumps(review).encode())
        assert isinstance(request, review_model.AdmissionRequest)
        assert getattr(request, attribute) == default, parse
    review["request"][wire_name] = value
    assert getattr(codec.parse_review(json.dumps(review).encode()), attribute) == value


def test_python_name_for_a_required_field_leaves_it_missing() -> None:
    review = _without(_review(), "userInfo")
    review["request"]["user_info"] = {"username": "alice@example.com"}
    with pytest.raises(codec.MalformedReview) as caught:
        codec.parse_review(json.dumps(review).encode())
    assert "request.userInfo: required" in caught.value.message


@pytest.mark.parametrize("field", ["object", "oldObject"])
@pytest.mark.parametrize("value", [[], "text", 3, True])
def test_object_that_is_not_a_json_object_is_a_400_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(codec.MalformedReview) as caught:
        codec.parse_review(json.dumps(_review(**{field: value})).encode())
    assert f"request.{field}: Input should be" in caught.value.message


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_TRICKY = st.text(alphabet='{}[]"\\ab', max_size=8)
_JSON = st.recursive(
    st.none() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
    max_leaves=40,
)


@hypothesis.given(value=_JSON, limit=st.integers(min_value=0, max_value=12))
def test_nesting_bound_never_says_shallow_for_deeper_json(value: Any, limit: int) -> None:
    """Brackets and escaped quotes inside strings must not hide structure: the fast path's
    bound is what keeps deep reviews off the event loop."""
    body = json.dumps(value).encode()
    if codec.nested_at_most(body, limit):
        assert _depth(value) <= limit


def test_nesting_bound_lets_ordinary_reviews_through() -> None:
    wide = [{"name": f"e{i}", "value": '[{"x"}]', "list": [1, {"a": []}]} for i in range(300)]
    assert codec.nested_at_most(json.dumps(_review(object={"items": wide})).encode(), 200)
    assert not codec.nested_at_most(b"[" * 201 + b"]" * 201, 200)


def test_request_from_review_flattens_the_admission_request() -> None:
    r = msgspec.convert(
        {
            "uid": "abc",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "subResource": "scale",
            "name": "web",
            "namespace": "payments",
            "operation": "UPDATE",
            "userInfo": {"username": "alice", "groups": ["g1"]},
            "dryRun": True,
        },
        review_model.AdmissionRequest,
    )
    req = codec.request_from_review(r)
    assert (req.uid, req.user, req.groups, req.resource, req.subresource, req.dry_run) == (
        "abc",
        "alice",
        ("g1",),
        "deployments",
        "scale",
        True,
    )
