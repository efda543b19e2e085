"""The code location loads: `defs` from the module, and through workspace.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from geospatial_pipeline.config import CONFIG_ENV_VAR
from tests.conftest import REPO, dagster_home
from tests.partitioning import PARTITIONS, key, register_aois

CONFIG = """
stac: {api_url: "http://127.0.0.1:9/v1"}
aois: [{name: test, bbox: [9.0, 47.0, 9.1, 47.1]}]
partitions: {start_date: "2020-03-01"}
storage: {url: "s3://bucket/prefix", endpoint_url: "http://127.0.0.1:9"}
warehouse: {kind: snowflake, account: a, user: u, database: d, schema: s, warehouse: w}
"""


# What the code location loaded from a configuration looks like, reported by its own
# interpreter: the module-level assets take their partitions and kinds from
# GEOSPATIAL_PIPELINE_CONFIG at import.
DESCRIBE_DEFS = """
import json
from dagster import AssetKey, Definitions
from geospatial_pipeline.definitions import defs
from geospatial_pipeline.partitions import AOI_DIMENSION, DATE_DIMENSION

Definitions.validate_loadable(defs)
graph = defs.resolve_asset_graph()
partitions = defs.resolve_job_def("ingest_daily").partitions_def
dims = {d.name: d.partitions_def for d in partitions.partitions_defs}
print("DEFS " + json.dumps({
    "defs_type": type(defs).__name__,
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "checks": sorted([k.asset_key.to_user_string(), k.name] for k in graph.asset_check_keys),
    "dimensions": sorted(dims),
    "first_day": dims[DATE_DIMENSION].get_first_partition_key(),
    "aoi_partitions": getattr(dims[AOI_DIMENSION], "name", None),
    "kinds": {
        name: sorted(graph.get(AssetKey(name)).kinds) for name in ("scene_metadata", "band_rasters")
    },
    "resources": sorted(defs.resources),
}))
"""


def test_definitions_load_with_production_shaped_config(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    env = {**os.environ, CONFIG_ENV_VAR: str(path), "SNOWFLAKE_PASSWORD": "unused"}
    proc = subprocess.run(
        [sys.executable, "-c", DESCRIBE_DEFS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("DEFS "))
    got = json.loads(line.removeprefix("DEFS "))
    assert got["defs_type"] == "Definitions"
    assert got["assets"] == sorted(
        [
            "stac_items",
            "band_rasters",
            "scene_metadata",
            "scene_products",
            "ndvi_composite",
            "stac_catalog",
            "stac_catalog_root",
            "scene_quality",
            "daily_aoi_stats",
            "product_catalog",
        ]
    )
    # The job runs one (date, aoi); the days start where this configuration says.
    assert got["dimensions"] == ["aoi", "date"]
    assert got["first_day"] == "2020-03-01"
    assert got["aoi_partitions"] == "aois"
    # Two checks of one name on two assets: checks are (asset, name).
    assert got["checks"] == sorted(
        [
            ["band_rasters", "cogs_valid"],
            ["band_rasters", "no_quarantined_items"],
            ["scene_metadata", "objects_match_rows"],
            ["scene_products", "value_ranges"],
            ["ndvi_composite", "value_ranges"],
            ["scene_products", "valid_pixel_fraction"],
            ["scene_products", "product_cogs_valid"],
            ["ndvi_composite", "product_cogs_valid"],
            ["stac_catalog", "stac_items_valid"],
            ["scene_products", "offset_metadata_agrees"],
            ["product_catalog", "products_reconcile"],
            ["daily_aoi_stats", "aoi_has_usable_scenes"],
            ["stac_catalog_root", "catalog_valid"],
        ]
    )
    assert "snowflake" in got["kinds"]["scene_metadata"]
    assert {"s3", "cog"} <= set(got["kinds"]["band_rasters"])
    assert got["resources"] == [
        "maps",
        "notifier",
        "object_store",
        "scope",
        "stac",
        "transform",
        "warehouse",
    ]


def test_workspace_yaml_loads_code_location(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV_VAR}
    env["DAGSTER_HOME"] = str(dagster_home(tmp_path / "home"))
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(REPO / "workspace.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Validation successful for code location geospatial_pipeline" in output


def test_jobs_schedules_sensors_listed(tmp_path: Path) -> None:
    """The code location's automation, listed once: a change here is deliberate."""
    import datetime as dt

    from dagster import build_schedule_context, instance_for_test

    from geospatial_pipeline.config import parse_config
    from geospatial_pipeline.definitions import build_defs
    from geospatial_pipeline.resources.storage import ObjectStoreResource

    config = parse_config(
        {
            "aois": [{"name": "a", "bbox": [9.0, 47.0, 9.1, 47.1]}],
            "partitions": PARTITIONS,
            "storage": {"url": str(tmp_path)},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
            "schedule": {"delay_hours": 6},
        }
    )
    defs = build_defs(config)
    repo = defs.get_repository_def()
    assert sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")) == [
        "ingest_daily",
        "reconcile_catalog",
        "request_imagery",
    ]
    assert [s.name for s in repo.schedule_defs] == ["daily_ingest_schedule"]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "imagery_requests_sensor",
        "late_scenes_sensor",
        "request_status_sensor",
        "stac_catalog_root_sensor",
    ]
    schedule = repo.get_schedule_def("daily_ingest_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone in (None, "UTC")
    # At 06:00 UTC on the 16th the latest complete UTC day is the 15th: one run for the
    # registered AOI. (A persistent instance: the context re-opens it by reference.)
    when = dt.datetime(2024, 6, 16, 6, 0, tzinfo=dt.UTC)
    with instance_for_test() as instance:
        register_aois(config, instance)
        with build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            resources={"object_store": ObjectStoreResource.from_config(config.storage)},
            repository_def=repo,
        ) as context:
            requests = schedule.evaluate_tick(context).run_requests or []
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (key("2024-06-15", "a"), "schedule:2024-06-15:a")
    ]
    sensor = repo.get_sensor_def("late_scenes_sensor")
    assert sensor.minimum_interval_seconds == 3600
    assert sensor.job_name == "ingest_daily"
