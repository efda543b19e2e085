"""The production instance (deploy/dagster.yaml) against a real PostgreSQL.

The file is used as written except for two parts that need a cluster or AWS:
- run_launcher: K8sRunLauncher loads the in-cluster service account when it is built, so
  it is swapped for the default launcher (its own config is checked separately, by building
  the real K8sRunLauncher from it with a kubeconfig that is never contacted);
- compute_logs: still the S3ComputeLogManager, pointed at the local S3 server (SeaweedFS on
  127.0.0.1) through its endpoint_url, since AWS S3 is not reachable here.
PostgreSQL is the server on this machine (127.0.0.1:5432, user postgres), in a throwaway
database created and dropped by this module.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.deployment import PARTITION_TAG, RASTER_POOL, RASTER_POOL_LIMITS
from geospatial_pipeline.local.sample_catalog import generate_sample_catalog
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME
from tests.partitioning import PARTITIONS, materialize_partition
from tools.deploy_checks.helm import chart_instance_config, merged_values
from tools.deploy_checks.k8s import PRODUCTION_INSTANCE, production_run_launcher_config

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
DAY = dt.date(2024, 6, 15)
PARTITION = f"toulouse|{DAY.isoformat()}"  # a (date, aoi) key as text: aoi|date
BBOX = (1.40, 43.56, 1.41, 43.565)  # ~0.8 x 0.6 km: a few seconds to generate
LOGS_BUCKET = "dagster-compute-logs"


def pg_connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    import psycopg2

    try:
        admin = pg_connect("postgres")
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise  # CI machines have the server: a missing one is a failure there
        pytest.skip(f"no PostgreSQL server at {PG_HOST}:{PG_PORT}: {exc}")
    admin.autocommit = True
    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def production_config() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    return doc


@pytest.fixture
def instance(
    pg_database: str, s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    config = production_config()
    config["run_launcher"] = {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
    logs = config["compute_logs"]["config"]
    logs["endpoint_url"] = s3_server.endpoint_url
    logs["local_dir"] = str(tmp_path / "compute-logs")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))

    s3_server.create_bucket(LOGS_BUCKET)
    # The variables the chart's pods have (DAGSTER_PG_PASSWORD from the Secret).
    for key, value in {
        "DAGSTER_PG_HOST": PG_HOST,
        "DAGSTER_PG_PORT": str(PG_PORT),
        "DAGSTER_PG_USER": PG_USER,
        "DAGSTER_PG_PASSWORD": "",  # trust authentication on this server
        "DAGSTER_PG_DB": pg_database,
        "DAGSTER_COMPUTE_LOGS_BUCKET": LOGS_BUCKET,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with DagsterInstance.from_config(str(home)) as inst:
        yield inst


def test_instance_settings_match_the_helm_release(instance: DagsterInstance) -> None:
    """The file and helm/dagster/values-prod.yaml describe the same production instance."""
    values = merged_values("dagster", "prod")
    daemon = values["dagsterDaemon"]
    rendered = chart_instance_config(values)

    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    file_config = production_config()
    assert file_config["run_coordinator"] == rendered["run_coordinator"]
    assert file_config["concurrency"] == rendered["concurrency"]
    concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == RASTER_POOL_LIMITS["prod"]
    queue = concurrency.run_queue_config
    assert queue is not None
    runs = rendered["concurrency"]["runs"]
    assert queue.max_concurrent_runs == runs["max_concurrent_runs"]
    assert queue.tag_concurrency_limits == runs["tag_concurrency_limits"]

    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries == daemon["runRetries"]["maxRetries"]
    assert instance.run_monitoring_enabled
    assert (
        instance.run_monitoring_start_timeout_seconds
        == (daemon["runMonitoring"]["startTimeoutSeconds"])
    )
    assert (
        instance.run_monitoring_max_resume_run_attempts
        == (daemon["runMonitoring"]["maxResumeRunAttempts"])
    )
    assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
    s3_logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    file_logs = production_config()["compute_logs"]["config"]
    assert file_logs["prefix"] == s3_logs["prefix"]
    assert file_logs["upload_interval"] == s3_logs["uploadInterval"]
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"


def test_run_launcher_section_builds_the_real_k8s_run_launcher(tmp_path: Path) -> None:
    from dagster._core.test_utils import instance_for_test
    from dagster_k8s import K8sRunLauncher

    from tools.deploy_checks.k8s import write_kubeconfig

    config = production_run_launcher_config(write_kubeconfig(tmp_path / "kubeconfig"))
    launcher_values = merged_values("dagster", "prod")["runLauncher"]["config"]["k8sRunLauncher"]
    with instance_for_test(
        temp_dir=str(tmp_path),
        overrides={
            "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}
        },
    ) as inst:
        launcher = inst.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.resources == launcher_values["resources"]
        assert launcher.security_context == launcher_values["securityContext"]
        assert launcher.fail_pod_on_run_failure is True
        assert (
            launcher.run_k8s_config["job_spec_config"]["ttl_seconds_after_finished"]
            == (launcher_values["runK8sConfig"]["jobSpecConfig"]["ttlSecondsAfterFinished"])
        )


def test_materialize_a_partition_into_postgres(
    instance: DagsterInstance, s3_server: Any, pg_database: str, tmp_path: Path
) -> None:
    catalog = generate_sample_catalog(tmp_path / "catalog", DAY, BBOX)
    with RustacStacServer(catalog.items, [catalog.collection]) as stac:
        config = parse_config(
            {
                "stac": {"api_url": stac.url, "max_cloud_cover": 100},
                "aois": [{"name": "toulouse", "bbox": list(BBOX)}],
                "bands": ["red", "scl"],
                "partitions": PARTITIONS,
                "storage": {"url": str(tmp_path / "objects")},
                "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
                # The ingest assets are enough to exercise the instance's storage; the
                # products are tested end to end elsewhere and would double the time.
                "transform": {"enabled": False},
            }
        )
        # No run tag: the raster step is limited by the pool it names, not by the job. The
        # AOI is registered in this instance (its dynamic partitions live in PostgreSQL).
        result = materialize_partition(config, DAY, "toulouse", instance=instance)
    assert result.success
    assert instance.get_dynamic_partitions(AOI_PARTITIONS_NAME) == ["toulouse"]
    run_id = result.run_id
    # The step claimed a slot of the pool, whose limit came from the instance's default.
    (pool,) = [p for p in instance.event_log_storage.get_pool_limits() if p.name == RASTER_POOL]
    assert pool.limit == RASTER_POOL_LIMITS["prod"] and pool.from_default

    # Straight from PostgreSQL, not through Dagster's storage classes.
    with pg_connect(pg_database) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, pipeline_name, partition FROM runs WHERE run_id = %s", (run_id,)
        )
        assert cur.fetchall() == [
            (DagsterRunStatus.SUCCESS.value, "__ephemeral_asset_job__", PARTITION)
        ]
        cur.execute("SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,))
        tags = dict(cur.fetchall())
        # The value the run queue's one-run-per-partition limit counts (deployment.py).
        assert tags[PARTITION_TAG] == PARTITION
        assert tags[f"{PARTITION_TAG}/date"] == DAY.isoformat()
        assert tags[f"{PARTITION_TAG}/aoi"] == "toulouse"
        cur.execute(
            "SELECT asset_key, partition FROM event_logs"
            " WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'"
            " ORDER BY asset_key",
            (run_id,),
        )
        materialized = cur.fetchall()
    assert materialized == [
        ('["band_rasters"]', PARTITION),
        ('["scene_metadata"]', PARTITION),
        ('["stac_items"]', PARTITION),
    ]

    # The steps' stdout/stderr went to the compute logs bucket, under the prefix.
    client = s3_server.boto3_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=LOGS_BUCKET).get("Contents", [])]
    prefix = production_config()["compute_logs"]["config"]["prefix"]
    assert keys and all(k.startswith(f"{prefix}/") for k in keys), keys
    assert any(run_id in k for k in keys), keys
