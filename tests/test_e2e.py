"""End to end: dagster.materialize of a partition against real local services.

STAC API: rustac serving the real 29RKH item; S3: SeaweedFS on 127.0.0.1 holding the real
COGs in a source bucket; destination bucket on the same server; warehouse: DuckDB, and
Snowflake through fakesnow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from dagster import DagsterInstance
from shapely.geometry import box

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.raster.cog import gdal_env, validate_cog_path
from geospatial_pipeline.raster.window import aoi_window
from geospatial_pipeline.resources.storage import ObjectStoreResource
from tests.conftest import S2_COGS
from tests.partitioning import PARTITIONS, materialize_partition

DAY = "2020-02-19"
ITEM = "S2A_29RKH_20200219_0_L2A"
# Two AOIs inside tile 29RKH (Western Sahara), one of them a GeoJSON polygon.
AOIS = [
    {"name": "dunes", "bbox": [-11.60, 24.60, -11.52, 24.66]},
    {
        # A polygon over the edge of a cloud field: SCL classes 8, 9 and 10 inside.
        "name": "wadi",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [-11.08, 25.08],
                    [-10.98, 25.08],
                    [-10.98, 25.16],
                    [-11.03, 25.17],
                    [-11.08, 25.16],
                    [-11.08, 25.08],
                ]
            ],
        },
    },
]
BANDS = ["red", "green", "blue", "nir", "scl"]
FILES = {
    "red": "B04.tif",
    "green": "B03.tif",
    "blue": "B02.tif",
    "nir": "B08.tif",
    "scl": "SCL.tif",
}


@pytest.fixture(scope="module")
def stac_api(rkh_item: dict[str, Any], real_collection: dict[str, Any]) -> Iterator[str]:
    with RustacStacServer([rkh_item], [real_collection]) as server:
        yield server.url


# The transform on the source files' own 100 m grid (pixel edges at x=199980, y=2800020)
# with nearest resampling: every product value can be checked against the source COGs.
SOURCE_GRID = {
    "resolution": 100,
    "crs": "EPSG:32629",
    "grid_anchor": [80, 20],
    "resampling": "nearest",
}


def pipeline_config(
    stac_url: str, s3: Any, bucket: str, warehouse: dict[str, Any], **extra: Any
) -> Any:
    return parse_config(
        {
            # The ingestion slice alone; tests/test_e2e_transform.py runs the whole graph.
            "transform": {"enabled": False},
            **extra,
            "stac": {"api_url": stac_url, "page_size": 2},
            "aois": AOIS,
            "bands": BANDS,
            "partitions": PARTITIONS,
            "storage": {"url": f"s3://{bucket}/pipeline", "endpoint_url": s3.endpoint_url},
            "warehouse": warehouse,
        }
    )


@contextlib.contextmanager
def s3_env(s3: Any) -> Iterator[None]:
    """Credentials the way production gets them: from the environment (AWS chain).

    Only credentials: GDAL endpoint options set here would outlive the test, because
    rasterio writes the value an option had on entering an Env back as a global GDAL
    option on leaving it, and GDAL reads environment variables as option values.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    mp.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)
    try:
        yield
    finally:
        mp.undo()


def materialize_day(
    config: Any,
    *,
    day: str = DAY,
    aois: list[str] | None = None,
    selection: Any = None,
    raise_on_error: bool = False,
) -> dict[str, Any]:
    """Every configured AOI's (day, aoi) partition (or those of ``aois``), one run each as
    the schedule launches them, in one throwaway instance (no earlier run history):
    {aoi: result}."""
    names = [a.name for a in config.aois] if aois is None else aois
    with DagsterInstance.ephemeral() as instance:
        return {
            name: materialize_partition(
                config,
                day,
                name,
                instance=instance,
                selection=selection,
                raise_on_error=raise_on_error,
            )
            for name in names
        }


def object_store_resource(s3: Any, bucket: str) -> ObjectStoreResource:
    return ObjectStoreResource(
        url=f"s3://{bucket}/pipeline",
        endpoint_url=s3.endpoint_url,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
    )


def run_partition(config: Any, expected_checks: set[str] | None = None) -> dict[str, Any]:
    """The day's (day, aoi) partitions, each of which must succeed with every expected
    check passing: {aoi: result}."""
    results = materialize_day(config, raise_on_error=True)
    assert set(results) == {a.name for a in config.aois}
    expected = expected_checks or {"cogs_valid", "no_quarantined_items", "objects_match_rows"}
    for aoi, result in results.items():
        assert result.success, aoi
        evaluations = result.get_asset_check_evaluations()
        assert {e.check_name for e in evaluations} == expected, aoi
        # By (asset, check): two assets have checks of the same name.
        failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
        assert failed == [], (aoi, failed)
    return results


def mat_meta(result: Any, key: str) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(key)
    return {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()}


def list_objects(s3: Any, bucket: str) -> dict[str, tuple[int, str]]:
    client = s3.boto3_client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = (obj["Size"], obj["ETag"])
    return out


def check_pipeline_output(s3: Any, bucket: str, config: Any) -> dict[str, tuple[int, str]]:
    objects = list_objects(s3, bucket)
    band_keys = sorted(k for k in objects if k.endswith(".tif"))
    assert band_keys == sorted(
        f"pipeline/raw/sentinel-2-l2a/{DAY}/{aoi['name']}/{ITEM}/{band}.tif"
        for aoi in AOIS
        for band in BANDS
    )
    for aoi in AOIS:
        assert f"pipeline/stac/sentinel-2-l2a/{DAY}/{aoi['name']}/items.json" in objects
        assert f"pipeline/manifests/sentinel-2-l2a/{DAY}/{aoi['name']}/band_rasters.json" in objects
    assert not any(k.startswith("pipeline/_tmp/") for k in objects)

    store_res = object_store_resource(s3, bucket)
    store = store_res.store()
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        for aoi_cfg in config.aois:
            for band in BANDS:
                key = f"raw/sentinel-2-l2a/{DAY}/{aoi_cfg.name}/{ITEM}/{band}.tif"
                path = store.gdal_path(key)
                assert validate_cog_path(path).valid
                # Independent: the same window read straight from the local source file.
                with rasterio.open(S2_COGS / FILES[band]) as src:
                    win = aoi_window(aoi_cfg.shape, src.crs, src.transform, src.width, src.height)
                    assert win is not None
                    expected = src.read(1, window=win.as_rasterio())
                    expected_transform = src.window_transform(win.as_rasterio())
                with rasterio.open(path) as got:
                    np.testing.assert_array_equal(got.read(1), expected)
                    assert got.transform == expected_transform
                    assert got.crs.to_epsg() == 32629
                # The window covers the AOI and not much more (one pixel of slack).
                b = got.bounds
                assert box(*b).area < 1.3 * box(
                    *rasterio.warp.transform_bounds(
                        "EPSG:4326", "EPSG:32629", *aoi_cfg.shape.bounds
                    )
                ).area + 4 * (b.right - b.left) * abs(expected_transform.e)
    return objects


def test_materialize_partition_into_s3_and_duckdb(
    s3_server: Any, stac_api: str, tmp_path: Path
) -> None:
    bucket = "dest-duckdb"
    s3_server.create_bucket(bucket)
    config = pipeline_config(
        stac_api, s3_server, bucket, {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")}
    )
    with s3_env(s3_server):
        first = run_partition(config)
        objects_1 = check_pipeline_output(s3_server, bucket, config)
        # Each partition wrote its own AOI's five bands and one row, from one item.
        for aoi, result in first.items():
            meta = mat_meta(result, "band_rasters")
            assert meta["objects"] == 5 and meta["objects_written"] == 5, aoi
            assert meta["prefix"].endswith(f"raw/sentinel-2-l2a/{DAY}/{aoi}"), aoi
            assert mat_meta(result, "stac_items")["items"] == 1, aoi
            assert mat_meta(result, "scene_metadata")["rows"] == 1, aoi

        # Same partitions again: identical objects, nothing rewritten, no duplicate rows.
        second = run_partition(config)
        objects_2 = list_objects(s3_server, bucket)
    assert objects_2 == objects_1
    for aoi, result in second.items():
        meta2 = mat_meta(result, "band_rasters")
        assert meta2["objects_written"] == 0 and meta2["objects_unchanged"] == 5, aoi

    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT item_id, aoi, mgrs_tile, platform, processing_baseline, boa_offset_applied,"
            " object_count, object_bytes, json_extract_string(properties, '$.\"s2:product_type\"'),"
            " cloud_cover FROM scene_metadata ORDER BY aoi"
        ).fetchall()
        band_objects = con.execute(
            "SELECT aoi, band_objects FROM scene_metadata ORDER BY aoi"
        ).fetchall()
    assert [r[:7] for r in rows] == [
        (ITEM, "dunes", "29RKH", "sentinel-2a", "02.14", False, 5),
        (ITEM, "wadi", "29RKH", "sentinel-2a", "02.14", False, 5),
    ]
    assert rows[0][8] == "S2MSI2A"
    import json

    for aoi, text in band_objects:
        objs = json.loads(text)
        for obj in objs:
            size, _ = objects_1[f"pipeline/{obj['key']}"]
            assert obj["bytes"] == size and len(obj["sha256"]) == 64
        assert sorted(o["band"] for o in objs) == sorted(BANDS)
        assert sum(o["bytes"] for o in objs) == next(r for r in rows if r[1] == aoi)[7]


def test_materialize_partition_into_s3_and_snowflake(
    s3_server: Any, stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same assets, Snowflake warehouse through dagster-snowflake, faked by fakesnow."""
    import fakesnow

    bucket = "dest-snowflake"
    s3_server.create_bucket(bucket)
    # Not a credential: fakesnow accepts anything; it reaches the resource through EnvVar.
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "fakesnow-accepts-anything")
    config = pipeline_config(
        stac_api,
        s3_server,
        bucket,
        {
            "kind": "snowflake",
            "account": "acme-test",
            "user": "PIPELINE",
            "database": "GEO",
            "schema": "RAW",
            "warehouse": "COMPUTE_WH",
            "role": "PIPELINE",
        },
    )
    (tmp_path / "fakesnow").mkdir()
    with fakesnow.patch(db_path=tmp_path / "fakesnow"), s3_env(s3_server):
        import snowflake.connector

        with snowflake.connector.connect(database="GEO") as conn:
            conn.cursor().execute("CREATE SCHEMA IF NOT EXISTS GEO.RAW")
        first = run_partition(config)
        check_pipeline_output(s3_server, bucket, config)
        run_partition(config)
        with snowflake.connector.connect(database="GEO", schema="RAW") as conn:
            cur = conn.cursor()
            cur.execute(
                'SELECT item_id, aoi, object_count, properties:"s2:product_type"::varchar '
                "FROM scene_metadata ORDER BY aoi"
            )
            rows = cur.fetchall()
    assert {aoi: mat_meta(r, "scene_metadata")["rows"] for aoi, r in first.items()} == {
        "dunes": 1,
        "wadi": 1,
    }
    assert rows == [(ITEM, "dunes", 5, "S2MSI2A"), (ITEM, "wadi", 5, "S2MSI2A")]
