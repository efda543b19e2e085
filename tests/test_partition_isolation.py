"""A (date, aoi) partition owns exactly its outputs: re-running (d, a) after the catalog
changed rewrites a's objects and rows and leaves every object and row of (d, b) byte for
byte as it was (real rustac, SeaweedFS S3, DuckDB; the whole asset graph)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.warehouse.tables import (
    DAILY_AOI_STATS,
    PRODUCT_CATALOG,
    SCENE_METADATA,
    SCENE_QUALITY,
)
from tests.conftest import dagster_home
from tests.partitioning import PARTITIONS, materialize_partition

DAY = "2020-02-19"
# Two AOIs of the same tile and day.
AOIS = [
    {"name": "dunes", "bbox": [-11.60, 24.60, -11.52, 24.66]},
    {"name": "wadi", "bbox": [-11.08, 25.08, -10.98, 25.16]},
]
TABLES = (SCENE_METADATA, DAILY_AOI_STATS, SCENE_QUALITY, PRODUCT_CATALOG)


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def server(rkh_item: dict[str, Any], real_collection: dict[str, Any]) -> Iterator[Any]:
    with RustacStacServer([rkh_item], [real_collection]) as srv:
        yield srv


def outputs_of(store: Any, warehouse: Any, aoi: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every object whose key names (DAY, aoi), with its bytes, and the partition's rows."""
    objects = {
        o.key: store.get_bytes(o.key) for o in store.list("") if f"/{DAY}/{aoi}/" in f"/{o.key}"
    }
    rows = {t.name: warehouse.fetch_partition(t, (dt.date.fromisoformat(DAY), aoi)) for t in TABLES}
    return objects, rows


def test_rerun_of_one_aoi_leaves_the_other_aoi_of_the_day_untouched(
    tmp_path: Path, s3_env: Any, server: Any, rkh_item: dict[str, Any]
) -> None:
    bucket = f"iso-{uuid.uuid4().hex[:10]}"
    s3_env.create_bucket(bucket)
    config = parse_config(
        {
            "stac": {"api_url": server.url},
            "aois": AOIS,
            "bands": ["red", "green", "blue", "nir", "scl"],
            "partitions": PARTITIONS,
            "storage": {"url": f"s3://{bucket}/p", "endpoint_url": s3_env.endpoint_url},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "wh.duckdb")},
        }
    )
    resources = build_resources(config)
    store, warehouse = resources["object_store"].store(), resources["warehouse"]
    with DagsterInstance.local_temp(str(dagster_home(tmp_path / "home"))) as instance:
        for aoi in ("dunes", "wadi"):
            materialize_partition(config, DAY, aoi, instance=instance, raise_on_error=True)
        a_before, a_rows_before = outputs_of(store, warehouse, "dunes")
        b_before, b_rows_before = outputs_of(store, warehouse, "wadi")
        assert any(k.endswith(".tif") for k in b_before) and b_rows_before["scene_metadata"]

        # The catalog changes for the day: the scene is reprocessed (new properties).
        changed = copy.deepcopy(rkh_item)
        changed["properties"]["eo:cloud_cover"] = 3.25
        changed["properties"]["updated"] = "2024-01-01T00:00:00Z"
        server.restart_with([changed])
        materialize_partition(config, DAY, "dunes", instance=instance, raise_on_error=True)

        a_after, a_rows_after = outputs_of(store, warehouse, "dunes")
        b_after, b_rows_after = outputs_of(store, warehouse, "wadi")
    # The re-run really rewrote a: its items and its rows carry the new cloud cover.
    items_key = f"stac/sentinel-2-l2a/{DAY}/dunes/items.json"
    assert a_after[items_key] != a_before[items_key]
    assert json.loads(a_after[items_key])["features"][0]["properties"]["eo:cloud_cover"] == 3.25
    assert [r["cloud_cover"] for r in a_rows_after["scene_metadata"]] == [3.25]
    assert a_rows_after != a_rows_before
    # ... and b is byte-identical: same keys, same bytes, same rows.
    assert sorted(b_after) == sorted(b_before)
    assert all(b_after[k] == b_before[k] for k in b_before)
    assert b_rows_after == b_rows_before
    assert [r["cloud_cover"] for r in b_rows_after["scene_metadata"]] != [3.25]


def test_a_backfill_group_equals_one_run_per_partition(
    tmp_path: Path, s3_env: Any, server: Any
) -> None:
    """A backfill run over several days of one AOI (partitions.BACKFILL_POLICY groups them)
    writes exactly what one run per partition writes, records one materialization per
    partition with that partition's own metadata, and checks every partition."""
    from dagster import AssetKey

    from geospatial_pipeline.definitions import build_defs

    days = ["2020-02-18", "2020-02-19", "2020-02-20"]
    outputs = []
    for grouped in (True, False):
        bucket = f"grp-{uuid.uuid4().hex[:10]}"
        s3_env.create_bucket(bucket)
        config = parse_config(
            {
                "stac": {"api_url": server.url},
                "aois": AOIS[:1],
                "bands": ["red", "green", "blue", "nir", "scl"],
                "partitions": PARTITIONS,
                "storage": {"url": f"s3://{bucket}/p", "endpoint_url": s3_env.endpoint_url},
                "warehouse": {"kind": "duckdb", "path": str(tmp_path / f"{bucket}.duckdb")},
            }
        )
        home = dagster_home(tmp_path / bucket)
        with DagsterInstance.local_temp(str(home)) as instance:
            if grouped:
                from tests.partitioning import register_aois

                register_aois(config, instance)
                job = build_defs(config).resolve_job_def("ingest_daily")
                result = job.execute_in_process(
                    instance=instance,
                    tags={
                        "dagster/asset_partition_range_start": f"dunes|{days[0]}",
                        "dagster/asset_partition_range_end": f"dunes|{days[-1]}",
                    },
                )
                assert result.success
                mats = result.asset_materializations_for_node("stac_items")
                items = {m.partition: m.metadata["items"].value for m in mats}
                assert items == {f"dunes|{d}": int(d == DAY) for d in days}
                checks = [
                    e.event_specific_data
                    for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"
                ]
                assert checks and all(c.passed for c in checks)
                cogs = next(c for c in checks if c.check_name == "cogs_valid")
                assert cogs.metadata["partitions"].value == 3
                # Every asset of the graph recorded each of the three partitions.
                for node in ("band_rasters", "scene_metadata", "scene_products", "stac_catalog"):
                    recorded = result.asset_materializations_for_node(node)
                    assert sorted(m.partition for m in recorded) == [f"dunes|{d}" for d in days]
                assert instance.get_materialized_partitions(AssetKey("daily_aoi_stats")) == {
                    f"dunes|{d}" for d in days
                }
            else:
                for d in days:
                    materialize_partition(
                        config, d, "dunes", instance=instance, raise_on_error=True
                    )
        store = build_resources(config)["object_store"].store()
        warehouse = build_resources(config)["warehouse"]
        raw = {o.key: store.get_bytes(o.key) for o in store.list("raw")}
        # Rows name their objects by URL, which includes the bucket: compare without it.
        rows = {
            (t.name, d): json.dumps(
                [
                    {k: v for k, v in r.items() if k != "created"}
                    for r in warehouse.fetch_partition(t, (dt.date.fromisoformat(d), "dunes"))
                ],
                default=str,
                sort_keys=True,
            ).replace(bucket, "BUCKET")
            for t in TABLES
            for d in days
        }
        outputs.append((raw, rows))
    (grouped_raw, grouped_rows), (single_raw, single_rows) = outputs
    assert grouped_raw and grouped_raw == single_raw
    assert grouped_rows == single_rows
