"""What every command gets (``Ctx``), how results are printed (``dump``), and exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from collections.abc import Mapping
from typing import Any, TextIO

import yaml

from controller.cli import kube as kube_mod

EXIT_OK, EXIT_DENIED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUTS = ("table", "wide", "json", "yaml")


# -- output helpers ----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def dump(data: Any, fmt: str, out: TextIO) -> None:
    if fmt == "json":
        print(json.dumps(_jsonable(data), indent=2, sort_keys=False), file=out)
    else:
        print(yaml.safe_dump(_jsonable(data), sort_keys=False).rstrip(), file=out)


@dataclasses.dataclass(frozen=True, slots=True)
class Ctx:
    """What every command gets: flags, a client, the clock, the zone, and where to print."""

    args: argparse.Namespace
    kube: kube_mod.Kube
    now: datetime.datetime
    tz: datetime.tzinfo
    out: TextIO
    err: TextIO
    stdin: TextIO
