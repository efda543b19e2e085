"""The compiled transform pass and AOI rasterizer against plain numpy and GDAL.

``scene_pass`` must give bit for bit what the numpy definitions in
``tests/numpy_reference.py`` give (``to_reflectance``, ``normalized_difference``), with
every input placed on the grid at awkward offsets: bands that cover only part of the grid,
SCL at 20 m starting half a pixel-pair off, no-data DNs, resampled float inputs with NaN,
and no blue band.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry import MultiPolygon, Polygon, box, mapping

from geospatial_pipeline.raster import kernels as K
from geospatial_pipeline.raster.grid import Grid, aoi_mask
from geospatial_pipeline.raster.reflectance import (
    BOA_OFFSET_DN,
    DARK_SCL_CLASSES,
    EVIDENCE_SCL_CLASSES,
    NEGATIVE_OK_SCL_CLASSES,
)
from geospatial_pipeline.raster.scene import (
    CLOUD_SCL,
    SHADOW_SCL,
    RawScene,
    SceneMeta,
    TransformSettings,
    median_composite,
    transform_raw,
)
from geospatial_pipeline.raster.window import project_geometry
from tests.numpy_reference import normalized_difference, to_reflectance

H, W = 41, 57  # odd sizes: partial SCL pixel pairs at the edges
BANDS = ("red", "green", "blue", "nir")
INVALID_SCL = TransformSettings().invalid_scl


def _expand(array: np.ndarray, row: int, col: int, k: int, fill: Any) -> np.ndarray:
    """The grid-shaped view of a placed input, the slow obvious way."""
    rows = (np.arange(H) - row) // k
    cols = (np.arange(W) - col) // k
    out = np.full((H, W), fill, dtype=np.result_type(array.dtype, type(fill)))
    ok_r = (rows >= 0) & (rows < array.shape[0])
    ok_c = (cols >= 0) & (cols < array.shape[1])
    out[np.ix_(ok_r, ok_c)] = array[np.ix_(rows[ok_r], cols[ok_c])]
    return out


def _spans(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A boolean mask as the kernel's column spans per row."""
    row_ptr, c0, c1 = [0], [], []
    for row in mask:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        c0 += list(edges[::2])
        c1 += list(edges[1::2])
        row_ptr.append(len(c0))
    return (
        np.array(row_ptr, dtype=np.int64),
        np.array(c0, dtype=np.int64),
        np.array(c1, dtype=np.int64),
    )


def _reference(
    dns: dict[str, np.ndarray],
    scl: np.ndarray,
    inside: np.ndarray,
    offset_dn: int,
    scale: float,
) -> dict[str, Any]:
    """Numpy definitions on grid-shaped inputs (NaN = no data)."""
    has = inside & (scl != 0)
    for dn in dns.values():
        has &= np.isfinite(dn)
    valid = has & ~np.isin(scl, INVALID_SCL)
    layers = {b: to_reflectance(dn, valid, offset_dn, scale) for b, dn in dns.items()}
    layers["ndvi"] = normalized_difference(layers["nir"], layers["red"])
    layers["ndwi"] = normalized_difference(layers["green"], layers["nir"])
    # Offset evidence: red, green and NIR of land pixels; the floor: red of vegetation.
    land = valid & np.isin(scl, EVIDENCE_SCL_CLASSES)
    positive = [dns[b][land] for b in ("red", "green", "nir")]
    dark = valid & np.isin(scl, DARK_SCL_CLASSES)
    values = dns["red"][dark]
    values = values[values > 0]
    hist = np.bincount(np.rint(values).astype(np.int64), minlength=K.HIST_BINS)
    gated = valid & ~np.isin(scl, NEGATIVE_OK_SCL_CLASSES)
    counts = np.zeros(K.N_COUNTS, dtype=np.int64)
    counts[K.C_INSIDE] = inside.sum()
    counts[K.C_DATA] = has.sum()
    counts[K.C_VALID] = valid.sum()
    counts[K.C_CLOUD] = (has & np.isin(scl, CLOUD_SCL)).sum()
    counts[K.C_SHADOW] = (has & np.isin(scl, SHADOW_SCL)).sum()
    counts[K.C_NEGATIVE] = sum(int((layers[b][gated] < 0).sum()) for b in dns)
    counts[K.C_GATED] = gated.sum()
    counts[K.C_POSITIVE] = sum(int((v > 0).sum()) for v in positive)
    counts[K.C_BELOW] = sum(int(((v > 0) & (v < BOA_OFFSET_DN)).sum()) for v in positive)
    return {"layers": layers, "valid": valid, "hist": hist, "counts": counts}


def _run(
    placed: dict[str, tuple[np.ndarray, int, int, Any]],
    scl: tuple[np.ndarray, int, int, int],
    inside: np.ndarray,
    offset_dn: int,
    *,
    write: bool = True,
) -> dict[str, Any]:
    has_blue = "blue" in placed
    order = [placed[b] if b in placed else placed["red"] for b in BANDS]
    out = np.full((6, H, W), -7.0, dtype=np.float32)  # garbage: every pixel must be written
    valid = np.ones((H, W), dtype=bool)
    hist = np.zeros(K.HIST_BINS, dtype=np.int64)
    counts = np.zeros(K.N_COUNTS, dtype=np.int64)
    red_dtype = order[0][0].dtype
    K.scene_pass(
        *(p[0] for p in order),
        has_blue,
        np.array([(p[1], p[2]) for p in order], dtype=np.int64),
        tuple(p[3] for p in order),
        scl[0],
        np.array(scl[1:3], dtype=np.int64),
        scl[3],
        K.class_flags(
            INVALID_SCL,
            CLOUD_SCL,
            SHADOW_SCL,
            EVIDENCE_SCL_CLASSES,
            DARK_SCL_CLASSES,
            NEGATIVE_OK_SCL_CLASSES,
        ),
        _spans(inside),
        np.float32(offset_dn),
        np.float32(1e-4),
        red_dtype.type(BOA_OFFSET_DN),
        write,
        True,
        out,
        valid,
        hist,
        counts,
    )
    layers = {name: out[i] for i, name in enumerate(K.LAYERS) if name != "blue" or has_blue}
    return {"layers": layers, "valid": valid, "hist": hist, "counts": counts}


def _scene(rng: np.random.Generator, dtype: str, has_blue: bool) -> dict[str, Any]:
    """Random inputs: DNs spanning 'below the offset' to bright, some 0 (no data) or NaN."""
    placed: dict[str, tuple[np.ndarray, int, int, Any]] = {}
    grid_dns: dict[str, np.ndarray] = {}
    origins = {"red": (0, 0), "green": (-2, 3), "blue": (1, -4), "nir": (-3, -1)}
    for band in BANDS if has_blue else ("red", "green", "nir"):
        row, col = origins[band]
        shape = (H - row - 2, W - col + 1) if band != "red" else (H, W)
        dn = rng.integers(0, 4000, size=shape)
        dn[rng.random(shape) < 0.03] = 0
        if dtype == "uint16":
            array, nodata, fill = dn.astype(np.uint16), np.uint16(0), 0
        else:  # as GDAL returns a resampled band: float32, NaN where nothing was under it
            array = (dn + rng.random(shape)).astype(np.float32)
            array[dn == 0] = np.nan
            nodata, fill = np.float32(np.nan), np.nan
        placed[band] = (array, row, col, nodata)
        grid = _expand(array, row, col, 1, fill).astype(np.float32)
        if dtype == "uint16":
            grid[grid == 0] = np.nan
        grid_dns[band] = grid
    scl = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], size=(H // 2 + 1, W // 2 + 3))
    scl = scl.astype(np.uint8)
    scl_row, scl_col = 1, -3
    grid_scl = _expand(scl, scl_row, scl_col, 2, np.uint8(0))
    inside = rng.random((H, W)) < 0.9
    return {
        "placed": placed,
        "scl": (scl, scl_row, scl_col, 2),
        "inside": inside,
        "grid_dns": grid_dns,
        "grid_scl": grid_scl,
    }


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    np.testing.assert_array_equal(got["valid"], want["valid"])
    assert sorted(got["layers"]) == sorted(want["layers"])
    for name, array in want["layers"].items():
        # Bit for bit, NaN where NaN.
        np.testing.assert_array_equal(got["layers"][name], array, err_msg=name)
    np.testing.assert_array_equal(got["counts"], want["counts"])
    np.testing.assert_array_equal(got["hist"], want["hist"])


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("has_blue", [True, False])
@pytest.mark.parametrize("offset_dn", [0, BOA_OFFSET_DN])
def test_scene_pass_equals_numpy_definition(dtype: str, has_blue: bool, offset_dn: int) -> None:
    rng = np.random.default_rng(7 + has_blue + offset_dn)
    s = _scene(rng, dtype, has_blue)
    got = _run(s["placed"], s["scl"], s["inside"], offset_dn)
    want = _reference(s["grid_dns"], s["grid_scl"], s["inside"], offset_dn, 1e-4)
    assert want["counts"][K.C_VALID] > 100 and want["hist"].sum() > 10  # not vacuous
    assert 0 < want["counts"][K.C_GATED] < want["counts"][K.C_VALID]
    assert 0 < want["counts"][K.C_BELOW] < want["counts"][K.C_POSITIVE]
    assert want["counts"][K.C_NEGATIVE] > 0 if offset_dn else True
    _assert_same(got, want)


def test_evidence_only_pass_leaves_layers_alone() -> None:
    s = _scene(np.random.default_rng(3), "uint16", True)
    got = _run(s["placed"], s["scl"], s["inside"], 0, write=False)
    want = _reference(s["grid_dns"], s["grid_scl"], s["inside"], 0, 1e-4)
    np.testing.assert_array_equal(got["valid"], want["valid"])
    np.testing.assert_array_equal(got["hist"], want["hist"])
    for slot in (K.C_DATA, K.C_VALID, K.C_CLOUD, K.C_GATED, K.C_POSITIVE, K.C_BELOW):
        assert got["counts"][slot] == want["counts"][slot]
    assert got["counts"][K.C_NEGATIVE] == 0  # needs the layers
    assert (got["layers"]["red"] == -7.0).all()


def test_band_outside_a_row_means_no_data_there() -> None:
    """A band that stops short of the grid: the rows and columns it misses have no data,
    whatever the other bands hold."""
    rng = np.random.default_rng(11)
    s = _scene(rng, "uint16", True)
    nir, row, col, nodata = s["placed"]["nir"]
    s["placed"]["nir"] = (nir[: H // 2, : W // 3], row, col, nodata)
    s["grid_dns"]["nir"] = _expand(nir[: H // 2, : W // 3], row, col, 1, 0).astype(np.float32)
    s["grid_dns"]["nir"][s["grid_dns"]["nir"] == 0] = np.nan
    got = _run(s["placed"], s["scl"], s["inside"], 0)
    _assert_same(got, _reference(s["grid_dns"], s["grid_scl"], s["inside"], 0, 1e-4))
    assert not got["valid"][H // 2 :, :].any() and not got["valid"][:, W // 2 :].any()


def test_transform_raw_second_pass_when_pixels_overrule_metadata() -> None:
    """Metadata claims the +1000 offset is present (baseline 05.00, no flag) but the DNs
    are harmonized: the first pass used 1000, the pixels say absent, so every layer must
    be recomputed with 0, as the numpy definition gives."""
    rng = np.random.default_rng(5)
    res = 10.0
    grid = Grid("EPSG:32631", Affine(res, 0, 300_000, 0, -res, 5_000_000), 200, 150)
    # Vegetation-like DNs with many below 1000: clear evidence the offset is absent.
    dns = {b: rng.integers(150, 3500, size=(150, 200)).astype(np.uint16) for b in BANDS}
    scl = rng.choice(np.array([4, 5, 6, 8], dtype=np.uint8), size=(75, 100))
    t10, t20 = grid.transform, Affine(20, 0, 300_000, 0, -20, 5_000_000)
    raw = RawScene(
        arrays={**dns, "scl": scl},
        transforms={**dict.fromkeys(BANDS, t10), "scl": t20},
        crs=dict.fromkeys([*BANDS, "scl"], "EPSG:32631"),
        nodata=dict.fromkeys([*BANDS, "scl"], 0),
    )
    from pyproj import Transformer
    from shapely import transform as shp_transform

    to_ll = Transformer.from_crs(32631, 4326, always_xy=True)
    aoi = shp_transform(box(*grid.bounds).buffer(-300), to_ll.transform, interleaved=False)
    meta = SceneMeta(baseline="05.00", boa_offset_applied=None, raster_offset=-0.1)
    scene = transform_raw(raw, aoi, grid, meta, TransformSettings())
    assert scene.decision.metadata_offset_present
    assert (scene.decision.pixel_verdict, scene.decision.offset_dn) == ("absent", 0)
    inside = aoi_mask(aoi, grid)
    want = _reference(
        {b: d.astype(np.float32) for b, d in dns.items()},
        scl.repeat(2, 0).repeat(2, 1),
        inside,
        0,
        1e-4,
    )
    np.testing.assert_array_equal(scene.valid, want["valid"])
    for name, array in want["layers"].items():
        np.testing.assert_array_equal(scene.layers[name], array, err_msg=name)
    negative = want["counts"][K.C_NEGATIVE] / (want["counts"][K.C_GATED] * 4)
    assert scene.stats["negative_reflectance_share"] == pytest.approx(negative)


# --------------------------------------------------------------------------- AOI mask


def _gdal_mask(shape: Any, grid: Grid) -> np.ndarray:
    return geometry_mask(
        [mapping(shape)], out_shape=grid.shape, transform=grid.transform, invert=True
    )


def test_aoi_mask_equals_gdal_rasterize_on_random_polygons() -> None:
    rng = np.random.default_rng(2)
    grid = Grid("EPSG:32631", Affine(10, 0, 400_000, 0, -10, 4_800_000), 300, 260)
    to_ll = __import__("pyproj").Transformer.from_crs(32631, 4326, always_xy=True)
    from shapely import transform as shp_transform

    checked = 0
    for trial in range(60):
        n = int(rng.integers(3, 30))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(200, 1700, n)
        cx, cy = 401_500 + rng.uniform(-800, 800), 4_798_700 + rng.uniform(-800, 800)
        shape: Any = Polygon(np.c_[cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
        if not shape.is_valid:
            continue
        hole = shape.centroid.buffer(150)
        if trial % 3 == 1 and shape.contains(hole):
            shape = Polygon(shape.exterior.coords, [hole.exterior.coords])
        if trial % 3 == 2:  # a second part, partly off the grid
            shape = MultiPolygon([shape, box(404_000, 4_796_000, 404_500, 4_797_000)])
        aoi = shp_transform(shape, to_ll.transform, interleaved=False)
        ours = aoi_mask(aoi, grid)
        gdal = _gdal_mask(project_geometry(aoi, grid.crs), grid)
        assert gdal.sum() > 0
        np.testing.assert_array_equal(ours, gdal, err_msg=f"trial {trial}")
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("layers", [1, 2, 3, 4, 5, 8])
def test_median_composite_equals_numpy_nanmedian(layers: int) -> None:
    """The compiled median is np.nanmedian bit for bit: odd and even counts of valid
    values (float32 averaging of the middle pair), NaN where no layer has a value, ties,
    negative values."""
    rng = np.random.default_rng(layers)
    stack = rng.normal(size=(layers, 120, 90)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.35] = np.nan
    stack[:, :5] = np.nan  # no layer valid
    stack[:, 5:8] = np.float32(0.25)  # ties
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        expected = np.nanmedian(stack, axis=0).astype(np.float32)
    got = median_composite(list(stack))
    assert got.dtype == np.float32
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.isnan(got[:5]).all() and (got[5:8] == np.float32(0.25)).all()
