"""What differs between where the code location runs: local, dev (EKS) and prod (EKS).

One environment variable, ``GEOSPATIAL_PIPELINE_ENV`` (set by the Helm values of the user
deployment, unset on a laptop), picks the executor and the pod resources of the heavy
raster step. On EKS every run is a Kubernetes job (the ``K8sRunLauncher`` of the Helm
chart) and ``k8s_job_executor`` starts one pod per step, so the raster step gets its own,
bigger pod through the ``dagster-k8s/config`` op tag while the light steps keep the small
default. Locally the default (multiprocess) executor runs and the tag is ignored.

The run-level tag :data:`HEAVY_TAG_KEY` = :data:`HEAVY_TAG_VALUE` is what the
QueuedRunCoordinator's ``tagConcurrencyLimits`` in ``helm/dagster/values-*.yaml`` count:
tests/test_deploy_k8s_executor.py checks that the two agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from dagster import ExecutorDefinition

from geospatial_pipeline.errors import ConfigError

Environment = Literal["local", "dev", "prod"]
ENVIRONMENTS: Final[tuple[Environment, ...]] = get_args(Environment)
DEPLOY_ENV_VAR: Final = "GEOSPATIAL_PIPELINE_ENV"

# The op tag the raster step already carries, reused as a run tag so the run queue can
# limit how many raster-heavy runs (each holding big pods) run at once.
HEAVY_TAG_KEY: Final = "geospatial_pipeline/heavy"
HEAVY_TAG_VALUE: Final = "raster"
K8S_CONFIG_TAG: Final = "dagster-k8s/config"
# Dagster concurrency pool of the raster-heavy assets: set on the assets themselves, so every
# way of launching them (job, asset graph, backfill, sensor) is limited alike.
RASTER_POOL: Final = "raster"

# Pod resources per environment. Light steps (STAC search, warehouse load) are I/O bound
# and small; the raster step decodes and re-encodes windows (GDAL block cache sized to the
# window, rio-cogeo overviews) and needs CPU and a memory headroom. Memory limits equal to
# requests would get pods OOM-killed on a large AOI; the limit leaves room, and no CPU limit
# avoids throttling (CPU is compressible: requests decide placement).
_STEP_RESOURCES: Final[dict[Environment, dict[str, dict[str, str]]]] = {
    "dev": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "prod": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
}
_HEAVY_RESOURCES: Final[dict[Environment, dict[str, dict[str, str]]]] = {
    "dev": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    "prod": {"requests": {"cpu": "2", "memory": "6Gi"}, "limits": {"memory": "8Gi"}},
}
# Step pods one run may have at once (k8s_job_executor's own limit, per run).
_MAX_CONCURRENT_STEPS: Final[dict[Environment, int]] = {"dev": 2, "prod": 4}


def current_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The environment named by ``GEOSPATIAL_PIPELINE_ENV``; ``local`` when it is unset."""
    env = os.environ if environ is None else environ
    value = env.get(DEPLOY_ENV_VAR, "").strip() or "local"
    for known in ENVIRONMENTS:
        if value == known:
            return known
    raise ConfigError(
        f"{DEPLOY_ENV_VAR}: unknown environment {value!r}; expected one of {list(ENVIRONMENTS)}"
    )


def is_kubernetes(environment: Environment) -> bool:
    return environment != "local"


def heavy_run_tags() -> dict[str, str]:
    """Run tags of jobs that contain the raster step (counted by the run queue's tag limit)."""
    return {HEAVY_TAG_KEY: HEAVY_TAG_VALUE}


def heavy_pod_tags(environment: Environment | None = None) -> dict[str, Any]:
    """The ``dagster-k8s/config`` op tag giving the raster step its own pod resources.

    Empty for ``local``: no pod is started there.
    """
    env = current_environment() if environment is None else environment
    if not is_kubernetes(env):
        return {}
    return {K8S_CONFIG_TAG: {"container_config": {"resources": _HEAVY_RESOURCES[env]}}}


def heavy_op_tags(environment: Environment | None = None) -> dict[str, Any]:
    """All op tags of the raster step: the heavy marker plus its pod resources."""
    return {HEAVY_TAG_KEY: HEAVY_TAG_VALUE, **heavy_pod_tags(environment)}


def step_executor_config(environment: Environment) -> dict[str, Any]:
    """``k8s_job_executor`` config: per-run step parallelism and the light steps' pods.

    Image, namespace, service account, env ConfigMaps/Secrets and volumes are not set
    here: the user deployment's container context (``includeConfigInLaunchedRuns``) and
    the run launcher pass them down to every step pod.
    """
    if not is_kubernetes(environment):
        raise ConfigError(f"{DEPLOY_ENV_VAR}={environment}: no Kubernetes executor locally")
    return {
        "max_concurrent": _MAX_CONCURRENT_STEPS[environment],
        "step_k8s_config": {"container_config": {"resources": _STEP_RESOURCES[environment]}},
    }


def executor_for(environment: Environment | None = None) -> ExecutorDefinition | None:
    """One pod per step on EKS; ``None`` (Dagster's default executor) locally."""
    env = current_environment() if environment is None else environment
    if not is_kubernetes(env):
        return None
    # Imported here: dagster-k8s pulls the Kubernetes client, which a laptop run never needs.
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(step_executor_config(env), name="k8s_job_executor")
