"""``changegate run``: flags, their CHANGEGATE_* environment twins, and the JSON log lines."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import pytest

from controller import __main__ as entry


def config(argv: list[str]) -> entry.runner.Config:
    return entry.config_from_args(entry.parser().parse_args(["run", *argv]))


def test_defaults_are_the_in_cluster_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBECONFIG", "PORT", "LOCAL", "NAMESPACE", "FAILURE_POLICY"):
        monkeypatch.delenv(f"CHANGEGATE_{name}", raising=False)
    c = config([])
    assert (c.kubeconfig, c.port, c.local, c.namespace, c.failure_policy) == (
        None,
        8443,
        False,
        "changegate",
        "Fail",
    )
    assert c.builtin_exemptions is True
    assert c.self_username == "system:serviceaccount:changegate:changegate"


def test_flags_set_everything() -> None:
    c = config(
        [
            "--kubeconfig=/k",
            "--listen-host=127.0.0.1",
            "--port=9443",
            "--cert-dir=/certs",
            "--namespace=cg",
            "--service-account=gate",
            "--failure-policy=Ignore",
            "--local",
            "--no-builtin-exemptions",
        ]
    )
    assert c.kubeconfig == Path("/k") and c.cert_dir == Path("/certs")
    assert (c.listen_host, c.port, c.namespace, c.failure_policy) == (
        "127.0.0.1",
        9443,
        "cg",
        "Ignore",
    )
    assert c.local and not c.builtin_exemptions
    assert c.self_username == "system:serviceaccount:cg:gate"


def test_environment_sets_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEGATE_PORT", "7443")
    monkeypatch.setenv("CHANGEGATE_LOCAL", "true")
    monkeypatch.setenv("CHANGEGATE_NAMESPACE", "from-env")
    c = config(["--namespace=from-flag"])
    assert (c.port, c.local, c.namespace) == (7443, True, "from-flag")


def test_invalid_failure_policy_is_refused() -> None:
    with pytest.raises(SystemExit):
        config(["--failure-policy=Maybe"])


def record(name: str, msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_log_lines_are_json_with_extra_fields() -> None:
    line = json.loads(entry.JsonFormatter().format(record("x", "hello", port=8443)))
    assert (line["level"], line["logger"], line["msg"], line["port"]) == (
        "info",
        "x",
        "hello",
        8443,
    )


def test_decision_lines_are_merged_not_double_encoded() -> None:
    decision = json.dumps({"ts": "2026-12-01T00:00:00Z", "decision": "deny", "reason": "NoWindow"})
    line = json.loads(entry.JsonFormatter().format(record("changegate.decisions", decision)))
    assert (line["decision"], line["reason"], line["ts"]) == (
        "deny",
        "NoWindow",
        "2026-12-01T00:00:00Z",
    )
    assert (line["level"], line["logger"]) == ("info", "changegate.decisions")
    assert "msg" not in line


def test_a_real_decision_log_line_stays_one_json_object() -> None:
    from controller.admission import decisionlog
    from controller.policy import decide, index

    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    request = decide.Request(
        uid="u-1",
        user='eve "quoted" \u00e9',
        groups=(),
        operation="UPDATE",
        api_group="apps",
        api_version="v1",
        resource="deployments",
        subresource="",
        kind="Deployment",
        namespace="payments",
        name="web",
        dry_run=False,
        object=None,
        old_object=None,
    )
    snapshot = index.Snapshot.build(policies=[], identities=[], windows=[], namespaces={})
    decision = decide.decide(request, snapshot=snapshot, now=now)
    text = decisionlog.line(request=request, decision=decision, now=now, latency_s=0.001)
    formatted = entry.JsonFormatter().format(record("changegate.decisions", text))
    assert "\n" not in formatted
    line = json.loads(formatted)
    assert (line["uid"], line["user"], line["reason"], line["logger"]) == (
        "u-1",
        'eve "quoted" \u00e9',
        "NotControlled",
        "changegate.decisions",
    )


def test_kubernetes_service_links_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Service named changegate makes the kubelet inject CHANGEGATE_PORT=tcp://...: that is
    not --port (it crashed the pods on a real node before the chart disabled service links)."""
    monkeypatch.setenv("CHANGEGATE_PORT", "tcp://10.0.0.7:443")
    monkeypatch.setenv("CHANGEGATE_PORT_443_TCP", "tcp://10.0.0.7:443")
    args = entry.parser().parse_args(["run"])
    assert args.port == 8443
