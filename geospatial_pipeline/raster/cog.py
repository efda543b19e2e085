"""Read the AOI window of a (remote) COG and write it as a new COG, all in memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.session import Session
from rasterio.windows import transform as window_transform
from rio_cogeo.cogeo import cog_validate
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.window import PixelWindow, aoi_window

COG_BLOCKSIZE = 512


def cog_options(*, predictor: int, categorical: bool = False) -> dict[str, Any]:
    """GDAL COG creation options for every COG the pipeline writes: DEFLATE, 512 px
    tiles, internal overviews (nearest for classes, so none is invented), one thread so
    the output is the same bytes for the same input. ``predictor``: 2 for integers, 3
    for floats."""
    return {
        "driver": "COG",
        "compress": "DEFLATE",
        "predictor": predictor,
        "blocksize": COG_BLOCKSIZE,
        "overview_resampling": "nearest" if categorical else "average",
        "num_threads": "1",
    }


@dataclass(frozen=True)
class WindowData:
    array: np.ndarray  # (bands, rows, cols)
    crs_wkt: str
    epsg: int | None
    transform: Affine
    nodata: float | None
    window: PixelWindow
    source_size: tuple[int, int]  # (height, width) of the source raster

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])


@dataclass(frozen=True)
class CogValidation:
    valid: bool
    errors: list[str]
    warnings: list[str]


@contextlib.contextmanager
def gdal_env(options: Mapping[str, Any], session: Session | None = None) -> Iterator[None]:
    """Enter GDAL settings (thread-local in rasterio, so enter it in each worker)."""
    with rasterio.Env(session=session, **options):
        yield


def read_aoi_window(path: str, aoi: BaseGeometry) -> WindowData | None:
    """Read only the pixels covering ``aoi``: GDAL fetches the header and those tiles."""
    try:
        with rasterio.open(path) as src:
            win = aoi_window(aoi, src.crs, src.transform, src.width, src.height)
            if win is None:
                return None
            array = src.read(window=win.as_rasterio())
            return WindowData(
                array=array,
                crs_wkt=src.crs.to_wkt(),
                epsg=src.crs.to_epsg(),
                transform=window_transform(win.as_rasterio(), src.transform),
                nodata=src.nodata,
                window=win,
                source_size=(src.height, src.width),
            )
    except RasterioError as exc:
        raise RasterError(f"cannot read window of {path}: {exc}") from exc


def encode_cog(data: WindowData, *, categorical: bool = False) -> bytes:
    """Encode a window as a Cloud-Optimized GeoTIFF (DEFLATE, internal overviews).

    Categorical rasters (e.g. SCL) get nearest-neighbour overviews so no class is invented.
    The output is deterministic for the same input, which makes unchanged re-runs no-ops.
    """
    bands, height, width = data.array.shape
    try:
        with MemoryFile() as mem:
            with mem.open(
                width=width,
                height=height,
                count=bands,
                dtype=data.array.dtype,
                crs=data.crs_wkt,
                transform=data.transform,
                nodata=data.nodata,
                **cog_options(predictor=2, categorical=categorical),
            ) as dst:
                dst.write(data.array)
            return bytes(mem.read())
    except RasterioError as exc:
        raise RasterError(f"cannot encode COG: {exc}") from exc


def validate_cog_path(path: str) -> CogValidation:
    try:
        valid, errors, warnings = cog_validate(path, quiet=True)
    except Exception as exc:  # rio-cogeo raises plain Exceptions for unreadable files
        return CogValidation(False, [f"cannot open: {exc}"], [])
    return CogValidation(bool(valid), list(errors), list(warnings))


def validate_cog_bytes(data: bytes) -> CogValidation:
    with MemoryFile(data) as mem:
        return validate_cog_path(mem.name)
