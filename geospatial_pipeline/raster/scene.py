"""Turn one scene's raw AOI windows into analysis-ready layers on the AOI's grid."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.grid import Grid, aoi_mask, to_grid
from geospatial_pipeline.raster.reflectance import (
    DEFAULT_SCALE,
    OffsetDecision,
    OffsetEvidence,
    decide_from_evidence,
    decide_offset,
    normalized_difference,
)

REFLECTANCE_BANDS = ("red", "green", "blue", "nir")
REQUIRED_BANDS = ("red", "green", "nir", "scl")
DEFAULT_INVALID_SCL = (0, 1, 3, 8, 9, 10)
CLOUD_SCL = (8, 9, 10)
SHADOW_SCL = (3,)
FLOAT_NODATA = float("nan")


@dataclass(frozen=True)
class TransformSettings:
    resolution: float = 10.0
    crs: str | None = None
    anchor: tuple[float, float] = (0.0, 0.0)
    invalid_scl: tuple[int, ...] = DEFAULT_INVALID_SCL
    resampling: str = "bilinear"


@dataclass
class SceneLayers:
    grid: Grid
    layers: dict[str, np.ndarray]  # float32 reflectance bands + ndvi + ndwi, NaN nodata
    valid: np.ndarray
    decision: OffsetDecision
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneMeta:
    baseline: str | None
    boa_offset_applied: bool | None
    raster_offset: float | None
    scale: float = DEFAULT_SCALE


def scene_meta(item: Mapping[str, Any]) -> SceneMeta:
    props = item.get("properties", {})
    rb = (item.get("assets", {}).get("red", {}).get("raster:bands") or [{}])[0]
    return SceneMeta(
        baseline=props.get("s2:processing_baseline"),
        boa_offset_applied=props.get("earthsearch:boa_offset_applied"),
        raster_offset=rb.get("offset"),
        scale=float(rb.get("scale") or DEFAULT_SCALE),
    )


def _read(path: str) -> tuple[np.ndarray, Any, Any, float | None]:
    try:
        with rasterio.open(path) as src:
            return src.read(1), src.transform, src.crs, src.nodata
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot read {path}: {exc}") from exc


@dataclass
class _Block:
    """One scene's inputs on (part of) the AOI grid."""

    dns: dict[str, np.ndarray]
    scl: np.ndarray
    inside: np.ndarray
    has_data: np.ndarray
    valid: np.ndarray

    @property
    def dark_bands(self) -> list[np.ndarray]:
        return [self.dns[b] for b in ("red", "blue") if b in self.dns]


def _read_for(path: str, grid: Grid, whole: bool) -> tuple[np.ndarray, Any, Any, float | None]:
    """The source pixels needed for ``grid``: the whole file, or only the window under it
    (plus a margin for the resampling kernel) when working block by block."""
    if whole:
        return _read(path)
    try:
        with rasterio.open(path) as src:
            left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds)
            inv = ~src.transform
            c0, r0 = inv * (left, top)
            c1, r1 = inv * (right, bottom)
            margin = 3
            col0 = max(0, math.floor(min(c0, c1)) - margin)
            row0 = max(0, math.floor(min(r0, r1)) - margin)
            col1 = min(src.width, math.ceil(max(c0, c1)) + margin)
            row1 = min(src.height, math.ceil(max(r0, r1)) + margin)
            if col1 <= col0 or row1 <= row0:
                empty = np.zeros((1, 1), dtype=src.dtypes[0])
                return empty, src.transform, src.crs, src.nodata if src.nodata is not None else 0
            window = Window(col0, row0, col1 - col0, row1 - row0)
            return src.read(1, window=window), src.window_transform(window), src.crs, src.nodata
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot read {path}: {exc}") from exc


def _load_block(
    band_paths: Mapping[str, str],
    aoi: BaseGeometry,
    grid: Grid,
    settings: TransformSettings,
    *,
    whole: bool,
) -> _Block:
    missing = [b for b in REQUIRED_BANDS if b not in band_paths]
    if missing:
        raise RasterError(f"cannot transform: band object(s) {missing} missing")
    resampling = Resampling[settings.resampling]
    scl_raw, t, crs, nodata = _read_for(band_paths["scl"], grid, whole)
    # Classes must never be interpolated: nearest neighbour, always.
    scl = to_grid(
        scl_raw,
        t,
        crs,
        nodata if nodata is not None else 0,
        grid,
        resampling=Resampling.nearest,
        dtype=np.uint8,
        dst_nodata=0,
    )
    del scl_raw
    dns: dict[str, np.ndarray] = {}
    for band in (b for b in REFLECTANCE_BANDS if b in band_paths):
        raw, t, crs, nodata = _read_for(band_paths[band], grid, whole)
        dns[band] = to_grid(
            raw, t, crs, nodata if nodata is not None else 0, grid, resampling=resampling
        )
    inside = aoi_mask(aoi, grid)
    has_data = inside & (scl != 0)
    for arr in dns.values():
        has_data &= np.isfinite(arr)
    valid = has_data & ~_class_lut(settings.invalid_scl)[scl]
    return _Block(dns, scl, inside, has_data, valid)


def _apply(
    block: _Block, offset_dn: int, scale: float
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Reflectance (in place), indices, and the pixel counts the statistics need."""
    for arr in block.dns.values():
        arr -= np.float32(offset_dn)
        arr *= np.float32(scale)
        arr[~block.valid] = np.nan
    layers = dict(block.dns)
    layers["ndvi"] = normalized_difference(block.dns["nir"], block.dns["red"])
    layers["ndwi"] = normalized_difference(block.dns["green"], block.dns["nir"])
    counts = {
        "inside": int(block.inside.sum()),
        "data": int(block.has_data.sum()),
        "valid": int(block.valid.sum()),
        "cloud": int((_class_lut(CLOUD_SCL)[block.scl] & block.has_data).sum()),
        "shadow": int((_class_lut(SHADOW_SCL)[block.scl] & block.has_data).sum()),
        "negative": sum(int(np.count_nonzero(b[block.valid] < 0)) for b in block.dns.values()),
        "bands": len(block.dns),
    }
    return layers, counts


def _stats(counts: Mapping[str, int]) -> dict[str, Any]:
    n_data, n_valid = counts["data"], counts["valid"]
    return {
        "pixels_in_aoi": counts["inside"],
        "pixels_with_data": n_data,
        "valid_pixels": n_valid,
        "valid_pixel_fraction": n_valid / n_data if n_data else 0.0,
        "cloud_fraction": counts["cloud"] / n_data if n_data else 0.0,
        "shadow_fraction": counts["shadow"] / n_data if n_data else 0.0,
        "negative_reflectance_share": counts["negative"] / (n_valid * counts["bands"])
        if n_valid and counts["bands"]
        else 0.0,
    }


def transform_scene(
    band_paths: Mapping[str, str],
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
) -> SceneLayers:
    """Mask, offset-correct and resample one scene onto ``grid``; compute NDVI/NDWI.

    Whole-grid arrays: bands are read and resampled one at a time and converted to
    reflectance in place. Large grids go through :func:`transform_scene_blocked`.
    """
    block = _load_block(band_paths, aoi, grid, settings, whole=True)
    decision = decide_offset(
        meta.baseline,
        meta.boa_offset_applied,
        meta.raster_offset,
        list(block.dns.values()),
        block.scl,
        block.valid,
        block.dark_bands,
    )
    layers, counts = _apply(block, decision.offset_dn, meta.scale)
    return SceneLayers(grid, layers, block.valid, decision, _stats(counts))


def block_grids(grid: Grid, block_rows: int) -> list[tuple[int, Grid]]:
    """Row strips of ``grid`` (row offset, sub-grid)."""
    out = []
    for row in range(0, grid.height, block_rows):
        height = min(block_rows, grid.height - row)
        t = grid.transform
        out.append(
            (
                row,
                Grid(
                    grid.crs, Affine(t.a, t.b, t.c, t.d, t.e, t.f + t.e * row), grid.width, height
                ),
            )
        )
    return out


@dataclass
class BlockedScene:
    cogs: dict[str, Path]  # COG files in the caller's work directory
    decision: OffsetDecision
    stats: dict[str, Any]
    ranges: dict[str, tuple[float | None, float | None]]


def transform_scene_blocked(
    band_paths: Mapping[str, str],
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
    block_rows: int,
    workdir: Path,
) -> BlockedScene:
    """The same products as :func:`transform_scene`, with memory bounded by one strip of
    ``block_rows`` rows: a first pass gathers the offset evidence of the whole scene, a
    second computes the layers strip by strip into compressed rasters on disk, which are
    then written as COG files in ``workdir``. Only the windows under each strip are read,
    and nothing grid-sized is held in memory."""
    evidence = OffsetEvidence()
    strips = block_grids(grid, block_rows)
    for _, sub in strips:
        block = _load_block(band_paths, aoi, sub, settings, whole=False)
        evidence.add(list(block.dns.values()), block.scl, block.valid, block.dark_bands)
        del block
    decision = decide_from_evidence(
        meta.baseline, meta.boa_offset_applied, meta.raster_offset, evidence
    )
    totals: dict[str, int] = {}
    ranges: dict[str, tuple[float | None, float | None]] = {}
    with contextlib.ExitStack() as stack:
        sinks: dict[str, Any] = {}
        for row, sub in strips:
            block = _load_block(band_paths, aoi, sub, settings, whole=False)
            layers, counts = _apply(block, decision.offset_dn, meta.scale)
            for key, value in counts.items():
                totals[key] = value if key == "bands" else totals.get(key, 0) + value
            for name, array in layers.items():
                if name not in sinks:
                    sinks[name] = stack.enter_context(
                        _strip_sink(grid, workdir / f"{name}.strips.tif")
                    )
                sinks[name].write(array, 1, window=Window(0, row, grid.width, sub.height))
                finite = array[np.isfinite(array)]
                if finite.size:
                    low, high = ranges.get(name, (None, None))
                    lo, hi = float(finite.min()), float(finite.max())
                    ranges[name] = (
                        lo if low is None else min(low, lo),
                        hi if high is None else max(high, hi),
                    )
                else:
                    ranges.setdefault(name, (None, None))
            del block, layers
        cogs = {name: _sink_to_cog(sink, workdir / f"{name}.tif") for name, sink in sinks.items()}
    for name in cogs:
        (workdir / f"{name}.strips.tif").unlink(missing_ok=True)
    return BlockedScene(cogs, decision, _stats(totals), ranges)


@contextlib.contextmanager
def _strip_sink(grid: Grid, path: Path) -> Iterator[Any]:
    # On disk, not in memory: for a large AOI the layers themselves would not fit.
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype="float32",
        crs=grid.crs,
        transform=grid.transform,
        nodata=FLOAT_NODATA,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="DEFLATE",
        zlevel=1,
        predictor=3,
    ) as dataset:
        yield dataset


def _sink_to_cog(dataset: Any, path: Path) -> Path:
    rasterio.shutil.copy(
        dataset,
        str(path),
        driver="COG",
        compress="DEFLATE",
        predictor=3,
        blocksize=512,
        overview_resampling="average",
        num_threads="1",
    )
    return path


def _class_lut(classes: tuple[int, ...]) -> np.ndarray:
    """Boolean lookup table over uint8 class values: ``lut[scl]`` is ``np.isin(scl, classes)``."""
    lut = np.zeros(256, dtype=bool)
    lut[list(classes)] = True
    return lut


def encode_layer(array: np.ndarray, grid: Grid) -> bytes:
    """A float32 layer as a COG (DEFLATE with the floating-point predictor, NaN nodata)."""
    height, width = array.shape
    try:
        with MemoryFile() as mem:
            with mem.open(
                driver="COG",
                width=width,
                height=height,
                count=1,
                dtype="float32",
                crs=grid.crs,
                transform=grid.transform,
                nodata=FLOAT_NODATA,
                compress="DEFLATE",
                predictor=3,
                blocksize=512,
                overview_resampling="average",
                num_threads="1",
            ) as dst:
                dst.write(array.astype(np.float32, copy=False), 1)
            return bytes(mem.read())
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot encode COG: {exc}") from exc


def median_composite_from_paths(
    paths: list[str], grid: Grid, block_rows: int, workdir: Path
) -> tuple[Path, tuple[float | None, float | None]]:
    """Per-pixel median of the valid values of several single-band rasters on ``grid``,
    read strip by strip; returns the COG file (in ``workdir``) and the value range."""
    low: float | None = None
    high: float | None = None
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(rasterio.open(p)) for p in paths]
        strips = workdir / "composite.strips.tif"
        sink = stack.enter_context(_strip_sink(grid, strips))
        for row, sub in block_grids(grid, block_rows):
            window = Window(0, row, grid.width, sub.height)
            strip = median_composite([src.read(1, window=window) for src in sources])
            sink.write(strip, 1, window=window)
            finite = strip[np.isfinite(strip)]
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                low = lo if low is None else min(low, lo)
                high = hi if high is None else max(high, hi)
        cog = _sink_to_cog(sink, workdir / "composite.tif")
    strips.unlink(missing_ok=True)
    return cog, (low, high)


def median_composite(layers: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of the valid (non-NaN) values; NaN where no scene is valid."""
    if not layers:
        raise ValueError("no layers to composite")
    stack = np.stack(layers)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN
            return np.nanmedian(stack, axis=0).astype(np.float32)
