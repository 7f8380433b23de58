"""deploy/k8s: the Kubernetes manifests, checked against the code (no cluster needed).

What must hold together for `kubectl apply -k` to give a working, safe deployment: every
`MAS_*` variable is a real setting; the probes ask paths and ports the processes serve; the
commands are real `mas` commands with real options; a stopping pod's grace period outlasts
its drain; secrets are referenced, never written; containers run unprivileged on a
read-only root; every pod is scraped; the kustomizations name files that exist. Every
manifest validates against the schemas of a current Kubernetes release (kubernetes-validate,
strict) and KEDA's (generated from its CRDs), and the policy check (checkov) finds nothing
but the exceptions the manifests justify. The autoscalers watch the queues the workers
consume, on the metric they export.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from pydantic import BaseModel

from mas.api.app import create_app
from mas.cli.replay import load_agent_class
from mas.config import Settings
from mas.monitoring.endpoint import health_app
from mas.monitoring.metrics import RuntimeMetrics
from mas.runtime import Runtime
from tests.metrics_support import samples
from tests.unit.test_compose import load_compose, resolve_command, settings_field_error

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SECRET_NAMES = ("SECRET", "PASSWORD", "TOKEN", "_URL")
KUBERNETES = "1.37.0"  # the release whose schemas the manifests are checked against


def documents(where: str = "base") -> list[dict[str, Any]]:
    """The manifests under deploy/k8s/`where` (not the kustomizations that list them)."""
    found = []
    for path in sorted((K8S / where).rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def pod_specs() -> dict[str, dict[str, Any]]:
    """Each workload's pod spec, by name."""
    return {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
        for doc in documents()
        if doc["kind"] in ("Deployment", "Job")
    }


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A pod's init containers and containers."""
    found: list[dict[str, Any]] = spec.get("initContainers", []) + spec["containers"]
    return found


def config() -> dict[str, str]:
    [config_map] = of_kind("ConfigMap")
    data: dict[str, str] = config_map["data"]
    return data


def test_the_kustomizations_name_files_that_exist() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        for resource in yaml.safe_load(kustomization.read_text())["resources"]:
            assert (kustomization.parent / resource).exists(), (kustomization, resource)


def test_every_mas_variable_is_a_setting_and_the_config_is_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = set(config())
    for spec in pod_specs().values():
        for container in all_containers(spec):
            names |= {env["name"] for env in container.get("env", [])}
    errors = [error for name in sorted(names) if (error := settings_field_error(name))]
    assert errors == []
    for name, value in config().items():  # the ConfigMap's values parse as settings
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.transport, settings.persist, settings.worker.metrics_host) == (
        "rabbitmq",
        True,
        "0.0.0.0",
    )


def test_secrets_are_referenced_never_written() -> None:
    assert not of_kind("Secret")
    for name in config():
        assert not any(word in name for word in SECRET_NAMES), f"{name} belongs in a Secret"
    for spec in pod_specs().values():
        for container in all_containers(spec):
            for env in container.get("env", []):
                assert "value" not in env, f"{env['name']}: a literal, not a secretKeyRef"
                assert "secretKeyRef" in env["valueFrom"]


@pytest.mark.parametrize(
    ("workload", "subcommand"),
    [("mas-gateway", ["api"]), ("mas-worker", ["worker"]), ("mas-migrate", ["db", "upgrade"])],
)
def test_each_workload_runs_its_mas_command_with_real_options(
    workload: str, subcommand: list[str]
) -> None:
    spec = pod_specs()[workload]
    [container] = spec["containers"]
    assert container["command"][: 1 + len(subcommand)] == ["mas", *subcommand]
    for each in all_containers(spec):
        argv = each["command"]
        assert argv[0] == "mas"
        command, rest = resolve_command(argv[1:])
        options = {opt for param in command.params for opt in param.opts}
        assert [word for word in rest if word.startswith("-") and word not in options] == []


def test_new_pods_wait_for_the_migration_before_they_start() -> None:
    for name in ("mas-gateway", "mas-worker"):
        [init] = pod_specs()[name]["initContainers"]
        assert init["command"][:4] == ["mas", "db", "current", "--wait"], name
        wait = float(init["command"][4])
        [migrate] = of_kind("Job")
        assert wait >= 300, "a migration may take minutes"
        assert migrate["spec"]["template"]["spec"]["containers"][0]["command"] == [
            "mas",
            "db",
            "upgrade",
        ]


async def _serves(workload: str, path: str) -> bool:
    """Whether the process of `workload` has a route at `path` (not started: any answer but
    404 says it does)."""
    app: Any = create_app(Settings()) if workload == "mas-gateway" else health_app(Runtime())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
        return (await client.get(path)).status_code != 404


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("workload", "port_setting"),
    [("mas-gateway", "MAS_API__PORT"), ("mas-worker", "MAS_WORKER__METRICS_PORT")],
)
async def test_probes_and_scrapes_ask_what_the_process_serves(
    workload: str, port_setting: str
) -> None:
    [deployment] = [d for d in of_kind("Deployment") if d["metadata"]["name"] == workload]
    spec = deployment["spec"]["template"]
    [container] = spec["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert await _serves(workload, get["path"]), (probe, get["path"])
        assert ports[get["port"]] == int(config()[port_setting])
    assert not await _serves(workload, "/no-such-path")  # the check can fail
    annotations = spec["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert await _serves(workload, annotations["prometheus.io/path"])
    assert int(annotations["prometheus.io/port"]) == int(config()[port_setting])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_a_stopping_pod_has_longer_than_its_drain() -> None:
    drain = float(config()["MAS_SHUTDOWN_TIMEOUT"])
    for name, spec in pod_specs().items():
        if name == "mas-migrate":
            continue
        pause = spec["containers"][0].get("lifecycle", {}).get("preStop", {})
        before = pause.get("sleep", {}).get("seconds", 0)
        assert spec["terminationGracePeriodSeconds"] > drain + before, name


def test_containers_run_unprivileged_on_a_read_only_root() -> None:
    for name, spec in pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in all_containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(container["resources"]), name


def test_rolling_updates_keep_every_replica_serving() -> None:
    for deployment in of_kind("Deployment"):
        rolling = deployment["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0, deployment["metadata"]["name"]
    budgets = {
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for b in of_kind("PodDisruptionBudget")
    }
    assert budgets == {"mas-gateway", "mas-worker"}


def _strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A KEDA resource's JSON schema, from models generated from KEDA's CRDs
    (cloudcoil-models-keda), made strict as the API server's field validation is: a field
    the CRD does not define is an error, not silently dropped."""
    schema = model.model_json_schema(by_alias=True)
    for each in [schema, *schema.get("$defs", {}).values()]:
        if "properties" in each:
            each["additionalProperties"] = False
    return schema


KEDA_SCHEMAS = {
    "ScaledObject": _strict_schema(keda.ScaledObject),
    "TriggerAuthentication": _strict_schema(keda.TriggerAuthentication),
}


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Why `doc` is not a valid resource (KEDA's kinds by their CRD, the rest by the
    Kubernetes release's own schemas); a kind neither knows raises."""
    if doc["apiVersion"].startswith("keda.sh/"):
        validator = jsonschema.Draft202012Validator(KEDA_SCHEMAS[doc["kind"]])
        return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc)]
    return []


def test_every_manifest_is_valid_for_kubernetes_and_keda() -> None:
    docs = documents("")
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Job", "ScaledObject", "HorizontalPodAutoscaler"} <= kinds
    errors = {(doc["kind"], doc["metadata"]["name"]): schema_errors(doc) for doc in docs}
    assert {key: found for key, found in errors.items() if found} == {}


@pytest.mark.parametrize("kind", ["Deployment", "ScaledObject"])
def test_a_misspelled_field_is_found(kind: str) -> None:
    [doc] = [doc for doc in documents("") if doc["kind"] == kind][:1]
    assert schema_errors(doc) == []
    doc["spec"]["maxReplicas" if kind == "ScaledObject" else "replica"] = 3
    assert schema_errors(doc) != []


def test_the_policy_check_finds_nothing_but_justified_exceptions() -> None:
    """checkov, offline; an exception is a `checkov.io/skipN` annotation with its reason."""
    scan = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkov.main",
            "-d",
            str(K8S),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(scan.stdout)
    results = report["results"]
    assert report["summary"]["parsing_errors"] == 0, results["parsing_errors"]
    assert [(f["check_id"], f["resource"]) for f in results["failed_checks"]] == []
    assert scan.returncode == 0, scan.stderr[-2000:]
    for skipped in results["skipped_checks"]:
        reason = skipped["check_result"]["suppress_comment"]
        assert len(reason) > 40, (skipped["check_id"], skipped["resource"], reason)
    checked = {check["resource"] for check in results["passed_checks"] + results["skipped_checks"]}
    for doc in of_kind_in("", "Deployment") + of_kind_in("", "Job"):  # each pod was checked
        kind, name = doc["kind"], doc["metadata"]["name"]
        assert any(r.startswith(f"{kind}.") and r.endswith(f".{name}") for r in checked), (
            kind,
            name,
        )


def test_the_image_is_the_one_compose_builds() -> None:
    built = load_compose()["services"]["api"]["image"]
    for spec in pod_specs().values():
        for container in all_containers(spec):
            assert container["image"] == built


def worker_queues() -> set[str]:
    """The type queues `mas-worker` consumes: one per agent class of its `--agents`."""
    prefix = config().get("MAS_AMQP__PREFIX", "")
    return {f"{prefix}agent_type.{load_agent_class(spec).type}" for spec in worker_agents()}


def worker_agents() -> list[str]:
    """The agent classes `mas-worker` hosts (its `--agents`)."""
    [container] = pod_specs()["mas-worker"]["containers"]
    argv = container["command"]
    return [argv[n + 1] for n, word in enumerate(argv) if word == "--agents"]


def test_keda_scales_the_workers_on_the_queues_they_consume() -> None:
    [scaled] = of_kind_in("components/keda", "ScaledObject")
    [auth] = of_kind_in("components/keda", "TriggerAuthentication")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "mas-worker"
    triggers = scaled["spec"]["triggers"]
    assert {t["metadata"]["queueName"] for t in triggers} == worker_queues()
    for trigger in triggers:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    [host] = auth["spec"]["secretTargetRef"]
    workers_url = {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in pod_specs()["mas-worker"]["containers"][0]["env"]
    }["MAS_AMQP_URL"]
    assert (host["parameter"], host["name"], host["key"]) == (
        "host",
        workers_url["name"],
        workers_url["key"],
    )


@pytest.mark.anyio
async def test_the_hpa_scales_on_the_depth_metric_the_workers_export() -> None:
    [hpa] = of_kind_in("components/hpa", "HorizontalPodAutoscaler")
    [scaled] = of_kind_in("components/keda", "ScaledObject")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mas-worker"
    # The two are one policy: the same bounds, target and behaviour.
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
        scaled["spec"]["minReplicaCount"],
        scaled["spec"]["maxReplicaCount"],
    )
    assert (
        hpa["spec"]["behavior"]
        == scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    )
    [metric] = hpa["spec"]["metrics"]
    assert (
        metric["external"]["target"]["averageValue"]
        == scaled["spec"]["triggers"][0]["metadata"]["value"]
    )
    # The metric is one a worker hosting those agents serves, with that label: its value is
    # the depth of the queue the worker consumes.
    async with Runtime() as runtime:
        for spec in worker_agents():
            await runtime.spawn(load_agent_class(spec))
        exported = samples((await RuntimeMetrics(runtime).render()).decode())
    selector = metric["external"]["metric"]
    served = {dict(labels)["agent_type"] for labels in exported[selector["name"]]}
    assert set(selector["selector"]["matchLabels"]) == {"agent_type"}
    assert selector["selector"]["matchLabels"]["agent_type"] in served
    assert {f"agent_type.{each}" for each in served} == worker_queues()
    # An autoscaler never goes below what a drain and the disruption budget need.
    [budget] = [
        b
        for b in of_kind("PodDisruptionBudget")
        if b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "mas-worker"
    ]
    assert hpa["spec"]["minReplicas"] > budget["spec"]["minAvailable"]


def of_kind_in(where: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents(where) if doc["kind"] == kind]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders kustomizations")
def test_each_overlay_renders_to_valid_resources() -> None:
    for overlay in sorted((K8S / "overlays").iterdir()):
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(overlay)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
        errors = {(doc["kind"], doc["metadata"]["name"]): schema_errors(doc) for doc in docs}
        assert {key: found for key, found in errors.items() if found} == {}
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "mas", doc["metadata"]
        [worker] = [
            d for d in docs if d["metadata"]["name"] == "mas-worker" and d["kind"] == "Deployment"
        ]
        autoscaled = any(d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler") for d in docs)
        assert ("replicas" in worker["spec"]) is not autoscaled  # the autoscaler owns it
