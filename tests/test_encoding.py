"""The products' storage (raster/encoding.py): int16 scaled 1e-4, nodata -32768, ZSTD
level 1 with the horizontal predictor, and one reader for it and the former float32/NaN
layers already published."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from geospatial_pipeline.raster import encoding
from geospatial_pipeline.raster.cog import cog_options, validate_cog_bytes
from geospatial_pipeline.raster.grid import Grid
from geospatial_pipeline.raster.scene import encode_layer, value_range
from geospatial_pipeline.stac.products import LayerObject, product_item

GRID = Grid("EPSG:32631", Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0), 700, 600)
HALF_STEP = encoding.SCALE / 2


def layer(seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.uniform(low, high, GRID.shape).astype(np.float32)
    values[:40, :90] = np.nan  # a corner outside the footprint
    values[rng.random(GRID.shape) < 0.1] = np.nan  # masked pixels spread everywhere
    return values


def former_float32_cog(values: np.ndarray) -> bytes:
    """A layer as the products were stored before: float32, NaN nodata, DEFLATE p3."""
    with MemoryFile() as mem:
        with mem.open(
            width=GRID.width,
            height=GRID.height,
            count=1,
            dtype="float32",
            crs=GRID.crs,
            transform=GRID.transform,
            nodata=float("nan"),
            **cog_options(predictor=3),
        ) as dst:
            dst.write(values, 1)
        return bytes(mem.read())


def test_product_cog_is_int16_scaled_zstd_predictor_2() -> None:
    blob = encode_layer(layer(), GRID)
    assert validate_cog_bytes(blob).valid
    with MemoryFile(blob) as mem, mem.open() as src:
        assert src.dtypes == ("int16",)
        assert src.nodata == -32768
        assert src.scales == (1e-4,) and src.offsets == (0.0,)
        structure = src.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "ZSTD"
        assert structure["PREDICTOR"] == "2"
        assert src.overviews(1), "no internal overviews"


def test_quantise_rounds_clips_and_marks_nodata() -> None:
    values = np.array([0.12344, 0.12346, -0.00004, -0.2, 4.0, -4.0, np.nan, 1.0], np.float32)
    np.testing.assert_array_equal(
        encoding.quantise(values),
        np.array([1234, 1235, 0, -2000, 32767, -32767, -32768, 10000], np.int16),
    )


def test_round_trip_within_half_a_step_and_nodata_exact() -> None:
    values = layer()
    with MemoryFile(encode_layer(values, GRID)) as mem, mem.open() as src:
        back = encoding.read_physical(src)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(back), np.isnan(values))
    ok = ~np.isnan(values)
    err = np.abs(back[ok].astype(np.float64) - values[ok])
    # Half a step, plus the float32 rounding of the value read and of the value written.
    assert err.max() <= HALF_STEP + 2e-7
    assert err.max() > HALF_STEP / 2  # random values: some really are quantised


def test_reflectance_is_stored_exactly() -> None:
    """Reflectance is DN x 1e-4: the stored integer is the DN and the read-back value is
    the float32 the transform computed, up to float32 rounding."""
    dn = np.random.default_rng(1).integers(0, 20000, GRID.shape)
    reflectance = (dn.astype(np.float32) - np.float32(1000)) * np.float32(1e-4)
    blob = encode_layer(reflectance, GRID)
    with MemoryFile(blob) as mem, mem.open() as src:
        np.testing.assert_array_equal(src.read(1), dn - 1000)
        back = encoding.read_physical(src)
    # The transform rounds (DN - 1000) x 1e-4 in float32, the reader DN x 1e-4 in float64
    # then to float32: at most one float32 step apart (measured: 1.19e-7 at 1.6).
    np.testing.assert_array_max_ulp(back, reflectance, maxulp=1)


def test_reader_gives_the_same_physical_values_for_both_encodings() -> None:
    values = layer(2)
    new, old = encode_layer(values, GRID), former_float32_cog(values)
    with MemoryFile(new) as m1, m1.open() as a, MemoryFile(old) as m2, m2.open() as b:
        np.testing.assert_array_equal(encoding.read_physical(b), values)  # float32: as is
        window = rasterio.windows.Window(100, 50, 300, 200)
        wa, wb = encoding.read_physical(a, window=window), encoding.read_physical(b, window=window)
        np.testing.assert_array_equal(np.isnan(wa), np.isnan(wb))
        ok = ~np.isnan(wb)
        assert np.abs(wa[ok] - wb[ok]).max() <= HALF_STEP + 2e-7
        # Decimated through the overviews, as the quicklooks read.
        shape = (150, 175)
        da = encoding.read_physical(a, out_shape=shape, resampling=Resampling.average)
        db = encoding.read_physical(b, out_shape=shape, resampling=Resampling.average)
        both = ~np.isnan(da) & ~np.isnan(db)
        assert both.mean() > 0.5
        # Half a step each: quantising, the int16 overview's average, the int16 read's
        # average (measured 1.11e-4 here).
        assert np.abs(da[both] - db[both]).max() <= 1.5 * encoding.SCALE + 2e-7


def test_value_range_is_what_is_stored() -> None:
    values = np.array([[0.12346, np.nan], [-0.05, 0.3]], np.float32)
    assert value_range(values) == (-0.05, 0.3)
    assert value_range(np.array([[0.123456]], np.float32)) == (0.1235, 0.1235)
    assert value_range(np.full((2, 2), np.nan, np.float32)) == (None, None)


def test_stac_raster_bands_describe_the_stored_values() -> None:
    item = product_item(
        item_id="x",
        item_key="a/item.json",
        acquired="2024-06-15T10:56:21Z",
        grid=GRID,
        layers=[LayerObject("red", "a/red.tif", 1, "0" * 64)],
        source_hrefs=[],
        processing_datetime="2024-06-15T12:00:00Z",
        software_version="test",
        lineage="test",
        extra_properties={},
    )
    band = item["assets"]["red"]["raster:bands"][0]
    assert {k: band[k] for k in ("data_type", "nodata", "scale", "offset")} == {
        "data_type": "int16",
        "nodata": -32768,
        "scale": 0.0001,
        "offset": 0.0,
    }


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_reader_reads_a_band_without_nodata(dtype: str) -> None:
    """A band without nodata (no mask) reads as values everywhere, either dtype."""
    values = np.arange(12, dtype=dtype).reshape(3, 4)
    with MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=4,
            height=3,
            count=1,
            dtype=dtype,
            crs=GRID.crs,
            transform=GRID.transform,
        ) as dst:
            dst.write(values, 1)
        with mem.open() as src:
            np.testing.assert_array_equal(encoding.read_physical(src), values.astype(np.float32))
