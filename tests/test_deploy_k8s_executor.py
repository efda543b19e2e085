"""Production execution: every step in its own pod (k8s_job_executor), the raster step in a
bigger one through the `dagster-k8s/config` op tag, runs tagged for the run queue's limit.

The step Jobs are built by dagster-k8s itself (tools/deploy_checks/k8s.py): the run launcher
from deploy/dagster.yaml, the container context the user-deployment chart hands to runs,
the executor's config and the op tags, merged as K8sStepHandler merges them. No cluster is
involved: what is checked is the Job object that would be submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetsDefinition,
    Definitions,
    asset,
    define_asset_job,
    in_process_executor,
)
from dagster._config import process_config
from dagster_k8s import k8s_job_executor

from geospatial_pipeline.config import CONFIG_ENV_VAR, parse_config
from geospatial_pipeline.definitions import build_assets, build_defs
from geospatial_pipeline.deployment import (
    DEPLOY_ENV_VAR,
    HEAVY_TAG_KEY,
    HEAVY_TAG_VALUE,
    K8S_CONFIG_TAG,
    RASTER_POOL,
    current_environment,
    executor_for,
    heavy_op_tags,
    heavy_pod_tags,
    heavy_run_tags,
    step_executor_config,
)
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.resources import build_resources
from tests.conftest import REPO
from tests.partitioning import PARTITIONS
from tools.deploy_checks.helm import SAMPLE_TEMPLATE_VARS
from tools.deploy_checks.k8s import step_job

KUBERNETES_ENVS = ("dev", "prod")


def local_config(tmp_path: Path) -> Any:
    return parse_config(
        {
            "stac": {"api_url": "http://127.0.0.1:9/v1"},
            "aois": [{"name": "toulouse", "bbox": [1.40, 43.56, 1.43, 43.58]}],
            "partitions": PARTITIONS,
            "storage": {"url": str(tmp_path / "objects")},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        }
    )


def asset_by_key(assets: list[AssetsDefinition], name: str) -> AssetsDefinition:
    return next(a for a in assets if AssetKey(name) in a.keys)


def test_environment_comes_from_one_variable() -> None:
    assert current_environment({}) == "local"
    assert current_environment({DEPLOY_ENV_VAR: "prod"}) == "prod"
    with pytest.raises(ConfigError, match=f"{DEPLOY_ENV_VAR}: unknown environment 'staging'"):
        current_environment({DEPLOY_ENV_VAR: "staging"})
    assert executor_for("local") is in_process_executor
    assert heavy_pod_tags("local") == {}


def test_local_runs_keep_every_step_in_the_run_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dagster's default executor starts an interpreter per step, each importing the code
    # location again: locally that cost swamped the steps (benchmarks/README.md).
    monkeypatch.delenv(DEPLOY_ENV_VAR, raising=False)
    defs = build_defs(local_config(tmp_path))
    # The job the schedule and sensors launch, and the one asset-graph backfills run as.
    for job in (defs.resolve_job_def("ingest_daily"), defs.resolve_implicit_global_asset_job_def()):
        assert job.executor_def.name == in_process_executor.name, job.name


@pytest.mark.parametrize("environment", KUBERNETES_ENVS)
def test_executor_is_one_pod_per_step(environment: Any) -> None:
    executor = executor_for(environment)
    assert executor is not None
    config = step_executor_config(environment)
    # The configuration is valid for the real executor's schema.
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    assert config["max_concurrent"] >= 1
    # Image, namespace, service account, env and volumes come from the code location's
    # container context, not from here (they would override it).
    assert set(config) == {"max_concurrent", "step_k8s_config"}
    assert executor.executor_creation_fn is k8s_job_executor.executor_creation_fn


def test_real_assets_run_under_the_executor_with_the_heavy_run_tag(tmp_path: Path) -> None:
    config = local_config(tmp_path)
    assets = build_assets(config)
    # The raster step's op tag is the run tag the queue's tagConcurrencyLimits count.
    band_rasters = asset_by_key(assets, "band_rasters")
    assert band_rasters.op.tags[HEAVY_TAG_KEY] == HEAVY_TAG_VALUE
    assert heavy_run_tags() == {HEAVY_TAG_KEY: HEAVY_TAG_VALUE}
    job = define_asset_job("ingest_daily", selection=assets, tags=heavy_run_tags())
    defs = Definitions(
        assets=assets,
        jobs=[job],
        resources=build_resources(config),
        executor=executor_for("prod"),
    )
    Definitions.validate_loadable(defs)
    resolved = defs.resolve_job_def("ingest_daily")
    assert resolved.executor_def.name == "k8s_job_executor"
    assert resolved.tags[HEAVY_TAG_KEY] == HEAVY_TAG_VALUE


def test_raster_steps_are_in_the_pool_however_they_are_launched(tmp_path: Path) -> None:
    """The pool is on the assets, so a run of the code location's job, of the implicit
    asset job (what the asset graph and its backfills launch, without the job's tags), or of
    any selection of assets, runs the raster steps under the pool's limit."""
    config = local_config(tmp_path)
    assets = build_assets(config)
    heavy = {
        key for a in assets if a.op.tags.get(HEAVY_TAG_KEY) == HEAVY_TAG_VALUE for key in a.keys
    }
    pooled = {key for a in assets if a.op.pool == RASTER_POOL for key in a.keys}
    assert AssetKey("band_rasters") in heavy
    # Every raster step is in the pool, and nothing light waits for its slots.
    assert pooled == heavy

    defs = Definitions(assets=assets, resources=build_resources(config))
    asset_job = defs.resolve_implicit_global_asset_job_def()
    assert not asset_job.tags.get(HEAVY_TAG_KEY)  # what the queue's tag limit used to miss
    for selection in (None, {AssetKey("band_rasters")}):
        job = asset_job if selection is None else asset_job.get_subset(asset_selection=selection)
        pools = {
            node.name: node.definition.pool
            for node in job.nodes_in_topological_order
            if node.definition.tags.get(HEAVY_TAG_KEY) == HEAVY_TAG_VALUE
        }
        assert pools and set(pools.values()) == {RASTER_POOL}, pools


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("environment", KUBERNETES_ENVS)
def test_step_pods_get_their_resources_and_the_code_location_context(
    environment: Any, tmp_path: Path
) -> None:
    assets = build_assets(local_config(tmp_path))
    band_rasters = asset_by_key(assets, "band_rasters")
    stac_items = asset_by_key(assets, "stac_items")

    # The op tags as the wired asset carries them (see deployment.py), stored by Dagster.
    @asset(name="band_rasters", op_tags={**band_rasters.op.tags, **heavy_op_tags(environment)})
    def heavy_asset() -> None: ...

    heavy_tags = heavy_asset.op.tags
    assert isinstance(heavy_tags[K8S_CONFIG_TAG], str)  # Dagster stores it as JSON

    executor_config = step_executor_config(environment)
    heavy = step_job(
        environment, "band_rasters", heavy_tags, executor_config, heavy_run_tags(), tmp_path
    )
    light = step_job(environment, "stac_items", stac_items.op.tags, executor_config, {}, tmp_path)

    (heavy_container,) = pod_spec(heavy)["containers"]
    (light_container,) = pod_spec(light)["containers"]
    expected_heavy = heavy_pod_tags(environment)[K8S_CONFIG_TAG]["container_config"]["resources"]
    assert heavy_container["resources"] == expected_heavy
    assert (
        light_container["resources"]
        == executor_config["step_k8s_config"]["container_config"]["resources"]
    )

    for job in (heavy, light):
        spec = pod_spec(job)
        (container,) = spec["containers"]
        assert job["metadata"]["namespace"] == "dagster"
        assert spec["serviceAccountName"] == "geospatial-pipeline"  # the IRSA account
        assert container["image"] == (
            f"{SAMPLE_TEMPLATE_VARS['image_repository']}:{SAMPLE_TEMPLATE_VARS['image_tag']}"
        )
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[DEPLOY_ENV_VAR] == environment
        assert env[CONFIG_ENV_VAR] == "/etc/geospatial-pipeline/pipeline.yaml"
        assert {"secretRef": {"name": "geospatial-pipeline-snowflake"}} in container["envFrom"]
        assert {v["name"] for v in spec["volumes"]} == {"pipeline-config", "tmp"}
        assert container["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert job["spec"]["ttlSecondsAfterFinished"] == 86400


# The code location as a prod pod imports it: the environment variable is read when the
# module-level assets are defined, so in an interpreter of its own.
DESCRIBE_PROD = """
import json
from dagster import AssetKey
from geospatial_pipeline.definitions import defs
from geospatial_pipeline.deployment import HEAVY_TAG_KEY, K8S_CONFIG_TAG

job = defs.resolve_job_def("ingest_daily")
print("PROD " + json.dumps({
    "executor": job.executor_def.name,
    "run_tag": job.tags.get(HEAVY_TAG_KEY),
    "pod_tags": {
        name: defs.resolve_assets_def(AssetKey(name)).op.tags.get(K8S_CONFIG_TAG)
        for name in ("band_rasters", "scene_products", "ndvi_composite", "stac_items")
    },
}))
"""


def test_definitions_are_wired_to_the_deployment(tmp_path: Path) -> None:
    """`defs` under GEOSPATIAL_PIPELINE_ENV=prod has the Kubernetes executor, the run tag,
    and the pod tag on every raster step (and only there)."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "aois: [{name: t, bbox: [1.40, 43.56, 1.43, 43.58]}]\n"
        f"partitions: {{start_date: '{PARTITIONS['start_date']}'}}\n"
        f"storage: {{url: '{tmp_path / 'objects'}'}}\n"
        f"warehouse: {{kind: duckdb, path: '{tmp_path / 'w.duckdb'}'}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", DESCRIBE_PROD],
        cwd=REPO,
        env={**os.environ, CONFIG_ENV_VAR: str(path), DEPLOY_ENV_VAR: "prod"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("PROD "))
    got = json.loads(line.removeprefix("PROD "))
    assert got["executor"] == "k8s_job_executor"
    assert got["run_tag"] == HEAVY_TAG_VALUE
    heavy = heavy_asset_tag("prod")
    assert got["pod_tags"] == {
        "band_rasters": heavy,
        "scene_products": heavy,
        "ndvi_composite": heavy,
        "stac_items": None,
    }


def heavy_asset_tag(environment: Any) -> str:
    return json.dumps(heavy_pod_tags(environment)[K8S_CONFIG_TAG], sort_keys=True)
