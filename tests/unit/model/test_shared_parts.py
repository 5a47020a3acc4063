"""Windows the store holds share pydantic's per-instance "fields sets" (a third of their memory)
and their equal string lists and maps, without any model answering differently for it."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from controller import store as stores
from controller.model import crds

RULE = {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]}


def window_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": crds.API_VERSION,
        "kind": "ChangeWindow",
        "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": "1", "generation": 1},
        "spec": {
            "ticket": f"CHG-{name}",
            "requester": "alice",
            "identities": ["oncall"],
            "targets": [
                {
                    "namespaces": ["payments"],
                    "resources": [
                        {
                            "apiGroups": ["apps"],
                            "resources": ["deployments"],
                            "operations": ["UPDATE"],
                        }
                    ],
                }
            ],
            "schedule": {"cron": "0 22 * * 2", "duration": "2h", "timeZone": "Europe/Berlin"},
            **spec,
        },
    }


def validate(body: dict[str, Any]) -> crds.ChangeWindow:
    return crds.ChangeWindow.model_validate({k: v for k, v in body.items() if k != "status"})


def fields_sets(model: pydantic.BaseModel) -> list[tuple[str, set[str]]]:
    """Every model's fields set in ``model``, by its path."""
    out: list[tuple[str, set[str]]] = []

    def walk(path: str, item: object) -> None:
        if isinstance(item, pydantic.BaseModel):
            out.append((path, item.__pydantic_fields_set__))
            for name, value in item.__dict__.items():
                walk(f"{path}.{name}", value)
        elif isinstance(item, list):
            for i, value in enumerate(item):
                walk(f"{path}[{i}]", value)

    walk("", model)
    return out


def held_by_a_store(*bodies: dict[str, Any]) -> dict[str, crds.ChangeWindow]:
    """The windows as a Store holds them once it has applied ``bodies``."""
    store = stores.Store()
    for body in bodies:
        assert store.apply("ChangeWindow", "upsert", body) == []
    return dict(store.snapshot().windows)


def test_two_windows_held_by_the_store_share_their_fields_sets() -> None:
    held = held_by_a_store(window_body("a"), window_body("b"))
    a, b = held["a"], held["b"]
    pairs = list(zip(fields_sets(a), fields_sets(b), strict=True))
    assert len(pairs) >= 7
    for (path, mine), (_, theirs) in pairs:
        assert mine is theirs, path
    # Fresh validations (what the webhook does per request) keep their own.
    assert validate(window_body("a")).spec is not a.spec
    assert (
        validate(window_body("a")).spec.__pydantic_fields_set__
        is not a.spec.__pydantic_fields_set__
    )


def test_sharing_changes_no_answer_of_the_model() -> None:
    body = window_body("a", approvals=[{"approver": "bob", "specHash": "sha256:" + "0" * 64}])
    plain, shared = validate(body), crds.share_equal_parts(validate(body))
    assert shared == plain
    for mode in ("python", "json"):
        for options in ({}, {"exclude_unset": True}, {"exclude_defaults": True, "by_alias": True}):
            assert shared.model_dump(mode=mode, **options) == plain.model_dump(mode=mode, **options)
    assert [s for _, s in fields_sets(shared)] == [s for _, s in fields_sets(plain)]


def test_a_shared_set_never_changes_under_another_model() -> None:
    a = crds.share_equal_parts(validate(window_body("a")))
    b = crds.share_equal_parts(validate(window_body("b")))
    before = set(b.spec.__pydantic_fields_set__)
    assert a.spec.__pydantic_fields_set__ is b.spec.__pydantic_fields_set__

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        a.spec.ticket = "CHG-other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        a.metadata.name = "other"  # type: ignore[misc]
    changed = a.spec.model_copy(update={"emergency": None})
    assert "emergency" in changed.model_fields_set
    for clone in (copy.copy(a.spec), copy.deepcopy(a.spec)):
        assert clone.__pydantic_fields_set__ is not a.spec.__pydantic_fields_set__

    assert b.spec.__pydantic_fields_set__ == before
    assert "emergency" not in b.spec.model_fields_set


def test_models_that_are_not_frozen_keep_their_own() -> None:
    assert not crds.ChangePolicy.model_config.get("frozen")
    body = {"metadata": {"name": "p"}, "spec": {"match": {"resources": [RULE]}}}
    one = crds.share_equal_parts(crds.ChangePolicy.model_validate(body))
    two = crds.share_equal_parts(crds.ChangePolicy.model_validate(body))
    assert one.__pydantic_fields_set__ is not two.__pydantic_fields_set__
    assert one.spec.__pydantic_fields_set__ is two.spec.__pydantic_fields_set__  # frozen inside


def test_the_status_windows_share_when_they_have_none_cannot_be_changed() -> None:
    a, b = validate(window_body("a")), validate(window_body("b"))
    assert a.status is b.status
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        a.status.phase = "Active"  # type: ignore[misc]
    assert b.status.phase is None


def string_parts(window: crds.ChangeWindow) -> dict[str, object]:
    target, approval = window.spec.targets[0], window.spec.approvals[0]
    return {
        "namespaces": target.namespaces,
        "rule.apiGroups": target.resources[0].api_groups,
        "rule.operations": target.resources[0].operations,
        "approval.policies": approval.policies,
        "approval.namespaces": approval.namespaces,
        "labels": window.metadata.labels,
    }


def approved(name: str, **spec: Any) -> dict[str, Any]:
    body = window_body(
        name,
        approvals=[
            {
                "approver": "bob",
                "specHash": "sha256:" + "0" * 64,
                "policies": ["payments-prod", "payments-eu"],
                "namespaces": ["payments"],
            }
        ],
        **spec,
    )
    body["metadata"]["labels"] = {"team": "payments"}
    return body


def test_two_windows_held_by_the_store_share_their_equal_string_lists_and_maps() -> None:
    held = held_by_a_store(approved("a"), approved("b"))
    a, b = string_parts(held["a"]), string_parts(held["b"])
    for field, value in a.items():
        assert value is b[field], field
    # A fresh validation keeps its own, equal ones.
    fresh = string_parts(validate(approved("a")))
    for field, value in fresh.items():
        assert value == a[field] and value is not a[field], field


def test_only_the_same_field_of_the_same_class_shares() -> None:
    # Equal contents in another field or class stay apart: the operations are Operation
    # members, the namespaces plain strings, though "UPDATE" == Operation.UPDATE.
    window = crds.share_equal_parts(
        validate(approved("a", targets=[{"namespaces": ["UPDATE"], "resources": [RULE]}]))
    )
    target = window.spec.targets[0]
    assert target.namespaces == ["UPDATE"] and target.resources[0].operations == ["UPDATE"]
    assert target.namespaces is not target.resources[0].operations
    assert all(isinstance(op, crds.Operation) for op in target.resources[0].operations)
    assert all(type(ns) is str for ns in target.namespaces)
    other = crds.share_equal_parts(
        validate(
            approved(
                "b", targets=[{"namespaces": ["payments-prod", "payments-eu"], "resources": [RULE]}]
            )
        )
    )
    assert other.spec.targets[0].namespaces == other.spec.approvals[0].policies
    assert other.spec.targets[0].namespaces is not other.spec.approvals[0].policies


def test_sharing_string_parts_changes_no_answer_and_differing_ones_stay_apart() -> None:
    plain = validate(approved("a"))
    shared = crds.share_equal_parts(validate(approved("a")))
    assert shared == plain
    for options in ({}, {"exclude_unset": True}, {"by_alias": True, "exclude_defaults": True}):
        assert shared.model_dump(mode="json", **options) == plain.model_dump(mode="json", **options)
    different = approved("c")
    different["spec"]["approvals"][0]["policies"] = ["payments-prod"]
    apart = crds.share_equal_parts(validate(different))
    assert apart.spec.approvals[0].policies == ["payments-prod"]
    assert shared.spec.approvals[0].policies == ["payments-prod", "payments-eu"]


def test_the_table_of_shared_strings_is_bounded() -> None:
    for i in range(crds.STRINGS_LIMIT + 10):
        crds.share_equal_parts(validate(window_body(f"w{i}", identities=[f"oncall-{i}"])))
        assert len(crds._STRINGS) <= crds.STRINGS_LIMIT
    # Shared before the table started afresh, still equal and still answering the same.
    again = crds.share_equal_parts(validate(approved("a")))
    assert string_parts(again) == string_parts(validate(approved("a")))


def test_large_lists_and_maps_are_never_kept_by_the_table() -> None:
    # The table keeps what it holds after the window is deleted, and a window may be 1.5 MiB.
    many = [f"ns-{i}" for i in range(crds.STRINGS_MAX_ITEMS + 1)]
    long = ["n" * (crds.STRINGS_MAX_CHARS + 1)]
    labels = {f"k{i}": "v" for i in range(crds.STRINGS_MAX_ITEMS + 1)}
    for namespaces in (many, long):
        body = window_body("a", targets=[{"namespaces": namespaces, "resources": [RULE]}])
        body["metadata"]["labels"] = labels
        one, two = crds.share_equal_parts(validate(body)), crds.share_equal_parts(validate(body))
        assert one.spec.targets[0].namespaces == two.spec.targets[0].namespaces == namespaces
        assert one.spec.targets[0].namespaces is not two.spec.targets[0].namespaces
        assert one.metadata.labels == labels and one.metadata.labels is not two.metadata.labels
        assert all(
            len(contents) <= crds.STRINGS_MAX_ITEMS for (_, _, contents), _ in crds._STRINGS.items()
        )
