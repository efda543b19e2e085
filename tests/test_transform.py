"""Correctness of the analysis-ready transform, checked against independent computations.

- Real Sentinel-2 COGs (../shared/data, 29RKH at 100/200 m): reflectance, NDVI and the SCL
  mask equal a plain-numpy computation from windows read directly with rasterio.
- The BOA-offset decision: metadata only, for every real recorded item; and synthetic
  scenes whose metadata is wrong in each direction, which the pixel test must catch.
- Two scenes of one AOI in two UTM zones land on the same grid with the same values.
- ``median_composite`` NaN handling; published product COGs + STAC item read back through
  ``odc.stac.load`` equal the arrays that were written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import posixpath
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window
from shapely import contains_xy
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.layout import (
    PRODUCTS_ROOT,
    Partition,
    partition_catalog_key,
    product_dir,
)
from geospatial_pipeline.raster.encoding import quantise, read_physical, stored_range
from geospatial_pipeline.raster.grid import Grid, aoi_grid, utm_epsg
from geospatial_pipeline.raster.reflectance import (
    ABSENT_SHARE,
    BOA_OFFSET_DN,
    metadata_offset_present,
)
from geospatial_pipeline.raster.scene import (
    SceneLayers,
    SceneMeta,
    TransformSettings,
    encode_layer,
    median_composite,
    scene_meta,
    transform_scene,
    value_range,
)
from geospatial_pipeline.stac.products import (
    LayerObject,
    product_item,
    validate_product_item,
    with_catalog_links,
)
from tests.conftest import EARTH_SEARCH, S2_COGS, require_shared_data
from tests.geotiff import write_geotiff
from tests.numpy_reference import to_reflectance

INVALID_SCL = (0, 1, 3, 8, 9, 10)
REAL_FILES = {"red": "B04.tif", "green": "B03.tif", "blue": "B02.tif", "nir": "B08.tif"}
REAL_EPSG = "EPSG:32629"
# 199980 / 2800020 modulo 100 m: the decimated files' pixel edges.
REAL_ANCHOR = (80.0, 20.0)
AOI_DESERT = box(-11.60, 24.60, -11.40, 24.80)  # SCL 5 only
AOI_CLOUDS = box(-11.10, 25.13, -10.95, 25.22)  # SCL 5 with 8, 9 and 10 (north-east corner)
# F32 tolerances: reflectance is DN * 1e-4 in float32 (~6e-8 relative error).
RTOL = 1e-6

WriteRaster = Callable[..., str]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def write_raster(tmp_path: Path) -> WriteRaster:
    """Write a small single-band GeoTIFF (tiled, DEFLATE) in any CRS, bounds and dtype.

    ``write_raster(name, array, crs=..., bounds=(left, bottom, right, top))`` or with
    ``transform=`` instead of ``bounds=``; returns the file path.
    """

    def write(name: str, array: np.ndarray, **grid: Any) -> str:
        return write_geotiff(tmp_path / f"{name}.tif", array, **grid)

    return write


@pytest.fixture(scope="module")
def real_paths() -> dict[str, str]:
    require_shared_data()
    if not S2_COGS.is_dir():
        pytest.skip(f"real COGs not found at {S2_COGS}")
    return {**{b: str(S2_COGS / f) for b, f in REAL_FILES.items()}, "scl": str(S2_COGS / "SCL.tif")}


def real_settings() -> TransformSettings:
    return TransformSettings(
        resolution=100, crs=REAL_EPSG, grid_anchor=REAL_ANCHOR, resampling="nearest"
    )


def real_grid(aoi: BaseGeometry) -> Grid:
    return aoi_grid(aoi, 100, REAL_EPSG, anchor=REAL_ANCHOR)


def pixel_centres_inside(aoi: BaseGeometry, grid: Grid) -> np.ndarray:
    """AOI membership of the grid's pixel centres, by projecting the centres to lon/lat
    (the pipeline projects the AOI to the grid instead)."""
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    xs, ys = grid.transform * (cols, rows)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return contains_xy(aoi, lon, lat)


def read_grid_window(path: str, grid: Grid) -> np.ndarray:
    """The source pixels under ``grid`` read directly with rasterio. For a source coarser
    than the grid by an integer factor (SCL at 2x), the covering window is read and each
    pixel repeated (np.repeat), then trimmed to the grid."""
    with rasterio.open(path) as src:
        t = src.transform
        factor = t.a / grid.transform.a
        assert factor.is_integer() and -t.e == t.a and -grid.transform.e == grid.transform.a
        k = int(factor)
        # The grid's edges in the grid's pixels, counted from the file's corner.
        col = (grid.transform.c - t.c) / grid.transform.a
        row = (t.f - grid.transform.f) / grid.transform.a
        assert col.is_integer() and row.is_integer(), f"grid not aligned with {path}"
        col0, row0 = int(col) // k, int(row) // k
        col1 = -(-(int(col) + grid.width) // k)
        row1 = -(-(int(row) + grid.height) // k)
        coarse = src.read(1, window=Window(col0, row0, col1 - col0, row1 - row0))
    fine = coarse.repeat(k, axis=0).repeat(k, axis=1)
    r, c = int(row) - row0 * k, int(col) - col0 * k
    return fine[r : r + grid.height, c : c + grid.width]


# --------------------------------------------------------------------------- 1. real data


@pytest.mark.parametrize("aoi", [AOI_DESERT, AOI_CLOUDS], ids=["desert", "clouds"])
def test_real_scene_matches_independent_numpy(
    real_paths: dict[str, str], real_items: dict[str, dict[str, Any]], aoi: BaseGeometry
) -> None:
    grid = real_grid(aoi)
    meta = scene_meta(real_items["S2A_29RKH_20200219_0_L2A"])
    assert (meta.baseline, meta.boa_offset_applied) == ("02.14", False)
    scene = transform_scene(real_paths, aoi, grid, meta, real_settings())

    # Independent: source windows read with rasterio, SCL (200 m) doubled by np.repeat.
    dn = {b: read_grid_window(real_paths[b], grid).astype(np.float64) for b in REAL_FILES}
    scl = read_grid_window(real_paths["scl"], grid)  # 200 m repeated 2x
    assert scl.shape == grid.shape
    inside = pixel_centres_inside(aoi, grid)
    has_data = inside & (scl != 0)
    for arr in dn.values():
        has_data &= arr != 0
    invalid_class = np.isin(scl, INVALID_SCL)
    valid = has_data & ~invalid_class

    # The scene is 02.14 (no +1000 in the DNs): nothing may be subtracted.
    assert scene.decision.offset_dn == 0
    assert scene.decision.pixel_verdict != "present"
    np.testing.assert_array_equal(scene.valid, valid)
    for band, arr in dn.items():
        out = scene.layers[band]
        assert out.shape == grid.shape and out.dtype == np.float32
        # NaN exactly where the pixel is invalid (outside, no data, or a masked class)...
        np.testing.assert_array_equal(np.isnan(out), ~valid, err_msg=band)
        # ...and DN * 1e-4 everywhere else.
        np.testing.assert_allclose(out[valid], arr[valid] * 1e-4, rtol=RTOL, err_msg=band)
    nir, red = dn["nir"] * 1e-4, dn["red"] * 1e-4
    ndvi = (nir - red) / (nir + red)
    np.testing.assert_array_equal(np.isnan(scene.layers["ndvi"]), ~valid)
    np.testing.assert_allclose(scene.layers["ndvi"][valid], ndvi[valid], rtol=0, atol=1e-6)
    green = dn["green"] * 1e-4
    ndwi = (green - nir) / (green + nir)
    np.testing.assert_allclose(scene.layers["ndwi"][valid], ndwi[valid], rtol=0, atol=1e-6)

    # The mask removes exactly the invalid classes inside the AOI, nothing else.
    n_inside = int(inside.sum())
    assert scene.stats["pixels_in_aoi"] == n_inside
    assert scene.stats["valid_pixels"] == n_inside - int((inside & invalid_class).sum())
    clouds = inside & np.isin(scl, (8, 9, 10))
    assert scene.stats["cloud_fraction"] == pytest.approx(clouds.sum() / n_inside)
    if aoi is AOI_CLOUDS:
        # The mask is exercised: every cloud class is present, and clear pixels remain.
        present = set(np.unique(scl[inside]).tolist())
        assert {5, 8, 9, 10} <= present
        assert 0.3 < clouds.sum() / n_inside < 0.9
        assert np.isnan(scene.layers["red"][clouds]).all()
        assert np.isfinite(scene.layers["red"][inside & (scl == 5)]).all()
    else:
        assert scene.stats["valid_pixel_fraction"] == 1.0


# --------------------------------------------------------------------------- 2. metadata


def _real_item_ids() -> list[str]:
    return sorted(p.stem for p in (EARTH_SEARCH / "items").glob("*.json"))


def test_all_real_items_recorded(real_items: dict[str, dict[str, Any]]) -> None:
    assert len(real_items) == 17


@pytest.mark.parametrize("item_id", _real_item_ids())
def test_metadata_offset_decision_real_items(
    real_items: dict[str, dict[str, Any]], item_id: str
) -> None:
    meta = scene_meta(real_items[item_id])
    if item_id.endswith("_0_L2A"):
        # Baseline 02.14 predates the +1000 offset.
        assert (meta.baseline, meta.boa_offset_applied, meta.raster_offset) == ("02.14", False, 0)
    else:
        # Reprocessed 05.00 that Earth Search already harmonized: raster:bands still says
        # -0.1, which must NOT be applied on top.
        assert (meta.baseline, meta.boa_offset_applied) == ("05.00", True)
        assert meta.raster_offset == pytest.approx(-0.1)
    assert meta.scale == pytest.approx(1e-4)
    assert metadata_offset_present(meta.baseline, meta.boa_offset_applied) is False


@pytest.mark.parametrize(
    ("baseline", "flag", "present"),
    [
        ("02.14", False, False),
        ("03.01", None, False),
        ("04.00", False, True),
        ("05.00", None, True),
        ("05.00", True, False),
        ("05.10", False, True),
        (None, None, False),
        ("garbage", False, False),
    ],
)
def test_metadata_offset_rule(baseline: str | None, flag: bool | None, present: bool) -> None:
    assert metadata_offset_present(baseline, flag) is present


# --------------------------------------------------------------------------- 3. pixel test

SYN_EPSG = "EPSG:32631"
SYN_AOI = box(3.00, 45.00, 3.02, 45.015)  # ~1.6 km x 1.7 km: 160 x 170 px at 10 m
# Surface reflectance x 10000 (harmonized DNs): vegetation, water, bare desert, cloud.
SIGNATURES = {
    4: {"red": 300, "green": 800, "blue": 350, "nir": 3800},
    6: {"red": 450, "green": 650, "blue": 600, "nir": 200},
    5: {"red": 3400, "green": 2400, "blue": 1700, "nir": 3900},
    9: {"red": 6600, "green": 6500, "blue": 6400, "nir": 6900},
}


def synthetic_scene(
    write_raster: WriteRaster,
    name: str,
    aoi: BaseGeometry,
    classes: tuple[int, ...],
    add_dn: int,
    seed: int = 0,
    nodata_cols: int = 0,
    signatures: dict[int, dict[str, int]] = SIGNATURES,
) -> tuple[dict[str, str], np.ndarray, dict[str, np.ndarray]]:
    """10 m bands + 20 m SCL on the 10 m grid of ``aoi`` (plus a margin): SCL stripes of
    ``classes`` every 100 m, DNs = class signature + noise + ``add_dn``; the first
    ``nodata_cols`` 20 m columns are outside the swath (SCL 0, DN 0). Returns the paths,
    the 10 m SCL and the 10 m DNs as written."""
    grid = aoi_grid(aoi, 10)
    left, bottom, right, top = grid.bounds
    margin = 200
    left, bottom = (math.floor((v - margin) / 20) * 20 for v in (left, bottom))
    right, top = (math.ceil((v + margin) / 20) * 20 for v in (right, top))
    h20, w20 = round((top - bottom) / 20), round((right - left) / 20)
    cols = np.arange(w20)
    scl20 = np.tile(np.asarray(classes, np.uint8)[(cols // 5) % len(classes)], (h20, 1))
    scl20[:, :nodata_cols] = 0
    scl10 = scl20.repeat(2, axis=0).repeat(2, axis=1)
    rng = np.random.default_rng(seed)
    paths = {
        "scl": write_raster(f"{name}_scl", scl20, crs=grid.crs, bounds=(left, bottom, right, top))
    }
    dns: dict[str, np.ndarray] = {}
    for band in ("red", "green", "blue", "nir"):
        base = np.zeros(scl10.shape)
        for cls in classes:
            base[scl10 == cls] = signatures[cls][band]
        noisy = base * (1 + 0.05 * rng.standard_normal(base.shape)) + add_dn
        dns[band] = np.clip(np.round(noisy), 1, 65535).astype(np.uint16)
        dns[band][scl10 == 0] = 0
        paths[band] = write_raster(
            f"{name}_{band}", dns[band], crs=grid.crs, bounds=(left, bottom, right, top)
        )
    return paths, scl10, dns


def run_synthetic(
    paths: dict[str, str], aoi: BaseGeometry, baseline: str, flag: bool
) -> tuple[SceneLayers, np.ndarray]:
    grid = aoi_grid(aoi, 10)
    assert grid.crs == SYN_EPSG
    meta = SceneMeta(baseline=baseline, boa_offset_applied=flag, raster_offset=-0.1)
    scene = transform_scene(paths, aoi, grid, meta, TransformSettings())
    scl = read_grid_window(paths["scl"], grid)
    return scene, scl


def test_pixels_overrule_metadata_offset_present_but_harmonized(
    write_raster: WriteRaster,
) -> None:
    # (a) 05.00 with flag false: metadata says +1000 is in the DNs; the pixels are
    # harmonized (Earth Search #66/#71): vegetation red ~300 DN, water nir ~200 DN.
    paths, _, _ = synthetic_scene(write_raster, "a", SYN_AOI, (4, 6, 9), 0, nodata_cols=30)
    scene, scl = run_synthetic(paths, SYN_AOI, "05.00", False)
    inside = pixel_centres_inside(SYN_AOI, scene.grid)
    swath = inside & (scl != 0)
    assert 0.1 < (inside & (scl == 0)).sum() / inside.sum() < 0.5
    assert scene.stats["pixels_in_aoi"] == inside.sum()
    assert scene.stats["pixels_with_data"] == swath.sum()
    assert scene.stats["valid_pixels"] == (swath & (scl != 9)).sum()
    assert scene.stats["cloud_fraction"] == pytest.approx((swath & (scl == 9)).sum() / swath.sum())
    assert np.isnan(scene.layers["nir"][scl == 0]).all()
    d = scene.decision
    assert d.metadata_offset_present is True
    assert (d.pixel_verdict, d.offset_dn, d.decided_by, d.disagreement) == (
        "absent",
        0,
        "pixels",
        True,
    )
    veg, water = scene.valid & (scl == 4), scene.valid & (scl == 6)
    assert veg.sum() > 1000 and water.sum() > 1000
    assert not (scene.valid & (scl == 9)).any()  # clouds masked
    assert np.nanmedian(scene.layers["red"][veg]) == pytest.approx(0.03, abs=0.002)
    assert np.nanmedian(scene.layers["nir"][water]) == pytest.approx(0.02, abs=0.002)
    assert np.nanmedian(scene.layers["ndvi"][veg]) == pytest.approx(
        (0.38 - 0.03) / (0.38 + 0.03), abs=0.01
    )
    assert scene.stats["negative_reflectance_share"] == 0.0

    # The documented pixel test: share of the red, green and NIR values of valid land
    # pixels (SCL 4, 5; here vegetation only) below 1000 DN. Water is not evidence.
    land = scene.valid & np.isin(scl, (4, 5))
    dns = [scene.layers[b][land] / 1e-4 for b in ("red", "green", "nir")]
    below = float(np.mean(np.concatenate(dns) < BOA_OFFSET_DN))
    assert d.share_below_offset == pytest.approx(below, abs=1e-5)
    assert d.evidence_values == sum(v.size for v in dns)
    assert below > 0.5 > ABSENT_SHARE
    # Following the metadata (removing 1000 DN) would have made exactly those negative.
    wrong = [to_reflectance(v, np.ones(v.shape, bool), BOA_OFFSET_DN) for v in dns]
    assert float(np.mean(np.concatenate(wrong) < 0)) == pytest.approx(below, abs=1e-5)
    assert np.median(wrong[0]) == pytest.approx(-0.07, abs=0.002)


def test_pixels_overrule_metadata_offset_absent_but_carried(write_raster: WriteRaster) -> None:
    # (b) 05.00 with flag true: metadata says harmonized; the DNs still carry +1000.
    paths, _, raw = synthetic_scene(write_raster, "b", SYN_AOI, (4, 6, 9), add_dn=1000)
    scene, scl = run_synthetic(paths, SYN_AOI, "05.00", True)
    d = scene.decision
    assert d.metadata_offset_present is False
    assert (d.pixel_verdict, d.offset_dn, d.decided_by, d.disagreement) == (
        "present",
        1000,
        "pixels",
        True,
    )
    assert d.share_below_offset == 0.0
    assert d.dark_p5_dn is not None and 1000 < d.dark_p5_dn < 1600
    veg, water = scene.valid & (scl == 4), scene.valid & (scl == 6)
    assert np.nanmedian(scene.layers["red"][veg]) == pytest.approx(0.03, abs=0.002)
    assert np.nanmedian(scene.layers["nir"][water]) == pytest.approx(0.02, abs=0.002)
    assert np.nanmedian(scene.layers["ndvi"][veg]) == pytest.approx(0.854, abs=0.01)
    # Following the metadata (no removal) would leave vegetation red at ~0.13 and its
    # NDVI at ~0.6: every dark pixel 0.1 too bright.
    grid = aoi_grid(SYN_AOI, 10)
    red_dn = read_grid_window(paths["red"], grid).astype(np.float32)
    wrong = to_reflectance(red_dn, scene.valid, 0)
    assert np.nanmedian(wrong[veg]) == pytest.approx(0.13, abs=0.003)
    np.testing.assert_allclose(
        wrong[scene.valid] - scene.layers["red"][scene.valid], 0.1, atol=1e-6
    )
    assert raw["red"].min() >= 1000


@pytest.mark.parametrize(
    ("baseline", "flag", "add_dn"),
    [("05.00", False, 1000), ("05.00", True, 0), ("02.14", False, 0)],
)
def test_bright_desert_is_inconclusive_and_metadata_decides(
    write_raster: WriteRaster, baseline: str, flag: bool, add_dn: int
) -> None:
    # (c) No dark surface and nothing below 1000 DN: the pixels cannot tell.
    paths, _, _ = synthetic_scene(write_raster, "c", SYN_AOI, (5,), add_dn=add_dn)
    scene, _ = run_synthetic(paths, SYN_AOI, baseline, flag)
    d = scene.decision
    assert d.pixel_verdict == "inconclusive"
    assert d.dark_pixels == 0
    assert (d.decided_by, d.disagreement) == ("metadata", False)
    assert d.offset_dn == add_dn == (1000 if metadata_offset_present(baseline, flag) else 0)
    assert np.nanmedian(scene.layers["red"]) == pytest.approx(0.34, abs=0.005)


def test_bright_vegetation_is_inconclusive(write_raster: WriteRaster) -> None:
    # Vegetation (SCL 4) whose red/blue sit well above a +1000 floor (5th percentile
    # > DARK_CEILING_DN): no evidence either way, the metadata (+1000 present) decides.
    sparse = {4: {"red": 1500, "green": 1600, "blue": 1200, "nir": 3000}}
    paths, _, _ = synthetic_scene(write_raster, "v", SYN_AOI, (4,), 1000, signatures=sparse)
    scene, _ = run_synthetic(paths, SYN_AOI, "05.00", False)
    d = scene.decision
    assert d.dark_pixels > 1000 and d.dark_p5_dn is not None and d.dark_p5_dn > 1600
    assert (d.pixel_verdict, d.offset_dn, d.decided_by) == ("inconclusive", 1000, "metadata")
    assert np.nanmedian(scene.layers["blue"]) == pytest.approx(0.12, abs=0.003)


# --------------------------------------------------------------------------- 4. two zones

ZONE_AOI = box(11.97, 47.00, 12.03, 47.03)  # straddles 12E, the zone 32/33 boundary


def ground_dn(lon: np.ndarray, lat: np.ndarray, band: str) -> np.ndarray:
    """A smooth function of position on the ground (DN), different per band."""
    x = (lon - 12.0) * 111_320 * math.cos(math.radians(47.0))
    y = (lat - 47.0) * 111_320
    phase = {"red": 0.0, "green": 0.7, "blue": 1.3, "nir": 2.1}[band]
    base = {"red": 2500.0, "green": 2000.0, "blue": 1500.0, "nir": 3500.0}[band]
    return base + 800 * np.sin(2 * np.pi * x / 1500 + phase) * np.cos(2 * np.pi * y / 1100)


def zone_scene(write_raster: WriteRaster, epsg: int) -> dict[str, str]:
    """The ground sampled on a 10 m grid of UTM zone ``epsg`` covering ZONE_AOI + 500 m."""
    crs = f"EPSG:{epsg}"
    g = aoi_grid(ZONE_AOI.buffer(0.008), 20, crs)  # 20 m edges: SCL and bands align
    left, top = g.transform.c, g.transform.f
    t10 = Affine(10, 0, left, 0, -10, top)
    cols, rows = np.meshgrid(np.arange(g.width * 2) + 0.5, np.arange(g.height * 2) + 0.5)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        *(t10 * (cols, rows))
    )
    paths = {
        "scl": write_raster(
            f"z{epsg}_scl", np.full(g.shape, 5, np.uint8), crs=crs, transform=g.transform
        )
    }
    for band in ("red", "green", "blue", "nir"):
        dn = np.round(ground_dn(lon, lat, band)).astype(np.uint16)
        paths[band] = write_raster(f"z{epsg}_{band}", dn, crs=crs, transform=t10)
    return paths


def test_two_utm_zones_land_on_one_grid(write_raster: WriteRaster) -> None:
    c = ZONE_AOI.centroid
    assert ZONE_AOI.bounds[0] < 12.0 < ZONE_AOI.bounds[2]
    grid = aoi_grid(ZONE_AOI, 10)
    assert grid.crs == f"EPSG:{utm_epsg(c.x, c.y)}" == "EPSG:32633"
    meta = SceneMeta(baseline="02.14", boa_offset_applied=False, raster_offset=0)
    settings = TransformSettings(resampling="bilinear")
    west = transform_scene(zone_scene(write_raster, 32632), ZONE_AOI, grid, meta, settings)
    east = transform_scene(zone_scene(write_raster, 32633), ZONE_AOI, grid, meta, settings)
    assert west.grid == east.grid == grid
    for scene in (west, east):
        assert scene.decision.offset_dn == 0
        for arr in scene.layers.values():
            assert arr.shape == grid.shape
    both = west.valid & east.valid
    inside = pixel_centres_inside(ZONE_AOI, grid)
    np.testing.assert_array_equal(both, inside)  # full coverage: the whole AOI is valid

    # Truth at the grid's pixel centres.
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        *(grid.transform * (cols, rows))
    )
    for band in ("red", "green", "blue", "nir"):
        truth = ground_dn(lon, lat, band)[both] * 1e-4
        w, e = west.layers[band][both], east.layers[band][both]
        # East was sampled on this very grid: only uint16 rounding (0.5 DN).
        np.testing.assert_allclose(e, truth, rtol=0, atol=0.51e-4, err_msg=band)
        # West was reprojected across zones (grids rotated ~4.4 degrees against each
        # other). GDAL widens its bilinear kernel when the rotated pixel footprint looks
        # like a downsampling (scale < 1): measured max 3.1 DN, mean 0.8 DN, against 0.5 DN
        # for a plain 2x2 bilinear. A half-pixel shift would give ~20 DN, a pixel ~45 DN.
        np.testing.assert_allclose(w, truth, rtol=0, atol=4e-4, err_msg=band)
        np.testing.assert_allclose(w, e, rtol=0, atol=4.5e-4, err_msg=band)
        assert float(np.mean(np.abs(w - truth))) < 1.2e-4, band
    # NDVI: |d ndvi| <= 2 (nir |d red| + red |d nir|) / (nir + red)^2 <= 2 d / (nir + red)
    # with d the band tolerance above.
    red, nir = east.layers["red"][both], east.layers["nir"][both]
    bound = 2 * 4.5e-4 / (red + nir)
    diff = np.abs(west.layers["ndvi"][both] - east.layers["ndvi"][both])
    assert (diff <= bound).all(), float((diff / bound).max())


# --------------------------------------------------------------------------- 5. composite


def test_median_composite_nan_handling() -> None:
    nan = np.nan
    layers = [
        np.array([[1.0, nan, nan, 4.0, 0.5]], np.float32),
        np.array([[10.0, nan, 2.0, nan, nan]], np.float32),
        np.array([[2.0, nan, nan, 8.0, nan]], np.float32),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the all-NaN pixel must not warn either
        out = median_composite(layers)
    assert out.dtype == np.float32 and out.shape == (1, 5)
    # median of 1, 10, 2 (not the mean 4.33); all-NaN -> NaN; the only valid value; the
    # median of 4 and 8 (a NaN taken as a value would give 8); the only valid value.
    np.testing.assert_array_equal(out, np.array([[2.0, nan, 2.0, 6.0, 0.5]], np.float32))
    single = median_composite([layers[1]])
    np.testing.assert_array_equal(single, layers[1])
    with pytest.raises(ValueError):
        median_composite([])


# --------------------------------------------------------------------------- 6. products

PRODUCT_LAYERS = ("red", "green", "blue", "nir", "ndvi", "ndwi")


def test_product_cogs_and_item_load_back_with_odc_stac(
    real_paths: dict[str, str], real_items: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import odc.stac
    import pystac

    source = real_items["S2A_29RKH_20200219_0_L2A"]
    grid = real_grid(AOI_CLOUDS)
    scene = transform_scene(real_paths, AOI_CLOUDS, grid, scene_meta(source), real_settings())
    part = Partition(dt.date(2020, 2, 19), "clouds")
    directory = product_dir("sentinel-2-l2a", part, source["id"])
    item_key = posixpath.join(directory, "item.json")
    layers: list[LayerObject] = []
    for name in PRODUCT_LAYERS:
        data = encode_layer(scene.layers[name], grid)
        key = posixpath.join(directory, f"{name}.tif")
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
        layers.append(LayerObject(name, key, len(data), hashlib.sha256(data).hexdigest()))
    doc = product_item(
        item_id=f"{source['id']}__clouds",
        item_key=item_key,
        acquired=source["properties"]["datetime"],
        grid=grid,
        layers=layers,
        source_hrefs=["https://example.invalid/items/" + source["id"]],
        processing_datetime="2026-01-01T00:00:00Z",
        software_version="test",
        lineage="test",
        extra_properties={"geospatial_pipeline:offset_dn": scene.decision.offset_dn},
    )
    doc = with_catalog_links(
        doc, item_key, partition_catalog_key("sentinel-2-l2a", part), PRODUCTS_ROOT
    )
    assert validate_product_item(doc) == []
    assert doc["assets"]["red"]["href"] == "./red.tif"
    (tmp_path / item_key).write_text(json.dumps(doc))

    item = pystac.Item.from_file(str(tmp_path / item_key))
    ds = odc.stac.load([item], bands=list(PRODUCT_LAYERS), chunks=None)
    assert ds.odc.geobox.shape == grid.shape
    assert ds.odc.geobox.affine == grid.transform
    assert ds.odc.geobox.crs.epsg == grid.epsg
    for name in PRODUCT_LAYERS:
        loaded = ds[name].isel(time=0).values
        with rasterio.open(tmp_path / posixpath.join(directory, f"{name}.tif")) as src:
            cog = src.read(1)
            assert src.transform == grid.transform
        # odc-stac 0.5.3 returns the stored integers (it does not apply raster:bands
        # scale/offset, opendatacube/odc-stac#55): a reader applies them from the item.
        assert loaded.dtype == np.int16
        np.testing.assert_array_equal(loaded, cog, err_msg=name)
        band = item.assets[name].extra_fields["raster:bands"][0]
        physical = np.where(
            loaded == band["nodata"], np.nan, loaded * band["scale"] + band["offset"]
        )
        expected = scene.layers[name]
        np.testing.assert_array_equal(np.isnan(physical), np.isnan(expected), err_msg=name)
        ok = ~np.isnan(expected)
        assert ok.any() and (~ok).any()
        # Reflectance DN x 1e-4 is stored exactly (float32 rounding left), indices
        # within half a step.
        tolerance = 1.2e-7 if name in ("red", "green", "blue", "nir") else 5e-5 + 1e-7
        assert np.abs(physical[ok] - expected[ok]).max() <= tolerance, name


def test_blocked_transform_equals_whole(tmp_path: Path) -> None:
    """Strip-by-strip processing (large AOIs) gives exactly the whole-array products, for
    an aligned nearest grid and a resampled bilinear one, with strips not dividing the
    grid evenly."""

    from geospatial_pipeline.raster.scene import (
        median_composite,
        median_composite_from_paths,
        transform_scene_blocked,
    )

    paths = {
        b: str(S2_COGS / f)
        for b, f in {
            "red": "B04.tif",
            "green": "B03.tif",
            "blue": "B02.tif",
            "nir": "B08.tif",
            "scl": "SCL.tif",
        }.items()
    }
    aoi = box(-11.10, 25.05, -10.95, 25.22)  # holds cloud classes 8, 9, 10
    meta = SceneMeta("02.14", False, None)
    for settings in (
        TransformSettings(
            resolution=100, crs="EPSG:32629", grid_anchor=(80, 20), resampling="nearest"
        ),
        TransformSettings(resolution=30, resampling="bilinear"),
    ):
        grid = aoi_grid(aoi, settings.resolution, settings.crs, settings.anchor)
        whole = transform_scene(paths, aoi, grid, meta, settings)
        work = tmp_path / settings.resampling
        work.mkdir()
        blocked = transform_scene_blocked(
            paths, aoi, grid, meta, settings, block_rows=37, workdir=work
        )
        assert blocked.stats == whole.stats
        assert blocked.decision.offset_dn == whole.decision.offset_dn
        assert blocked.decision.pixel_verdict == whole.decision.pixel_verdict
        for name, expected in whole.layers.items():
            # The same bytes as the whole-array encoding, so a re-run that switches path
            # rewrites nothing.
            assert blocked.cogs[name].read_bytes() == encode_layer(expected, grid), name
            with rasterio.open(blocked.cogs[name]) as ds:
                got = ds.read(1)
                assert ds.transform == grid.transform
            np.testing.assert_array_equal(got, quantise(expected))
            assert blocked.ranges[name] == value_range(expected)
        ndvi_paths = []
        for i in range(2):
            path = tmp_path / f"ndvi{i}.tif"
            path.write_bytes(
                blocked.cogs["ndvi"].read_bytes()
                if i == 0
                else encode_layer(whole.layers["ndvi"] * 0.5, grid)
            )
            ndvi_paths.append(str(path))
        composite, span = median_composite_from_paths(ndvi_paths, grid, block_rows=50, workdir=work)
        # The median of the physical values the two files hold, then quantised.
        inputs = []
        for path in ndvi_paths:
            with rasterio.open(path) as ds:
                inputs.append(read_physical(ds))
        expected_median = quantise(median_composite(inputs))
        with rasterio.open(composite) as ds:
            assert (ds.dtypes, ds.scales) == (("int16",), (1e-4,))
            np.testing.assert_array_equal(ds.read(1), expected_median)
        assert span == stored_range(expected_median)
