"""Small single-band GeoTIFFs built in tests, in any CRS, grid and dtype (on disk or in
memory), tiled like the Sentinel-2 COGs the pipeline reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.io import MemoryFile


def geotiff_profile(
    array: np.ndarray,
    *,
    crs: str,
    transform: Affine | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    nodata: float | None = 0,
    compress: str | None = "DEFLATE",
    blocksize: int = 256,
) -> dict[str, Any]:
    """The creation profile of ``array`` on the grid given by ``transform`` or by
    ``bounds`` (left, bottom, right, top) split into its pixels."""
    height, width = array.shape
    if transform is None:
        assert bounds is not None, "bounds or transform required"
        left, bottom, right, top = bounds
        transform = Affine((right - left) / width, 0, left, 0, -(top - bottom) / height, top)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": array.dtype,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    if compress is not None:
        profile["compress"] = compress
    return profile


def write_geotiff(path: str | Path, array: np.ndarray, **grid: Any) -> str:
    """Write ``array`` to ``path`` (see :func:`geotiff_profile` for ``grid``); returns the path."""
    with rasterio.open(path, "w", **geotiff_profile(array, **grid)) as dst:
        dst.write(array, 1)
    return str(path)


def geotiff_bytes(array: np.ndarray, **grid: Any) -> bytes:
    """The file :func:`write_geotiff` would write, as bytes."""
    with MemoryFile() as memfile:
        with memfile.open(**geotiff_profile(array, **grid)) as dst:
            dst.write(array, 1)
        return bytes(memfile.read())
