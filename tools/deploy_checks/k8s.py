"""Kubernetes objects the deployment produces, built offline from the Helm values and the
production instance: what checkov scans and what the executor test inspects.

- The code server's ServiceAccount, Service and Deployment, following the
  dagster-user-deployments chart's templates (deployment-user.yaml, service-user.yaml,
  serviceaccount.yaml) with the merged values. No helm binary here, so this is a faithful
  re-statement of those templates for the fields that matter, not the chart's rendering.
- A step pod's Job, built by dagster-k8s itself: the run launcher from deploy/dagster.yaml,
  the container context the chart hands to runs (its k8sContainerContext helper), the
  k8s_job_executor config and the op tags, merged in the order K8sStepHandler merges them,
  then ``construct_dagster_k8s_job``.
- A run pod's Job, built by that run launcher's own ``launch_run`` (the Kubernetes API
  call is replaced by one that keeps the Job).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance, DagsterRun
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.test_utils import instance_for_test
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from kubernetes.client import ApiClient

from tools.deploy_checks import REPO
from tools.deploy_checks.helm import merged_values

NAMESPACE = "dagster"  # terraform/variables.tf default
USER_RELEASE = "geospatial-pipeline"  # helm_release.user_deployments name
USER_CHART = "dagster-user-deployments"
PRODUCTION_INSTANCE = REPO / "deploy" / "dagster.yaml"
# The key of the PostgreSQL password in global.postgresqlSecretName, as the charts read it.
POSTGRES_PASSWORD_KEY = "postgresql-password"  # noqa: S105 - a key name, not a secret


def user_fullname() -> str:
    # The chart's "dagster.fullname": release name, then chart name unless contained.
    return USER_RELEASE if USER_CHART in USER_RELEASE else f"{USER_RELEASE}-{USER_CHART}"


def image(deployment: Mapping[str, Any]) -> str:
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def code_server_manifests(environment: str) -> list[dict[str, Any]]:
    values = merged_values("user-deployments", environment)
    (deployment,) = values["deployments"]
    name = deployment["name"]
    selector = {
        "app.kubernetes.io/name": USER_CHART,
        "app.kubernetes.io/instance": USER_RELEASE,
        "component": "user-deployments",
        "deployment": name,
    }
    probe_cmd = ["dagster", "api", "grpc-health-check", "-p", str(deployment["port"])]

    def probe(spec: Mapping[str, Any]) -> dict[str, Any]:
        return {"exec": {"command": probe_cmd}, **{k: v for k, v in spec.items() if k != "enabled"}}

    account = values["serviceAccount"]
    container: dict[str, Any] = {
        "name": USER_CHART,
        "image": image(deployment),
        "imagePullPolicy": deployment["image"]["pullPolicy"],
        "args": [
            # What the chart runs in the pod (all interfaces, inside the pod network).
            *["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(deployment["port"])],  # noqa: S104
            *deployment["dagsterApiGrpcArgs"],
        ],
        "securityContext": deployment["securityContext"],
        "env": [
            {"name": "DAGSTER_CURRENT_IMAGE", "value": image(deployment)},
            {
                "name": "DAGSTER_PG_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": values["global"]["postgresqlSecretName"],
                        "key": POSTGRES_PASSWORD_KEY,
                    }
                },
            },
            *deployment["env"],
        ],
        "envFrom": [
            {"configMapRef": {"name": f"{user_fullname()}-user-deployments-shared-env"}},
            {"configMapRef": {"name": f"{user_fullname()}-{name}-user-env"}},
            *({"configMapRef": ref} for ref in deployment["envConfigMaps"]),
            *({"secretRef": ref} for ref in deployment["envSecrets"]),
        ],
        "resources": deployment["resources"],
        "readinessProbe": probe(deployment["readinessProbe"]),
        "livenessProbe": probe(deployment["livenessProbe"]),
        "startupProbe": probe(deployment["startupProbe"]),
        "volumeMounts": deployment["volumeMounts"],
        "ports": [{"name": "grpc", "containerPort": deployment["port"], "protocol": "TCP"}],
    }
    extra = [
        {**manifest, "metadata": {**manifest["metadata"], "namespace": NAMESPACE}}
        for manifest in values.get("extraManifests") or []
    ]
    return [
        *extra,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": account["name"],
                "namespace": NAMESPACE,
                "annotations": account["annotations"],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "type": "ClusterIP",
                "ports": [{"port": deployment["port"], "protocol": "TCP", "name": "grpc"}],
                "selector": selector,
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": f"{user_fullname()}-{name}",
                "namespace": NAMESPACE,
                "labels": {**selector, **deployment.get("labels", {})},
            },
            "spec": {
                "replicas": 1,
                "strategy": deployment["deploymentStrategy"],
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**selector, **deployment.get("labels", {})}},
                    "spec": {
                        "serviceAccountName": account["name"],
                        # The chart sets it: the code server's run launcher needs the API.
                        "automountServiceAccountToken": True,
                        "securityContext": deployment["podSecurityContext"],
                        "containers": [container],
                        "volumes": deployment["volumes"],
                    },
                },
            },
        },
    ]


def chart_container_context(environment: str) -> dict[str, Any]:
    """What the chart passes to runs (DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT)."""
    values = merged_values("user-deployments", environment)
    (deployment,) = values["deployments"]
    return {
        "k8s": {
            "image_pull_policy": deployment["image"]["pullPolicy"],
            "env_config_maps": [
                f"{user_fullname()}-{deployment['name']}-user-env",
                *(ref["name"] for ref in deployment["envConfigMaps"]),
            ],
            "env_secrets": [ref["name"] for ref in deployment["envSecrets"]],
            "volume_mounts": deployment["volumeMounts"],
            "volumes": deployment["volumes"],
            "labels": deployment["labels"],
            "resources": deployment["resources"],
            "namespace": NAMESPACE,
            "service_account_name": values["serviceAccount"]["name"],
            "env": deployment["env"],
        }
    }


def production_run_launcher_config(kubeconfig: Path) -> dict[str, Any]:
    """deploy/dagster.yaml's run launcher config, with a kubeconfig file instead of the
    in-cluster service account (the only part that needs a cluster)."""
    doc = yaml.safe_load(PRODUCTION_INSTANCE.read_text(encoding="utf-8"))
    config = dict(doc["run_launcher"]["config"])
    config["load_incluster_config"] = False
    config["kubeconfig_file"] = str(kubeconfig)
    config["job_namespace"] = NAMESPACE  # {env: DAGSTER_K8S_NAMESPACE} in the file
    return config


def write_kubeconfig(path: Path) -> Path:
    """A syntactically complete kubeconfig; nothing connects to it (no call is made)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "offline", "user": {"token": "unused"}}],
                "contexts": [
                    {"name": "offline", "context": {"cluster": "offline", "user": "offline"}}
                ],
                "current-context": "offline",
            }
        ),
        encoding="utf-8",
    )
    return path


@contextmanager
def _production_launcher(workdir: Path) -> Iterator[tuple[DagsterInstance, K8sRunLauncher]]:
    """A test instance whose run launcher is deploy/dagster.yaml's."""
    launcher_config = production_run_launcher_config(write_kubeconfig(workdir / "kubeconfig"))
    (workdir / "home").mkdir(exist_ok=True)
    with instance_for_test(
        temp_dir=str(workdir / "home"),
        overrides={
            "run_launcher": {
                "module": "dagster_k8s",
                "class": "K8sRunLauncher",
                "config": launcher_config,
            }
        },
    ) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        yield instance, launcher


def _ingest_run(environment: str, run_tags: Mapping[str, str]) -> DagsterRun:
    """A run of ingest_daily as the code location submits it (its container context)."""
    (deployment,) = merged_values("user-deployments", environment)["deployments"]
    origin = JobPythonOrigin(
        "ingest_daily",
        RepositoryPythonOrigin(
            executable_path="/opt/venv/bin/python",
            code_pointer=ModuleCodePointer(
                "geospatial_pipeline.definitions", "defs", working_directory=None
            ),
            container_image=image(deployment),
            container_context=chart_container_context(environment),
        ),
    )
    return DagsterRun(job_name="ingest_daily", tags=dict(run_tags), job_code_origin=origin)


def run_job(environment: str, run_tags: Mapping[str, str], workdir: Path) -> dict[str, Any]:
    """The Kubernetes Job the production run launcher creates for a run, as a dict: its own
    ``launch_run``, with the API call replaced by one that keeps the Job."""
    submitted: list[Any] = []

    class _KeepJob:
        def create_namespaced_job(self, body: Any, namespace: str, **_: Any) -> None:
            submitted.append((body, namespace))

    with _production_launcher(workdir) as (instance, launcher):
        run = instance.add_run(_ingest_run(environment, run_tags))
        # No cluster here: the Job is kept instead of being submitted.
        launcher._api_client.batch_api = _KeepJob()
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
    ((job, namespace),) = submitted
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(job)
    manifest["metadata"]["namespace"] = namespace
    return manifest


def step_job(
    environment: str,
    step_key: str,
    op_tags: Mapping[str, str],
    executor_config: Mapping[str, Any],
    run_tags: Mapping[str, str],
    workdir: Path,
) -> dict[str, Any]:
    """The Kubernetes Job k8s_job_executor would create for ``step_key``, as a dict."""
    values = merged_values("user-deployments", environment)
    (deployment,) = values["deployments"]
    with _production_launcher(workdir) as (_instance, launcher):
        run = _ingest_run(environment, run_tags)
        # K8sStepHandler._get_container_context: run (launcher + code location), then the
        # executor's config, then the step's op tags.
        context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
        context = context.merge(
            K8sContainerContext(
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                    dict(executor_config.get("step_k8s_config", {}))
                )
            )
        )
        context = context.merge(
            K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op_tags))
        )
        job_config = context.get_k8s_job_config(None, launcher).with_image(image(deployment))
        job = construct_dagster_k8s_job(
            job_config=job_config,
            args=["dagster", "api", "execute_step", "{}"],
            job_name=f"dagster-step-{step_key.replace('_', '-')}",
            pod_name=f"dagster-step-{step_key.replace('_', '-')}",
            component="step_worker",
            user_defined_k8s_config=context.run_k8s_config,
            labels={"dagster/job": run.job_name, "dagster/op": step_key},
        )
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(job)
    manifest["metadata"]["namespace"] = context.namespace
    return manifest
