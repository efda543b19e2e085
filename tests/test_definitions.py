"""The code location loads: `defs` from the module, and through workspace.yaml."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions

from geospatial_pipeline.config import CONFIG_ENV_VAR
from tests.conftest import REPO, dagster_home

CONFIG = """
stac: {api_url: "http://127.0.0.1:9/v1"}
aois: [{name: test, bbox: [9.0, 47.0, 9.1, 47.1]}]
partitions: {start_date: "2020-03-01"}
storage: {url: "s3://bucket/prefix", endpoint_url: "http://127.0.0.1:9"}
warehouse: {kind: snowflake, account: a, user: u, database: d, schema: s, warehouse: w}
"""


def test_definitions_load_with_production_shaped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "unused")
    import geospatial_pipeline.definitions as module

    defs = importlib.reload(module).defs
    assert isinstance(defs, Definitions)
    Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    assert keys == {
        AssetKey(name)
        for name in (
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
        )
    }
    job = defs.resolve_job_def("ingest_daily")
    partitions = job.partitions_def
    assert partitions is not None
    assert partitions.get_first_partition_key() == "2020-03-01"
    checks = {key.name for key in graph.asset_check_keys}
    assert checks == {
        "cogs_valid",
        "no_quarantined_items",
        "objects_match_rows",
        "value_ranges",
        "valid_pixel_fraction",
        "product_cogs_valid",
        "stac_items_valid",
        "offset_metadata_agrees",
        "products_reconcile",
        "aoi_has_usable_scenes",
        "catalog_valid",
    }
    assert graph.get(AssetKey("scene_metadata")).kinds >= {"snowflake"}
    assert graph.get(AssetKey("band_rasters")).kinds >= {"s3", "cog"}
    assert set(defs.resources) == {"stac", "scope", "object_store", "warehouse", "transform"}  # type: ignore[arg-type]


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


def test_jobs_schedules_sensors_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The code location's automation, listed once: a change here is deliberate."""
    import datetime as dt

    from dagster import build_schedule_context

    from geospatial_pipeline.config import parse_config
    from geospatial_pipeline.definitions import build_defs

    config = parse_config(
        {
            "aois": [{"name": "a", "bbox": [9.0, 47.0, 9.1, 47.1]}],
            "partitions": {"start_date": "2024-01-01"},
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
    ]
    assert [s.name for s in repo.schedule_defs] == ["daily_ingest_schedule"]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "late_scenes_sensor",
        "stac_catalog_root_sensor",
    ]
    schedule = repo.get_schedule_def("daily_ingest_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone in (None, "UTC")
    # At 06:00 UTC on the 16th the latest complete UTC day is the 15th.
    when = dt.datetime(2024, 6, 16, 6, 0, tzinfo=dt.UTC)
    with build_schedule_context(scheduled_execution_time=when, repository_def=repo) as context:
        requests = schedule.evaluate_tick(context).run_requests or []
    assert [r.partition_key for r in requests] == ["2024-06-15"]
    sensor = repo.get_sensor_def("late_scenes_sensor")
    assert sensor.minimum_interval_seconds == 3600
    assert sensor.job_name == "ingest_daily"
