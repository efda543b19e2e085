"""What differs between where the code location runs: local, dev (EKS) and prod (EKS).

One environment variable, ``GEOSPATIAL_PIPELINE_ENV`` (set by the Helm values of the user
deployment, unset on a laptop), picks the executor and the pod resources of the heavy
raster step. On EKS every run is a Kubernetes job (the ``K8sRunLauncher`` of the Helm
chart) and ``k8s_job_executor`` starts one pod per step, so the raster step gets its own,
bigger pod through the ``dagster-k8s/config`` op tag while the light steps keep the small
default. Locally every step runs in its run's process (``in_process_executor``) and the tag
is ignored.

How many raster steps run at once is limited by the Dagster concurrency pool
:data:`RASTER_POOL`, set on the raster assets themselves: a run-level tag would only limit
the runs of the jobs that carry it, and a backfill launched from the asset graph runs as
``__ASSET_JOB`` without it. The pool's limit per environment is
:data:`RASTER_POOL_LIMITS` (``concurrency.pools.default_limit`` of the instance: the Helm
values, deploy/dagster.yaml and the local instance of ``make dev``). The same instances
allow one run per partition at once (:func:`partition_run_limit`). tests/test_deploy_helm.py
and tests/test_deploy_instance.py check that they agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from dagster import ExecutorDefinition, in_process_executor

from geospatial_pipeline.errors import ConfigError

Environment = Literal["local", "dev", "prod"]
ENVIRONMENTS: Final[tuple[Environment, ...]] = get_args(Environment)
DEPLOY_ENV_VAR: Final = "GEOSPATIAL_PIPELINE_ENV"

# A marker op tag of the raster steps (searchable in the UI); limits use the pool below.
HEAVY_TAG_KEY: Final = "geospatial_pipeline/heavy"
HEAVY_TAG_VALUE: Final = "raster"
K8S_CONFIG_TAG: Final = "dagster-k8s/config"
# Dagster concurrency pool of the raster-heavy assets: set on the assets themselves, so every
# way of launching them (job, asset graph, backfill, sensor) is limited alike.
RASTER_POOL: Final = "raster"
# Raster steps at once across all runs of the instance. Each holds a big pod on EKS (sized by
# _HEAVY_RESOURCES), so the limit is what the node group can hold; locally one raster step
# already uses every core (its windows are read in a thread pool).
RASTER_POOL_LIMITS: Final[dict[Environment, int]] = {"local": 1, "dev": 1, "prod": 6}
# The tag Dagster puts on every run of one partition (a date today, "aoi|date" once the
# partitions are date x AOI): limited to one run per value, so two runs never write the same
# partition's objects and rows at once.
PARTITION_TAG: Final = "dagster/partition"

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
    """A label for runs of jobs that contain the raster step (filtering in the UI).

    No queue limit counts it any more: :data:`RASTER_POOL` limits the raster steps however
    they are launched.
    """
    return {HEAVY_TAG_KEY: HEAVY_TAG_VALUE}


def partition_run_limit() -> dict[str, Any]:
    """The run queue's tag limit: one run at a time per partition (per distinct value)."""
    return {"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}


def local_instance_concurrency() -> dict[str, Any]:
    """The ``concurrency`` section of the local instance's dagster.yaml (``make dev``).

    ``runs`` rather than ``run_queue``: Dagster refuses run-queue limits next to a
    ``concurrency.pools`` section.
    """
    return {
        "runs": {"tag_concurrency_limits": [partition_run_limit()]},
        "pools": {"granularity": "op", "default_limit": RASTER_POOL_LIMITS["local"]},
    }


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


def executor_for(environment: Environment | None = None) -> ExecutorDefinition:
    """One pod per step on EKS; every step in the run's own process locally.

    Dagster's default (multiprocess) executor starts a new interpreter per step, and each
    one imports the code location again (seconds): on a laptop that cost swamped the steps
    themselves (benchmarks/README.md, "Dagster overhead"). A day's steps are nearly a chain
    (only the two datamart tables could overlap), so one process loses next to no
    parallelism; backfills still run several days side by side.
    """
    env = current_environment() if environment is None else environment
    if not is_kubernetes(env):
        return in_process_executor
    # Imported here: dagster-k8s pulls the Kubernetes client, which a laptop run never needs.
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(step_executor_config(env), name="k8s_job_executor")
