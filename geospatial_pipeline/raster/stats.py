"""Daily AOI statistics over one mosaic per AOI and day, strip by strip.

Where MGRS tiles (or two passes) overlap, several scenes cover the same grid pixel. The
statistics count every AOI pixel of the grid once:

- NDVI: the published daily composite (per-pixel median of the scenes' valid NDVI,
  :func:`geospatial_pipeline.raster.scene.median_composite`).
- NDWI: the same rule applied to the scenes' NDWI layers.
- Classes, per AOI pixel (pixel centre inside the AOI) over the day's scenes:

  * *observed*: at least one scene's SCL has a class other than no data there;
  * *valid*: at least one scene has a valid observation (its published reflectance has
    a value, not nodata: inside its footprint, every band has data, SCL class not masked);
  * *cloud*: observed, valid in no scene, and a cloud class (SCL 8, 9, 10) in at least one;
  * *shadow*: observed, valid in no scene, cloudy in none, cloud shadow (SCL 3) in at
    least one.

  The fractions divide by the observed pixels, so valid, cloud and shadow are disjoint
  and sum to at most 1 (the rest is observed but masked otherwise: no data in a band,
  saturated/defective, or classes configured as invalid).

Percentiles come from a fixed-bin histogram over [-1, 1] (indices cannot leave it), so
memory is one strip per scene plus the histogram, whatever the AOI size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.encoding import read_physical
from geospatial_pipeline.raster.grid import Grid, Placed, aoi_spans, place_on_grid
from geospatial_pipeline.raster.kernels import spans_to_mask
from geospatial_pipeline.raster.scene import (
    CLOUD_SCL,
    SHADOW_SCL,
    block_grids,
    median_composite,
    window_under,
)

# NDVI histogram: 20 000 bins of 1e-4 over [-1, 1] (160 kB). A percentile read from it is
# within one bin width (1e-4) of numpy's linear-interpolation percentile of the same
# values: each order statistic is placed inside the bin that holds it, and the
# interpolation between two of them is a convex combination.
INDEX_LOW, INDEX_HIGH = -1.0, 1.0
NDVI_BIN_WIDTH = 1e-4
NDVI_BINS = round((INDEX_HIGH - INDEX_LOW) / NDVI_BIN_WIDTH)


@dataclass(frozen=True)
class SceneSources:
    """One scene's inputs for an AOI: GDAL paths of its published layers on the AOI grid
    and of its SCL window as ingested (native grid, classes)."""

    item_id: str
    red: str
    ndwi: str
    scl: str


@dataclass
class IndexHistogram:
    """Count, sum and fixed-bin histogram of index values in [-1, 1]."""

    counts: np.ndarray
    total: float = 0.0

    @classmethod
    def empty(cls) -> IndexHistogram:
        return cls(np.zeros(NDVI_BINS, dtype=np.int64))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        values = values.astype(np.float64, copy=False)
        if not values.size:
            return
        self.total += float(values.sum())
        bins = np.floor((values - INDEX_LOW) / NDVI_BIN_WIDTH).astype(np.int64)
        np.clip(bins, 0, NDVI_BINS - 1, out=bins)  # +1.0 belongs to the last bin
        self.counts += np.bincount(bins, minlength=NDVI_BINS)

    def mean(self) -> float | None:
        n = self.n
        return self.total / n if n else None

    def percentile(self, q: float) -> float | None:
        """``np.percentile(values, q)`` (linear) within :data:`NDVI_BIN_WIDTH`."""
        n = self.n
        if not n:
            return None
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must lie in [0, 100], got {q}")
        cumulative = np.cumsum(self.counts)
        rank = (n - 1) * q / 100
        low = math.floor(rank)
        high = min(low + 1, n - 1)
        a = self._order_statistic(cumulative, low)
        b = self._order_statistic(cumulative, high)
        return a + (rank - low) * (b - a)

    def _order_statistic(self, cumulative: np.ndarray, rank: int) -> float:
        # The rank-th smallest value lies in the first bin whose cumulative count exceeds
        # rank; spread that bin's values evenly across it.
        b = int(np.searchsorted(cumulative, rank, side="right"))
        before = int(cumulative[b] - self.counts[b])
        position = (rank - before + 0.5) / int(self.counts[b])
        return INDEX_LOW + (b + position) * NDVI_BIN_WIDTH


@dataclass
class DailyStats:
    scenes: int
    pixels_in_aoi: int
    pixels_observed: int
    valid_pixels: int
    cloud_pixels: int
    shadow_pixels: int
    ndvi: IndexHistogram
    ndwi_sum: float
    ndwi_count: int

    def fraction(self, pixels: int) -> float | None:
        return pixels / self.pixels_observed if self.pixels_observed else None

    def row(self) -> dict[str, Any]:
        """The statistics columns of ``daily_aoi_stats``."""
        return {
            "scenes_used": self.scenes,
            "pixels_in_aoi": self.pixels_in_aoi,
            "valid_pixel_fraction": self.fraction(self.valid_pixels),
            "cloud_fraction": self.fraction(self.cloud_pixels),
            "shadow_fraction": self.fraction(self.shadow_pixels),
            "ndvi_mean": self.ndvi.mean(),
            "ndvi_median": self.ndvi.percentile(50),
            "ndvi_p10": self.ndvi.percentile(10),
            "ndvi_p90": self.ndvi.percentile(90),
            "ndwi_mean": self.ndwi_sum / self.ndwi_count if self.ndwi_count else None,
        }


def grid_of(path: str) -> Grid:
    with rasterio.open(path) as src:
        return Grid(src.crs.to_string(), src.transform, src.width, src.height)


def daily_aoi_stats(
    aoi: BaseGeometry,
    scenes: Sequence[SceneSources],
    ndvi_composite: str,
    *,
    block_rows: int,
) -> DailyStats:
    """Statistics of one AOI and day over the mosaic of ``scenes`` (module docstring),
    read ``block_rows`` grid rows at a time. ``ndvi_composite`` is the day's NDVI median
    composite; every layer must lie on its grid."""
    if not scenes:
        raise ValueError("no scenes: daily statistics need at least one")
    if block_rows < 1:
        raise ValueError(f"block_rows must be at least 1, got {block_rows}")
    grid = grid_of(ndvi_composite)
    for scene in scenes:
        for path in (scene.red, scene.ndwi):
            if grid_of(path) != grid:
                raise RasterError(
                    f"{scene.item_id}: layer {path} is not on the composite's grid {ndvi_composite}"
                )
    row_ptr, c0, c1 = aoi_spans(aoi, grid)
    out = DailyStats(len(scenes), 0, 0, 0, 0, 0, IndexHistogram.empty(), 0.0, 0)
    with contextlib.ExitStack() as stack:
        composite = stack.enter_context(_open(ndvi_composite))
        opened = [
            tuple(stack.enter_context(_open(p)) for p in (s.red, s.ndwi, s.scl)) for s in scenes
        ]
        for row, sub in block_grids(grid, block_rows):
            window = Window(0, row, grid.width, sub.height)
            inside = np.zeros(sub.shape, dtype=np.uint8)
            spans_to_mask(row_ptr[row : row + sub.height + 1], c0, c1, inside)
            _add_strip(
                out,
                inside.view(bool),
                read_physical(composite, window=window),
                opened,
                sub,
                window,
            )
    return out


def _open(path: str) -> Any:
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot open {path}: {exc}") from exc


def _add_strip(
    out: DailyStats,
    inside: np.ndarray,
    ndvi: np.ndarray,
    scenes: Sequence[tuple[Any, Any, Any]],
    sub: Grid,
    window: Window,
) -> None:
    valid = np.zeros(sub.shape, dtype=bool)
    observed = np.zeros(sub.shape, dtype=bool)
    cloud = np.zeros(sub.shape, dtype=bool)
    shadow = np.zeros(sub.shape, dtype=bool)
    ndwi_layers = []
    for red, ndwi_src, scl_src in scenes:
        valid |= ~np.ma.getmaskarray(red.read(1, window=window, masked=True))
        ndwi_layers.append(read_physical(ndwi_src, window=window))
        scl = scl_on_grid(scl_src, sub)
        observed |= scl != 0
        cloud |= np.isin(scl, CLOUD_SCL)
        shadow |= np.isin(scl, SHADOW_SCL)
    valid &= inside
    observed = (observed & inside) | valid
    cloud &= observed & ~valid
    shadow &= observed & ~valid & ~cloud
    out.pixels_in_aoi += int(inside.sum())
    out.pixels_observed += int(observed.sum())
    out.valid_pixels += int(valid.sum())
    out.cloud_pixels += int(cloud.sum())
    out.shadow_pixels += int(shadow.sum())
    out.ndvi.add(ndvi[inside & np.isfinite(ndvi)])
    ndwi = median_composite(ndwi_layers)
    ndwi = ndwi[inside & np.isfinite(ndwi)].astype(np.float64)
    out.ndwi_sum += float(ndwi.sum())
    out.ndwi_count += int(ndwi.size)


def scl_on_grid(src: Any, grid: Grid) -> np.ndarray:
    """The SCL classes of the open raster ``src`` under ``grid`` (uint8, 0 = no data),
    placed as the transform places them (nearest neighbour, :func:`place_on_grid`); only
    the window under the grid is read."""
    try:
        window = window_under(src, grid)
        array = src.read(1, window=window)
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot read SCL {src.name}: {exc}") from exc
    placed = place_on_grid(
        array,
        src.window_transform(window),
        src.crs,
        src.nodata,
        grid,
        resampling=Resampling.nearest,
        max_k=64,
    )
    classes = _expand(placed, grid)
    no_data = classes == placed.nodata
    if classes.dtype != np.uint8:
        classes = np.clip(classes, 0, 255).astype(np.uint8)
    classes[no_data] = 0
    return classes


def _expand(placed: Placed, grid: Grid) -> np.ndarray:
    """A :class:`Placed` input as a grid-shaped array (nodata where it does not reach)."""
    height, width = grid.shape
    rows = np.arange(height) - placed.row
    cols = np.arange(width) - placed.col
    i = np.floor_divide(rows, placed.k)
    j = np.floor_divide(cols, placed.k)
    rows_ok = (rows >= 0) & (i < placed.array.shape[0])
    cols_ok = (cols >= 0) & (j < placed.array.shape[1])
    out = np.full(grid.shape, placed.nodata, dtype=placed.array.dtype)
    if rows_ok.any() and cols_ok.any():
        out[np.ix_(rows_ok, cols_ok)] = placed.array[np.ix_(i[rows_ok], j[cols_ok])]
    return out
