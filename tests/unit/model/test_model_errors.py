"""One formatter for a bad field: the webhook and the index say it the same way."""

from __future__ import annotations

import datetime
from typing import Any

from controller import store as stores
from controller.model import crds, errors
from controller.policy import decide, index

BAD_WINDOW: dict[str, Any] = {
    "apiVersion": crds.API_VERSION,
    "kind": "ChangeWindow",
    "metadata": {"name": "w1"},
    "spec": {
        "ticket": "CHG-1",
        "requester": "alice",
        "identities": ["oncall"],
        "targets": [{"namespaces": ["payments"], "resources": []}],
        "schedule": {"cron": "0 22 * * 2", "duration": "2h", "timeZone": "Mars/Olympus"},
    },
}


def test_paths_use_brackets_for_list_indices() -> None:
    assert errors.path(("spec", "targets", 0, "resources")) == "spec.targets[0].resources"
    assert errors.path(()) == "(root)"


def test_the_webhook_and_the_index_name_a_bad_field_the_same_way() -> None:
    request = decide.Request(
        uid="u",
        user="alice",
        groups=(),
        operation="CREATE",
        api_group=crds.GROUP,
        api_version=crds.VERSION,
        resource="changewindows",
        subresource="",
        kind="ChangeWindow",
        namespace="",
        name="w1",
        dry_run=False,
        object=BAD_WINDOW,
    )
    snap = index.Snapshot.build(policies=[], identities=[], windows=[], namespaces={})
    webhook = decide.decide(request, snapshot=snap, now=datetime.datetime.now(datetime.UTC))
    store = stores.Store()
    indexed = store.apply("ChangeWindow", "upsert", BAD_WINDOW)
    assert list(webhook.field_errors) == indexed
    assert [p for p, _ in indexed] == ["spec.targets[0].resources", "spec.schedule.timeZone"]
    assert all(not msg.startswith("Value error") for _, msg in indexed)
