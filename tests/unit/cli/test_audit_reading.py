"""Reading audit logs: gzip or plain, rotated files in any order, each request once."""

from __future__ import annotations

import datetime
import gzip
import io
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from controller.cli import auditlog

T0 = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.UTC)


def line(
    n: int,
    *,
    stage: str = "ResponseComplete",
    audit_id: str | None = None,
    seconds: float | None = None,
) -> bytes:
    t = T0 + datetime.timedelta(seconds=n if seconds is None else seconds)
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id or str(uuid.UUID(int=n)),
        "stage": stage,
        "requestURI": f"/api/v1/namespaces/shop/configmaps/cm-{n}",
        "verb": "update",
        "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "objectRef": {
            "resource": "configmaps",
            "namespace": "shop",
            "name": f"cm-{n}",
            "apiVersion": "v1",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "stageTimestamp": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    return json.dumps(ev, separators=(",", ":")).encode() + b"\n"


def names(lines: list[bytes]) -> list[str]:
    return [auditlog.decode(x).object_ref.name for x in lines]  # type: ignore[union-attr]


def inputs(*paths: Path) -> list[auditlog.Input]:
    return [auditlog.Input(label=p.name, path=p) for p in paths]


def merged(paths: list[Path]) -> list[bytes]:
    ins = inputs(*paths)
    spans = [auditlog.span_of(i, warn=pytest.fail) for i in ins]
    return list(auditlog.merged(ins, spans=spans, warn=pytest.fail))


def rotated(tmp_path: Path) -> list[Path]:
    """Three rotated files of one API server: two gzip (lumberjack's names), one live."""
    parts = [range(0, 4), range(4, 8), range(8, 12)]
    paths = []
    for i, part in enumerate(parts):
        data = b"".join(line(n) for n in part)
        if i < 2:
            path = tmp_path / f"audit-2026-11-30T09-00-0{i}.000.log.gz"
            path.write_bytes(gzip.compress(data))
        else:
            path = tmp_path / "audit.log"
            path.write_bytes(data)
        paths.append(path)
    return paths


def test_gzip_is_recognised_by_its_bytes_not_its_name(tmp_path: Path) -> None:
    (tmp_path / "plain.gz").write_bytes(line(1))
    (tmp_path / "packed.log").write_bytes(gzip.compress(line(2)))
    got = [
        list(auditlog.read_lines(i, warn=pytest.fail))
        for i in inputs(tmp_path / "plain.gz", tmp_path / "packed.log")
    ]
    assert [names(g) for g in got] == [["cm-1"], ["cm-2"]]


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "audit.log.gz"
    path.write_bytes(gzip.compress(line(1)) + gzip.compress(line(2)))
    assert names(list(auditlog.read_lines(inputs(path)[0], warn=pytest.fail))) == ["cm-1", "cm-2"]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_rotated_files_in_any_order_read_in_time_order(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    paths = rotated(tmp_path)
    assert names(merged([paths[i] for i in order])) == [f"cm-{n}" for n in range(12)]


def test_overlapping_files_are_interleaved_by_time(tmp_path: Path) -> None:
    a, b = tmp_path / "apiserver-a.log", tmp_path / "apiserver-b.log"
    a.write_bytes(b"".join(line(n) for n in (0, 2, 4)))
    b.write_bytes(gzip.compress(b"".join(line(n) for n in (1, 3, 5))))
    assert names(merged([b, a])) == [f"cm-{n}" for n in range(6)]


def test_a_file_given_twice_yields_each_event_twice_next_to_each_other(tmp_path: Path) -> None:
    paths = rotated(tmp_path)
    copy = tmp_path / "copy.log"
    copy.write_bytes(paths[2].read_bytes())
    got = names(merged([paths[2], copy]))
    assert got == [n for n in [f"cm-{n}" for n in range(8, 12)] for _ in range(2)]


def test_dedup_keeps_the_first_of_each_request_stage() -> None:
    dedup = auditlog.Dedup()
    events = [auditlog.decode(x) for x in (line(1), line(1), line(2), line(1, stage="Panic"))]
    assert [dedup.first(e) for e in events] == [True, False, True, True]
    assert dedup.dropped == 1


def test_dedup_remembers_the_previous_minute_and_forgets_older() -> None:
    dedup = auditlog.Dedup()
    a = auditlog.decode(line(1, audit_id="a", seconds=0))
    assert dedup.first(a)
    assert dedup.first(auditlog.decode(line(2, audit_id="b", seconds=61)))
    assert not dedup.first(a)  # a copy read a minute later is still recognised
    assert dedup.first(auditlog.decode(line(3, audit_id="c", seconds=130)))
    # Two minutes on, "a" is forgotten: memory holds a minute or two, not the whole log.
    assert dedup.first(a)


def test_truncated_gzip_yields_what_it_had_with_a_warning(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(line(n) for n in range(200)))
    path = tmp_path / "audit-cut.log.gz"
    path.write_bytes(data[: len(data) // 2])
    warnings: list[str] = []
    got = list(auditlog.read_lines(inputs(path)[0], warn=warnings.append))
    assert 0 < len(got) < 200
    assert len(warnings) == 1
    assert "compressed data ends early" in warnings[0]


def test_re_serialised_lines_are_read_like_the_api_servers(tmp_path: Path) -> None:
    spaced = json.dumps(json.loads(line(7))).encode() + b"\n"  # ", " and ": " separators
    path = tmp_path / "shipped.log"
    path.write_bytes(spaced)
    (got,) = list(auditlog.read_lines(inputs(path)[0], warn=pytest.fail))
    assert auditlog.stage_time(got) == auditlog.stage_time(line(7))
    assert auditlog.is_final_stage(got)


def test_stdin_is_spooled_and_removed_afterwards(tmp_path: Path) -> None:
    data = gzip.compress(line(1))
    with auditlog.inputs(["-"], stdin=io.BytesIO(data), spool_dir=str(tmp_path)) as ins:
        (inp,) = ins
        assert inp.label == "-"
        assert names(list(auditlog.read_lines(inp, warn=pytest.fail))) == ["cm-1"]
        spooled = inp.path
    assert not spooled.exists()


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotFoundError, match="no such file"),
        auditlog.inputs([str(tmp_path / "nope.log")], stdin=io.BytesIO()),
    ):
        pass


def test_subject_is_the_impersonated_user_when_there_is_one() -> None:
    ev = json.loads(line(1))
    ev["user"] = {"username": "changegate-admin", "groups": ["system:masters"]}
    ev["impersonatedUser"] = {"username": "alice@example.com", "groups": ["developers"]}
    decoded = auditlog.decode(json.dumps(ev).encode())
    assert decoded.subject.username == "alice@example.com"
    assert decoded.user.username == "changegate-admin"


def test_a_file_rotated_away_between_the_passes_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "audit-2026-11-30T09-00-00.000.log"
    path.write_bytes(line(1))
    (inp,) = inputs(path)
    path.unlink()
    warnings: list[str] = []
    assert list(auditlog.read_lines(inp, warn=warnings.append)) == []
    assert warnings == [f"{path.name}: gone while reading (rotated away?); skipped"]
