"""The Helm chart: it lints, renders for the value sets we support, and the API server accepts it.

Rendering is checked structurally (the properties the operations docs promise: two replicas
behind a PodDisruptionBudget, non-root read-only pods, HTTPS probes, RBAC pinned to the
webhook configuration named ``changegate``, no static webhook configuration), then every
rendered object goes to the real kube-apiserver with ``kubectl apply --dry-run=server``, so
schema, RBAC and admission validation are the API server's, not ours.

The test cluster has no Prometheus Operator or cert-manager. Their kinds (ServiceMonitor,
Certificate, Issuer) are made known to it with minimal stub CRDs that accept any spec, so the
dry-run proves the group/version/kind and metadata are right; their specs are checked
structurally below instead.

helm itself is built from the Go module proxy by hack/build-helm.sh and cached.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from controller.devcluster import cluster
from controller.operator import certs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "changegate"
HELM_VERSION = "v3.22.0"  # keep in step with hack/build-helm.sh
KUBE_VERSION = "v1.37.2"  # the test control plane's version
WEBHOOK_CONFIGURATION = "changegate"

# -- helm ------------------------------------------------------------------------------------


def helm_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "changegate" / "helm" / HELM_VERSION


def ensure_helm() -> Path:
    """The pinned helm binary: from the cache, or built once by hack/build-helm.sh."""
    binary = helm_cache_dir() / "helm"
    if os.access(binary, os.X_OK):
        return binary
    result = subprocess.run(
        ["bash", str(REPO / "hack" / "build-helm.sh"), str(helm_cache_dir())],
        env=dict(os.environ, HELM_VERSION=HELM_VERSION),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not os.access(binary, os.X_OK):
        pytest.fail(
            f"building helm {HELM_VERSION} failed (exit {result.returncode}):\n{result.stderr[-3000:]}",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


# -- value sets ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Install:
    """One way to install the chart, and what its rendering must then contain."""

    id: str
    release: str
    namespace: str
    set_values: tuple[str, ...]
    fullname: str
    replicas: int
    cert_mode: str
    service_monitor: bool


INSTALLS = (
    Install(
        id="defaults",
        release="changegate",
        namespace="changegate-system",
        set_values=(),
        fullname="changegate",
        replicas=2,
        cert_mode="self-managed",
        service_monitor=False,
    ),
    Install(
        id="cert-manager-servicemonitor-3-replicas",
        release="gate",
        namespace="platform-gate",
        set_values=(
            "certificates.mode=cert-manager",
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
            "replicaCount=3",
        ),
        fullname="gate-changegate",
        replicas=3,
        cert_mode="cert-manager",
        service_monitor=True,
    ),
)


def _set_args(values: Sequence[str]) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=120
    )


def render_text(helm: Path, install: Install) -> str:
    result = run_helm(
        helm,
        "template",
        install.release,
        str(CHART),
        "--namespace",
        install.namespace,
        "--kube-version",
        KUBE_VERSION,
        *_set_args(install.set_values),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@dataclasses.dataclass(frozen=True)
class Rendered:
    install: Install
    text: str
    objects: tuple[Mapping[str, Any], ...]

    def of_kind(self, kind: str) -> list[Mapping[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Mapping[str, Any]:
        name = name or self.install.fullname
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    @property
    def pod_spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Mapping[str, Any]:
        containers = self.pod_spec["containers"]
        assert len(containers) == 1
        container: Mapping[str, Any] = containers[0]
        return container


@pytest.fixture(scope="module", params=INSTALLS, ids=[i.id for i in INSTALLS])
def rendered(request: pytest.FixtureRequest, helm: Path) -> Rendered:
    install: Install = request.param
    text = render_text(helm, install)
    objects = tuple(o for o in yaml.safe_load_all(text) if o)
    return Rendered(install=install, text=text, objects=objects)


# -- lint and render -------------------------------------------------------------------------


@pytest.mark.parametrize("install", INSTALLS, ids=[i.id for i in INSTALLS])
def test_chart_passes_helm_lint_strict(helm: Path, install: Install) -> None:
    result = run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        install.namespace,
        "--kube-version",
        KUBE_VERSION,
        *_set_args(install.set_values),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("certificates.mode=letsencrypt",), "certificates.mode must be one of"),
        (("webhook.failurePolicy=Maybe",), "webhook.failurePolicy must be Fail or Ignore"),
        (("replicaCount=1",), "podDisruptionBudget.minAvailable must be below replicaCount"),
    ],
    ids=["unknown-cert-mode", "unknown-failure-policy", "pdb-would-block-every-drain"],
)
def test_invalid_values_are_refused_with_a_reason(
    helm: Path, values: tuple[str, ...], message: str
) -> None:
    result = run_helm(helm, "template", "changegate", str(CHART), *_set_args(values))
    assert result.returncode != 0
    assert message in result.stderr


def test_single_replica_renders_when_the_budget_is_disabled(helm: Path) -> None:
    result = run_helm(
        helm,
        "template",
        "changegate",
        str(CHART),
        *_set_args(["replicaCount=1", "podDisruptionBudget.enabled=false"]),
    )
    assert result.returncode == 0, result.stderr
    kinds = {o["kind"] for o in yaml.safe_load_all(result.stdout) if o}
    assert "PodDisruptionBudget" not in kinds


def test_chart_ships_no_webhook_configuration_the_operator_owns_it(rendered: Rendered) -> None:
    kinds = {o["kind"] for o in rendered.objects}
    assert "ValidatingWebhookConfiguration" not in kinds
    assert "MutatingWebhookConfiguration" not in kinds


def test_namespaced_objects_land_in_the_release_namespace(rendered: Rendered) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "PriorityClass"}
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"].get("namespace") == rendered.install.namespace, obj["kind"]


def test_deployment_runs_the_requested_replicas_behind_a_budget(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment")
    assert deployment["spec"]["replicas"] == rendered.install.replicas
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_replicas_prefer_different_nodes(rendered: Rendered) -> None:
    anti = rendered.pod_spec["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector


def test_pods_get_the_chart_priority_class_not_a_kube_system_one(rendered: Rendered) -> None:
    name = rendered.pod_spec["priorityClassName"]
    assert name == "changegate-critical"
    priority_class = rendered.one("PriorityClass", name)
    assert 0 < priority_class["value"] < 1_000_000_000
    assert priority_class["globalDefault"] is False


def test_pod_is_non_root_read_only_and_without_capabilities(rendered: Rendered) -> None:
    pod = rendered.pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 65532
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = rendered.container["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = rendered.container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_probes_use_https_readyz_and_healthz_and_stop_drains(rendered: Rendered) -> None:
    c = rendered.container
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "https", "scheme": "HTTPS"}
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    assert rendered.pod_spec["terminationGracePeriodSeconds"] > int(sleep[1])


def test_container_runs_changegate_with_the_documented_flags(rendered: Rendered) -> None:
    args = rendered.container["args"]
    assert args[0] == "run"
    flags = dict(a.removeprefix("--").split("=", 1) for a in args[1:])
    assert flags == {
        "listen-host": "0.0.0.0",
        "port": "8443",
        "cert-dir": "/var/run/changegate/certs",
        "namespace": "$(POD_NAMESPACE)",
        "service-account": rendered.install.fullname,
        "service-name": rendered.install.fullname,
        "failure-policy": "Fail",
        "log-level": "info",
        **(
            {"cert-mode": "secret", "cert-secret": f"{rendered.install.fullname}-tls"}
            if rendered.install.cert_mode == "self-managed"
            else {"cert-mode": "files"}
        ),
    }
    assert rendered.container["ports"] == [
        {"name": "https", "containerPort": 8443, "protocol": "TCP"}
    ]


def test_service_exposes_443_to_the_https_port(rendered: Rendered) -> None:
    service = rendered.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]
    assert (
        service["spec"]["selector"] == rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    )


def _rules(role: Mapping[str, Any], group: str, resource: str) -> list[Mapping[str, Any]]:
    return [
        r
        for r in role["rules"]
        if group in r.get("apiGroups", []) and resource in r.get("resources", [])
    ]


def test_rbac_pins_the_webhook_configuration_by_name_except_create(rendered: Rendered) -> None:
    role = rendered.one("ClusterRole")
    rules = _rules(role, "admissionregistration.k8s.io", "validatingwebhookconfigurations")
    named = [r for r in rules if r.get("resourceNames")]
    unnamed = [r for r in rules if not r.get("resourceNames")]
    assert all(r["resourceNames"] == [WEBHOOK_CONFIGURATION] for r in named)
    assert {v for r in named for v in r["verbs"]} >= {"get", "update", "patch"}
    # create cannot be restricted by resourceNames, so it is the only unnamed verb.
    assert [r["verbs"] for r in unnamed] == [["create"]]
    assert not _rules(role, "admissionregistration.k8s.io", "mutatingwebhookconfigurations")


def test_rbac_reads_changegate_objects_and_writes_only_window_status(rendered: Rendered) -> None:
    role = rendered.one("ClusterRole")
    for resource in ("changepolicies", "authorizedidentities", "changewindows"):
        verbs = {v for r in _rules(role, "changegate.io", resource) for v in r["verbs"]}
        assert verbs == {"get", "list", "watch"}, resource
    status = {v for r in _rules(role, "changegate.io", "changewindows/status") for v in r["verbs"]}
    assert status == {"patch", "update"}
    for group in ("", "events.k8s.io"):
        verbs = {v for r in _rules(role, group, "events") for v in r["verbs"]}
        assert verbs == {"create", "patch"}, group
    assert {v for r in _rules(role, "", "namespaces") for v in r["verbs"]} == {
        "get",
        "list",
        "watch",
    }
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule


def test_rbac_namespace_role_holds_the_lease_and_only_its_own_secret(rendered: Rendered) -> None:
    role = rendered.one("Role")
    assert role["metadata"]["namespace"] == rendered.install.namespace
    leases = _rules(role, "coordination.k8s.io", "leases")
    assert [(r.get("resourceNames"), r["verbs"]) for r in leases] == [
        (["changegate"], ["get", "update", "patch"]),
        (None, ["create"]),  # create cannot be restricted by resourceNames
    ]
    secrets = _rules(role, "", "secrets")
    if rendered.install.cert_mode == "self-managed":
        # changegate keeps its CA and serving certificate in this one Secret.
        assert [(r.get("resourceNames"), r["verbs"]) for r in secrets] == [
            ([f"{rendered.install.fullname}-tls"], ["get", "update", "patch"]),
            (None, ["create"]),  # same reason; the Role keeps it in the release namespace
        ]
    else:
        assert secrets == []  # cert-manager writes the Secret; changegate only mounts it
    assert len(role["rules"]) == len(leases) + len(secrets)
    assert not _rules(rendered.one("ClusterRole"), "", "secrets")


def test_bindings_grant_the_roles_to_changegates_service_account(rendered: Rendered) -> None:
    subject = {
        "kind": "ServiceAccount",
        "name": rendered.install.fullname,
        "namespace": rendered.install.namespace,
    }
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = rendered.one(kind)
        assert binding["roleRef"]["kind"] == role_kind
        assert binding["roleRef"]["name"] == rendered.install.fullname
        assert binding["subjects"] == [subject]
    rendered.one("ServiceAccount")


def test_uninstall_hook_removes_only_the_webhook_configuration(rendered: Rendered) -> None:
    name = f"{rendered.install.fullname}-uninstall"
    job = rendered.one("Job", name)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    # The operator is stopped first, or it would recreate the configuration it keeps in sync.
    scale = script.index(
        'patch_namespaced_deployment_scale(DEPLOYMENT, NAMESPACE, {"spec": {"replicas": 0}})'
    )
    assert scale < script.index("delete_validating_webhook_configuration(WEBHOOK)")
    assert (
        f'WEBHOOK = "{rendered.install.namespace}", "{rendered.install.fullname}", "{WEBHOOK_CONFIGURATION}"'
        in script
    )
    role = rendered.one("ClusterRole", name)
    assert role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": [WEBHOOK_CONFIGURATION],
            "verbs": ["delete"],
        }
    ]
    # The running operator itself never gets delete on it.
    main = rendered.one("ClusterRole")
    assert all("delete" not in r["verbs"] for r in main["rules"])


def test_certificates_come_from_the_chosen_source(rendered: Rendered) -> None:
    install = rendered.install
    secret_name = f"{install.fullname}-tls"
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "certs")
    mount = next(m for m in rendered.container["volumeMounts"] if m["name"] == "certs")
    assert mount["mountPath"] == "/var/run/changegate/certs"
    service_dns = f"{install.fullname}.{install.namespace}.svc"
    if install.cert_mode == "self-managed":
        # changegate makes the certificates at runtime: none are rendered, none are mounted.
        assert not rendered.of_kind("Certificate") and not rendered.of_kind("Issuer")
        assert not rendered.of_kind("Secret")
        assert "BEGIN" not in rendered.text and "PRIVATE KEY" not in rendered.text
        assert "secret" not in volume
        assert volume["emptyDir"]["medium"] == "Memory"
        assert not mount.get("readOnly")  # changegate writes the files from the Secret
        return
    assert volume["secret"] == {"secretName": secret_name}
    assert mount["readOnly"] is True
    assert not rendered.of_kind("Secret")
    cert = rendered.one("Certificate")
    assert cert["spec"]["secretName"] == secret_name
    assert service_dns in cert["spec"]["dnsNames"]
    assert "server auth" in cert["spec"]["usages"]
    issuer = rendered.one("Issuer", cert["spec"]["issuerRef"]["name"])
    ca_cert = rendered.one("Certificate", f"{install.fullname}-ca")
    assert issuer["spec"]["ca"]["secretName"] == ca_cert["spec"]["secretName"]
    assert ca_cert["spec"]["isCA"] is True
    assert rendered.one("Issuer", ca_cert["spec"]["issuerRef"]["name"])["spec"] == {
        "selfSigned": {}
    }


def test_service_monitor_scrapes_metrics_over_https_when_enabled(rendered: Rendered) -> None:
    monitors = rendered.of_kind("ServiceMonitor")
    if not rendered.install.service_monitor:
        assert monitors == []
        return
    (monitor,) = monitors
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == (
        "https",
        "/metrics",
        "https",
    )
    service_labels = rendered.one("Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


# -- CRDs --------------------------------------------------------------------------------------


def test_chart_crds_are_byte_identical_to_crds_dir() -> None:
    source = {p.name: p.read_bytes() for p in sorted((REPO / "crds").glob("*.yaml"))}
    packaged = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert source, "crds/ holds no CRDs"
    assert packaged.keys() == source.keys(), "run `make sync-crds`"
    drifted = [name for name in source if packaged[name] != source[name]]
    assert drifted == [], (
        f"charts/changegate/crds drifted from crds/: {drifted}; run `make sync-crds`"
    )


# -- the real API server -----------------------------------------------------------------------


def _stub_crd(*, group: str, kind: str, plural: str, version: str = "v1") -> dict[str, Any]:
    """A CRD that knows the kind and accepts any spec: enough for a dry-run of foreign kinds."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": version,
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


STUB_CRDS = (
    _stub_crd(group="monitoring.coreos.com", kind="ServiceMonitor", plural="servicemonitors"),
    _stub_crd(group="cert-manager.io", kind="Certificate", plural="certificates"),
    _stub_crd(group="cert-manager.io", kind="Issuer", plural="issuers"),
)


def _wait_established(cp: cluster.ControlPlane, names: Sequence[str]) -> None:
    waited = cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    assert waited.returncode == 0, waited.stderr


def test_chart_crds_install_on_the_api_server(controlplane: cluster.ControlPlane) -> None:
    installed = controlplane.kubectl("apply", "-f", str(CHART / "crds"))
    assert installed.returncode == 0, installed.stderr
    names = [f"crd/{p.stem}.changegate.io" for p in sorted((CHART / "crds").glob("*.yaml"))]
    _wait_established(controlplane, names)


@pytest.fixture(scope="module")
def cluster_with_foreign_kinds(controlplane: cluster.ControlPlane) -> cluster.ControlPlane:
    """The session cluster with ServiceMonitor, Certificate and Issuer stubbed.

    The templates render no changegate objects, so their dry-run does not need the chart's
    CRDs (installing those is a test of its own, above).
    """
    stubs = controlplane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(STUB_CRDS))
    assert stubs.returncode == 0, stubs.stderr
    _wait_established(controlplane, [f"crd/{c['metadata']['name']}" for c in STUB_CRDS])
    return controlplane


def test_rendered_manifests_are_accepted_by_the_api_server(
    cluster_with_foreign_kinds: cluster.ControlPlane, rendered: Rendered
) -> None:
    cp = cluster_with_foreign_kinds
    namespace = rendered.install.namespace
    if cp.kubectl("get", "namespace", namespace).returncode != 0:
        created = cp.kubectl("create", "namespace", namespace)
        assert created.returncode == 0, created.stderr
    result = cp.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered.text)
    assert result.returncode == 0, result.stderr
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(rendered.objects), result.stdout


# -- the docs' examples --------------------------------------------------------------------------


def yaml_blocks(doc: Path, *, kinds: set[str]) -> str:
    """The ```yaml blocks of ``doc`` that define objects of ``kinds``, as one YAML stream."""
    text = doc.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    chosen = []
    for block in blocks:
        objects = [o for o in yaml.safe_load_all(block) if o]
        if objects and all(isinstance(o, dict) and o.get("kind") in kinds for o in objects):
            chosen.append(block)
    return "---\n".join(chosen)


@pytest.mark.parametrize(
    ("doc", "kinds", "count"),
    [
        ("rbac.md", {"ClusterRole", "ClusterRoleBinding"}, 5),
        ("gitops.md", {"AuthorizedIdentity", "ChangeWindow"}, 2),
    ],
)
def test_docs_examples_are_accepted_by_the_api_server(
    controlplane: cluster.ControlPlane, doc: str, kinds: set[str], count: int
) -> None:
    crds = controlplane.kubectl("apply", "-f", str(CHART / "crds"))
    assert crds.returncode == 0, crds.stderr
    _wait_established(
        controlplane,
        [f"crd/{p.stem}.changegate.io" for p in sorted((CHART / "crds").glob("*.yaml"))],
    )
    stream = yaml_blocks(REPO / "docs" / doc, kinds=kinds)
    result = controlplane.kubectl("apply", "--dry-run=server", "-f", "-", input=stream)
    assert result.returncode == 0, result.stderr
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == count, result.stdout


# -- a real install ----------------------------------------------------------------------------


def test_installed_rbac_lets_changegate_manage_its_certificate_secret_and_no_other(
    helm: Path, controlplane: cluster.ControlPlane, tmp_path: Path
) -> None:
    """A real `helm install`, then changegate's startup as its own service account.

    No kubelet runs, so no pod starts; the replica's startup (create the Secret, write the
    files) and the leader's renewal run here, authenticated as the chart's service account,
    so the RBAC the chart grants is exactly what is exercised. Uninstall skips the
    pre-delete hook, whose Job would wait for a controller-manager this cluster does not run.
    """
    namespace, release = "changegate-certs", "changegate"
    env = dict(os.environ, KUBECONFIG=str(controlplane.kubeconfig), HELM_CACHE_HOME=str(tmp_path))
    ns = ["--namespace", namespace]

    def helm_run(*args: str) -> None:
        result = subprocess.run(
            [str(helm), *args], env=env, capture_output=True, text=True, check=False, timeout=180
        )
        assert result.returncode == 0, result.stderr

    helm_run("install", release, str(CHART), "--create-namespace", "--skip-crds", *ns)
    try:
        # Helm wrote no Secret: the first replica creates it.
        listed = controlplane.kubectl("get", "secrets", "-n", namespace, "-o", "name")
        assert "secret/changegate-tls" not in listed.stdout
        me = controlplane.identity(
            f"system:serviceaccount:{namespace}:changegate",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
        )
        core = kubernetes.client.CoreV1Api(
            kubernetes.config.new_client_from_config(config_file=str(me.kubeconfig))
        )
        replica = certs.SecretCertificates(
            core_api=core,
            namespace=namespace,
            name="changegate-tls",
            hosts=certs.service_hosts(service="changegate", namespace=namespace),
            cert_dir=tmp_path / "certs",
            clock=lambda: datetime.datetime.now(datetime.UTC),
        )
        replica.start()
        assert (tmp_path / "certs" / certs.TLS_CRT).read_bytes()
        assert replica.rotate() is certs.Action.KEEP  # get + (nothing to) update, allowed
        assert replica.refresh() is False
        for verb, target in (
            ("get", "secret/other"),
            ("list", "secrets"),
            ("delete", "secret/changegate-tls"),
        ):
            can = controlplane.kubectl(
                "auth", "can-i", verb, target, "-n", namespace, as_user=me.user, as_groups=me.groups
            )
            assert can.stdout.strip() == "no", (verb, target)
        can = controlplane.kubectl(
            "auth",
            "can-i",
            "update",
            "secret/changegate-tls",
            "-n",
            namespace,
            as_user=me.user,
            as_groups=me.groups,
        )
        assert can.stdout.strip() == "yes"
    finally:
        helm_run("uninstall", release, "--no-hooks", *ns)
