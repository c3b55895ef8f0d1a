"""The example deployment in deploy/: every manifest parses and has what a cluster requires,
the gateway settings in the ConfigMap validate with the gateway's own model, the environment
variables the Deployment sets are real settings, and the Vault policy files are the ones the
suite's Vault runs with. (No cluster or kubeconform here: checked, not applied.)"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_hoop.devstack import vault_setup
from airflow_hoop.gateway.config_report import describe
from airflow_hoop.gateway.settings import GatewaySettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path.name, doc))
    return docs


def _by_kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_every_manifest_has_api_version_kind_name_and_namespace() -> None:
    docs = _documents()
    assert len(docs) >= 8
    for name, doc in docs:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], name
        assert isinstance(doc.get("kind"), str) and doc["kind"], name
        assert doc.get("metadata", {}).get("name"), name
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace"), f"{name}: {doc['kind']} without namespace"


def test_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_selects_its_pods_and_mounts_what_it_references() -> None:
    deployment = _by_kind("Deployment")
    spec = deployment["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["replicas"] >= 2  # the point of the example: several replicas, one chain
    pod = spec["template"]["spec"]
    volumes = {v["name"] for v in pod["volumes"]}
    (container,) = pod["containers"]
    assert container["image"]
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, f"volumeMount {mount['name']} has no volume"
    port_names = {p["name"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/api/readyz"), ("livenessProbe", "/api/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["port"] in port_names
        assert get["scheme"] == "HTTPS"  # the gateway serves TLS itself
    assert pod["serviceAccountName"] == _by_kind("ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    pvc = _by_kind("PersistentVolumeClaim")
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]  # every replica writes the anchor


def test_service_and_budget_select_the_gateway_pods_with_step_affinity() -> None:
    pod_labels = _by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = _by_kind("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # A step's open transaction lives in one replica: the balancer must keep a client there.
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    budget = _by_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["minAvailable"] < _by_kind("Deployment")["spec"]["replicas"]


def test_network_policies_make_the_gateway_the_only_way_to_the_targets() -> None:
    policies = [doc for _, doc in _documents() if doc["kind"] == "NetworkPolicy"]
    targets = next(p for p in policies if p["metadata"]["namespace"] != "hoop-gateway")
    sources = targets["spec"]["ingress"][0]["from"]
    assert "Ingress" in targets["spec"]["policyTypes"]
    gateway_labels = _by_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    namespaces = {
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources
    }
    assert namespaces == {"hoop-gateway", "vault"}  # nobody else, Airflow least of all
    gateway_source = next(s for s in sources if "podSelector" in s)
    assert gateway_source["podSelector"]["matchLabels"].items() <= gateway_labels.items()


@pytest.fixture
def configmap_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GatewaySettings:
    """The ConfigMap's gateway.yaml with the Deployment's environment (placeholder values)."""
    return GatewaySettings.load(_configmap_settings_file(tmp_path, monkeypatch))


def _configmap_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.upper().startswith("HOOP_GATEWAY_"):
            monkeypatch.delenv(key)
    text = _by_kind("ConfigMap")["data"]["gateway.yaml"]
    settings_file = tmp_path / "gateway.yaml"
    # The TLS files live in a Secret in the cluster: point the checked paths at stand-ins.
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("stand-in")
        text = text.replace(f"/etc/hoop/tls/{name}", str(tmp_path / name))
    settings_file.write_text(text)
    (container,) = _by_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    for env in container["env"]:
        monkeypatch.setenv(env["name"], "host=gateway-db dbname=hoop_gateway user=hoop_gateway")
    return settings_file


def test_configmap_settings_validate_and_use_production_auth(
    configmap_settings: GatewaySettings,
) -> None:
    settings = configmap_settings
    assert settings.tls is not None
    assert settings.vault.auth.method == "kubernetes"  # never a token in production
    deployment = _by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    token_dir = str(Path(settings.vault.auth.service_account_token_path).parent)
    assert token_dir in mounts
    assert settings.checkpoints.anchor_dir in mounts
    assert settings.port == container["ports"][0]["containerPort"]
    assert settings.database_dsn.get_secret_value().startswith("host=gateway-db")
    lines = describe(settings)
    assert "HTTPS with" in lines[0]
    assert not any(line.startswith("warning:") for line in lines)


def test_vault_policy_files_are_the_ones_the_suite_runs_with() -> None:
    assert (DEPLOY / "vault" / "hoop-gateway.hcl").read_text() == vault_setup._GATEWAY_POLICY
    assert (DEPLOY / "vault" / "hoop-step-creds.hcl").read_text() == vault_setup._STEP_CREDS_POLICY
    assert (DEPLOY / "vault" / "airflow-step.hcl").read_text() == vault_setup._STEP_POLICY
    script = (DEPLOY / "vault" / "setup.sh").read_text()
    for claim in vault_setup.STEP_CLAIMS:
        assert f'"{claim}": "{claim}"' in script  # the JWT role maps every step claim
    assert vault_setup.USERNAME_TEMPLATE in script


def test_vault_setup_configures_the_kubernetes_executor_signer() -> None:
    from airflow_hoop.task.vault_config import StepVaultConfig

    script = (DEPLOY / "vault" / "setup.sh").read_text()
    key = StepVaultConfig.model_fields["transit_key"].default
    assert f"transit/keys/{key} type=ed25519" in script
    assert f'path "transit/sign/{key}"' in script
    assert "auth/kubernetes/role/airflow-task" in script


def test_systemd_unit_runs_the_gateway_hardened_with_secrets_only_in_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / "hoop-gateway.service").read_text())
    service = parser["Service"]
    assert service["User"] == "hoop-gateway"
    argv = service["ExecStart"].split()
    assert argv[1:4] == ["-m", "airflow_hoop.gateway", "--config"]
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    # bubblewrap (shell steps) needs user namespaces: hardening must not take them away.
    assert "RestrictNamespaces" not in service and "PrivateUsers" not in service
    assert "Environment" not in service  # secrets never in the unit (readable by all)

    # The environment file sets real, non-secret settings only.
    env_lines = (DEPLOY / "systemd" / "gateway.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in env_lines if line and not line.startswith("#"))
    secret_words = ("DSN", "TOKEN", "SECRET", "PASSWORD", "AUTH")
    assert env and not [k for k in env if any(w in k for w in secret_words)]
    settings_file = _configmap_settings_file(tmp_path, monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = GatewaySettings.load(settings_file)
    assert settings.observability.log_format == "json"
