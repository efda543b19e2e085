"""Daily AOI statistics count each AOI pixel once where scenes overlap.

Two synthetic scenes of one day on the Sentinel-2 grid of UTM 31N (20 m SCL, 10 m bands),
like two neighbouring MGRS tiles: one covers the west of the AOI, the other the east, and
their middle third overlaps with different classes and values. The ingested objects are
written as the ingest would leave them; the transform and datamart assets then run through
``dagster.materialize``. ``daily_aoi_stats`` must equal a plain-numpy computation on the
day's mosaic (module docstring of ``geospatial_pipeline.raster.stats``), computed here
from the DNs and classes as written, not from the products.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from shapely import contains_xy
from shapely.geometry import box, mapping

from geospatial_pipeline.assets.datamart import DAILY_STATS_KEY
from geospatial_pipeline.assets.transform import NDVI_COMPOSITE, SCENE_PRODUCTS
from geospatial_pipeline.config import parse_config
from geospatial_pipeline.layout import Partition, band_key, items_key, manifest_key
from geospatial_pipeline.raster.grid import Grid, aoi_grid
from geospatial_pipeline.stac.itemcollection import dumps, to_item_collection
from geospatial_pipeline.stac.search import DayItems
from tests.geotiff import write_geotiff
from tests.partitioning import PARTITIONS, materialize_partition

DAY = "2024-06-01"
COLLECTION = "sentinel-2-l2a"
AOI_NAME = "overlap"
PART = Partition(dt.date.fromisoformat(DAY), AOI_NAME)
AOI = box(3.00, 45.00, 3.03, 45.012)  # ~2.4 x 1.3 km: 240 x 140 px at 10 m, EPSG:32631
INVALID = (0, 1, 3, 8, 9, 10)
CLOUD, SHADOW = (8, 9, 10), (3,)
# Harmonized surface reflectance x 10000 per SCL class: vegetation, bare, water, shadow,
# cloud (medium, high, cirrus).
SIGNATURES = {
    4: (300, 800, 350, 3800),  # red, green, blue, nir
    5: (3400, 2400, 1700, 3900),
    6: (450, 650, 600, 200),
    3: (200, 250, 220, 400),
    8: (6600, 6500, 6400, 6900),
    9: (7600, 7500, 7400, 7900),
    10: (3000, 3000, 3000, 3200),
}
BANDS = ("red", "green", "blue", "nir")
# Percentiles from the histogram are within one bin (raster/stats.NDVI_BIN_WIDTH, 1e-4) of
# numpy's. (raster/stats.py is imported inside the tests that call it directly, so the
# asset-level test also runs against code without it.)
BIN_WIDTH = 1e-4
PCT_TOL = BIN_WIDTH * (1 + 1e-6)


@dataclass
class Written:
    """One synthetic scene as written: classes and DNs on the 10 m grid of its files."""

    item_id: str
    transform: Affine  # of the 10 m band files
    scl10: np.ndarray
    dns: dict[str, np.ndarray]


def _scene(
    root: Path, item_id: str, x_from: float, x_to: float, seed: int, nir_gain: float
) -> Written:
    """Bands over the AOI grid + 200 m; data only for easting in [x_from, x_to) (SCL 0 and
    DN 0 elsewhere, as outside a tile or swath); random 20 m classes."""
    grid = aoi_grid(AOI, 10)
    left, bottom, right, top = grid.bounds
    left, bottom = (math.floor((v - 200) / 20) * 20 for v in (left, bottom))
    right, top = (math.ceil((v + 200) / 20) * 20 for v in (right, top))
    h20, w20 = round((top - bottom) / 20), round((right - left) / 20)
    # The same ground under both scenes: vegetation in the middle third (the overlap),
    # bare soil and water elsewhere; each scene has its own clouds and shadows.
    ground = np.random.default_rng(0)
    x20 = left + 20 * (np.arange(w20) + 0.5)
    middle = (x20 >= left + (right - left) / 3) & (x20 < left + 2 * (right - left) / 3)
    scl20 = np.where(
        middle[None, :],
        ground.choice(np.array([4, 4, 4, 6], np.uint8), size=(h20, w20)),
        ground.choice(np.array([5, 5, 6, 4], np.uint8), size=(h20, w20)),
    ).astype(np.uint8)
    rng = np.random.default_rng(seed)
    weather = rng.random((h20, w20))
    clouds = np.array([8, 9, 10], np.uint8)[rng.integers(0, 3, size=(h20, w20))]
    scl20 = np.where(weather < 0.25, clouds, scl20)
    scl20 = np.where((weather >= 0.25) & (weather < 0.35), np.uint8(3), scl20)
    scl20[:, (x20 < x_from) | (x20 >= x_to)] = 0
    scl10 = scl20.repeat(2, axis=0).repeat(2, axis=1)
    t20 = Affine(20, 0, left, 0, -20, top)
    t10 = Affine(10, 0, left, 0, -10, top)
    directory = root / "store"
    paths = {"scl": _write(directory, item_id, "scl", scl20, t20, grid.crs)}
    dns: dict[str, np.ndarray] = {}
    for i, band in enumerate(BANDS):
        base = np.zeros(scl10.shape)
        for cls, signature in SIGNATURES.items():
            base[scl10 == cls] = signature[i] * (nir_gain if band == "nir" else 1.0)
        noisy = base * (1 + 0.08 * rng.standard_normal(base.shape))
        dn = np.clip(np.round(noisy), 1, 65535).astype(np.uint16)
        dn[scl10 == 0] = 0
        dns[band] = dn
        paths[band] = _write(directory, item_id, band, dn, t10, grid.crs)
    return Written(item_id, t10, scl10, dns)


def _write(store: Path, item_id: str, band: str, array: np.ndarray, t: Affine, crs: str) -> str:
    key = band_key(COLLECTION, PART, item_id, band)
    path = store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_geotiff(path, array, crs=crs, transform=t)
    return key


def _item(item_id: str, tile: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "geometry": mapping(AOI.buffer(0.01)),
        "bbox": list(AOI.buffer(0.01).bounds),
        "properties": {
            "datetime": f"{DAY}T10:40:00Z",
            "platform": "sentinel-2a",
            "eo:cloud_cover": 30.0,
            "s2:processing_baseline": "02.14",
            "earthsearch:boa_offset_applied": False,
            "mgrs:utm_zone": 31,
            "s2:mgrs_tile": tile,
        },
        "assets": {
            b: {"href": f"s3://sentinel-cogs/{item_id}/{b}.tif", "raster:bands": [{"scale": 1e-4}]}
            for b in (*BANDS, "scl")
        },
        "links": [],
    }


def _ingest(root: Path) -> list[Written]:
    """What stac_items and band_rasters leave in the store for the day."""
    grid = aoi_grid(AOI, 10)
    left, _, right, _ = grid.bounds
    third = (right - left) / 3
    # The middle third is covered by both (20 m edges, so the SCL pixels split cleanly).
    west_end = math.floor((left + 2 * third) / 20) * 20
    east_start = math.floor((left + third) / 20) * 20
    scenes = [
        _scene(root, "S2A_31TEK_20240601_0_L2A", -math.inf, west_end, seed=1, nir_gain=1.0),
        _scene(root, "S2A_31TFK_20240601_0_L2A", east_start, math.inf, seed=2, nir_gain=0.6),
    ]
    day = dt.date.fromisoformat(DAY)
    items = [_item(s.item_id, s.item_id.split("_")[1][2:]) for s in scenes]
    found = DayItems(day=day, items=items, by_aoi={AOI_NAME: [s.item_id for s in scenes]})
    store = root / "store"
    (store / items_key(COLLECTION, PART)).parent.mkdir(parents=True, exist_ok=True)
    (store / items_key(COLLECTION, PART)).write_bytes(
        dumps(to_item_collection(found, api_url="http://127.0.0.1:9/v1", collection=COLLECTION))
    )
    objects = [
        {
            "item_id": s.item_id,
            "aoi": AOI_NAME,
            "band": b,
            "key": band_key(COLLECTION, PART, s.item_id, b),
        }
        for s in scenes
        for b in (*BANDS, "scl")
    ]
    (store / manifest_key(COLLECTION, PART)).parent.mkdir(parents=True, exist_ok=True)
    (store / manifest_key(COLLECTION, PART)).write_bytes(
        dumps({"day": DAY, "collection": COLLECTION, "objects": objects})
    )
    return scenes


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("daily-stats")
    scenes = _ingest(root)
    config = parse_config(
        {
            "stac": {"api_url": "http://127.0.0.1:9/v1"},
            "aois": [{"name": AOI_NAME, "geometry": mapping(AOI)}],
            "bands": [*BANDS, "scl"],
            "partitions": PARTITIONS,
            "storage": {"url": str(root / "store")},
            "warehouse": {"kind": "duckdb", "path": str(root / "w.duckdb")},
            "transform": {"resolution": 10},
        }
    )
    wanted = {SCENE_PRODUCTS, NDVI_COMPOSITE, DAILY_STATS_KEY}
    result = materialize_partition(config, DAY, AOI_NAME, selection=list(wanted))
    assert result.success
    with duckdb.connect(str(root / "w.duckdb"), read_only=True) as con:
        cursor = con.execute("SELECT * FROM daily_aoi_stats")
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    yield {"root": root, "scenes": scenes, "rows": rows, "result": result}


def _on_grid(scene: Written, array: np.ndarray, grid: Grid) -> np.ndarray:
    col = round((grid.transform.c - scene.transform.c) / 10)
    row = round((scene.transform.f - grid.transform.f) / 10)
    return array[row : row + grid.height, col : col + grid.width]


def _expected(scenes: list[Written], grid: Grid) -> dict[str, Any]:
    """The day's statistics from the DNs and classes as written, by the definitions of
    raster/stats.py, in plain numpy (float64)."""
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        *(grid.transform * (cols, rows))
    )
    inside = contains_xy(AOI, lon, lat)
    scl = [_on_grid(s, s.scl10, grid) for s in scenes]
    refl = [{b: _on_grid(s, s.dns[b], grid) * 1e-4 for b in BANDS} for s in scenes]
    valid = [
        inside & ~np.isin(c, INVALID) & np.all([r[b] > 0 for b in BANDS], axis=0)
        for c, r in zip(scl, refl, strict=True)
    ]
    ndvi = np.stack(
        [
            np.where(v, (r["nir"] - r["red"]) / (r["nir"] + r["red"]), np.nan)
            for v, r in zip(valid, refl, strict=True)
        ]
    )
    ndwi = np.stack(
        [
            np.where(v, (r["green"] - r["nir"]) / (r["green"] + r["nir"]), np.nan)
            for v, r in zip(valid, refl, strict=True)
        ]
    )
    any_valid = np.any(valid, axis=0)
    observed = inside & np.any([c != 0 for c in scl], axis=0)
    cloudy = np.any([np.isin(c, CLOUD) for c in scl], axis=0)
    shady = np.any([np.isin(c, SHADOW) for c in scl], axis=0)
    cloud = observed & ~any_valid & cloudy
    shadow = observed & ~any_valid & ~cloudy & shady
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ndvi_mosaic = np.nanmedian(ndvi, axis=0)  # all-NaN pixels warn
    ndwi_mosaic = np.nanmedian(ndwi, axis=0)
    v = ndvi_mosaic[np.isfinite(ndvi_mosaic)]
    w = ndwi_mosaic[np.isfinite(ndwi_mosaic)]
    both = valid[0] & valid[1]
    return {
        "scenes_used": len(scenes),
        "pixels_in_aoi": int(inside.sum()),
        "valid_pixel_fraction": any_valid.sum() / observed.sum(),
        "cloud_fraction": cloud.sum() / observed.sum(),
        "shadow_fraction": shadow.sum() / observed.sum(),
        "ndvi_mean": v.mean(),
        "ndvi_median": np.median(v),
        "ndvi_p10": np.percentile(v, 10),
        "ndvi_p90": np.percentile(v, 90),
        "ndwi_mean": w.mean(),
        # What concatenating every scene's layer gives (the pixels of the overlap twice).
        "_double_counted_ndvi_mean": ndvi[np.isfinite(ndvi)].mean(),
        "_overlap_valid_pixels": int(both.sum()),
    }


def test_daily_stats_count_overlapping_pixels_once(materialized: dict[str, Any]) -> None:
    rows = materialized["rows"]
    assert [r["aoi"] for r in rows] == [AOI_NAME]
    got = rows[0]
    composite = (
        materialized["root"]
        / "store"
        / f"processed/{COLLECTION}/{DAY}/{AOI_NAME}/composite/ndvi_median.tif"
    )
    with rasterio.open(composite) as src:
        grid = Grid(src.crs.to_string(), src.transform, src.width, src.height)
    assert grid == aoi_grid(AOI, 10)
    want = _expected(materialized["scenes"], grid)
    # The case is meaningful: a large overlap whose values differ between the scenes.
    assert want["_overlap_valid_pixels"] > 0.1 * want["pixels_in_aoi"]
    assert abs(want["_double_counted_ndvi_mean"] - want["ndvi_mean"]) > 0.01
    assert got["scenes_used"] == want["scenes_used"]
    assert got["pixels_in_aoi"] == want["pixels_in_aoi"]
    for key in ("valid_pixel_fraction", "cloud_fraction", "shadow_fraction"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["cloud_fraction"] > 0 and got["shadow_fraction"] > 0
    # The products store indices in steps of 1e-4 (raster/encoding.py): a scene's value is
    # within half a step, a median of two scenes' stored values, quantised again, within
    # one step. Means and percentiles move by at most that (the means, over thousands of
    # pixels whose rounding errors cancel, by much less).
    assert got["ndvi_mean"] == pytest.approx(want["ndvi_mean"], abs=1e-4 + 1e-6)
    assert got["ndwi_mean"] == pytest.approx(want["ndwi_mean"], abs=1e-4 + 1e-6)
    for key in ("ndvi_median", "ndvi_p10", "ndvi_p90"):
        assert got[key] == pytest.approx(want[key], abs=PCT_TOL + 1e-4 + 1e-6), key


def _sources(root: Path, scenes: list[Written]) -> tuple[list[Any], str]:
    from geospatial_pipeline.raster.stats import SceneSources

    store = root / "store"
    products = store / f"processed/{COLLECTION}/{DAY}/{AOI_NAME}"
    sources = [
        SceneSources(
            item_id=s.item_id,
            red=str(products / s.item_id / "red.tif"),
            ndwi=str(products / s.item_id / "ndwi.tif"),
            scl=str(store / band_key(COLLECTION, PART, s.item_id, "scl")),
        )
        for s in scenes
    ]
    return sources, str(products / "composite" / "ndvi_median.tif")


def test_strip_size_does_not_change_the_statistics(materialized: dict[str, Any]) -> None:
    from geospatial_pipeline.raster.stats import daily_aoi_stats, grid_of

    sources, composite = _sources(materialized["root"], materialized["scenes"])
    height = grid_of(composite).height
    whole = daily_aoi_stats(AOI, sources, composite, block_rows=height)
    assert whole.row() == pytest.approx(
        {k: materialized["rows"][0][k] for k in whole.row()}, abs=1e-12
    )
    for rows in (1, 7, 64):
        strips = daily_aoi_stats(AOI, sources, composite, block_rows=rows)
        for key in (
            "pixels_in_aoi",
            "pixels_observed",
            "valid_pixels",
            "cloud_pixels",
            "shadow_pixels",
            "ndwi_count",
        ):
            assert getattr(strips, key) == getattr(whole, key), (rows, key)
        np.testing.assert_array_equal(strips.ndvi.counts, whole.ndvi.counts)
        assert strips.row() == pytest.approx(whole.row(), rel=1e-12), rows


@pytest.mark.parametrize("n", [1, 2, 3, 1000, 100_000])
def test_histogram_percentiles_within_one_bin(n: int) -> None:
    from geospatial_pipeline.raster.stats import NDVI_BIN_WIDTH, IndexHistogram

    assert NDVI_BIN_WIDTH <= BIN_WIDTH
    rng = np.random.default_rng(n)
    values = np.clip(rng.normal(0.3, 0.4, n), -1, 1).astype(np.float32)
    values[: min(n, 2)] = [1.0, -1.0][: min(n, 2)]  # both ends of the range
    hist = IndexHistogram.empty()
    for part in np.array_split(values, 7):
        hist.add(part)
    assert hist.n == n
    assert hist.mean() == pytest.approx(float(values.astype(np.float64).mean()), abs=1e-12)
    for q in (0, 1, 10, 25, 50, 75, 90, 99, 100):
        expected = float(np.percentile(values.astype(np.float64), q))
        assert abs(hist.percentile(q) - expected) <= PCT_TOL, q  # type: ignore[operator]
    assert IndexHistogram.empty().percentile(50) is None
