"""Reading the API server's audit log: plain or gzip files and stdin, merged into time order.

What ``report --audit-log`` needs from a pile of audit files is one stream of events in the
order the API server(s) wrote them, each request once. The pile is whatever an auditor was
handed: the live ``audit.log``, its rotated and gzipped predecessors (in any order on the
command line), copies from several API servers, maybe the same file twice.

- **Format**: each line is one ``audit.k8s.io/v1`` Event as JSON (``--audit-log-format=json``).
  A gzip file (by its magic bytes, not its name) is read through ``gzip``; a concatenation of
  gzip members is one stream.
- **Order**: the API server appends events as it finishes them, so each file is in
  ``stageTimestamp`` order (to within the few milliseconds concurrent requests take to reach
  the writer). :func:`merged` opens every file lazily and interleaves them by that timestamp,
  so rotated files need no particular order and only the files that overlap in time are
  open at once. The timestamp is compared as the bytes it is written as: Kubernetes writes
  ``MicroTime`` in UTC with six fractional digits, so byte order is time order, and a line is
  placed without being decoded.
- **One event per request**: a request yields an event per stage (``RequestReceived``,
  ``ResponseStarted`` for long-running ones, ``ResponseComplete`` or ``Panic``), all with the
  request's ``auditID``. Only the last stage has the response code and every admission
  annotation, so only ``ResponseComplete`` and ``Panic`` are kept (:data:`FINAL_STAGES`);
  the same event seen twice (a file given twice, a rotated file caught while being
  compressed, a log shipper's at-least-once copy) carries the same ``auditID`` and
  ``stageTimestamp`` and so arrives next to its twin in the merged stream; :class:`Dedup`
  drops repeats within a minute or two of stage time. That keeps memory constant: it
  remembers the IDs of a minute or two of events, not of the whole log.
- **Damage**: a malformed line is skipped and counted; a gzip file that ends early (a copy
  cut short, or one still being written by log rotation) yields what it had, with a warning.
  The live file's last line may be half written while we read: that is one malformed line.
- **stdin** (``-``) is spooled to a temporary file first: the report reads its input twice
  (once to learn what is controlled, once to report), and merging needs to open it again.

Decoding uses ``msgspec`` into the typed :class:`Event`, which skips the fields the report
never reads and keeps request/response bodies as raw bytes until someone asks for them —
most events are decoded without building a single dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import io
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

import msgspec

FINAL_STAGES: Final = frozenset({"ResponseComplete", "Panic"})
_BUFFER: Final = 1 << 20
_CHUNK: Final = 256 << 10  # compressed bytes per step: a few MB once decompressed
_GZIP_MAGIC: Final = b"\x1f\x8b"
_AS_WRITTEN: Final = b'{"kind":"Event",'  # how every line kube-apiserver writes begins
_STAGE_TS: Final = b'"stageTimestamp":"'
_TS_LEN: Final = len("2026-11-30T08:22:48.509015Z")

Warn = Callable[[str], None]


# -- the event ---------------------------------------------------------------------------------


class UserInfo(msgspec.Struct, frozen=True, rename="camel"):
    username: str = ""
    groups: tuple[str, ...] = ()


class ObjectRef(msgspec.Struct, frozen=True, rename="camel"):
    resource: str = ""
    namespace: str = ""
    name: str = ""
    uid: str = ""
    api_group: str = ""
    api_version: str = ""
    subresource: str = ""


class ResponseStatus(msgspec.Struct, frozen=True, rename="camel"):
    code: int = 0
    reason: str = ""
    message: str = ""


class Event(msgspec.Struct, frozen=True, rename="camel"):
    """The fields of an ``audit.k8s.io/v1`` Event the report reads (the rest is skipped)."""

    audit_id: str = msgspec.field(default="", name="auditID")
    stage: str = ""
    verb: str = ""
    request_uri: str = msgspec.field(default="", name="requestURI")
    level: str = ""
    user: UserInfo = msgspec.field(default_factory=UserInfo)
    impersonated_user: UserInfo | None = None
    object_ref: ObjectRef | None = None
    response_status: ResponseStatus | None = None
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    request_object: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    response_object: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    request_received_timestamp: str = ""
    stage_timestamp: str = ""

    @property
    def subject(self) -> UserInfo:
        """Who the request acted as: the impersonated user if any, else the authenticated one."""
        return self.impersonated_user if self.impersonated_user is not None else self.user

    def body(self, which: str = "response") -> Any:
        """``requestObject`` or ``responseObject`` decoded (``None`` when the level left it out)."""
        raw = self.response_object if which == "response" else self.request_object
        if not raw:
            return None
        return msgspec.json.decode(raw)


_DECODER: Final = msgspec.json.Decoder(Event)
DecodeError = msgspec.DecodeError


def decode(line: bytes) -> Event:
    """One audit line as an :class:`Event`; raises :data:`DecodeError` when it is not one."""
    return _DECODER.decode(line)


def stage_time(line: bytes) -> bytes:
    """The raw ``stageTimestamp`` of a line (b"" if it has none): sortable as bytes."""
    i = line.find(_STAGE_TS)
    if i < 0:
        return b""
    start = i + len(_STAGE_TS)
    return line[start : start + _TS_LEN]


def is_final_stage(line: bytes) -> bool:
    return b'"stage":"ResponseComplete"' in line or b'"stage":"Panic"' in line


# -- inputs ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Input:
    """One file to read; ``label`` is what the user named it (``-`` for stdin)."""

    label: str
    path: Path


@contextlib.contextmanager
def inputs(
    names: Sequence[str], *, stdin: BinaryIO, spool_dir: str | None = None
) -> Iterator[list[Input]]:
    """The named files, with ``-`` spooled from ``stdin`` to a temporary file (removed after)."""
    spooled: list[Path] = []
    try:
        out: list[Input] = []
        for name in names:
            if name == "-":
                fd, tmp = tempfile.mkstemp(prefix="changegate-audit-", dir=spool_dir)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(stdin, f, _BUFFER)
                spooled.append(Path(tmp))
                out.append(Input(label="-", path=Path(tmp)))
            else:
                path = Path(name)
                if not path.is_file():
                    raise FileNotFoundError(f"{name}: no such file")
                out.append(Input(label=name, path=path))
        yield out
    finally:
        for p in spooled:
            with contextlib.suppress(OSError):
                p.unlink()


def _compact(line: bytes) -> bytes:
    """A line re-serialised as the API server writes (compact), or as it was if not JSON."""
    try:
        return msgspec.json.encode(msgspec.json.decode(line)) + b"\n"
    except msgspec.DecodeError:
        return line


def read_lines(inp: Input, *, warn: Warn) -> Iterator[bytes]:
    """The non-empty lines of one input, decompressed if it is gzip.

    The report's byte-level filters rely on the API server's compact JSON; a line that was
    re-serialised on its way here (pretty-printed, ``jq``, a log shipper) is made compact
    again first, so it is read the same, just slower.
    """
    try:
        fd = io.FileIO(inp.path, "r")
    except FileNotFoundError:
        # Log rotation removes a file once it has compressed it; the .gz copy has its events.
        warn(f"{inp.label}: gone while reading (rotated away?); skipped")
        return
    with io.BufferedReader(fd, _BUFFER) as raw:
        gzipped = raw.peek(2)[:2] == _GZIP_MAGIC
        for line in _gunzip_lines(raw, label=inp.label, warn=warn) if gzipped else raw:
            if line.startswith(_AS_WRITTEN):
                yield line
            elif line.strip():
                yield _compact(line)


def _gunzip_lines(raw: IO[bytes], *, label: str, warn: Warn) -> Iterator[bytes]:
    """Lines of a gzip stream (any number of members), up to where the data ends.

    Decompressed here chunk by chunk rather than through ``gzip.GzipFile``, which raises at a
    cut-off end and takes the last buffer's lines with it: a file cut short (a copy, or one
    log rotation is still compressing) yields every complete line it has, and a warning.
    """
    d = zlib.decompressobj(wbits=31)
    rest = b""
    lines = 0
    try:
        while chunk := raw.read(_CHUNK):
            data = d.decompress(chunk)
            while d.eof and d.unused_data:  # another gzip member follows
                unused = d.unused_data
                d = zlib.decompressobj(wbits=31)
                data += d.decompress(unused)
            parts = (rest + data).split(b"\n")
            rest = parts.pop()
            lines += len(parts)
            yield from parts
    except zlib.error as e:
        warn(f"{label}: compressed data is damaged after line {lines} ({e}); using what it had")
        return
    if not d.eof:
        warn(f"{label}: compressed data ends early after line {lines}; using what it had")
    elif rest:
        yield rest


# -- merging -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """The stage times of an input's first and last events (b"" when it has none)."""

    first: bytes
    last: bytes


def span_of(inp: Input, *, warn: Warn) -> Span:
    first = last = b""
    for line in read_lines(inp, warn=warn):
        t = stage_time(line)
        if t:
            first = first or t
            last = t
    return Span(first, last)


def merged(inputs: Sequence[Input], *, spans: Sequence[Span], warn: Warn) -> Iterator[bytes]:
    """All lines of all inputs, in stage-time order; ``spans[i]``: input i's first and last.

    Inputs whose spans do not overlap (a rotated log) are read one after the other, line by
    line with no comparison at all; only inputs that overlap in time (several API servers, a
    file given twice) are interleaved line by line.
    """
    order = sorted(range(len(inputs)), key=lambda i: (spans[i].first, spans[i].last))
    groups: list[list[int]] = []
    end = b""
    for i in order:
        if groups and spans[i].first <= end:
            groups[-1].append(i)
            end = max(end, spans[i].last)
        else:
            groups.append([i])
            end = spans[i].last
    for group in groups:
        if len(group) == 1:
            yield from read_lines(inputs[group[0]], warn=warn)
        else:
            yield from _interleaved(
                [inputs[i] for i in group], starts=[spans[i].first for i in group], warn=warn
            )


def _interleaved(
    inputs: Sequence[Input], *, starts: Sequence[bytes], warn: Warn
) -> Iterator[bytes]:
    """A k-way merge by stage time; each input is opened when the merge reaches its start.

    A line without a timestamp keeps its place after the previous line of its input.
    """
    pending = sorted(range(len(inputs)), key=lambda i: starts[i], reverse=True)
    heap: list[tuple[bytes, int, bytes, Iterator[bytes]]] = []
    while pending or heap:
        while pending and (not heap or starts[pending[-1]] <= heap[0][0]):
            i = pending.pop()
            it = read_lines(inputs[i], warn=warn)
            for line in it:
                heapq.heappush(heap, (stage_time(line) or starts[i], i, line, it))
                break
        if not heap:
            continue
        t, i, line, it = heap[0]
        yield line
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (stage_time(nxt) or t, i, nxt, it))


class Dedup:
    """Drops an (auditID, stage) seen before within the same or the previous minute.

    Copies of one event carry the same stageTimestamp and arrive next to each other in the
    merged stream, so two one-minute generations of IDs are plenty -- and memory stays that
    of a minute or two of events however long the log. The minute is the timestamp's text
    up to the minutes, so no event's time is parsed here.
    """

    def __init__(self) -> None:
        self._minute = ""
        self._current: set[tuple[str, str]] = set()
        self._previous: set[tuple[str, str]] = set()
        self.dropped = 0

    def first(self, event: Event) -> bool:
        minute = event.stage_timestamp[:16]
        if minute > self._minute:
            self._previous, self._current = self._current, set()
            self._minute = minute
        key = (event.audit_id, event.stage)
        if key in self._current or key in self._previous:
            self.dropped += 1
            return False
        self._current.add(key)
        return True
