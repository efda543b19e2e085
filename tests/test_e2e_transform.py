"""The whole graph for one partition on real data: ingest -> analysis-ready products ->
datamart, against SeaweedFS (S3) and DuckDB, with the real 29RKH scene.

The transform grid is aligned to the (decimated, 100 m) source pixels with nearest
resampling, so every product value can be checked exactly against the source COGs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import rasterio

from geospatial_pipeline.assets.datamart import days_without_usable_scene
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.raster.cog import gdal_env
from geospatial_pipeline.raster.encoding import read_physical
from geospatial_pipeline.raster.grid import Grid, aoi_mask
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac.products import validate_product_item
from geospatial_pipeline.stac.store_io import load_catalog
from tests.test_e2e import (
    AOIS,
    DAY,
    ITEM,
    SOURCE_GRID,
    list_objects,
    mat_meta,
    materialize_day,
    pipeline_config,
    run_partition,
    s3_env,
)

ALL_CHECKS = {
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
LAYERS = ("red", "green", "blue", "nir", "ndvi", "ndwi")


@pytest.fixture(scope="module")
def stac_api(rkh_item: dict[str, Any], real_collection: dict[str, Any]) -> Iterator[str]:
    with RustacStacServer([rkh_item], [real_collection]) as server:
        yield server.url


@pytest.fixture(scope="module")
def pipeline_run(
    s3_server: Any, stac_api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    bucket = "dest-transform"
    s3_server.create_bucket(bucket)
    db = tmp_path_factory.mktemp("wh") / "w.duckdb"
    config = pipeline_config(
        stac_api,
        s3_server,
        bucket,
        {"kind": "duckdb", "path": str(db)},
        transform=SOURCE_GRID,
    )
    with s3_env(s3_server):
        first = run_partition(config, ALL_CHECKS)
        objects_1 = list_objects(s3_server, bucket)
        second = run_partition(config, ALL_CHECKS)
        objects_2 = list_objects(s3_server, bucket)
        store_res = ObjectStoreResource(
            url=f"s3://{bucket}/pipeline",
            endpoint_url=s3_server.endpoint_url,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
        )
        yield {
            "first": first,
            "second": second,
            "objects_1": objects_1,
            "objects_2": objects_2,
            "store_res": store_res,
            "db": db,
            "config": config,
        }


def test_products_and_items_published(pipeline_run: dict[str, Any]) -> None:
    objects = pipeline_run["objects_1"]
    prefix = f"pipeline/processed/sentinel-2-l2a/{DAY}"
    for aoi in (a["name"] for a in AOIS):
        for layer in LAYERS:
            assert f"{prefix}/{aoi}/{ITEM}/{layer}.tif" in objects
        assert f"{prefix}/{aoi}/{ITEM}/item.json" in objects
        assert f"{prefix}/{aoi}/composite/ndvi_median.tif" in objects
    for aoi, result in pipeline_run["first"].items():
        # Each partition made its own AOI's products: one scene, six layers, one composite.
        meta = mat_meta(result, "scene_products")
        assert meta["scenes"] == 1 and meta["stac_items"] == 1 and meta["objects"] == 6, aoi
        meta = mat_meta(result, "ndvi_composite")
        assert meta["scenes"] == 1 and meta["objects"] == 1, aoi
        assert meta["summary"].startswith(f"{aoi}: median of 1 scene"), aoi
        meta = mat_meta(result, "stac_catalog")
        assert meta["stac_items"] == 2, aoi
        sub_catalog = f"{prefix}/{aoi}/collection.json"
        assert sub_catalog in objects, aoi


def test_rerun_is_identical(pipeline_run: dict[str, Any]) -> None:
    # Same objects, same bytes (ETags), and nothing republished: product items keep their
    # first processing time while their content is unchanged.
    assert pipeline_run["objects_2"] == pipeline_run["objects_1"]
    with duckdb.connect(str(pipeline_run["db"]), read_only=True) as con:
        for table, expected in (
            ("scene_metadata", 2),
            ("daily_aoi_stats", 2),
            ("scene_quality", 2),
            ("product_catalog", 14),
        ):
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (expected,)


def test_catalog_validates_and_reaches_every_item(pipeline_run: dict[str, Any]) -> None:
    store = pipeline_run["store_res"].store()
    catalog = load_catalog(store, "processed/catalog.json")
    items = list(catalog.get_items(recursive=True))
    assert len(items) == 4
    for item in items:
        assert validate_product_item(item.to_dict(transform_hrefs=False)) == []
        assert any(link.rel == "derived_from" for link in item.links)


def test_products_equal_independent_numpy(pipeline_run: dict[str, Any]) -> None:
    """Reflectance = DN x 1e-4 (baseline 02.14, no offset), SCL mask, NDVI, all exact."""
    from tests.conftest import S2_COGS

    store_res = pipeline_run["store_res"]
    store = store_res.store()
    files = {"red": "B04.tif", "green": "B03.tif", "blue": "B02.tif", "nir": "B08.tif"}
    invalid = [0, 1, 3, 8, 9, 10]
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        for aoi in (a["name"] for a in AOIS):
            base = f"processed/sentinel-2-l2a/{DAY}/{aoi}/{ITEM}"
            with rasterio.open(store.gdal_path(f"{base}/red.tif")) as ds:
                transform, shape = ds.transform, ds.shape
            # Same window of the source, read independently.
            with rasterio.open(S2_COGS / "B04.tif") as src:
                col = round((transform.c - src.transform.c) / 100)
                row = round((src.transform.f - transform.f) / 100)
            window = ((row, row + shape[0]), (col, col + shape[1]))
            src_dn = {}
            for band, name in files.items():
                with rasterio.open(S2_COGS / name) as src:
                    src_dn[band] = src.read(1, window=window).astype(np.float64)
            with rasterio.open(S2_COGS / "SCL.tif") as src:
                scl_win = (
                    (row // 2, (row + shape[0] + 1) // 2 + 1),
                    (col // 2, (col + shape[1] + 1) // 2 + 1),
                )
                scl = src.read(1, window=scl_win).repeat(2, 0).repeat(2, 1)
                scl = scl[row % 2 : row % 2 + shape[0], col % 2 : col % 2 + shape[1]]
            masked = np.isin(scl, invalid)
            grid = Grid("EPSG:32629", transform, shape[1], shape[0])
            aoi_cfg = pipeline_run["config"].aoi(aoi)
            in_aoi = aoi_mask(aoi_cfg.shape, grid)
            has_data = np.all([dn > 0 for dn in src_dn.values()], axis=0)
            expected_valid = in_aoi & has_data & ~masked
            assert masked[in_aoi].any() or aoi == "dunes"  # the wadi AOI holds clouds
            for band in files:
                with rasterio.open(store.gdal_path(f"{base}/{band}.tif")) as ds:
                    stored = ds.read(1)
                    got = read_physical(ds)
                # The stored integer is the DN itself (scale 1e-4, offset 0, no BOA offset).
                np.testing.assert_array_equal(
                    stored[expected_valid], src_dn[band][expected_valid].astype(np.int16)
                )
                expected = src_dn[band] * 1e-4
                # Nodata exactly where the mask (SCL classes, outside the AOI, no data) says.
                np.testing.assert_array_equal(np.isfinite(got), expected_valid)
                np.testing.assert_allclose(got[expected_valid], expected[expected_valid], rtol=1e-6)
            with rasterio.open(store.gdal_path(f"{base}/ndvi.tif")) as ds:
                ndvi = read_physical(ds)
            red, nir = src_dn["red"] * 1e-4, src_dn["nir"] * 1e-4
            ok = np.isfinite(ndvi)
            # Quantised to 1e-4 steps: within half a step (plus float32 rounding).
            np.testing.assert_allclose(ndvi[ok], ((nir - red) / (nir + red))[ok], atol=5.01e-5)


def test_odc_stac_reads_back_the_same_arrays(pipeline_run: dict[str, Any], s3_server: Any) -> None:
    import odc.stac

    store_res = pipeline_run["store_res"]
    store = store_res.store()
    catalog = load_catalog(store, "processed/catalog.json")
    item = next(i for i in catalog.get_items(recursive=True) if i.id == f"{ITEM}__dunes")
    item.make_asset_hrefs_absolute()
    odc.stac.configure_rio(
        cloud_defaults=True,
        aws={
            "aws_access_key_id": s3_server.access_key,
            "aws_secret_access_key": s3_server.secret_key,
            "region_name": s3_server.region,
            "endpoint_url": s3_server.endpoint_url.split("://", 1)[1],
        },
        AWS_HTTPS="NO",
        AWS_VIRTUAL_HOSTING="FALSE",
    )
    ds = odc.stac.load([item], bands=list(LAYERS), chunks=None)
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        for layer in LAYERS:
            with rasterio.open(
                store.gdal_path(item.assets[layer].href.split("/pipeline/", 1)[1])
            ) as src:
                stored = src.read(1)
                expected = read_physical(src)
            got = ds[layer].values[0]
            assert got.shape == expected.shape
            # odc-stac 0.5.3 returns the stored integers: the reader applies the item's
            # raster:bands scale, offset and nodata (README, "Reading the products").
            np.testing.assert_array_equal(got, stored)
            band = item.assets[layer].extra_fields["raster:bands"][0]
            physical = np.where(got == band["nodata"], np.nan, got * band["scale"] + band["offset"])
            np.testing.assert_array_equal(np.isnan(physical), np.isnan(expected))
            assert np.isfinite(expected).any()
            # float64 here, float32 from read_physical: one float32 rounding apart.
            np.testing.assert_allclose(physical, expected, rtol=1.2e-7, atol=0)


def test_datamart_stats_match_products(pipeline_run: dict[str, Any]) -> None:
    store_res = pipeline_run["store_res"]
    store = store_res.store()
    with duckdb.connect(str(pipeline_run["db"]), read_only=True) as con:
        rows = con.execute(
            "SELECT aoi, scenes_used, valid_pixel_fraction, cloud_fraction, ndvi_mean, "
            "ndvi_median, ndvi_p10, ndvi_p90, ndwi_mean, offset_decisions FROM daily_aoi_stats "
            "ORDER BY aoi"
        ).fetchall()
        quality = con.execute(
            "SELECT item_id, aoi, metadata_offset_present, pixel_verdict, offset_dn, decided_by, "
            "valid_pixel_fraction, cloud_fraction FROM scene_quality ORDER BY aoi"
        ).fetchall()
    # One scene per AOI: the day's fractions are that scene's.
    scene_fractions = {q[1]: q[6:] for q in quality}
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        for aoi, scenes, valid, cloud, mean, median, p10, p90, ndwi_mean, decisions in rows:
            base = f"processed/sentinel-2-l2a/{DAY}/{aoi}/{ITEM}"
            with rasterio.open(store.gdal_path(f"{base}/ndvi.tif")) as ds:
                v = read_physical(ds)
            v = v[np.isfinite(v)].astype(np.float64)
            with rasterio.open(store.gdal_path(f"{base}/ndwi.tif")) as ds:
                w = read_physical(ds)
            assert ndwi_mean == pytest.approx(w[np.isfinite(w)].astype(np.float64).mean(), rel=1e-6)
            assert scenes == 1 and 0.0 <= cloud <= 1.0 and 0.0 < valid <= 1.0
            assert mean == pytest.approx(v.mean(), rel=1e-6)
            # One scene: the composite is its NDVI. Percentiles come from a histogram of
            # 1e-4 bins (raster/stats.py): within one bin of numpy's.
            assert median == pytest.approx(np.median(v), abs=1.0001e-4)
            assert p10 == pytest.approx(np.percentile(v, 10), abs=1.0001e-4)
            assert p90 == pytest.approx(np.percentile(v, 90), abs=1.0001e-4)
            assert (valid, cloud) == pytest.approx(scene_fractions[aoi], rel=1e-12)
            assert json.loads(decisions)[0]["offset_dn"] == 0
    # Baseline 02.14: no BOA offset; the desert has no dark surface, so metadata decides.
    assert [q[2:6] for q in quality] == [(False, "inconclusive", 0, "metadata")] * 2


def test_large_aoi_path_gives_the_same_products(
    pipeline_run: dict[str, Any], s3_server: Any, stac_api: str, tmp_path: Path
) -> None:
    """With a tiny `transform.block_pixels` every AOI takes the strip-by-strip path (and
    the strip-wise composite): the published products decode to the same arrays."""
    bucket = "dest-transform-blocked"
    s3_server.create_bucket(bucket)
    config = pipeline_config(
        stac_api,
        s3_server,
        bucket,
        {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        transform={
            "resolution": 100,
            "crs": "EPSG:32629",
            "grid_anchor": [80, 20],
            "resampling": "nearest",
            "block_pixels": 4000,
        },
    )
    with s3_env(s3_server):
        run_partition(config, ALL_CHECKS)
    whole_store = pipeline_run["store_res"]
    blocked_store = ObjectStoreResource(
        url=f"s3://{bucket}/pipeline",
        endpoint_url=s3_server.endpoint_url,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
    )
    with gdal_env(whole_store.gdal_options(), whole_store.gdal_session()):
        for aoi in (a["name"] for a in AOIS):
            base = f"processed/sentinel-2-l2a/{DAY}/{aoi}"
            for key in [f"{base}/{ITEM}/{layer}.tif" for layer in LAYERS] + [
                f"{base}/composite/ndvi_median.tif"
            ]:
                with rasterio.open(whole_store.store().gdal_path(key)) as a:
                    expected = a.read(1)
                with rasterio.open(blocked_store.store().gdal_path(key)) as b:
                    got = b.read(1)
                np.testing.assert_array_equal(got, expected)


def test_reprocessed_scene_replaces_the_old_one_everywhere(
    s3_server: Any, rkh_item: dict[str, Any], real_collection: dict[str, Any], tmp_path: Path
) -> None:
    """A day first materialized with `_0_`, then re-run after ESA's reprocessing `_1_`
    appeared: objects, metadata rows, products and datamart rows hold the scene once,
    as `_1_`."""
    import copy

    reprocessed = copy.deepcopy(rkh_item)
    reprocessed["id"] = ITEM.replace("_0_", "_1_")
    props = reprocessed["properties"]
    props.update(
        {
            "s2:processing_baseline": "05.00",
            "earthsearch:boa_offset_applied": True,
            "updated": "2023-10-13T18:30:03.776Z",
            "s2:generation_time": "2023-06-18T17:37:04.000000Z",
        }
    )
    bucket = "dest-reprocessed"
    s3_server.create_bucket(bucket)
    db = tmp_path / "w.duckdb"
    with RustacStacServer([rkh_item], [real_collection]) as server, s3_env(s3_server):
        config = pipeline_config(
            server.url,
            s3_server,
            bucket,
            {"kind": "duckdb", "path": str(db)},
            transform={"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]},
        )
        run_partition(config, ALL_CHECKS)
        before = list_objects(s3_server, bucket)
        assert any(f"/{ITEM}/" in k for k in before)
        server.restart_with([rkh_item, reprocessed], [real_collection])
        run_partition(config, ALL_CHECKS)
    after = list_objects(s3_server, bucket)
    new_id = reprocessed["id"]
    assert not any(f"/{ITEM}/" in k for k in after if "/raw/" in k or "/processed/" in k)
    assert any(f"/raw/sentinel-2-l2a/{DAY}/dunes/{new_id}/red.tif" in k for k in after)
    assert any(f"/processed/sentinel-2-l2a/{DAY}/dunes/{new_id}/ndvi.tif" in k for k in after)
    with duckdb.connect(str(db), read_only=True) as con:

        def ids(table: str) -> list[str]:
            return [r[0] for r in con.execute(f"SELECT DISTINCT item_id FROM {table}").fetchall()]

        assert ids("scene_metadata") == [new_id]
        assert ids("scene_quality") == [new_id]
        assert sorted(ids("product_catalog")) == sorted([new_id, "composite"])
        assert con.execute("SELECT sum(scenes_used) FROM daily_aoi_stats").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM scene_metadata").fetchone() == (2,)


def test_an_aoi_without_scenes_is_visible_and_warned(
    s3_server: Any, stac_api: str, tmp_path: Path
) -> None:
    """A configured AOI that no scene covers: the day succeeds, its stats row says 0 scenes,
    and (with a one-day window) the warning check names it; the covered AOIs are fine."""
    bucket = "dest-empty-aoi"
    s3_server.create_bucket(bucket)
    db = tmp_path / "w.duckdb"
    nowhere = {"name": "open-sea", "bbox": [-30.0, 30.0, -29.95, 30.05]}
    config = pipeline_config(
        stac_api,
        s3_server,
        bucket,
        {"kind": "duckdb", "path": str(db)},
        transform={"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]},
    )
    config = config.model_copy(
        update={
            "aois": [*config.aois, type(config.aois[0]).model_validate(nowhere)],
            "transform": config.transform.model_copy(
                update={"max_days_without_usable_scene": 1, "crs": None}
            ),
        }
    )
    with s3_env(s3_server):
        results = materialize_day(config)
    assert {aoi: r.success for aoi, r in results.items()} == {
        "open-sea": True,
        **{a["name"]: True for a in AOIS},
    }
    for aoi, result in results.items():
        scenes = 0 if aoi == "open-sea" else 1
        summary = f"{aoi}: {scenes} scene{'s' * (scenes != 1)}"
        assert mat_meta(result, "daily_aoi_stats")["scenes_per_aoi"] == summary
        check = next(
            e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "aoi_has_usable_scenes"
        )
        assert check.severity.value == "WARN"
        # Only the partition of the AOI without a scene warns, and names it.
        assert check.passed == (aoi != "open-sea"), aoi
        stale = check.metadata["aois_without_usable_scene"].value  # type: ignore[attr-defined]
        assert stale == ([] if check.passed else ["open-sea"]), aoi
    with duckdb.connect(str(db), read_only=True) as con:
        rows = dict(con.execute("SELECT aoi, scenes_used FROM daily_aoi_stats").fetchall())
    assert rows == {"open-sea": 0, **{a["name"]: 1 for a in AOIS}}


def test_days_without_usable_scene_needs_every_day_and_valid_pixels() -> None:
    day = dt.date(2024, 6, 15)

    def row(aoi: str, scenes: int, valid: float | None) -> dict[str, Any]:
        return {"aoi": aoi, "scenes_used": scenes, "valid_pixel_fraction": valid}

    history = {
        day: [
            row("empty", 0, None),
            row("clouded", 2, 0.0),
            row("fine", 1, 0.4),
            row("new", 0, None),
        ],
        day - dt.timedelta(days=1): [
            row("empty", 0, None),
            row("clouded", 1, 0.0),
            row("fine", 0, None),
        ],
    }
    assert days_without_usable_scene(history, ["empty", "clouded", "fine", "new"]) == {
        "empty": 2,
        "clouded": 2,
    }
    assert days_without_usable_scene({}, ["empty"]) == {}
