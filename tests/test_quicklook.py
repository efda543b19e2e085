"""Quicklook PNGs and the NDVI history chart, on small rasters built here.

- The true-colour stretch equals an independent numpy 2-98 % computation over the valid
  pixels; nodata is transparent in both pictures.
- ~512 px on the long side for a large grid, the grid's own size for a small one.
- Same inputs, same bytes (so a re-run over unchanged layers rewrites nothing).
- Inline copies stay small whatever the picture.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine
from PIL import Image
from rasterio.io import MemoryFile

from geospatial_pipeline.errors import PipelineError, RasterError
from geospatial_pipeline.raster import quicklook
from geospatial_pipeline.raster.chart import CHART_SIZE_PX, ndvi_history_png
from geospatial_pipeline.raster.encoding import read_physical
from geospatial_pipeline.raster.grid import Grid
from geospatial_pipeline.raster.scene import encode_layer
from tests.geotiff import write_geotiff


def cog(array: np.ndarray) -> bytes:
    height, width = array.shape
    grid = Grid("EPSG:32631", Affine(10.0, 0, 370000.0, 0, -10.0, 4830000.0), width, height)
    return encode_layer(array.astype(np.float32), grid)


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGBA"))


def reflectance(seed: int, shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    band = rng.gamma(2.0, 0.05, size=shape).astype(np.float32)
    band[0, :7] = np.nan  # nodata
    band[5, 5] = 3.0  # a specular outlier the stretch must clip
    return band


def test_stretch_equals_numpy_percentiles_over_valid_pixels() -> None:
    band = reflectance(1, (40, 60))
    valid = np.isfinite(band)
    low, high = np.percentile(band[valid].astype(np.float64), [2, 98])
    want = np.zeros(band.shape, dtype=np.uint8)
    want[valid] = np.round(np.clip((band[valid] - low) / (high - low), 0, 1) * 255)
    got = quicklook.percentile_stretch(band)
    # float32 against float64 arithmetic: at most one grey level apart, at a few pixels.
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    assert got[5, 5] == 255 and got[0, 0] == 0
    assert (got[valid] == 0).mean() == pytest.approx(0.02, abs=0.01)


def test_true_colour_png_pixels_and_transparency() -> None:
    red, green, blue = (reflectance(s, (40, 60)) for s in (1, 2, 3))
    blue[10, 10] = np.nan  # one band missing is enough to hide the pixel
    png = quicklook.true_colour_png(cog(red), cog(green), cog(blue))
    rgba = decode(png)
    assert rgba.shape == (40, 60, 4)
    alpha = rgba[..., 3]
    assert (alpha[0, :7] == 0).all() and alpha[10, 10] == 0
    assert (alpha == 255).sum() == 40 * 60 - 8
    for i, band in enumerate((red, green, blue)):
        # The stretch of the values as stored (int16 scaled), which it reads back.
        with MemoryFile(cog(band)) as mem, mem.open() as src:
            stored = read_physical(src)
        masked = np.where(alpha == 255, stored, np.nan)
        np.testing.assert_array_equal(rgba[..., i], quicklook.percentile_stretch(masked))


def test_ndvi_png_colours_fixed_range_and_legend() -> None:
    ndvi = np.tile(np.linspace(-1.0, 1.0, 50, dtype=np.float32), (30, 1))
    ndvi[3:6, 3:6] = np.nan
    rgba = decode(quicklook.ndvi_png(cog(ndvi)))
    # A narrow map: the canvas widens for the legend, the map keeps its size.
    assert rgba.shape == (30 + quicklook.LEGEND_HEIGHT, quicklook.LEGEND_MIN_WIDTH, 4)
    image = rgba[:30, :50]
    assert (image[3:6, 3:6, 3] == 0).all()
    assert (rgba[:30, 50:, 3] == 0).all()
    # RdYlGn: red at -1, green at +1, whatever the day's range.
    assert image[15, 0, 0] > 150 and image[15, 0, 1] < 50
    assert image[15, -1, 1] > 90 and image[15, -1, 0] < 50
    legend = rgba[30:]
    assert (legend[..., 3] == 255).all() and legend[..., :3].std() > 20


def test_long_side_is_512_for_a_large_grid_and_small_grids_keep_their_size() -> None:
    assert quicklook.quicklook_shape(1500, 900) == (512, 307)
    assert quicklook.quicklook_shape(30, 50) == (30, 50)
    with pytest.raises(RasterError, match="0 x 5"):
        quicklook.quicklook_shape(0, 5)
    large = reflectance(4, (1100, 700))
    rgba = decode(quicklook.true_colour_png(cog(large), cog(large), cog(large)))
    assert rgba.shape[:2] == (512, round(700 * 512 / 1100))
    ndvi = decode(quicklook.ndvi_png(cog(large - 0.2)))
    assert ndvi.shape[:2] == (512 + quicklook.LEGEND_HEIGHT, 326)


def test_same_layers_give_the_same_bytes() -> None:
    red, green, blue = (cog(reflectance(s, (64, 80))) for s in (5, 6, 7))
    first = quicklook.true_colour_png(red, green, blue)
    assert quicklook.true_colour_png(red, green, blue) == first
    ndvi = cog(reflectance(8, (64, 80)) * 4 - 1)
    assert quicklook.ndvi_png(ndvi) == quicklook.ndvi_png(ndvi)
    for chunk in (b"tIME", b"tEXt", b"iTXt"):
        assert chunk not in first


def test_reads_from_a_path_as_from_bytes(tmp_path: Path) -> None:
    data = cog(reflectance(9, (20, 30)))
    path = tmp_path / "red.tif"
    path.write_bytes(data)
    np.testing.assert_array_equal(
        quicklook.read_decimated(str(path)), quicklook.read_decimated(data)
    )
    with pytest.raises(RasterError, match=r"missing\.tif"):
        quicklook.read_decimated(str(tmp_path / "missing.tif"))


def test_inline_copy_is_small_whatever_the_picture() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (600, 900, 4), dtype=np.uint8)
    noise[..., 3] = 255
    png = quicklook.encode_png(noise)
    assert len(png) > 1_000_000
    small = quicklook.inline_png(png)
    assert len(small) < 150_000
    with Image.open(io.BytesIO(small)) as image:
        assert image.size == (256, 171)
    text = quicklook.markdown_image(small, "a [test]")
    assert text.startswith("![a (test)](data:image/png;base64,")


def history_rows(last: dt.date) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {
            "partition_date": last - dt.timedelta(days=i),
            "aoi": "a",
            "ndvi_median": 0.3 + i / 300,
            "ndvi_p10": 0.1,
            "ndvi_p90": 0.6,
            "valid_pixel_fraction": 0.8,
            "cloud_fraction": 0.1,
        }
        for i in range(0, 90, 5)
    ]
    rows.append({"partition_date": last - dt.timedelta(days=3), "aoi": "a", "ndvi_median": None})
    return rows


def test_history_chart_is_a_deterministic_png() -> None:
    last = dt.date(2024, 6, 15)
    first = last - dt.timedelta(days=89)
    png = ndvi_history_png(history_rows(last), "a", first, last)
    assert png == ndvi_history_png(history_rows(last), "a", first, last)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == CHART_SIZE_PX
    assert b"Software" not in png
    other = ndvi_history_png(history_rows(last)[:3], "a", first, last)
    assert other != png
    # A new AOI, or one with no usable scene yet: an empty chart, not a failure.
    nothing = [{"partition_date": last, "aoi": "a", "ndvi_median": None, "cloud_fraction": None}]
    with Image.open(io.BytesIO(ndvi_history_png(nothing, "a", first, last))) as image:
        assert image.size == CHART_SIZE_PX
    with pytest.raises(PipelineError, match="before first_day"):
        ndvi_history_png([], "a", last, first)


# ------------------------------------------------------- published next to the products

UTM = "EPSG:32631"
LEFT, TOP = 370000.0, 4830000.0


def scene_bands(tmp_path: Path, size: int) -> dict[str, str]:
    """Sentinel-2-like DNs (offset already removed) with clouds in one corner."""
    rng = np.random.default_rng(size)
    transform = Affine(10.0, 0, LEFT, 0, -10.0, TOP)
    paths = {}
    for band, mean in (("red", 600), ("green", 800), ("blue", 500), ("nir", 3000)):
        dn = rng.normal(mean, mean / 5, (size, size)).clip(1, 10000).astype(np.uint16)
        paths[band] = write_geotiff(tmp_path / f"{band}.tif", dn, crs=UTM, transform=transform)
    scl = np.full((size, size), 4, dtype=np.uint8)
    scl[: size // 4, : size // 4] = 9
    paths["scl"] = write_geotiff(tmp_path / "scl.tif", scl, crs=UTM, transform=transform)
    return paths


@pytest.mark.parametrize("block_pixels", [1_000_000, 1024], ids=["whole", "strips"])
def test_scene_and_composite_publish_their_quicklooks(tmp_path: Path, block_pixels: int) -> None:
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping
    from shapely.geometry import shape as to_shape

    from geospatial_pipeline.layout import Partition
    from geospatial_pipeline.raster.grid import aoi_grid
    from geospatial_pipeline.raster.scene import TransformSettings
    from geospatial_pipeline.stac import publish
    from geospatial_pipeline.stac.products import validate_product_item
    from geospatial_pipeline.storage.object_store import LocalObjectStore

    bands = scene_bands(tmp_path, 96)
    # The AOI (lon/lat) inside the bands, off their pixel grid's edges.
    shape = to_shape(
        transform_geom(UTM, "EPSG:4326", mapping(box(LEFT + 55, TOP - 905, LEFT + 905, TOP - 55)))
    )
    settings = TransformSettings(resolution=10, crs=UTM)
    grid = aoi_grid(shape, settings.resolution, settings.crs, settings.anchor)
    store = LocalObjectStore(tmp_path / "store")
    raw = {
        "id": "S2B_31TCJ_20240615_0_L2A",
        "properties": {
            "datetime": "2024-06-15T10:50:00Z",
            "s2:processing_baseline": "05.10",
            "platform": "sentinel-2b",
            "eo:cloud_cover": 20.0,
        },
        "assets": {},
    }
    part = Partition(dt.date(2024, 6, 15), "a")

    def publish_all(now: str) -> tuple[dict[str, Any], dict[str, Any]]:
        ctx = publish.ProductContext(
            store, "s2", part, settings, block_pixels, tmp_path / "work", now
        )
        ctx.workdir.mkdir(exist_ok=True)
        scene = publish.publish_scene(
            ctx, aoi="a", shape=shape, grid=grid, raw=raw, band_paths=bands, source="http://x/i"
        )
        composite = publish.publish_composite(ctx, aoi="a", grid=grid, scenes=[scene])
        return scene, composite

    scene, composite = publish_all("2024-06-16T00:00:00Z")
    assert [q["asset"] for q in scene["quicklooks"]] == ["thumbnail", "overview"]
    assert [q["asset"] for q in composite["quicklooks"]] == ["overview"]
    for entry, pictures in ((scene, {"thumbnail", "overview"}), (composite, {"overview"})):
        item = json.loads(store.get_bytes(entry["stac_item_key"]))
        assert validate_product_item(item) == []
        pngs = {n: a for n, a in item["assets"].items() if a["type"] == "image/png"}
        assert set(pngs) == pictures
        directory = entry["stac_item_key"].rsplit("/", 1)[0]
        for look in entry["quicklooks"]:
            asset = pngs[look["asset"]]
            assert asset["roles"] == [look["asset"]]
            assert look["key"] == f"{directory}/{asset['href'][2:]}"
            data = store.get_bytes(look["key"])
            assert asset["file:size"] == look["bytes"] == len(data)
            rgba = decode(data)
            assert rgba[..., 3].min() == 0  # outside the AOI polygon: transparent
    thumbnail = decode(store.get_bytes(scene["quicklooks"][0]["key"]))
    assert thumbnail.shape[:2] == grid.shape
    # Clouds (SCL 9) are masked: transparent in the picture.
    assert (thumbnail[2 : grid.height // 5, 2 : grid.width // 5, 3] == 0).all()
    before = {q["key"]: store.get_bytes(q["key"]) for q in scene["quicklooks"]}
    again, _ = publish_all("2024-06-17T00:00:00Z")
    assert {q["key"]: store.get_bytes(q["key"]) for q in again["quicklooks"]} == before
    # Nothing changed, so the item keeps its first processing time.
    assert again["created"] == scene["created"]
