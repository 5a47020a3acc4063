"""Hostile and extreme input, end to end (SPEC failure posture; issue 8, items 9-11).

A real kube-apiserver calls a real changegate process, as real identities:

- every review the API server can legitimately send is decided -- a ConfigMap of ~900 KB of
  characters Go's encoder escapes sixfold (``<``, ``>``, ``&``), updated to another such value
  (a ~10.6 MiB review), and a custom resource nested 5,000 levels deep -- admitted inside an
  approved window and denied, with changegate's reason, outside one;
- straight to the webhook port, as anyone who can reach it would: compressed bodies are
  refused (415) and the replica goes on deciding; a review that uses Python field names is
  never admitted.

The memory figures (peak RSS of the replica) are printed, not asserted.
"""

from __future__ import annotations

import gzip
import json
import ssl
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e_helpers
import pytest
from test_e2e_admission import ALICE, CAROL, DEVELOPERS, RBAC, World, admitted, denied

from controller.devcluster import cluster

pytestmark = pytest.mark.integration

GROUP = "hostile.example.com"
CONTROLLED: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"], "operations": ["CREATE", "UPDATE", "DELETE"]},
    {"apiGroups": [GROUP], "resources": ["nests"], "operations": ["CREATE", "UPDATE", "DELETE"]},
]
NEST_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"nests.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"kind": "Nest", "plural": "nests", "singular": "nest"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}
NEST_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "e2e-hostile-nests"},
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": ["nests"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "e2e-hostile-nests"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "e2e-hostile-nests",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DEVELOPERS}
        ],
    },
]

#: ConfigMap data of this many characters that Go's JSON encoder writes as \u003c etc.: below
#: the API server's 1 MiB ConfigMap limit, ~5.3 MB per object once escaped.
ESCAPED_CHARS = 900_000
#: How deep the custom resource's spec nests (the object itself is ~5,000 levels deep, its
#: managedFields as deep again, both far past the ~200 the fast parser takes).
NEST_LEVELS = 5_000


class Hostile(World):
    """The e2e World, with a policy and windows that cover ConfigMaps and Nests."""

    def make_policy(self, *, enforcement: str = "Enforce", **spec: Any) -> dict[str, Any]:
        policy = super().make_policy(enforcement=enforcement, **spec)
        policy["spec"]["match"]["resources"] = CONTROLLED
        return policy

    def make_window(self, name: str, **kw: Any) -> dict[str, Any]:
        window = super().make_window(name, **kw)
        window["spec"]["targets"][0]["resources"] = CONTROLLED
        return window

    def write(self, verb: str, text: str, *, who: tuple[str, tuple[str, ...]]) -> Any:
        """``kubectl create|replace -f -`` with a manifest too big or deep for argv or json."""
        return self.kubectl(verb, "-f", "-", who=who, input=text)

    def put_configmap(
        self, verb: str, name: str, value: str, *, who: tuple[str, tuple[str, ...]]
    ) -> Any:
        """Create or replace a ConfigMap with the bytes as written, by ``kubectl --raw``.

        kubectl's own encoding would escape every ``<`` to ``\\u003c`` on the way in, and
        900 KB of them would pass the API server's 3 MiB request limit; a client that sends
        them raw (Python's json, curl) gets them stored, and the review escaped.
        """
        path = f"/api/v1/namespaces/{self.ns}/configmaps"
        if verb == "replace":
            path += f"/{name}"
        text = self.configmap_text(name, value)
        return self.kubectl(verb, "--raw", path, "-f", "-", who=who, input=text)

    def configmap_text(self, name: str, value: str) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.ns},
                "data": {"k": value},
            }
        )

    def nest_text(self, name: str, *, leaf: str) -> str:
        head = json.dumps(
            {
                "apiVersion": f"{GROUP}/v1",
                "kind": "Nest",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": "@",
            }
        )
        return head.replace('"@"', '{"a":' * NEST_LEVELS + leaf + "}" * NEST_LEVELS)


@pytest.fixture(scope="module")
def changegate(
    controlplane: cluster.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[e2e_helpers.Changegate]:
    cp = controlplane
    for obj in [*RBAC, *NEST_RBAC, NEST_CRD]:
        out = cp.kubectl("apply", "-f", "-", input=json.dumps(obj))
        assert out.returncode == 0, out.stderr
    established = cp.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/nests.{GROUP}"
    )
    assert established.returncode == 0, established.stderr
    with e2e_helpers.running_changegate(cp, workdir=tmp_path_factory.mktemp("changegate")) as cg:
        yield cg
        print(f"\nchangegate replica peak RSS over the module: {_peak_rss_mib(cg):.0f} MiB")


@pytest.fixture
def world(controlplane: cluster.ControlPlane, changegate: e2e_helpers.Changegate) -> Hostile:
    return Hostile(controlplane, f"e2e-hostile-{uuid.uuid4().hex[:8]}")


def _peak_rss_mib(cg: e2e_helpers.Changegate) -> float:
    assert cg.proc is not None
    for line in Path(f"/proc/{cg.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- every legitimate review is decided -------------------------------------------------------


def test_escaped_configmap_near_the_size_limit_changes_inside_an_approved_window(
    world: Hostile,
) -> None:
    world.setup()
    world.approved_window(f"{world.ns}-w")
    first, second = "<" * ESCAPED_CHARS, "&>" * (ESCAPED_CHARS // 2)
    e2e_helpers.eventually(lambda: admitted(world.put_configmap("create", "big", first, who=ALICE)))
    # The UPDATE's review carries both objects, escaped: ~10.6 MiB.
    admitted(world.put_configmap("replace", "big", second, who=ALICE))
    stored = world.kubectl("get", "configmap", "big", "-n", world.ns, "-o", "json")
    assert json.loads(stored.stdout)["data"]["k"] == "&>" * (ESCAPED_CHARS // 2)


def test_escaped_configmap_near_the_size_limit_is_denied_by_changegate_without_a_window(
    world: Hostile,
) -> None:
    # The ConfigMap exists before the namespace is controlled; then nobody has a window.
    created = world.kubectl("create", "namespace", world.ns)
    assert created.returncode == 0, created.stderr
    admitted(world.put_configmap("create", "big", "<" * ESCAPED_CHARS, who=ALICE))
    world.admin_apply(world.make_identity())
    world.admin_apply(world.make_policy())
    world.wait_controlled()
    message = denied(world.put_configmap("replace", "big", "&>" * (ESCAPED_CHARS // 2), who=ALICE))
    assert "no approved change window" in message
    assert "413" not in message and "failed calling webhook" not in message


def test_custom_resource_nested_thousands_of_levels_is_decided(world: Hostile) -> None:
    world.setup()
    # Outside any window: denied, with changegate's reason (not a 400 from the webhook).
    message = e2e_helpers.eventually(
        lambda: denied(world.write("create", world.nest_text("n", leaf="1"), who=ALICE))
    )
    assert "no approved change window" in message
    assert "failed calling webhook" not in message
    # Inside an approved window: created, then changed at its innermost level.
    world.approved_window(f"{world.ns}-w")
    e2e_helpers.eventually(
        lambda: admitted(world.write("create", world.nest_text("n", leaf="1"), who=ALICE))
    )
    admitted(world.write("replace", world.nest_text("n", leaf="2"), who=ALICE))
    # Someone not designated may not change it, however deep the change.
    message = denied(world.write("replace", world.nest_text("n", leaf="3"), who=CAROL))
    assert "not designated" in message


# -- straight to the webhook port --------------------------------------------------------------


def _post(cg: e2e_helpers.Changegate, body: bytes, **headers: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(cg.workdir / "certs" / "ca.crt"))
    request = urllib.request.Request(
        f"{cg.url}/validate",
        data=body,
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _review(world: Hostile, **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "cm",
            "namespace": world.ns,
            "operation": "UPDATE",
            "userInfo": {"username": CAROL[0], "groups": list(CAROL[1])},
            "object": {"metadata": {"name": "cm", "namespace": world.ns}, "data": {"k": "new"}},
            **request,
        },
    }


def _gzip_bomb(review: dict[str, Any], *, inflated: int) -> bytes:
    """``review`` with a string field padded so that it inflates to ``inflated`` bytes."""
    head, _, tail = json.dumps({**review, "pad": "@"}).encode().partition(b"@")
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    parts = [compressor.compress(head)]
    parts += [compressor.compress(b"x" * (1 << 20)) for _ in range(inflated >> 20)]
    parts += [compressor.compress(tail), compressor.flush()]
    return b"".join(parts)


def test_compressed_reviews_are_refused_and_the_replica_keeps_deciding(
    world: Hostile, changegate: e2e_helpers.Changegate
) -> None:
    world.setup()
    review = _review(world)
    bomb = _gzip_bomb(review, inflated=1 << 30)  # ~1 MiB that would inflate to 1 GiB
    for body in (bomb, gzip.compress(json.dumps(review).encode())):
        status, answer = _post(changegate, body, **{"Content-Encoding": "gzip"})
        assert status == 415, answer[:300]
        assert b'"allowed"' not in answer
    print(f"\npeak RSS after gzip bombs: {_peak_rss_mib(changegate):.0f} MiB")
    message = denied(world.configmap("after-bombs", who=CAROL))
    assert "no approved change window" in message


@pytest.mark.parametrize(
    "python_names",
    [{"sub_resource": "status"}, {"old_object": "same as object"}],
    ids=["sub_resource-status", "old_object-equal"],
)
def test_review_posted_straight_to_the_port_with_python_names_is_not_admitted(
    world: Hostile, changegate: e2e_helpers.Changegate, python_names: dict[str, Any]
) -> None:
    world.setup()
    review = _review(world)
    for name, value in python_names.items():
        review["request"][name] = (
            review["request"]["object"] if value == "same as object" else value
        )

    def decided() -> dict[str, Any]:
        status, answer = _post(changegate, json.dumps(review).encode())
        assert status == 200, answer[:300]
        response: dict[str, Any] = json.loads(answer)["response"]
        assert response["auditAnnotations"]["reason"] != "NotControlled", response
        return response

    response = e2e_helpers.eventually(decided)
    # Read as what it is: an UPDATE of a ConfigMap in a controlled namespace, with no window.
    assert response["allowed"] is False
    assert response["auditAnnotations"]["reason"] == "NoWindow"
