"""One common grid per AOI, so every band of every scene aligns pixel for pixel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS as PyprojCRS
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely.geometry import MultiPolygon, box
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.raster.kernels import polygon_spans, spans_to_mask
from geospatial_pipeline.raster.window import project_geometry

Spans = tuple[np.ndarray, np.ndarray, np.ndarray]  # row_ptr, c0, c1


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
    lon = (lon + 180.0) % 360.0 - 180.0  # 180.2 (an unwrapped longitude) is -179.8
    zone = min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def crosses_antimeridian(geom: BaseGeometry) -> bool:
    """True for an EPSG:4326 geometry spanning more than half the globe in longitude: an
    AOI crossing 180° (split there, as RFC 7946 asks), never one that wide for real."""
    minx, _, maxx, _ = geom.bounds
    return maxx - minx > 180.0


def unwrap_longitudes(geom: BaseGeometry) -> BaseGeometry:
    """``geom`` with its longitudes made continuous across 180° (west of it kept, east
    of it shifted by +360), so centroids and extents are those of the real area."""
    if not crosses_antimeridian(geom):
        return geom

    def shift(xy: np.ndarray) -> np.ndarray:
        out = xy.copy()
        out[out[:, 0] < 0, 0] += 360.0
        return out

    return shapely.transform(geom, shift)


def split_at_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """An EPSG:4326 geometry whose edges jump across 180° (longitudes from -180 to 180 on
    both sides) as the RFC 7946 MultiPolygon cut at 180°; others unchanged."""
    if not crosses_antimeridian(geom):
        return geom
    unwrapped = unwrap_longitudes(geom)
    west = unwrapped.intersection(box(-180.0, -90.0, 180.0, 90.0))
    east = shapely.affinity.translate(
        unwrapped.intersection(box(180.0, -90.0, 540.0, 90.0)), xoff=-360.0
    )
    parts = [
        part
        for piece in (west, east)
        for part in getattr(piece, "geoms", [piece])
        if part.geom_type == "Polygon" and not part.is_empty
    ]
    return MultiPolygon(parts)


def stac_bbox(geom: BaseGeometry) -> list[float]:
    """The STAC/RFC 7946 bbox of an EPSG:4326 geometry: west > east when it crosses 180°
    (the bounds of the cut parts would claim the whole band of longitudes)."""
    minx, miny, maxx, maxy = unwrap_longitudes(geom).bounds
    if maxx > 180.0:
        maxx -= 360.0
    return [minx, miny, maxx, maxy]


def metric_crs_problem(crs: Any) -> str | None:
    """Why ``crs`` cannot carry a grid whose resolution is in metres, or None.

    The grid is laid out in CRS units: a resolution of 10 in EPSG:4326 would be 10-degree
    pixels, in a US-feet CRS 3 m ones."""
    parsed = PyprojCRS.from_user_input(crs)
    units = sorted({axis.unit_name for axis in parsed.axis_info})
    if parsed.is_projected and units == ["metre"]:
        return None
    kind = "geographic" if parsed.is_geographic else "non-metric"
    name = f"EPSG:{parsed.to_epsg()}" if parsed.to_epsg() else parsed.name
    return (
        f"{name} is a {kind} CRS (axis units: {', '.join(units) or 'none'}) but the "
        "resolution is in metres: use a projected CRS in metres (e.g. a UTM zone)"
    )


def aoi_grid(
    aoi: BaseGeometry,
    resolution: float,
    crs: str | None = None,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> Grid:
    """North-up grid covering ``aoi`` (EPSG:4326): by default in the UTM zone of its
    centroid, pixel edges on multiples of ``resolution`` (+ ``anchor``), which is the
    Sentinel-2 tiling grid for 10/20/60 m.

    An AOI crossing 180° (a MultiPolygon cut there) takes the centroid of its unwrapped
    shape: the halves at +179.9° and -179.9° average to ~0° otherwise, a zone half the
    globe away. Both halves project contiguously into the chosen zone."""
    if crs is None:
        c = unwrap_longitudes(aoi).centroid
        crs = f"EPSG:{utm_epsg(c.x, c.y)}"
    elif problem := metric_crs_problem(crs):
        raise ValueError(f"crs: {problem}")
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
    """True for grid pixels whose centre lies inside the AOI (bool, grid-shaped)."""
    out = np.zeros(grid.shape, dtype=np.uint8)
    spans_to_mask(*aoi_spans(aoi, grid), out)
    return out.view(bool)


def aoi_spans(aoi: BaseGeometry, grid: Grid) -> Spans:
    """:func:`aoi_mask` as column spans per row (``kernels.polygon_spans``), what the
    transform kernel reads: no grid-sized mask to allocate and fill."""
    xs, ys, starts = _rings_in_pixels(project_geometry(aoi, grid.crs), grid.transform)
    return cast(Spans, polygon_spans(xs, ys, starts, grid.height, grid.width))


def _rings_in_pixels(
    shape: BaseGeometry, transform: Affine
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if transform.b or transform.d:
        raise ValueError("rotated grids are not supported")
    polygons = getattr(shape, "geoms", [shape])
    rings = []
    for polygon in polygons:
        if polygon.geom_type != "Polygon":
            raise ValueError(f"AOI must be a polygon or multipolygon, not {polygon.geom_type}")
        if not polygon.is_empty:
            rings += [polygon.exterior, *polygon.interiors]
    coords = [np.asarray(ring.coords, dtype=np.float64) for ring in rings]
    starts = np.cumsum([0] + [len(c) for c in coords], dtype=np.int64)
    xy = np.concatenate(coords) if coords else np.empty((0, 2))
    xs = (xy[:, 0] - transform.c) / transform.a
    ys = (xy[:, 1] - transform.f) / transform.e
    return xs, ys, starts


@dataclass(frozen=True)
class Placed:
    """One input raster on a grid: ``array[i, j]`` covers the ``k`` x ``k`` grid pixels
    from row ``row + i * k``, column ``col + j * k``; ``nodata`` (of the array's dtype, NaN
    for resampled floats) marks pixels without data. Grid pixels it does not cover have no
    data either."""

    array: np.ndarray
    row: int
    col: int
    k: int
    nodata: Any


def place_on_grid(
    array: np.ndarray,
    src_transform: Affine,
    src_crs: Any,
    src_nodata: float | None,
    grid: Grid,
    *,
    resampling: Resampling,
    max_k: int = 1,
) -> Placed:
    """``array`` as an input on ``grid``.

    When the grid lies on the source's pixel grid (same CRS, north-up, one source pixel =
    ``k`` x ``k`` grid pixels, edges on source pixel edges) the decoded array is used as
    it is, with no copy: for k == 1 each grid pixel centre is a source pixel centre, where
    nearest, bilinear and cubic all return the source value; k > 1 is nearest-neighbour
    upsampling, so it is taken only for nearest and up to ``max_k``. Otherwise GDAL
    resamples it onto the whole grid (float32 with NaN, or the source dtype with 0 for
    nearest).
    """
    nodata: Any = src_nodata if src_nodata is not None else 0
    aligned = grid_alignment(src_transform, src_crs, grid)
    if aligned is not None:
        row, col, k = aligned
        if k == 1 or (resampling == Resampling.nearest and k <= max_k):
            return Placed(array, row, col, k, array.dtype.type(nodata))
    categorical = resampling == Resampling.nearest
    dtype = array.dtype if categorical else np.dtype(np.float32)
    dst_nodata = nodata if categorical else np.nan
    dst = np.full(grid.shape, dst_nodata, dtype=dtype)
    # Between UTM zones the grids are rotated a few degrees; GDAL then sees a slight
    # downsample and widens its kernel (3 DN error instead of 0.5 on bilinear). Same pixel
    # size: pin the kernel scale.
    same_size = abs(abs(src_transform.a) - grid.transform.a) < 1e-9
    extra: dict[str, Any] = {"XSCALE": 1, "YSCALE": 1} if same_size else {}
    reproject(
        source=array,
        destination=dst,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=nodata,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=dst_nodata,
        resampling=resampling,
        num_threads=1,
        **extra,
    )
    return Placed(dst, 0, 0, 1, dst.dtype.type(dst_nodata))


def grid_alignment(src_transform: Affine, src_crs: Any, grid: Grid) -> tuple[int, int, int] | None:
    """(row, col, k) when ``grid`` lies on the source's pixel grid: the grid row/column of
    source pixel (0, 0) and the number of grid pixels per source pixel; else None."""
    s, g = src_transform, grid.transform
    if s.b or s.d or g.b or g.d or s.e != -s.a or g.e != -g.a:
        return None
    ratio = s.a / g.a
    k = round(ratio)
    col, row = (s.c - g.c) / g.a, (g.f - s.f) / g.a
    if (
        k < 1
        or abs(ratio - k) > 1e-9
        or abs(col - round(col)) > 1e-6
        or abs(row - round(row)) > 1e-6
    ):
        return None
    if CRS.from_user_input(grid.crs) != CRS.from_user_input(src_crs):
        return None
    return round(row), round(col), k


def grid_footprint(grid: Grid) -> BaseGeometry:
    """The grid's outline in EPSG:4326 (for STAC geometry)."""
    from pyproj import Transformer
    from shapely import transform as shp_transform

    outline = box(*grid.bounds).segmentize(max(grid.transform.a * 16, 1.0))
    to_wgs84 = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    # A grid over 180° comes back with longitudes jumping from +180 to -180, a polygon
    # around the rest of the globe; cut it there instead (RFC 7946).
    return split_at_antimeridian(shp_transform(outline, to_wgs84.transform, interleaved=False))
