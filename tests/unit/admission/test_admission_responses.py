"""What the webhook answers for a decision (pure builders; SPEC "What the requester sees")."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

import msgspec
import pytest

from controller.admission import decisionlog, responses
from controller.admission import metrics as metrics_mod
from controller.model import crds, review
from controller.policy import decide
from controller.policy.request import STARTING_MESSAGE

UID = "705ab4f5-6393-11e8-b7cc-42010a800002"

DENY_MESSAGE = (
    "changegate denied UPDATE deployments.apps payments/web for alice@example.com: no approved "
    "change window covers this change (policy payments-prod). Contact #change-management."
)


def _decision(**fields: Any) -> decide.Decision:
    base: dict[str, Any] = {
        "allowed": True,
        "verdict": "allow",
        "reason": decide.Reason.NOT_CONTROLLED,
        "mode": None,
        "message": "",
        "policy": None,
        "window": None,
        "ticket": None,
        "approvers": (),
        "identity": None,
        "emergency": False,
        "warnings": (),
        "audit_annotations": {},
    }
    base.update(fields)
    return decide.Decision(**base)


DENIED = _decision(
    allowed=False,
    verdict="deny",
    reason=decide.Reason.NO_WINDOW,
    mode=crds.Enforcement.ENFORCE,
    message=DENY_MESSAGE,
    policy="payments-prod",
)
ADMITTED_BY_WINDOW = _decision(
    reason=decide.Reason.WINDOW,
    mode=crds.Enforcement.ENFORCE,
    policy="payments-prod",
    window="chg-1234",
    ticket="CHG-1234",
    approvers=("bob@example.com", "carol@example.com"),
    identity="payments-oncall",
    warnings=("change window chg-1234 closes in 9m (at 2026-12-02 00:00 KST)",),
)
WARNED = msgspec.structs.replace(
    DENIED, allowed=True, mode=crds.Enforcement.WARN, warnings=(DENY_MESSAGE,)
)


def test_response_answers_the_reviews_uid_in_admission_v1() -> None:
    answer = responses.build_response(uid=UID, decision=ADMITTED_BY_WINDOW)
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == UID
    json.dumps(answer)  # JSON-ready as is


@pytest.mark.parametrize("name", ["denied", "window", "warned", "starting"])
def test_response_has_the_shape_of_the_admission_review_model(name: str) -> None:
    decision = {
        "denied": DENIED,
        "window": ADMITTED_BY_WINDOW,
        "warned": WARNED,
        "starting": decide.Decision.starting(),
    }[name]
    answer = responses.build_response(uid=UID, decision=decision)
    assert review.AdmissionReviewResponse.model_validate(answer).to_wire() == answer


def test_denial_is_403_forbidden_with_the_decisions_message() -> None:
    response = responses.build_response(uid=UID, decision=DENIED)["response"]
    assert response["allowed"] is False
    assert response["status"] == {"code": 403, "reason": "Forbidden", "message": DENY_MESSAGE}


def test_starting_denial_is_503_so_clients_see_a_transient_error() -> None:
    response = responses.build_response(uid=UID, decision=decide.Decision.starting())["response"]
    assert response["allowed"] is False
    assert response["status"] == {
        "code": 503,
        "reason": "ServiceUnavailable",
        "message": STARTING_MESSAGE,
    }
    assert response["auditAnnotations"] == {"decision": "deny", "reason": "Starting"}


def test_admission_carries_no_status() -> None:
    response = responses.build_response(uid=UID, decision=ADMITTED_BY_WINDOW)["response"]
    assert response["allowed"] is True
    assert "status" not in response


def test_warn_mode_admits_with_the_denial_text_as_a_warning() -> None:
    response = responses.build_response(uid=UID, decision=WARNED)["response"]
    assert response["allowed"] is True
    assert response["warnings"] == [DENY_MESSAGE]
    assert response["auditAnnotations"]["mode"] == "Warn"
    assert response["auditAnnotations"]["reason"] == "NoWindow"


def test_denial_without_a_message_still_explains_itself() -> None:
    invalid = _decision(
        allowed=False,
        verdict="deny",
        reason=decide.Reason.INVALID,
        field_errors=(("spec.schedule.timeZone", "unknown time zone 'Mars/Base'"),),
    )
    status = responses.build_response(uid=UID, decision=invalid)["response"]["status"]
    assert status["code"] == 403
    assert "spec.schedule.timeZone: unknown time zone 'Mars/Base'" in status["message"]


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (
            ADMITTED_BY_WINDOW,
            {
                "decision": "allow",
                "reason": "Window",
                "mode": "Enforce",
                "policy": "payments-prod",
                "window": "chg-1234",
                "ticket": "CHG-1234",
                "approvers": "bob@example.com,carol@example.com",
                "identity": "payments-oncall",
            },
        ),
        (
            DENIED,
            {
                "decision": "deny",
                "reason": "NoWindow",
                "mode": "Enforce",
                "policy": "payments-prod",
            },
        ),
        (_decision(), {"decision": "allow", "reason": "NotControlled"}),
        (
            _decision(reason=decide.Reason.EMERGENCY, policy="p", window="inc-77", emergency=True),
            {
                "decision": "allow",
                "reason": "Emergency",
                "policy": "p",
                "window": "inc-77",
                "emergency": "true",
            },
        ),
    ],
    ids=["window", "denied", "not-controlled", "emergency"],
)
def test_every_decision_carries_audit_annotations_of_why(
    decision: decide.Decision, expected: dict[str, str]
) -> None:
    annotations = responses.build_response(uid=UID, decision=decision)["response"][
        "auditAnnotations"
    ]
    assert annotations == expected


def test_engine_audit_annotations_extend_ours_and_invalid_keys_are_dropped() -> None:
    decision = _decision(
        audit_annotations={"specHash": "sha256:ab", "bad key!": "x", "x" * 64: "too long"}
    )
    annotations = responses.audit_annotations_for(decision)
    assert annotations["specHash"] == "sha256:ab"
    assert "bad key!" not in annotations
    assert "x" * 64 not in annotations
    assert all(isinstance(v, str) for v in annotations.values())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("window closes in 9m", "window closes in 9m"),
        ("two\nlines\tand\x00control", "two lines and control"),
        ("  padded  ", "padded"),
        ("x" * 600, "x" * 511 + "…"),
        ("한국 시간 22:00 KST", "한국 시간 22:00 KST"),
    ],
    ids=["plain", "control-chars", "padding", "too-long", "unicode"],
)
def test_warnings_are_one_printable_line_of_bounded_length(raw: str, expected: str) -> None:
    assert responses.sanitize_warning(raw) == expected
    assert len(responses.sanitize_warning(raw)) <= responses.MAX_WARNING_CHARS


_WHITESPACE = [chr(c) for c in range(0x3000 + 1) if chr(c).isspace()]


@pytest.mark.parametrize("space", _WHITESPACE, ids=[f"U+{ord(c):04X}" for c in _WHITESPACE])
def test_any_run_of_whitespace_in_a_warning_becomes_one_space(space: str) -> None:
    for raw in (f"a{space}b", f"a {space}b", f"a{space}{space}b", f"{space}a b{space}"):
        assert responses.sanitize_warning(raw) == "a b", repr(raw)


def test_warnings_are_deduplicated_and_capped() -> None:
    repeated = ("warning 0", "warning 0", "", "   ", "warning\n1", "warning 1")
    assert responses.warnings_for(_decision(warnings=repeated)) == ["warning 0", "warning 1"]
    flood = tuple(f"warning {i}" for i in range(20))
    assert responses.warnings_for(_decision(warnings=flood)) == list(
        flood[: responses.MAX_WARNINGS]
    )


def test_decision_log_record_has_every_field_named_by_the_spec() -> None:
    request = decide.Request(
        uid=UID,
        user="alice@example.com",
        groups=("payments-ops",),
        operation="UPDATE",
        api_group="apps",
        api_version="v1",
        resource="deployments",
        subresource="scale",
        kind="Scale",
        namespace="payments",
        name="web",
        dry_run=True,
        object=None,
        old_object=None,
    )
    now = datetime.datetime(2026, 12, 1, 14, 0, tzinfo=datetime.UTC)
    line = decisionlog.record(request=request, decision=DENIED, now=now, latency_s=0.0012345)
    assert line == {
        "ts": "2026-12-01T14:00:00+00:00",
        "uid": UID,
        "user": "alice@example.com",
        "operation": "UPDATE",
        "resource": "deployments.apps/scale",
        "namespace": "payments",
        "name": "web",
        "decision": "deny",
        "allowed": False,
        "reason": "NoWindow",
        "policy": "payments-prod",
        "window": None,
        "ticket": None,
        "mode": "Enforce",
        "dryRun": True,
        "latency_ms": 1.234,
    }


def _log_request(**fields: Any) -> decide.Request:
    base: dict[str, Any] = {
        "uid": UID,
        "user": "alice@example.com",
        "groups": ("payments-ops",),
        "operation": "UPDATE",
        "api_group": "apps",
        "api_version": "v1",
        "resource": "deployments",
        "subresource": "",
        "kind": "Deployment",
        "namespace": "payments",
        "name": "web",
        "dry_run": False,
    }
    base.update(fields)
    return decide.Request(**base)


@pytest.mark.parametrize(
    ("request_", "decision", "latency_s"),
    [
        (_log_request(), DENIED, 0.0012345),
        (_log_request(dry_run=True, subresource="scale", api_group=""), ADMITTED_BY_WINDOW, 0.0),
        (_log_request(user='김 "quoted" \\ user\n', name="ünïcode\u2028"), WARNED, 12.5),
        (_log_request(namespace="", name=""), _decision(), 1e-7),
        (_log_request(), _decision(policy="p", window="w", ticket="T\t1"), 3.0),
    ],
    ids=["denied", "admitted-dry-run", "escaping-and-unicode", "cluster-scoped", "control-chars"],
)
def test_decision_log_line_is_its_record_as_compact_json(
    request_: decide.Request, decision: decide.Decision, latency_s: float
) -> None:
    now = datetime.datetime(2026, 12, 1, 14, 0, 0, 123456, tzinfo=datetime.UTC)
    fields = decisionlog.record(request=request_, decision=decision, now=now, latency_s=latency_s)
    text = decisionlog.line(request=request_, decision=decision, now=now, latency_s=latency_s)
    assert text == json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(text) == fields


def test_decision_log_record_carries_what_logging_would_have_set() -> None:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    handler = Keep()
    log = logging.getLogger("changegate.decisions")
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        now = datetime.datetime(2026, 12, 1, 14, 0, tzinfo=datetime.UTC)
        decisionlog.emit(request=_log_request(), decision=DENIED, now=now, latency_s=0.001)
        reference = log.makeRecord(log.name, logging.INFO, decisionlog.__file__, 0, "x", (), None)
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    [got] = captured
    assert isinstance(got, logging.LogRecord)
    assert got.getMessage() == decisionlog.line(
        request=_log_request(), decision=DENIED, now=now, latency_s=0.001
    )
    varying = {"msg", "created", "msecs", "relativeCreated"}
    set_by_formatters = {"message", "asctime"}  # pytest's own handler formats it too
    assert set(vars(got)) - set_by_formatters == set(vars(reference))
    assert {k: v for k, v in vars(got).items() if k not in varying | set_by_formatters} == {
        k: v for k, v in vars(reference).items() if k not in varying
    }
    assert got.relativeCreated == pytest.approx(
        (got.created - reference.created) * 1000 + reference.relativeCreated, abs=1.0
    )


def _sample(metrics: metrics_mod.Metrics, name: str, labels: dict[str, str]) -> float | None:
    value: float | None = metrics.registry.get_sample_value(name, labels)
    return value


def test_dry_runs_are_counted_apart_and_never_as_emergency_changes() -> None:
    metrics = metrics_mod.Metrics()
    emergency = _decision(
        reason=decide.Reason.EMERGENCY, policy="p", window="inc-77", emergency=True
    )
    metrics.observe_decision(decision=emergency, dry_run=True, seconds=0.001)
    metrics.observe_decision(decision=emergency, dry_run=False, seconds=0.001)
    metrics.observe_decision(decision=emergency, dry_run=False, seconds=0.001)
    labels = {
        "decision": "allow",
        "allowed": "true",
        "reason": "Emergency",
        "policy": "p",
        "mode": "",
    }
    assert _sample(metrics, "changegate_decisions_total", {**labels, "dry_run": "true"}) == 1
    assert _sample(metrics, "changegate_decisions_total", {**labels, "dry_run": "false"}) == 2
    assert (
        _sample(metrics, "changegate_emergency_changes_total", {"policy": "p", "window": "inc-77"})
        == 2
    )
    assert _sample(metrics, "changegate_admission_duration_seconds_count", {}) == 3


def test_window_phases_are_replaced_not_accumulated() -> None:
    metrics = metrics_mod.Metrics()
    metrics.set_window_phases({"Active": 3, "Scheduled": 2})
    metrics.set_window_phases({"Scheduled": 1})
    assert _sample(metrics, "changegate_windows", {"phase": "Active"}) == 0
    assert _sample(metrics, "changegate_windows", {"phase": "Scheduled"}) == 1
    assert _sample(metrics, "changegate_windows", {"phase": "ReviewRequired"}) == 0


def test_metrics_live_in_their_own_registry() -> None:
    one, two = metrics_mod.Metrics(), metrics_mod.Metrics()
    one.set_index_ready(True)
    assert _sample(one, "changegate_index_ready", {}) == 1
    assert _sample(two, "changegate_index_ready", {}) == 0


def test_verdict_and_answer_have_one_name_each_in_audit_log_line_and_metrics() -> None:
    # A Warn-mode denial: the policies said deny (the verdict), the webhook admitted (the
    # answer). Every output names the verdict ``decision`` and the answer ``allowed``.
    assert (WARNED.verdict, WARNED.allowed) == ("deny", True)
    response = responses.build_response(uid=UID, decision=WARNED)["response"]
    assert (response["allowed"], response["auditAnnotations"]["decision"]) == (True, "deny")
    now = datetime.datetime(2026, 12, 1, 14, 0, tzinfo=datetime.UTC)
    line = decisionlog.record(request=_log_request(), decision=WARNED, now=now, latency_s=0.0)
    assert (line["decision"], line["allowed"], line["mode"]) == ("deny", True, "Warn")
    metrics = metrics_mod.Metrics()
    metrics.observe_decision(decision=WARNED, dry_run=False, seconds=0.001)
    labels = {"reason": "NoWindow", "policy": "payments-prod", "mode": "Warn", "dry_run": "false"}
    assert (
        _sample(
            metrics, "changegate_decisions_total", {**labels, "decision": "deny", "allowed": "true"}
        )
        == 1
    )
    assert (
        _sample(
            metrics,
            "changegate_decisions_total",
            {**labels, "decision": "allow", "allowed": "true"},
        )
        is None
    )
