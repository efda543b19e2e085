"""Window arithmetic: which pixels of a raster cover an AOI given in EPSG:4326."""

from __future__ import annotations

import math
from dataclasses import dataclass

import shapely
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

# Edges are densified before reprojection: a straight lon/lat edge is curved in UTM, and
# projecting only the corners can miss the bulge by several pixels on a 20 km AOI.
DENSIFY_DEGREES = 0.001


@dataclass(frozen=True)
class PixelWindow:
    col_off: int
    row_off: int
    width: int
    height: int

    def as_rasterio(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def project_geometry(geom: BaseGeometry, dst_crs: CRS | str) -> BaseGeometry:
    transformer = Transformer.from_crs("EPSG:4326", dst_crs, always_xy=True)
    return shapely.transform(
        geom.segmentize(DENSIFY_DEGREES), transformer.transform, interleaved=False
    )


def aoi_window(
    aoi: BaseGeometry,
    crs: CRS | str,
    transform: Affine,
    width: int,
    height: int,
) -> PixelWindow | None:
    """The smallest pixel-aligned window of a north-up raster covering ``aoi``.

    Rounded outwards to whole pixels and clipped to the raster; None when they do not meet.
    """
    if transform.b != 0 or transform.d != 0:
        raise ValueError("rotated rasters are not supported")
    minx, miny, maxx, maxy = project_geometry(aoi, crs).bounds
    inv = ~transform
    cols, rows = zip(
        *(inv @ (x, y) for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))),
        strict=True,
    )
    # A tiny epsilon keeps an AOI edge that falls exactly on a pixel edge from pulling in a
    # whole extra row/column through floating point noise.
    eps = 1e-6
    col0 = max(0, math.floor(min(cols) + eps))
    row0 = max(0, math.floor(min(rows) + eps))
    col1 = min(width, math.ceil(max(cols) - eps))
    row1 = min(height, math.ceil(max(rows) - eps))
    if col1 <= col0 or row1 <= row0:
        return None
    return PixelWindow(col0, row0, col1 - col0, row1 - row0)
