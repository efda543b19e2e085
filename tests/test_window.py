"""Window arithmetic across CRSs, and COG encoding of small rasters built in the test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import Transformer
from rasterio.io import MemoryFile
from shapely.geometry import box

from geospatial_pipeline.raster.cog import (
    WindowData,
    encode_cog,
    read_aoi_window,
    validate_cog_bytes,
)
from geospatial_pipeline.raster.window import PixelWindow, aoi_window, project_geometry
from tests.geotiff import geotiff_profile, write_geotiff

# The real 32TMT tile grid (10 m, EPSG:32632, from the recorded item's proj:transform).
TMT = Affine(10, 0, 399960, 0, -10, 5300040)


def test_window_in_utm_matches_independent_projection() -> None:
    aoi = box(8.0, 47.3, 8.05, 47.35)
    win = aoi_window(aoi, "EPSG:32632", TMT, 10980, 10980)
    assert win is not None
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    xs, ys = to_utm.transform([8.0, 8.05, 8.0, 8.05], [47.3, 47.3, 47.35, 47.35])
    col0 = int(np.floor((min(xs) - 399960) / 10))
    row0 = int(np.floor((5300040 - max(ys)) / 10))
    assert abs(win.col_off - col0) <= 1 and abs(win.row_off - row0) <= 1
    # ~3.8 km x 5.6 km at 10 m
    assert 370 <= win.width <= 400 and 550 <= win.height <= 570


def test_window_covers_curved_edge() -> None:
    # A wide AOI centred on zone 32's central meridian (9E): its bottom edge (a parallel)
    # sags south in UTM between the corners, so corner-only projection would cut it off.
    aoi = box(8.0, 47.0, 10.0, 47.5)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    _, corner_ys = to_utm.transform([8.0, 10.0], [47.0, 47.0])
    _, mid_y = to_utm.transform([9.0], [47.0])
    assert mid_y[0] < min(corner_ys) - 100  # the sag is real (metres)
    t = Affine(10, 0, 300000, 0, -10, 5400000)
    win = aoi_window(aoi, "EPSG:32632", t, 40000, 40000)
    assert win is not None
    bottom_y = 5400000 - 10 * (win.row_off + win.height)
    assert bottom_y <= mid_y[0]


def test_window_is_clipped_and_none_outside() -> None:
    assert aoi_window(box(20.0, 10.0, 20.1, 10.1), "EPSG:32632", TMT, 10980, 10980) is None
    # Overlaps the tile's west edge: clipped to column 0.
    win = aoi_window(box(7.6, 47.5, 7.75, 47.55), "EPSG:32632", TMT, 10980, 10980)
    assert win is not None and win.col_off == 0 and win.width < 10980


def test_window_across_crs_same_ground() -> None:
    """One AOI on a zone boundary is fully covered in both zones' grids, and tightly."""
    aoi = box(11.95, 47.0, 12.05, 47.05)
    for epsg, origin_x in ((32632, 600000), (32633, 200000)):
        t = Affine(10, 0, origin_x, 0, -10, 5300000)
        win = aoi_window(aoi, f"EPSG:{epsg}", t, 30000, 30000)
        assert win is not None
        x0, y1 = t @ (win.col_off, win.row_off)
        x1, y0 = t @ (win.col_off + win.width, win.row_off + win.height)
        footprint = project_geometry(aoi, f"EPSG:{epsg}")
        assert box(x0, y0, x1, y1).contains(footprint)
        # Tight: no more than one pixel of slack beyond the AOI's projected bounds.
        fx0, fy0, fx1, fy1 = footprint.bounds
        assert fx0 - x0 <= 10 and x1 - fx1 <= 10 and fy0 - y0 <= 10 and y1 - fy1 <= 10


def test_read_window_returns_exact_pixels_and_valid_cog(tmp_path) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(1, 10000, size=(1024, 1024), dtype=np.uint16)
    t = Affine(10, 0, 399960, 0, -10, 5300040)
    path = str(tmp_path / "src.tif")
    write_geotiff(path, array, crs="EPSG:32632", transform=t, compress=None)
    aoi = box(7.7, 47.8, 7.75, 47.83)
    data = read_aoi_window(path, aoi)
    assert data is not None
    w = data.window
    np.testing.assert_array_equal(
        data.array[0], array[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width]
    )
    cog = encode_cog(data)
    assert validate_cog_bytes(cog).valid
    assert encode_cog(data) == cog  # deterministic: unchanged re-runs rewrite nothing
    with MemoryFile(cog) as mem, mem.open() as ds:
        assert ds.crs.to_epsg() == 32632
        assert ds.transform == data.transform
        np.testing.assert_array_equal(ds.read(1), data.array[0])
        assert ds.nodata == 0
        # The raw windows' codec (cog.RAW_COMPRESS): ZSTD with the horizontal predictor.
        assert ds.compression is not None and ds.compression.name == "zstd"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_encode_cog_dtypes(dtype: str) -> None:
    array = (np.arange(700 * 900).reshape(1, 700, 900) % 200).astype(dtype)
    data = WindowData(
        array,
        "EPSG:4326",
        4326,
        Affine(0.001, 0, 0, 0, -0.001, 1),
        None,
        PixelWindow(0, 0, 900, 700),
        (700, 900),
    )
    check = validate_cog_bytes(encode_cog(data, categorical=dtype == "uint8"))
    assert check.valid, check.errors


def test_a_window_larger_than_the_raw_block_cache_is_fetched_in_as_few_requests(
    s3_server: Any,
) -> None:
    """GDAL fetches a window's tiles with merged multi-range requests only while their
    compressed size fits GDAL_MAX_RAW_BLOCK_CACHE_SIZE, else tile run by tile run: the
    reader sizes it from the window, so a window beyond the configured limit (10 MiB here;
    64 MiB by default, which a 60 km AOI of real 10 m tiles exceeds) costs no more
    requests than with an unlimited cache."""
    from benchmarks.proxy import ByteCountingProxy
    from geospatial_pipeline.raster.cog import gdal_env
    from geospatial_pipeline.raster.gdal_env import MIB
    from geospatial_pipeline.resources.storage import ObjectStoreResource

    # Noise does not compress: 3072 x 5120 uint16 in 512-px tiles is 31 MB of tiles.
    noise = np.random.default_rng(7).integers(0, 10_000, (3072, 5120), dtype=np.uint16)
    origin = (399960.0, 5300040.0)
    bucket, key = "raw-block-cache", "noise.tif"
    s3_server.create_bucket(bucket)
    # Laid out as a COG, as the sources are: GDAL's multi-range tile fetch applies.
    profile = geotiff_profile(
        noise, crs="EPSG:32632", transform=Affine(10, 0, origin[0], 0, -10, origin[1])
    )
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(noise, 1)
        with rasterio.open(mem.name) as src, MemoryFile() as cog:
            rasterio.shutil.copy(
                src, cog.name, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", PREDICTOR=2
            )
            body = cog.read()
    s3_server.boto3_client().put_object(Bucket=bucket, Key=key, Body=body)
    to_ll = Transformer.from_crs(32632, 4326, always_xy=True)
    # Columns 1000-3999, all rows (pixel centres well inside the AOI's edges): 21 MB of
    # tiles, over the 10 MiB configured below. Without the reader's sizing GDAL gives up its
    # multi-range fetch past that limit: 13 requests here instead of 7.
    aoi = box(
        *to_ll.transform(origin[0] + 10005, origin[1] - 30715),
        *to_ll.transform(origin[0] + 39995, origin[1] - 5),
    )

    host, port = s3_server.endpoint_url.split("://")[1].split(":")
    with ByteCountingProxy((host, int(port)), max_lifetime_s=120) as proxy:
        store = ObjectStoreResource(
            url=f"s3://{bucket}",
            endpoint_url=proxy.endpoint_url,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
        )

        def requests_for(cache_bytes: int) -> tuple[int, np.ndarray]:
            proxy.reset()
            options = {**store.gdal_options(), "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": str(cache_bytes)}
            with gdal_env(options, store.gdal_session()):
                data = read_aoi_window(f"/vsis3/{bucket}/{key}", aoi)
            proxy.wait_idle()
            assert data is not None
            return sum(s.requests for s in proxy.snapshot().values()), data.array

        limited, array = requests_for(10 * MIB)
        unlimited, _ = requests_for(1024 * MIB)
    # Columns 1000-3999 of every row: 6 of the 10 tiles per row, not adjacent across rows.
    assert np.array_equal(array[0], noise[:, 1000:4000])
    assert limited == unlimited, (limited, unlimited)
