"""Readable materialization metadata, and the warehouse read behind the NDVI history.

- Helpers: sizes in human units, links for URLs and paths for local files, tables with a
  schema, a warehouse table's column schema.
- ``WarehouseResource.fetch_range``: one AOI's days in one query, on DuckDB and on
  Snowflake (fakesnow).
- One partition of the whole graph through ``dagster.materialize`` (rustac, SeaweedFS,
  DuckDB): quicklook PNGs stored next to the products and referenced from their items,
  pictures inline (small), tables instead of JSON, table metadata on every warehouse
  asset, and check results attached to the partition they checked.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import fakesnow
import pytest
from dagster_duckdb import DuckDBResource
from PIL import Image

from geospatial_pipeline.assets import preview
from geospatial_pipeline.errors import WarehouseError
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources.snowflake import SnowflakeWarehouse
from geospatial_pipeline.resources.warehouse import DuckDBWarehouse, WarehouseResource
from geospatial_pipeline.warehouse.tables import (
    DAILY_AOI_STATS,
    PRODUCT_CATALOG,
    SCENE_METADATA,
    SCENE_QUALITY,
)
from tests.partitioning import key, materialize_partition
from tests.test_e2e import DAY, ITEM, list_objects, pipeline_config, s3_env
from tests.test_warehouse import FAKE_PASSWORD, _snowflake_resource

AOI = "dunes"
PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def test_human_bytes() -> None:
    assert preview.human_bytes(6876725) == "6.9 MB"
    assert preview.human_bytes(999) == "999 B"
    assert preview.human_bytes(1000) == "1.0 KB"
    assert preview.human_bytes(3_210_000_000) == "3.2 GB"


def test_location_links_urls_and_paths_local_files() -> None:
    assert preview.location("s3://b/k.tif") == dg.MetadataValue.url("s3://b/k.tif")
    assert preview.location("http://127.0.0.1:1/x") == dg.MetadataValue.url("http://127.0.0.1:1/x")
    assert preview.location("/data/k.tif") == dg.MetadataValue.path("/data/k.tif")
    assert preview.location("file:///data/k.tif") == dg.MetadataValue.path("/data/k.tif")


def test_table_infers_a_schema_and_keeps_its_columns_without_rows() -> None:
    value = preview.table(
        [{"item": "a", "n": 1, "share": 0.5, "ok": True, "when": dt.date(2024, 6, 15)}]
    )
    assert isinstance(value, dg.TableMetadataValue)
    types = {c.name: c.type for c in value.schema.columns}
    assert types == {"item": "string", "n": "int", "share": "float", "ok": "bool", "when": "string"}
    assert value.records[0].data["when"] == "2024-06-15"
    empty = preview.table([], ["item", "n"])
    assert [c.name for c in empty.schema.columns] == ["item", "n"] and empty.records == []
    many = preview.table([{"i": i} for i in range(50)], limit=20)
    assert len(many.records) == 20


def test_column_schema_is_the_warehouse_table() -> None:
    schema = preview.column_schema(DAILY_AOI_STATS)
    assert [c.name for c in schema.columns] == [c.name for c in DAILY_AOI_STATS.columns]
    assert schema.columns[0].type == "date" and not schema.columns[0].constraints.nullable
    assert {c.name: c.type for c in schema.columns}["ndvi_median"] == "double"


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WarehouseResource]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
        return
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", FAKE_PASSWORD)
    (tmp_path / "fs").mkdir()
    with fakesnow.patch(db_path=tmp_path / "fs"):
        yield SnowflakeWarehouse(snowflake=_snowflake_resource())


def stats_row(day: dt.date, median: float | None) -> dict[str, Any]:
    return {
        "partition_date": day,
        "aoi": "a",
        "scenes_used": 1 if median is not None else 0,
        "ndvi_median": median,
        "offset_decisions": [{"item_id": f"x{day.day}"}],
    }


def test_fetch_range_reads_one_aois_days(warehouse: WarehouseResource) -> None:
    last = dt.date(2024, 6, 15)
    for i in (0, 3, 89, 90):
        day = last - dt.timedelta(days=i)
        warehouse.replace_partition(DAILY_AOI_STATS, (day, "a"), [stats_row(day, 0.1 * (i % 7))])
        warehouse.replace_partition(
            DAILY_AOI_STATS, (day, "b"), [{**stats_row(day, 0.9), "aoi": "b"}]
        )
    rows = warehouse.fetch_range(DAILY_AOI_STATS, "a", last - dt.timedelta(days=89), last)
    assert [r["partition_date"] for r in rows] == [last - dt.timedelta(days=i) for i in (89, 3, 0)]
    assert {r["aoi"] for r in rows} == {"a"}
    assert rows[0]["ndvi_median"] == pytest.approx(0.5)
    assert rows[-1]["offset_decisions"] == [{"item_id": "x15"}]
    assert warehouse.fetch_range(DAILY_AOI_STATS, "a", last, last) == rows[-1:]
    assert warehouse.fetch_range(DAILY_AOI_STATS, "c", last, last) == []
    with pytest.raises(WarehouseError, match="before first_day"):
        warehouse.fetch_range(DAILY_AOI_STATS, "a", last, last - dt.timedelta(days=1))
    with pytest.raises(WarehouseError, match="non-empty str"):
        warehouse.fetch_range(DAILY_AOI_STATS, "", last, last)


def test_table_name_is_the_fully_qualified_name_the_warehouse_answers_to(
    warehouse: WarehouseResource,
) -> None:
    day = dt.date(2024, 6, 15)
    for aoi in ("a", "b"):
        warehouse.replace_partition(
            DAILY_AOI_STATS, (day, aoi), [{**stats_row(day, 0.5), "aoi": aoi}]
        )
    name = warehouse.table_name(DAILY_AOI_STATS)
    assert len(name.split(".")) == 3, name
    assert FAKE_PASSWORD not in name
    # Pasted into a query of that warehouse, the name finds the table and its rows.
    if isinstance(warehouse, DuckDBWarehouse):
        assert name == "w.main.daily_aoi_stats"
        with warehouse.duckdb.get_connection() as conn:
            (count,) = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
    else:
        assert name == "GEO.PIPELINE.DAILY_AOI_STATS"
        with warehouse.snowflake.get_connection() as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT count(*) FROM {name}")
            (count,) = cur.fetchone()
    assert count == 2


def test_snowflake_table_name_keeps_what_needs_quotes_and_skips_the_defaults() -> None:
    spec = DAILY_AOI_STATS
    resource = _snowflake_resource()
    quoted = SnowflakeWarehouse(
        snowflake=resource.model_copy(update={"database": "geo-data", "schema_": "eo"})
    )
    assert quoted.table_name(spec) == "geo-data.EO.DAILY_AOI_STATS"
    bare = SnowflakeWarehouse(
        snowflake=resource.model_copy(update={"database": None, "schema_": None})
    )
    assert bare.table_name(spec) == "DAILY_AOI_STATS"


# ------------------------------------------------------------------ one partition, for real


@pytest.fixture(scope="module")
def stac_api(rkh_item: dict[str, Any], real_collection: dict[str, Any]) -> Iterator[str]:
    with RustacStacServer([rkh_item], [real_collection]) as server:
        yield server.url


@pytest.fixture(scope="module")
def run(s3_server: Any, stac_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bucket = "dest-metadata"
    s3_server.create_bucket(bucket)
    db = tmp_path_factory.mktemp("wh") / "w.duckdb"
    config = pipeline_config(
        stac_api,
        s3_server,
        bucket,
        {"kind": "duckdb", "path": str(db)},
        transform={"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]},
    )
    # An earlier day already in the table: the history chart reads it with today's row.
    earlier = dt.date.fromisoformat(DAY) - dt.timedelta(days=30)
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(db)))
    warehouse.replace_partition(
        DAILY_AOI_STATS, (earlier, AOI), [{**stats_row(earlier, 0.2), "aoi": AOI}]
    )
    with s3_env(s3_server):
        result = materialize_partition(config, DAY, AOI, raise_on_error=True)
    store = s3_server.boto3_client()
    return {
        "result": result,
        "objects": list_objects(s3_server, bucket),
        "get": lambda k: store.get_object(Bucket=bucket, Key=k)["Body"].read(),
        "db": db,
    }


def metadata(run: dict[str, Any], asset: str) -> dict[str, Any]:
    (mat,) = run["result"].asset_materializations_for_node(asset)
    return dict(mat.metadata)


def inline_pngs(value: Any) -> list[bytes]:
    assert isinstance(value, dg.MarkdownMetadataValue)
    return [base64.b64decode(m) for m in PNG_URI.findall(value.md_str or "")]


def test_quicklooks_stored_next_to_products_and_referenced(run: dict[str, Any]) -> None:
    prefix = f"pipeline/processed/sentinel-2-l2a/{DAY}/{AOI}"
    objects = run["objects"]
    for product, names in ((ITEM, ("thumbnail.png", "ndvi.png")), ("composite", ("ndvi.png",))):
        item = json.loads(run["get"](f"{prefix}/{product}/item.json"))
        pictures = {n: a for n, a in item["assets"].items() if a["type"] == "image/png"}
        want = {"thumbnail": "thumbnail.png", "overview": "ndvi.png"}
        assert {n: a["href"] for n, a in pictures.items()} == {
            n: f"./{f}" for n, f in want.items() if f in names
        }
        for name, asset in pictures.items():
            assert asset["roles"] == [name]
            png = run["get"](f"{prefix}/{product}/{asset['href'][2:]}")
            assert (
                asset["file:size"]
                == len(png)
                == objects[f"{prefix}/{product}/{asset['href'][2:]}"][0]
            )
            with Image.open(io.BytesIO(png)) as image:
                assert image.format == "PNG" and image.mode == "RGBA"
    manifest = json.loads(
        run["get"](f"pipeline/manifests/sentinel-2-l2a/{DAY}/{AOI}/scene_products.json")
    )
    (entry,) = manifest["products"]
    assert [q["asset"] for q in entry["quicklooks"]] == ["thumbnail", "overview"]
    head = run["result"]  # the run succeeded with the PNG assets in the items
    checks = {
        (e.asset_key.to_user_string(), e.check_name): e.passed
        for e in head.get_asset_check_evaluations()
    }
    assert checks[("stac_catalog", "stac_items_valid")] is True
    assert checks[("product_catalog", "products_reconcile")] is True


def test_pictures_inline_and_light(run: dict[str, Any]) -> None:
    for asset, count in (("scene_products", 2), ("ndvi_composite", 1), ("daily_aoi_stats", 1)):
        meta = metadata(run, asset)
        field = "ndvi_history" if asset == "daily_aoi_stats" else "quicklooks"
        pngs = inline_pngs(meta[field])
        assert len(pngs) == count <= preview.MAX_INLINE_IMAGES, asset
        for png in pngs:
            assert len(png) < 150_000, asset
            with Image.open(io.BytesIO(png)) as image:
                assert image.format == "PNG" and max(image.size) <= 640, asset
    assert metadata(run, "daily_aoi_stats")["history_days_with_rows"].value == 2


def test_readable_values(run: dict[str, Any]) -> None:
    meta = metadata(run, "scene_products")
    assert re.fullmatch(r"\d+\.\d (KB|MB)", meta["size"].value)
    assert meta["bytes"].value > 0
    assert meta["manifest"] == dg.MetadataValue.url(
        f"s3://dest-metadata/pipeline/manifests/sentinel-2-l2a/{DAY}/{AOI}/scene_products.json"
    )
    decisions = meta["offset_decisions"]
    assert isinstance(decisions, dg.TableMetadataValue)
    (record,) = decisions.records
    assert record.data["item"] == ITEM and record.data["decided_by"] in ("metadata", "pixels")
    assert {c.name: c.type for c in decisions.schema.columns}["offset_dn"] == "int"
    assert isinstance(meta["preview"], dg.TableMetadataValue)
    for asset in ("stac_items", "band_rasters", "scene_metadata"):
        assert isinstance(metadata(run, asset)["preview"], dg.TableMetadataValue), asset
    assert isinstance(metadata(run, "band_rasters")["prefix"], dg.UrlMetadataValue)
    assert isinstance(metadata(run, "stac_catalog")["sub_catalog"], dg.UrlMetadataValue)


def test_warehouse_tables_carry_table_metadata(run: dict[str, Any]) -> None:
    for asset, table, rows in (
        ("scene_metadata", SCENE_METADATA, 1),
        ("daily_aoi_stats", DAILY_AOI_STATS, 1),
        ("scene_quality", SCENE_QUALITY, 1),
        ("product_catalog", PRODUCT_CATALOG, 7),
    ):
        meta = metadata(run, asset)
        assert meta["dagster/row_count"].value == rows, asset
        assert meta["dagster/table_name"].value == f"{run['db'].stem}.main.{table.name}", asset
        assert meta["warehouse"].value == f"duckdb:{run['db']}", asset
        schema = meta["dagster/column_schema"].value
        assert [c.name for c in schema.columns] == [c.name for c in table.columns], asset


def test_check_results_name_their_partition(run: dict[str, Any]) -> None:
    evaluations = run["result"].get_asset_check_evaluations()
    assert len(evaluations) >= 10
    assert {e.partition for e in evaluations if e.check_name != "catalog_valid"} == {
        str(key(DAY, AOI))
    }
