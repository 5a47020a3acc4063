"""The Helm chart and the image agree: the chart's defaults run the image ``make image`` builds.

The chart is rendered with helm (built by hack/build-helm.sh) and its changegate container is
checked against the image itself: its tag, its user, the flags ``changegate run --help``
prints inside the image, the port it exposes, and where it can write. test_image.py then
runs the image the way the chart runs it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import image_helpers
import pytest

pytestmark = pytest.mark.integration

# The value sets whose arguments differ: the two certificate sources, and the extraArgs
# example that values.yaml documents.
RENDERINGS = {
    "defaults": (),
    "cert-manager": ("certificates.mode=cert-manager",),
    "extra-args": ("extraArgs[0]=--no-builtin-exemptions",),
}


@pytest.fixture(scope="module")
def image() -> str:
    return image_helpers.build_image()


@pytest.fixture(scope="module")
def deployment() -> Mapping[str, Any]:
    return image_helpers.render_deployment()


@pytest.fixture(scope="module")
def container(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    return image_helpers.changegate_container(deployment)


@pytest.fixture(scope="module")
def run_options(image: str) -> dict[str, set[str] | None]:
    """``changegate run --help`` inside the image: option -> its choices, or None (a switch),
    or an empty set (takes any value)."""
    text = image_helpers.run_in_image(image, "run", "--help")
    options: dict[str, set[str] | None] = {}
    for line in text.splitlines():
        m = re.match(r"^\s{2}(?:-\w, )?(--[a-z0-9-]+)(?:[ =](\{[^}]*\}|[A-Z_]+))?", line)
        if m:
            name, meta = m.groups()
            if meta is None:
                options[name] = None
            elif meta.startswith("{"):
                options[name] = set(meta.strip("{}").split(","))
            else:
                options[name] = set()
    assert "--port" in options and "--help" in options, text  # the parse found the options
    return options


def test_the_charts_default_image_is_the_one_make_image_builds(
    image: str, container: Mapping[str, Any]
) -> None:
    version = image_helpers.project_version()
    assert image_helpers.chart_metadata()["appVersion"] == version
    assert image_helpers.chart_values()["image"]["tag"] in ("", version)
    assert container["image"] == image
    assert image.endswith(f":{version}")
    labels = image_helpers.image_config(image).get("Labels") or {}
    assert labels.get("org.opencontainers.image.version") == version, labels


def test_the_chart_runs_the_image_as_the_images_own_numeric_user(
    image: str, deployment: Mapping[str, Any], container: Mapping[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    user = image_helpers.image_config(image).get("User")
    # runAsNonRoot needs a numeric user in the image, or the kubelet refuses to start it.
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}", user
    assert int(pod["runAsUser"]) != 0
    assert pod["runAsNonRoot"] is True and container["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("values", RENDERINGS.values(), ids=RENDERINGS.keys())
def test_every_chart_argument_is_one_the_image_accepts(
    image: str, run_options: dict[str, set[str] | None], values: tuple[str, ...]
) -> None:
    container = image_helpers.changegate_container(image_helpers.render_deployment(*values))
    # No command override: the chart relies on the image's entrypoint.
    assert "command" not in container
    assert image_helpers.image_config(image)["Entrypoint"] == ["changegate"]
    commands = re.search(r"\{([a-z,-]+)\}", image_helpers.run_in_image(image, "--help"))
    assert commands and container["args"][0] in commands.group(1).split(","), container["args"]
    env = {e["name"] for e in container.get("env") or []}
    for arg in container["args"][1:]:
        assert arg.startswith("--"), arg
        name, eq, value = arg.partition("=")
        assert name in run_options, f"{arg}: not an option of `changegate run` in the image"
        accepts = run_options[name]
        if accepts is None:
            assert not eq, f"{arg}: a switch, given a value"
            continue
        assert eq and value, f"{arg}: needs a value"
        for var in re.findall(r"\$\((\w+)\)", value):  # expanded by the kubelet
            assert var in env, f"{arg}: ${var} is not in the container's env"
        if accepts:
            assert value in accepts, f"{arg}: the image accepts {sorted(accepts)}"


def test_ports_and_probes_reach_the_port_the_image_listens_on(
    image: str, container: Mapping[str, Any]
) -> None:
    flags = image_helpers.flag_values(container["args"])
    port = int(flags["--port"] or 0)
    # Every interface, so the kubelet's probes and the Service reach it on the pod's IP.
    assert flags["--listen-host"] in ("0.0.0.0", "::"), flags
    (named,) = (p for p in container["ports"] if p["name"] == "https")
    assert (named["containerPort"], named["protocol"]) == (port, "TCP")
    assert f"{port}/tcp" in (image_helpers.image_config(image).get("ExposedPorts") or {})
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container[kind]["httpGet"]
        assert (probe["port"], probe["scheme"]) == ("https", "HTTPS"), (kind, probe)
        assert probe["path"] in ("/readyz", "/healthz"), probe  # served: test_image.py


def test_the_image_starts_read_only_and_writes_only_where_the_chart_mounts_volumes(
    image: str, deployment: Mapping[str, Any], container: Mapping[str, Any]
) -> None:
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    cert_dir = image_helpers.flag_values(container["args"])["--cert-dir"]
    # changegate writes its certificates (self-managed mode) and Python its scratch files here.
    assert cert_dir in mounts and not mounts[cert_dir].get("readOnly"), mounts
    assert "/tmp" in mounts, mounts
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    # The entrypoint starts (imports everything) with nothing writable at all.
    out = image_helpers.run_in_image(
        image,
        "run",
        "--help",
        flags=(
            f"--user={pod['runAsUser']}:{pod['runAsGroup']}",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop=ALL",
        ),
    )
    assert "--cert-dir" in out


def test_the_uninstall_hook_finds_python_with_the_kubernetes_client_in_the_image(
    image: str,
) -> None:
    """The pre-delete hook Job runs `python -c ...` in the same image, with the chart's user."""
    (job,) = (d for d in image_helpers.render() if d.get("kind") == "Job")
    spec = job["spec"]["template"]["spec"]
    (hook,) = spec["containers"]
    assert hook["image"] == image
    command, script = hook["command"], hook["args"][0]
    assert command == ["python", "-c"], command
    # The imports the hook's script makes, run as the chart runs the hook.
    imports = "\n".join(line for line in script.splitlines() if line.startswith(("import", "from")))
    assert "kubernetes" in imports, script
    pod = spec["securityContext"]
    out = image_helpers.run_in_image(
        image,
        "-c",
        imports + "\nprint('imports ok')",
        flags=(
            "--entrypoint=python",
            f"--user={pod['runAsUser']}:{pod['runAsGroup']}",
            "--read-only",
            "--read-only-tmpfs=false",
        ),
    )
    assert out.strip() == "imports ok"
