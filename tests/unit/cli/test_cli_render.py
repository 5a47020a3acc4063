"""What the CLI prints: relative and local times, tables, describe, can-i and report layouts."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from controller.cli import render

UTC = datetime.UTC
SEOUL = zoneinfo.ZoneInfo("Asia/Seoul")
NOW = datetime.datetime(2026, 12, 1, 0, 58, tzinfo=UTC)  # 09:58 KST


def at(**delta: int) -> datetime.datetime:
    return NOW + datetime.timedelta(**delta)


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (at(hours=2, minutes=10), "in 2h 10m"),
        (at(hours=-3), "3h ago"),
        (at(hours=13, minutes=2, seconds=30), "in 13h 2m"),
        (at(days=1, hours=2, minutes=5), "in 1d 2h"),
        (at(days=2, minutes=5), "in 2d"),
        (at(minutes=45, seconds=10), "in 45m 10s"),
        (at(seconds=30), "in 30s"),
        (at(seconds=-90), "1m 30s ago"),
        (NOW, "now"),
    ],
)
def test_relative_time_shows_the_two_largest_units(t: datetime.datetime, text: str) -> None:
    assert render.relative(t, NOW) == text


def test_local_time_is_shown_in_the_users_zone_with_weekday_and_abbreviation() -> None:
    opens = datetime.datetime(2026, 12, 1, 13, 0, tzinfo=UTC)
    assert render.local_time(opens, SEOUL) == "Tue 2026-12-01 22:00 KST"
    assert render.when(opens, now=NOW, tz=SEOUL) == "Tue 2026-12-01 22:00 KST (in 12h 2m)"
    assert render.when(None, now=NOW, tz=SEOUL) == "-"


def test_daylight_saving_abbreviation_follows_the_instant() -> None:
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    assert render.local_time(datetime.datetime(2026, 7, 1, 12, tzinfo=UTC), berlin).endswith("CEST")
    assert render.local_time(datetime.datetime(2026, 12, 1, 12, tzinfo=UTC), berlin).endswith("CET")


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        ("Asia/Seoul", {"TZ": "Europe/Berlin"}, "Asia/Seoul"),
        (None, {"TZ": "Europe/Berlin"}, "Europe/Berlin"),
        (None, {"TZ": ":America/New_York"}, "America/New_York"),
    ],
)
def test_zone_comes_from_flag_then_tz_env(
    flag: str | None, env: dict[str, str], expected: str
) -> None:
    assert str(render.local_zone(flag, env=env)) == expected


def test_unknown_zone_flag_is_an_error_and_bad_tz_env_falls_back_to_the_system() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        render.local_zone("Mars/Olympus", env={})
    assert render.local_zone(None, env={"TZ": "EST5EDT,M3.2.0,M11.1.0-bogus"}) is not None


def test_table_aligns_columns_like_kubectl() -> None:
    text = render.table(["name", "phase"], [["a", "Active"], ["longer-name", "-"]])
    assert text.splitlines() == [
        "NAME          PHASE",
        "a             Active",
        "longer-name   -",
    ]


def test_list_table_shows_phase_ticket_approvals_and_next_times() -> None:
    row = render.WindowRow(
        name="chg-1234-x",
        phase="Scheduled",
        ticket="CHG-1234",
        approvals="1/1",
        next_open=datetime.datetime(2026, 12, 1, 13, 0, tzinfo=UTC),
        next_close=datetime.datetime(2026, 12, 1, 15, 0, tzinfo=UTC),
        created=at(hours=-3),
        requester="alice",
        emergency=False,
        spec_hash="sha256:" + "a" * 64,
    )
    lines = render.list_table([row], now=NOW, tz=SEOUL).splitlines()
    assert lines[0].split() == [
        "NAME",
        "PHASE",
        "TICKET",
        "APPROVALS",
        "NEXT",
        "OPEN",
        "NEXT",
        "CLOSE",
        "AGE",
    ]
    assert "Tue 2026-12-01 22:00 KST (in 12h 2m)" in lines[1]
    assert "Wed 2026-12-02 00:00 KST (in 14h 2m)" in lines[1]
    assert lines[1].startswith("chg-1234-x") and lines[1].rstrip().endswith("3h")
    wide = render.list_table([row], now=NOW, tz=SEOUL, wide=True)
    assert "REQUESTER" in wide and "alice" in wide and "sha256:aaaaaaaaaaaa" in wide
    assert render.list_table([], now=NOW, tz=SEOUL) == "No ChangeWindows found."


def _description(**over: object) -> render.Description:
    base: dict[str, object] = {
        "name": "chg-1234-x",
        "ticket": "CHG-1234",
        "description": "Roll out payments v2.3",
        "requester": "alice",
        "phase": "PendingApproval",
        "message": "needs 1 more approval",
        "emergency_reason": None,
        "schedule": "one-off ...",
        "occurrences": ((at(hours=12, minutes=2), at(hours=14, minutes=2)),),
        "targets": ("namespaces payments: deployments.apps [UPDATE]",),
        "identities": (
            render.IdentityLine(
                name="payments-oncall", exists=True, subjects=("User alice",), notes=("suspended",)
            ),
            render.IdentityLine(name="ghost", exists=False),
        ),
        "spec_hash": "sha256:" + "b" * 64,
        "stored_hash": "sha256:" + "b" * 64,
        "policies": (
            render.PolicyLine(
                name="payments-prod",
                required=2,
                approver_groups=("change-approvers",),
                enforcement="Enforce",
            ),
        ),
        "required": 2,
        "valid": (
            render.ApprovalLine(
                approver="bob", approved_at=at(hours=-1), spec_hash="sha256:" + "b" * 64
            ),
        ),
        "stale": (
            render.ApprovalLine(
                approver="carol", approved_at=at(hours=-5), spec_hash="sha256:" + "c" * 64
            ),
        ),
    }
    base.update(over)
    return render.Description(**base)  # type: ignore[arg-type]


def test_describe_shows_coverage_identities_occurrences_and_approval_state() -> None:
    text = render.describe_text(_description(), now=NOW, tz=SEOUL)
    assert "namespaces payments: deployments.apps [UPDATE]" in text
    assert "payments-oncall: User alice [suspended]" in text
    assert "ghost: MISSING" in text
    assert "Tue 2026-12-01 22:00 KST - Wed 2026-12-02 00:00 KST (in 12h 2m)" in text
    assert "Policy payments-prod (Enforce): 2 required from change-approvers" in text
    assert "Valid (1/2):" in text and "bob at" in text
    assert "carol at" in text and "signed sha256:cccccccccccc" in text
    assert "Missing: 1" in text
    assert "WARNING" not in text


def test_describe_warns_when_the_controllers_hash_lags_the_spec() -> None:
    text = render.describe_text(_description(stored_hash="sha256:" + "0" * 64), now=NOW, tz=SEOUL)
    assert "WARNING: status.specHash is sha256:000" in text


def test_describe_marks_an_open_occurrence() -> None:
    d = _description(occurrences=((at(hours=-1), at(hours=1)),))
    assert "(open now, closes in 1h)" in render.describe_text(d, now=NOW, tz=SEOUL)


def test_target_text_names_namespaces_resources_operations_and_names() -> None:
    target = {
        "namespaces": ["payments"],
        "resources": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "operations": ["UPDATE"]},
            {"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE"]},
        ],
        "names": ["web", "api"],
    }
    assert render.target_text(target) == (
        "namespaces payments: deployments.apps [UPDATE]; configmaps [CREATE,UPDATE] (only web, api)"
    )


@pytest.mark.parametrize(
    ("schedule", "text"),
    [
        (
            {"start": "2026-12-01T22:00:00+09:00", "end": "2026-12-02T00:00:00+09:00"},
            "one-off 2026-12-01T22:00:00+09:00 until 2026-12-02T00:00:00+09:00",
        ),
        (
            {"cron": "0 22 * * 2,4", "duration": "2h", "timeZone": "Asia/Seoul"},
            'cron "0 22 * * 2,4" for 2h in Asia/Seoul',
        ),
    ],
)
def test_schedule_text(schedule: dict[str, str], text: str) -> None:
    assert render.schedule_text(schedule) == text


def test_can_i_prints_yes_or_no_first() -> None:
    text = render.can_i_text(
        allowed=False,
        reason="NotApproved",
        message="needs approval",
        policy="p",
        window="w",
        next_window=None,
    )
    assert text.splitlines()[:2] == ["no", "reason: NotApproved"]
    assert render.can_i_text(
        allowed=True, reason="Window", message="", policy=None, window=None, next_window=None
    ).splitlines() == ["yes", "reason: Window"]


def _window(name: str, created: datetime.datetime, **spec: object) -> dict[str, object]:
    return {
        "metadata": {"name": name, "creationTimestamp": created.isoformat().replace("+00:00", "Z")},
        "spec": {"ticket": f"T-{name}", "requester": "alice", **spec},
        "status": {"phase": "Expired"},
    }


def _event(reason: str, kind: str, t: datetime.datetime, **extra: object) -> dict[str, object]:
    return {
        "reason": reason,
        "involvedObject": {"kind": kind},
        "lastTimestamp": t.isoformat().replace("+00:00", "Z"),
        **extra,
    }


def test_report_counts_windows_created_in_the_period_and_events_by_reason() -> None:
    since = at(days=-30)
    windows = [
        _window("old", at(days=-40)),
        _window("a", at(days=-2), approvals=[{"approver": "bob"}]),
        _window("bg", at(hours=-1), emergency={"reason": "INC-1"}),
    ]
    events = [
        _event("ChangeDenied", "Deployment", at(hours=-2), count=5),
        _event("ChangeDenied", "Deployment", at(days=-31), count=100),
        _event("ChangeDenied", "ConfigMap", at(hours=-3), series={"count": 3}),
        _event("Approved", "ChangeWindow", at(days=-1)),
        _event("EmergencyOpened", "ChangeWindow", at(hours=-1)),
        _event("EmergencyChange", "Deployment", at(minutes=-30), type="Warning", count=2),
        _event("Opened", "Deployment", at(minutes=-30)),  # not a window transition
    ]
    data = render.report_data(
        windows=windows, events=events, since=since, now=NOW, phases={"a": "Active"}
    )
    assert [w["name"] for w in data["windows"]] == ["a", "bg"]
    assert data["windows"][0]["approvers"] == ["bob"] and data["windows"][0]["phase"] == "Active"
    assert data["windows"][1]["emergency"] is True and data["windows"][1]["phase"] == "Expired"
    assert data["decisions"]["changeDenied"] == 8
    assert data["decisions"]["windowEvents"]["Approved"] == 1
    assert data["decisions"]["windowEvents"]["EmergencyOpened"] == 1
    assert data["decisions"]["windowEvents"]["Opened"] == 0
    assert data["decisions"]["emergencyChanges"] == 2
    text = render.report_text(data, now=NOW, tz=SEOUL)
    assert "denied changes (ChangeDenied): 8" in text and "T-bg" in text


def test_report_says_when_events_could_not_be_read() -> None:
    data = render.report_data(windows=[], events=None, since=at(days=-1), now=NOW)
    assert data["decisions"] is None
    assert "could not be read" in render.report_text(data, now=NOW, tz=SEOUL)
