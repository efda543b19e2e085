"""Quicklook PNGs of a product: true colour (2-98 % stretch) and NDVI (a diverging colour
map with its legend), small enough to open anywhere and deterministic, so a re-run over
unchanged layers writes the same bytes.

The layers are read decimated straight from their COGs (their overviews), never at full
resolution, so a quicklook costs the same for any AOI size.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.encoding import read_physical

PNG_CONTENT_TYPE = "image/png"
LONG_SIDE = 512
INLINE_LONG_SIDE = 256
STRETCH_PERCENTILES = (2.0, 98.0)
NDVI_COLORMAP = "RdYlGn"
NDVI_RANGE = (-1.0, 1.0)
LEGEND_HEIGHT = 48
# Below this width the legend's tick labels would overlap: the canvas widens instead.
LEGEND_MIN_WIDTH = 240
_LEGEND_DPI = 100


def quicklook_shape(height: int, width: int, long_side: int = LONG_SIDE) -> tuple[int, int]:
    """(height, width) scaled so the long side is ``long_side``; never larger than the grid."""
    if height < 1 or width < 1:
        raise RasterError(f"cannot make a quicklook of a {height} x {width} grid")
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def read_decimated(source: bytes | str | Path, long_side: int = LONG_SIDE) -> np.ndarray:
    """Band 1 of a product raster (COG bytes or a path GDAL opens; either encoding) at
    quicklook size, physical values as float32 with NaN where it has no data."""
    try:
        if isinstance(source, bytes):
            with MemoryFile(source) as mem, mem.open() as src:
                return _read(src, long_side)
        with rasterio.open(source) as src:
            return _read(src, long_side)
    except rasterio.errors.RasterioError as exc:
        where = "COG bytes" if isinstance(source, bytes) else str(source)
        raise RasterError(f"cannot read a quicklook of {where}: {exc}") from exc


def _read(src: rasterio.io.DatasetReader, long_side: int) -> np.ndarray:
    shape = quicklook_shape(src.height, src.width, long_side)
    return read_physical(src, out_shape=shape, resampling=Resampling.average)


def percentile_stretch(
    band: np.ndarray, percentiles: Sequence[float] = STRETCH_PERCENTILES
) -> np.ndarray:
    """``band`` stretched linearly between its low and high percentiles over its finite
    pixels, as uint8 (0 where it has no data)."""
    valid = np.isfinite(band)
    out = np.zeros(band.shape, dtype=np.uint8)
    if not valid.any():
        return out
    low, high = np.percentile(band[valid], list(percentiles))
    span = float(high - low) or 1.0  # a flat band: everything maps to black
    scaled = np.clip((band[valid] - low) / span, 0.0, 1.0)
    out[valid] = np.round(scaled * 255.0).astype(np.uint8)
    return out


def true_colour_rgba(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> np.ndarray:
    """RGBA uint8, each band stretched on its own; transparent where any band has no data."""
    if not red.shape == green.shape == blue.shape:
        raise RasterError(
            f"true colour needs bands of one shape, got red {red.shape}, green {green.shape}, "
            f"blue {blue.shape}"
        )
    valid = np.isfinite(red) & np.isfinite(green) & np.isfinite(blue)
    bands = [np.where(valid, b, np.nan) for b in (red, green, blue)]
    rgba = np.zeros((*red.shape, 4), dtype=np.uint8)
    for i, band in enumerate(bands):
        rgba[..., i] = percentile_stretch(band)
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def ndvi_rgba(ndvi: np.ndarray) -> np.ndarray:
    """NDVI through the diverging colour map over the fixed range [-1, 1] (so colours
    compare across days), transparent where it has no data."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    valid = np.isfinite(ndvi)
    norm = Normalize(*NDVI_RANGE, clip=True)
    rgba = colormaps[NDVI_COLORMAP](norm(np.where(valid, ndvi, 0.0)), bytes=True)
    rgba[~valid] = 0
    return np.asarray(rgba, dtype=np.uint8)


def ndvi_legend(width: int) -> np.ndarray:
    """A horizontal colour bar of the NDVI map with its ticks, ``width`` x LEGEND_HEIGHT RGBA."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width / _LEGEND_DPI, LEGEND_HEIGHT / _LEGEND_DPI), dpi=_LEGEND_DPI)
    figure.patch.set_facecolor("white")
    axes = figure.add_axes((0.06, 0.62, 0.88, 0.3))
    bar = ColorbarBase(
        axes,
        cmap=NDVI_COLORMAP,
        norm=Normalize(*NDVI_RANGE),
        orientation="horizontal",
        ticks=[-1.0, -0.5, 0.0, 0.5, 1.0],
    )
    bar.ax.tick_params(labelsize=7, length=2, pad=1)
    bar.set_label("NDVI", fontsize=7, labelpad=0)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba(), dtype=np.uint8)
    # The figure size in inches can round a pixel either way: make it exact.
    out = np.full((LEGEND_HEIGHT, width, 4), 255, dtype=np.uint8)
    h, w = min(LEGEND_HEIGHT, image.shape[0]), min(width, image.shape[1])
    out[:h, :w] = image[:h, :w]
    return out


def with_legend(image: np.ndarray) -> np.ndarray:
    """``image`` with the NDVI legend below it; the canvas widens to LEGEND_MIN_WIDTH for
    a narrow map (the map stays at its size, top left, the rest transparent)."""
    height, width = image.shape[:2]
    canvas_width = max(width, LEGEND_MIN_WIDTH)
    out = np.zeros((height + LEGEND_HEIGHT, canvas_width, 4), dtype=np.uint8)
    out[:height, :width] = image
    out[height:] = ndvi_legend(canvas_width)
    return out


def encode_png(rgba: np.ndarray) -> bytes:
    """PNG bytes of an RGBA uint8 array, with no timestamp or software chunk, so the same
    pixels always give the same bytes."""
    from PIL import Image

    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise RasterError(f"PNG needs an RGBA uint8 array, got {rgba.dtype} {rgba.shape}")
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def true_colour_png(
    red: bytes | str | Path, green: bytes | str | Path, blue: bytes | str | Path
) -> bytes:
    """The true-colour quicklook of three reflectance rasters on one grid."""
    return encode_png(
        true_colour_rgba(read_decimated(red), read_decimated(green), read_decimated(blue))
    )


def ndvi_png(ndvi: bytes | str | Path) -> bytes:
    """The NDVI quicklook, legend included."""
    return encode_png(with_legend(ndvi_rgba(read_decimated(ndvi))))


def inline_png(png: bytes, long_side: int = INLINE_LONG_SIDE) -> bytes:
    """A copy for embedding in a page: at most ``long_side`` px and 256 colours, so it
    stays well under 100 KB whatever the picture (at most 64 K palette indices)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    height, width = quicklook_shape(rgba.height, rgba.width, long_side)
    if (width, height) != rgba.size:
        rgba = rgba.resize((width, height), Image.Resampling.BOX)
    buffer = io.BytesIO()
    rgba.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
        buffer, format="PNG", optimize=True
    )
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A markdown image of ``png`` as a data URI (renders with no server to fetch from)."""
    alt_text = alt.replace("[", "(").replace("]", ")")
    return f"![{alt_text}](data:{PNG_CONTENT_TYPE};base64,{base64.b64encode(png).decode()})"
