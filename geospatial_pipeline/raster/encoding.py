"""How the analysis-ready product layers are stored, and how to read them back.

Products are int16 scaled: stored = round(value / SCALE), value = stored x SCALE + OFFSET,
NODATA where the layer has no value, written as COGs with ZSTD level 1 and the horizontal
predictor (benchmarks/README.md "Product encoding": 0.45x the bytes of float32 DEFLATE
with the floating-point predictor, 2.9x faster to encode). Reflectance is an integer DN x
1e-4, so it is stored exactly; NDVI/NDWI lose at most half a step (5e-5).

Layers published before this encoding are float32 with NaN nodata and no scale;
:func:`read_physical` reads both, so nothing that reads products depends on which.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from geospatial_pipeline.raster.cog import cog_options

DTYPE = "int16"
SCALE = 1e-4
# Offset 0 keeps reflectance x 10^4 as the integer (negative reflectance of dark water
# included) and covers +-3.2767, beyond every physical limit the checks allow.
OFFSET = 0.0
NODATA = -32768
STORED_MAX = 32767
COMPRESS = "ZSTD"
LEVEL = 1
PREDICTOR = 2  # horizontal differencing: for integers


def product_cog_options() -> dict[str, Any]:
    """COG creation options of a product layer (int16 scaled)."""
    return cog_options(predictor=PREDICTOR, compress=COMPRESS, level=LEVEL)


def quantise(values: np.ndarray) -> np.ndarray:
    """Physical values (NaN = no data) as the stored int16: rounded to the nearest step,
    clipped to the representable range, NODATA where NaN."""
    stored = np.rint((values.astype(np.float64) - OFFSET) / SCALE)
    np.clip(stored, -STORED_MAX, STORED_MAX, out=stored)
    stored[np.isnan(values)] = NODATA
    return stored.astype(np.int16)


def stored_range(stored: np.ndarray) -> tuple[float | None, float | None]:
    """Min and max physical value of stored int16 pixels (None, None when all are
    NODATA): the range a reader of the file sees."""
    data = stored[stored != NODATA]
    if not data.size:
        return None, None
    return _physical(int(data.min())), _physical(int(data.max()))


def _physical(stored: int) -> float:
    # Rounded to the step's decimals so 1234 reads 0.1234, not 0.12340000000000001.
    return round(stored * SCALE + OFFSET, _DECIMALS)


_DECIMALS = max(0, -math.floor(math.log10(SCALE)))


def set_scale(dataset: Any) -> None:
    """Record the scale and offset in a product file opened for writing: GDAL readers
    (TiTiler's ``unscale``, rioxarray, :func:`read_physical`) take them from there."""
    dataset.scales = (SCALE,)
    dataset.offsets = (OFFSET,)


def read_physical(src: Any, **read_kwargs: Any) -> np.ndarray:
    """Band 1 of an open product raster as physical float32 values with NaN where it has
    no data, for either encoding: int16 scaled (its own scale/offset and nodata) or the
    former float32 with NaN nodata. ``read_kwargs`` go to ``src.read`` (window,
    out_shape, resampling)."""
    band = src.read(1, masked=True, **read_kwargs)
    scale, offset = float(src.scales[0]), float(src.offsets[0])
    if np.issubdtype(band.dtype, np.floating) and (scale, offset) == (1.0, 0.0):
        # The float32 layers unchanged, bit for bit.
        return np.ma.filled(band.astype(np.float32), np.nan)
    values = band.astype(np.float64) * scale + offset
    return np.ma.filled(values.astype(np.float32), np.nan)


def raster_band() -> dict[str, Any]:
    """The STAC ``raster:bands`` fields describing the stored values of a product layer.
    Readers that do not apply scale/offset themselves (odc-stac 0.5.3) get integers."""
    return {"data_type": DTYPE, "nodata": NODATA, "scale": SCALE, "offset": OFFSET}
