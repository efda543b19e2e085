"""Turn one scene's raw AOI windows into analysis-ready layers on the AOI's grid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.grid import Grid, aoi_mask, to_grid
from geospatial_pipeline.raster.reflectance import (
    DEFAULT_SCALE,
    OffsetDecision,
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


def transform_scene(
    band_paths: Mapping[str, str],
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
) -> SceneLayers:
    """Mask, offset-correct and resample one scene onto ``grid``; compute NDVI/NDWI.

    Memory stays at a few grid-sized float32 arrays: bands are read and resampled one at
    a time and converted to reflectance in place.
    """
    missing = [b for b in REQUIRED_BANDS if b not in band_paths]
    if missing:
        raise RasterError(f"cannot transform: band object(s) {missing} missing")
    resampling = Resampling[settings.resampling]
    scl_raw, t, crs, nodata = _read(band_paths["scl"])
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
        raw, t, crs, nodata = _read(band_paths[band])
        dns[band] = to_grid(
            raw, t, crs, nodata if nodata is not None else 0, grid, resampling=resampling
        )
    inside = aoi_mask(aoi, grid)
    has_data = inside & (scl != 0)
    for arr in dns.values():
        has_data &= np.isfinite(arr)
    valid = has_data & ~_class_lut(settings.invalid_scl)[scl]
    decision = decide_offset(
        meta.baseline,
        meta.boa_offset_applied,
        meta.raster_offset,
        list(dns.values()),
        scl,
        valid,
        [dns[b] for b in ("red", "blue") if b in dns],
    )
    for arr in dns.values():
        arr -= np.float32(decision.offset_dn)
        arr *= np.float32(meta.scale)
        arr[~valid] = np.nan
    layers = dict(dns)
    layers["ndvi"] = normalized_difference(dns["nir"], dns["red"])
    layers["ndwi"] = normalized_difference(dns["green"], dns["nir"])
    n_data = int(has_data.sum())
    stats = {
        "pixels_in_aoi": int(inside.sum()),
        "pixels_with_data": n_data,
        "valid_pixels": int(valid.sum()),
        "valid_pixel_fraction": (float(valid.sum()) / n_data) if n_data else 0.0,
        "cloud_fraction": (float((_class_lut(CLOUD_SCL)[scl] & has_data).sum()) / n_data)
        if n_data
        else 0.0,
        "shadow_fraction": (float((_class_lut(SHADOW_SCL)[scl] & has_data).sum()) / n_data)
        if n_data
        else 0.0,
        "negative_reflectance_share": _negative_share(dns.values(), valid),
    }
    return SceneLayers(grid, layers, valid, decision, stats)


def _class_lut(classes: tuple[int, ...]) -> np.ndarray:
    """Boolean lookup table over uint8 class values: ``lut[scl]`` is ``np.isin(scl, classes)``."""
    lut = np.zeros(256, dtype=bool)
    lut[list(classes)] = True
    return lut


def _negative_share(bands: Any, valid: np.ndarray) -> float:
    """Share of negative values among the valid pixels of ``bands`` (each NaN where not
    valid, so a plain count suffices)."""
    bands = list(bands)
    n = int(valid.sum())
    if not n or not bands:
        return 0.0
    neg = sum(int(np.count_nonzero(b[valid] < 0)) for b in bands)
    return neg / (n * len(bands))


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
