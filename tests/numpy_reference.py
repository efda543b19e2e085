"""The numpy definitions the compiled kernels must match bit for bit (only tests use
them; the pipeline runs geospatial_pipeline.raster.kernels.scene_pass)."""

from __future__ import annotations

import numpy as np

from geospatial_pipeline.raster.reflectance import DEFAULT_SCALE


def to_reflectance(
    dn: np.ndarray, valid: np.ndarray, offset_dn: int, scale: float = DEFAULT_SCALE
) -> np.ndarray:
    """float32 reflectance, NaN where not valid."""
    out = (dn.astype(np.float32) - np.float32(offset_dn)) * np.float32(scale)
    out[~valid] = np.nan
    return out


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) as float32; NaN where undefined or where a reflectance is
    negative (the index is meaningless there and would leave [-1, 1])."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (a + b)
    out = out.astype(np.float32, copy=False)
    out[~np.isfinite(out) | (a < 0) | (b < 0)] = np.nan
    return out
