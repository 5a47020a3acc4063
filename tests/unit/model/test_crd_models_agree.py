"""The CRD schemas the API server enforces and the pydantic models the controller reads agree.

Two descriptions of one wire format drift apart silently: a field added to the model only is
pruned by the API server before the controller ever sees it; a field added to the CRD only is
rejected by the controller as unknown. So the comparison is generic — a recursive walk of the
model's JSON schema against the CRD's OpenAPI schema — and adding a field, a required flag or
an enum value on one side only fails here.

The CRD may be stricter than the model (maxItems and maxLength keep CEL within its cost
budget), never looser than a constraint the model declares.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from controller.model import crds

ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "examples"


@dataclasses.dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    file: str
    short_names: tuple[str, ...]
    model: type[pydantic.BaseModel]
    parts: tuple[str, ...]  # top-level parts the controller reads and the CRD must describe


KINDS = (
    Kind(
        "ChangePolicy",
        "changepolicies",
        "changepolicies.yaml",
        ("cgpol",),
        crds.ChangePolicy,
        ("spec",),
    ),
    Kind(
        "AuthorizedIdentity",
        "authorizedidentities",
        "authorizedidentities.yaml",
        ("cgid",),
        crds.AuthorizedIdentity,
        ("spec",),
    ),
    Kind(
        "ChangeWindow",
        "changewindows",
        "changewindows.yaml",
        ("cgw", "cw"),
        crds.ChangeWindow,
        ("spec", "status"),
    ),
)
BY_KIND = {k.kind: k for k in KINDS}


def load_crd(kind: Kind) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((CRD_DIR / kind.file).read_text()))
    assert len(docs) == 1, f"{kind.file} must hold exactly one CRD"
    crd: dict[str, Any] = docs[0]
    return crd


def openapi_schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def model_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(by_alias=True, mode="validation")


# -- the generic walk ----------------------------------------------------------------------------

# Constraints the model can declare; when it does, the CRD must declare the same value.
_MIRRORED_CONSTRAINTS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "minimum",
    "maximum",
)
# Model string formats that the CRD carries as a pattern instead: Kubernetes' own "duration"
# format is Go's (no "1d"), and it has no "time" format.
_PATTERN_FORMATS = {"duration", "time"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and drop the ``| None`` branch: optional-ness is the parent's required list."""
    while True:
        if "$ref" in node:
            node = {
                **defs[node["$ref"].rsplit("/", 1)[-1]],
                **{k: v for k, v in node.items() if k != "$ref"},
            }
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            assert len(branches) == 1, f"unexpected union in model schema: {node}"
            node = {**branches[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        elif "allOf" in node and len(node["allOf"]) == 1:
            node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        else:
            return node


def _enum(node: dict[str, Any]) -> set[Any] | None:
    if "enum" in node:
        return set(node["enum"])
    if "const" in node:
        return {node["const"]}
    return None


def _same_default(model_node: dict[str, Any], model_default: Any, crd_default: Any) -> bool:
    if model_node.get("format") == "duration":
        iso = pydantic.TypeAdapter(datetime.timedelta).validate_python(model_default)
        return iso == crds.parse_duration(crd_default)
    return bool(model_default == crd_default)


def drift(
    model: dict[str, Any], crd: dict[str, Any], *, path: str, defs: dict[str, Any]
) -> list[str]:
    """Every disagreement between a model schema node and a CRD schema node, recursively."""
    m = _resolve(model, defs)
    out: list[str] = []
    if "properties" in m:
        if crd.get("type") != "object" or "properties" not in crd:
            return [f"{path}: model has an object with fields, CRD has {crd.get('type')!r}"]
        m_names, c_names = set(m["properties"]), set(crd["properties"])
        for name in sorted(m_names - c_names):
            out.append(f"{path}.{name}: in the model, missing from the CRD")
        for name in sorted(c_names - m_names):
            out.append(f"{path}.{name}: in the CRD, missing from the model")
        m_req, c_req = set(m.get("required", ())), set(crd.get("required", ()))
        for name in sorted(m_req - c_req):
            out.append(f"{path}.{name}: required in the model, optional in the CRD")
        for name in sorted(c_req - m_req):
            out.append(f"{path}.{name}: required in the CRD, optional (defaulted) in the model")
        for name in sorted(m_names & c_names):
            out += drift(
                m["properties"][name], crd["properties"][name], path=f"{path}.{name}", defs=defs
            )
        return out
    m_type, c_type = m.get("type"), crd.get("type")
    if m_type != c_type:
        return [f"{path}: model type {m_type!r}, CRD type {c_type!r}"]
    if m_type == "array":
        return drift(m["items"], crd["items"], path=f"{path}[]", defs=defs) + _constraints(
            m, crd, path
        )
    if m_type == "object":  # a map, like matchLabels
        m_values, c_values = m.get("additionalProperties"), crd.get("additionalProperties")
        if not isinstance(m_values, dict) or not isinstance(c_values, dict):
            return [f"{path}: model map values {m_values!r}, CRD map values {c_values!r}"]
        return drift(m_values, c_values, path=f"{path}{{}}", defs=defs)
    m_enum, c_enum = _enum(m), _enum(crd)
    if m_enum != c_enum:
        out.append(f"{path}: model enum {sorted(m_enum or ())}, CRD enum {sorted(c_enum or ())}")
    m_format, c_format = m.get("format"), crd.get("format")
    if m_format in _PATTERN_FORMATS:
        if "pattern" not in crd:
            out.append(f"{path}: a {m_format} in the model needs a pattern in the CRD")
    elif (m_format == "date-time") != (c_format == "date-time"):
        out.append(f"{path}: model format {m_format!r}, CRD format {c_format!r}")
    if "default" in crd and "default" in m and not _same_default(m, m["default"], crd["default"]):
        out.append(f"{path}: model default {m['default']!r}, CRD default {crd['default']!r}")
    return out + _constraints(m, crd, path)


def _constraints(m: dict[str, Any], crd: dict[str, Any], path: str) -> list[str]:
    return [
        f"{path}: model {key}={m[key]!r}, CRD {key}={crd.get(key)!r}"
        for key in _MIRRORED_CONSTRAINTS
        if key in m and crd.get(key) != m[key]
    ]


def kind_drift(
    kind: Kind, schema: dict[str, Any], model: dict[str, Any] | None = None
) -> list[str]:
    """Drift between one CRD schema and its model (``model``: the model's JSON schema)."""
    model = model or model_schema(kind.model)
    defs = model.get("$defs", {})
    out: list[str] = []
    if set(model["properties"]) != set(schema["properties"]):
        out.append(
            f"{kind.kind}: top-level fields differ: model {sorted(model['properties'])}, "
            f"CRD {sorted(schema['properties'])}"
        )
    if "spec" not in schema.get("required", ()):
        out.append(f"{kind.kind}.spec: required in the model, optional in the CRD")
    for part in kind.parts:
        out += drift(
            model["properties"][part],
            schema["properties"][part],
            path=f"{kind.kind}.{part}",
            defs=defs,
        )
    return out


# -- the schemas agree ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_schema_has_the_models_fields_required_sets_enums_and_constraints(kind: Kind) -> None:
    assert kind_drift(kind, openapi_schema(load_crd(kind))) == []


def _spec(schema: dict[str, Any], *keys: str) -> dict[str, Any]:
    node = schema["properties"]["spec"]
    for key in keys:
        node = node["items"] if key == "[]" else node["properties"][key]
    return node  # type: ignore[no-any-return]


def _add_field(s: dict[str, Any]) -> None:
    _spec(s, "schedule")["properties"]["timezone"] = {"type": "string", "description": "typo"}


def _drop_field(s: dict[str, Any]) -> None:
    del _spec(s, "targets", "[]", "resources", "[]")["properties"]["operations"]


def _unrequire(s: dict[str, Any]) -> None:
    _spec(s, "targets", "[]", "resources", "[]")["required"].remove("apiGroups")


def _require_defaulted(s: dict[str, Any]) -> None:
    _spec(s)["required"].append("description")


def _widen_enum(s: dict[str, Any]) -> None:
    _spec(s, "targets", "[]", "resources", "[]", "operations", "[]")["enum"].append("PATCH")


def _loosen_pattern(s: dict[str, Any]) -> None:
    _spec(s, "approvals", "[]", "specHash")["pattern"] = "^sha256:.*$"


def _lose_date_time(s: dict[str, Any]) -> None:
    del _spec(s, "schedule", "start")["format"]


def _change_type(s: dict[str, Any]) -> None:
    _spec(s, "identities")["type"] = "string"


@pytest.mark.parametrize(
    "mutate",
    [
        _add_field,
        _drop_field,
        _unrequire,
        _require_defaulted,
        _widen_enum,
        _loosen_pattern,
        _lose_date_time,
        _change_type,
    ],
)
def test_drift_on_the_crd_side_only_is_reported(mutate: Any) -> None:
    """The walk reaches nested list items, so a one-sided change anywhere fails the test."""
    kind = BY_KIND["ChangeWindow"]
    schema = copy.deepcopy(openapi_schema(load_crd(kind)))
    mutate(schema)
    assert kind_drift(kind, schema) != []


def _model_adds_field(m: dict[str, Any]) -> None:
    m["$defs"]["WindowTarget"]["properties"]["labels"] = {
        "type": "array",
        "items": {"type": "string"},
    }


def _model_requires_field(m: dict[str, Any]) -> None:
    m["$defs"]["WindowApproval"]["required"].append("approvedAt")


def _model_adds_enum_value(m: dict[str, Any]) -> None:
    m["$defs"]["Phase"]["enum"].append("Cancelled")


def _model_tightens_string(m: dict[str, Any]) -> None:
    m["$defs"]["Emergency"]["properties"]["reason"]["minLength"] = 10


@pytest.mark.parametrize(
    "mutate",
    [_model_adds_field, _model_requires_field, _model_adds_enum_value, _model_tightens_string],
)
def test_drift_on_the_model_side_only_is_reported(mutate: Any) -> None:
    kind = BY_KIND["ChangeWindow"]
    model = model_schema(kind.model)
    mutate(model)
    assert kind_drift(kind, openapi_schema(load_crd(kind)), model) != []


# -- the CRDs themselves -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_is_cluster_scoped_changegate_v1alpha1_with_short_names(kind: Kind) -> None:
    crd = load_crd(kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{kind.plural}.{crds.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == crds.GROUP
    assert spec["scope"] == "Cluster"
    assert spec["names"]["kind"] == kind.kind
    assert spec["names"]["plural"] == kind.plural == crds.PLURALS[kind.kind]
    assert tuple(spec["names"]["shortNames"]) == kind.short_names
    assert spec["names"]["categories"] == ["changegate"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (crds.VERSION, True, True)


def _walk_properties(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk_properties(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _walk_properties(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk_properties(node["additionalProperties"], f"{path}{{}}")
    return found


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_field_has_a_description_for_kubectl_explain(kind: Kind) -> None:
    fields = [
        (path, node)
        for path, node in _walk_properties(openapi_schema(load_crd(kind)), kind.kind)
        if not path.endswith(("[]", "{}")) and path != f"{kind.kind}.metadata"  # named fields
    ]
    assert len(fields) > 10
    assert [path for path, node in fields if not node.get("description")] == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_cel_rule_says_what_is_wrong(kind: Kind) -> None:
    rules = [
        (path, rule)
        for path, node in _walk_properties(openapi_schema(load_crd(kind)), kind.kind)
        for rule in node.get("x-kubernetes-validations", ())
    ]
    assert rules, "every kind has CEL rules; the walk must find them"
    silent = [
        (path, r["rule"])
        for path, r in rules
        if not (r.get("message") or r.get("messageExpression"))
    ]
    assert silent == []


def test_lists_compared_by_cel_rules_are_bounded_so_the_cost_estimate_passes() -> None:
    """The approvals rules compare every old entry with every new one; unbounded, the API
    server's cost estimator would refuse the CRD."""
    approvals = _spec(openapi_schema(load_crd(BY_KIND["ChangeWindow"])), "approvals")
    assert approvals["maxItems"] <= 32

    def bounded(prop: dict[str, Any]) -> bool:
        if prop["type"] == "array":
            return bool(prop.get("maxItems")) and bounded(prop["items"])
        if prop["type"] == "object":
            return all(bounded(p) for p in prop["properties"].values())
        return bool(prop.get("maxLength"))

    assert all(bounded(p) for p in approvals["items"]["properties"].values())


@pytest.mark.parametrize(
    ("kind", "keys", "crd_default", "model", "field"),
    [
        ("ChangePolicy", ("enforcement",), "Enforce", crds.ChangePolicySpec, "enforcement"),
        ("ChangePolicy", ("approval", "required"), 1, crds.Approval, "required"),
        ("ChangePolicy", ("breakGlass", "maxDuration"), "4h", crds.BreakGlass, "max_duration"),
        ("AuthorizedIdentity", ("suspended",), False, crds.AuthorizedIdentitySpec, "suspended"),
    ],
)
def test_the_api_server_fills_in_the_models_defaults(
    kind: str,
    keys: tuple[str, ...],
    crd_default: Any,
    model: type[pydantic.BaseModel],
    field: str,
) -> None:
    stored = _spec(openapi_schema(load_crd(BY_KIND[kind])), *keys)["default"]
    assert stored == crd_default
    model_default = model.model_fields[field].default
    if isinstance(model_default, datetime.timedelta):
        stored = crds.parse_duration(stored)
    assert stored == model_default


def test_policy_approval_object_is_defaulted_so_required_defaults_to_one() -> None:
    """Nested defaults apply only inside an object that exists; ``approval: {}`` makes it exist."""
    schema = openapi_schema(load_crd(BY_KIND["ChangePolicy"]))
    assert _spec(schema, "approval")["default"] == {}


def test_window_spec_has_no_defaults_so_spec_hash_is_what_the_requester_wrote() -> None:
    schema = openapi_schema(load_crd(BY_KIND["ChangeWindow"]))
    defaulted = [
        path for path, node in _walk_properties(_spec(schema), "spec") if "default" in node
    ]
    assert defaulted == []


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "ChangeWindow",
            {
                "Phase": ".status.phase",
                "Ticket": ".spec.ticket",
                "Approvals": ".status.approvals",
                "Next Open": ".status.nextOpen",
                "Next Close": ".status.nextClose",
                "Age": ".metadata.creationTimestamp",
            },
        ),
        (
            "ChangePolicy",
            {
                "Enforcement": ".spec.enforcement",
                "Approvals Required": ".spec.approval.required",
                "Age": ".metadata.creationTimestamp",
            },
        ),
        (
            "AuthorizedIdentity",
            {
                "Time Zone": ".spec.workHours.timeZone",
                "Suspended": ".spec.suspended",
                "Valid Until": ".spec.validUntil",
                "Age": ".metadata.creationTimestamp",
            },
        ),
    ],
)
def test_kubectl_get_shows_the_columns_users_need(kind: str, columns: dict[str, str]) -> None:
    (version,) = load_crd(BY_KIND[kind])["spec"]["versions"]
    default_columns = {
        c["name"]: c["jsonPath"]
        for c in version["additionalPrinterColumns"]
        if not c.get("priority")
    }
    assert default_columns == columns


def test_change_window_status_is_a_subresource() -> None:
    (version,) = load_crd(BY_KIND["ChangeWindow"])["spec"]["versions"]
    assert version["subresources"] == {"status": {}}


def _pattern(kind: str, *keys: str) -> str:
    return str(_spec(openapi_schema(load_crd(BY_KIND[kind])), *keys)["pattern"])


def _model_accepts(model: type[pydantic.BaseModel], **fields: Any) -> bool:
    try:
        model.model_validate(fields)
    except pydantic.ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    "value", ["09:00", "00:00", "23:59", "24:00", "9:00", "12:60", "25:00", "0900", " 09:00"]
)
def test_clock_time_pattern_accepts_what_the_model_accepts(value: str) -> None:
    crd_ok = (
        re.search(_pattern("AuthorizedIdentity", "workHours", "weekly", "[]", "start"), value)
        is not None
    )
    model_ok = _model_accepts(crds.WeeklyRange, days=["Mon"], start=value, end="18:00")
    assert crd_ok == model_ok


@pytest.mark.parametrize(
    "value", ["30m", "2h", "1h30m", "1d", "45s", "1d2h3m4s", "2", "h", "1.5h", "2H", "1m1h"]
)
def test_duration_pattern_accepts_what_the_model_accepts(value: str) -> None:
    crd_ok = (
        re.search(_pattern("ChangeWindow", "schedule", "duration"), value) is not None
        and len(value) >= 2
    )
    try:
        crds.parse_duration(value)
        model_ok = True
    except ValueError:
        model_ok = False
    assert crd_ok == model_ok


@pytest.mark.parametrize("value", ["0 22 * * 2,4", "*/5 * * * *", "0 22 * *", "0 22 * * * *"])
def test_cron_pattern_demands_five_fields_like_the_model(value: str) -> None:
    crd_ok = re.search(_pattern("ChangeWindow", "schedule", "cron"), value) is not None
    assert crd_ok == _model_accepts(crds.Schedule, cron=value, duration="2h", timeZone="Asia/Seoul")


# -- the examples --------------------------------------------------------------------------------

EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml"))
EXPECTED_EXAMPLES = {
    ("ChangePolicy", "payments-prod"),
    ("AuthorizedIdentity", "payments-oncall"),
    ("ChangeWindow", "chg-1234-payments-v2-3"),
    ("ChangeWindow", "weekly-payments-maintenance"),
    ("ChangeWindow", "inc-77-payments-down"),
}


def _load_example(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name} must hold one object"
    doc: dict[str, Any] = docs[0]
    return doc


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates_against_the_model(path: Path) -> None:
    assert path.read_text().startswith("# "), (
        "each example opens with a comment saying what it is for"
    )
    doc = _load_example(path)
    assert doc["apiVersion"] == crds.API_VERSION
    obj = BY_KIND[doc["kind"]].model.model_validate(doc)
    assert obj.model_dump(by_alias=True, exclude_unset=True)["spec"].keys() == doc["spec"].keys()


def test_examples_are_the_objects_the_demo_applies() -> None:
    found = {(d["kind"], d["metadata"]["name"]) for d in map(_load_example, EXAMPLES)}
    assert found == EXPECTED_EXAMPLES


def test_example_windows_show_both_schedule_forms_and_an_emergency() -> None:
    windows = {
        d["metadata"]["name"]: crds.ChangeWindow.model_validate(d)
        for d in map(_load_example, EXAMPLES)
        if d["kind"] == "ChangeWindow"
    }
    assert windows["chg-1234-payments-v2-3"].spec.schedule.one_off is not None
    assert windows["weekly-payments-maintenance"].spec.schedule.recurring is not None
    emergency = windows["inc-77-payments-down"].spec
    assert emergency.emergency is not None and emergency.schedule.one_off is not None
