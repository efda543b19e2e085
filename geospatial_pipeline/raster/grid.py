"""One common grid per AOI, so every band of every scene aligns pixel for pixel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.warp import reproject
from shapely.geometry import box, mapping
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.raster.window import project_geometry


@dataclass(frozen=True)
class Grid:
    crs: str  # "EPSG:32632"
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform.c, self.transform.f
        return (
            left,
            top + self.transform.e * self.height,
            left + self.transform.a * self.width,
            top,
        )

    @property
    def epsg(self) -> int:
        return int(self.crs.split(":")[1])


def utm_epsg(lon: float, lat: float) -> int:
    zone = min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def aoi_grid(
    aoi: BaseGeometry,
    resolution: float = 10.0,
    crs: str | None = None,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> Grid:
    """North-up grid covering ``aoi`` (EPSG:4326): by default in the UTM zone of its
    centroid, pixel edges on multiples of ``resolution`` (+ ``anchor``), which is the
    Sentinel-2 tiling grid for 10/20/60 m."""
    if crs is None:
        c = aoi.centroid
        crs = f"EPSG:{utm_epsg(c.x, c.y)}"
    minx, miny, maxx, maxy = project_geometry(aoi, crs).bounds
    ax, ay = anchor
    left = math.floor((minx - ax) / resolution) * resolution + ax
    right = math.ceil((maxx - ax) / resolution) * resolution + ax
    bottom = math.floor((miny - ay) / resolution) * resolution + ay
    top = math.ceil((maxy - ay) / resolution) * resolution + ay
    width = max(1, round((right - left) / resolution))
    height = max(1, round((top - bottom) / resolution))
    return Grid(crs, Affine(resolution, 0, left, 0, -resolution, top), width, height)


def aoi_mask(aoi: BaseGeometry, grid: Grid) -> np.ndarray:
    """True for grid pixels whose centre lies inside the AOI."""
    shape = project_geometry(aoi, grid.crs)
    return geometry_mask(
        [mapping(shape)], out_shape=grid.shape, transform=grid.transform, invert=True
    )


def to_grid(
    array: np.ndarray,
    src_transform: Affine,
    src_crs: Any,
    src_nodata: float | None,
    grid: Grid,
    *,
    resampling: Resampling,
    dtype: Any = np.float32,
    dst_nodata: float = np.nan,
) -> np.ndarray:
    """Resample one band onto ``grid``; pixels with no source are ``dst_nodata``."""
    dst = np.full(grid.shape, dst_nodata, dtype=dtype)
    reproject(
        source=array,
        destination=dst,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=src_nodata,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=dst_nodata,
        resampling=resampling,
        num_threads=1,
    )
    return dst


def grid_footprint(grid: Grid) -> BaseGeometry:
    """The grid's outline in EPSG:4326 (for STAC geometry)."""
    from pyproj import Transformer
    from shapely import transform as shp_transform

    outline = box(*grid.bounds).segmentize(max(grid.transform.a * 16, 1.0))
    to_wgs84 = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    return shp_transform(outline, to_wgs84.transform, interleaved=False)
