"""The objects the webhook's index holds, read once from the API server, and who is asking."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import pydantic

from controller.cli import kube as kube_mod
from controller.cli import (
    kubectl,
)
from controller.model import crds, errors
from controller.policy import index, status

# -- live state --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Live:
    """The objects the webhook's index holds, read once from the API server."""

    policies: tuple[crds.ChangePolicy, ...]
    identities: tuple[crds.AuthorizedIdentity, ...]
    windows: tuple[crds.ChangeWindow, ...]
    raw_windows: Mapping[str, Mapping[str, Any]]  # name -> the object as stored
    namespaces: Mapping[str, Mapping[str, str]]
    skipped: tuple[str, ...]  # objects that do not validate (the webhook leaves them out too)

    def snapshot(self) -> index.Snapshot:
        return index.Snapshot.build(
            policies=self.policies,
            identities=self.identities,
            windows=self.windows,
            namespaces=self.namespaces,
            raw_window_specs={n: w.get("spec") or {} for n, w in self.raw_windows.items()},
        )


def parse_all(
    items: Sequence[Mapping[str, Any]], model: type[pydantic.BaseModel], skipped: list[str]
) -> list[Any]:
    out = []
    for item in items:
        try:
            out.append(model.model_validate(item))
        except pydantic.ValidationError as e:
            name = (item.get("metadata") or {}).get("name", "?")
            where, msg = errors.field_errors(e)[0]
            skipped.append(f"{model.__name__} {name}: {where}: {msg}")
    return out


def load_live(k: kube_mod.Kube, *, err: TextIO) -> Live:
    """Read policies, identities, windows and namespace labels, as the webhook's index does."""
    skipped: list[str] = []
    policies = parse_all(k.list_items(kube_mod.POLICIES_PATH), crds.ChangePolicy, skipped)
    identities = parse_all(k.list_items(kube_mod.IDENTITIES_PATH), crds.AuthorizedIdentity, skipped)
    raw_windows = k.list_items(kube_mod.WINDOWS_PATH)
    windows = parse_all(raw_windows, crds.ChangeWindow, skipped)
    valid = {w.metadata.name for w in windows}
    try:
        namespaces = {
            str(ns["metadata"]["name"]): dict(ns["metadata"].get("labels") or {})
            for ns in k.list_items(kube_mod.NAMESPACES_PATH)
        }
    except kube_mod.Forbidden:
        # Without labels, namespaceSelector-based policies and targets cannot match; say so
        # rather than silently answer differently from the webhook.
        print(
            "warning: cannot list namespaces; policies and windows that select namespaces by"
            " label are not applied",
            file=err,
        )
        namespaces = {}
    for line in skipped:
        print(f"warning: ignoring invalid {line}", file=err)
    return Live(
        policies=tuple(policies),
        identities=tuple(identities),
        windows=tuple(windows),
        raw_windows={
            str(w["metadata"]["name"]): w for w in raw_windows if w["metadata"]["name"] in valid
        },
        namespaces=namespaces,
        skipped=tuple(skipped),
    )


def resource_catalog(k: kube_mod.Kube, *, err: TextIO) -> list[kubectl.ResourceInfo]:
    """Discovery's resources; the built-in alias table when discovery is unavailable."""
    try:
        found = kubectl.resources_from_discovery(k.discovery())
    except kube_mod.Unreachable:
        raise
    except kube_mod.CliError as e:
        print(f"warning: discovery unavailable ({e}); using the built-in resource table", file=err)
        return list(kubectl.BUILTIN_RESOURCES)
    return found or list(kubectl.BUILTIN_RESOURCES)


def caller(k: kube_mod.Kube, args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    """Who the API server would see: ``--as``/``--as-group``, else SelfSubjectReview."""
    if args.as_user:
        groups = tuple(args.as_group or ())
        # The API server adds system:authenticated to every impersonated non-anonymous user.
        if args.as_user != "system:anonymous" and "system:authenticated" not in groups:
            groups += ("system:authenticated",)
        return args.as_user, groups
    user, groups = k.whoami()
    if not user:
        raise kube_mod.CliError("the API server did not say who you are (SelfSubjectReview)")
    return user, groups


def computed_status(
    window: crds.ChangeWindow, *, objects: Live, snapshot: index.Snapshot, now: datetime.datetime
) -> status.WindowStatus:
    raw = objects.raw_windows[window.metadata.name].get("spec") or {}
    return status.window_status(window, raw_spec=raw, snapshot=snapshot, now=now)


def get_window(k: kube_mod.Kube, name: str) -> Mapping[str, Any]:
    try:
        obj: Mapping[str, Any] = k.request("GET", f"{kube_mod.WINDOWS_PATH}/{name}")
    except kube_mod.NotFound as e:
        raise kube_mod.NotFound(f"no ChangeWindow named {name}") from e
    return obj


def parse_window(raw: Mapping[str, Any]) -> crds.ChangeWindow:
    try:
        return crds.ChangeWindow.model_validate(raw)
    except pydantic.ValidationError as e:
        name = (raw.get("metadata") or {}).get("name", "?")
        raise kube_mod.CliError(f"ChangeWindow {name} is invalid: {e}") from e
