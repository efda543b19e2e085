"""Turn one scene's raw AOI windows into analysis-ready layers on the AOI's grid."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.config import TransformConfig
from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster import encoding
from geospatial_pipeline.raster.cog import COG_BLOCKSIZE
from geospatial_pipeline.raster.grid import Grid, Placed, aoi_spans, place_on_grid
from geospatial_pipeline.raster.kernels import (
    C_BELOW,
    C_CLOUD,
    C_DATA,
    C_GATED,
    C_INSIDE,
    C_NEGATIVE,
    C_POSITIVE,
    C_SHADOW,
    C_VALID,
    F_NO_DATA,
    HIST_BINS,
    N_COUNTS,
    class_flags,
    nanmedian_layers,
    scene_pass,
)
from geospatial_pipeline.raster.kernels import LAYERS as KERNEL_LAYERS
from geospatial_pipeline.raster.reflectance import (
    BOA_OFFSET_DN,
    DARK_SCL_CLASSES,
    DEFAULT_SCALE,
    EVIDENCE_SCL_CLASSES,
    NEGATIVE_OK_SCL_CLASSES,
    OffsetDecision,
    OffsetEvidence,
    decide_from_evidence,
    metadata_offset_present,
)

K = TypeVar("K")
V = TypeVar("V")

REFLECTANCE_BANDS = ("red", "green", "blue", "nir")
REQUIRED_BANDS = ("red", "green", "nir", "scl")
CLOUD_SCL = (8, 9, 10)
SHADOW_SCL = (3,)


class TransformSettings(TransformConfig):
    """The ``transform`` configuration as the raster functions read it: every field, default
    and check is TransformConfig's."""

    @property
    def anchor(self) -> tuple[float, float]:
        return self.grid_anchor

    @property
    def invalid_scl(self) -> tuple[int, ...]:
        return tuple(self.invalid_scl_classes)


@dataclass
class SceneLayers:
    grid: Grid
    # float32 reflectance bands + ndvi + ndwi, NaN nodata (physical values; quantised
    # only when encoded, raster.encoding)
    layers: dict[str, np.ndarray]
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


@dataclass
class RawScene:
    """One scene's decoded inputs for (part of) a grid: each band's pixels with their
    georeferencing, as read from its file."""

    arrays: dict[str, np.ndarray]
    transforms: dict[str, Affine]
    crs: dict[str, Any]
    nodata: dict[str, float | None]


def read_scene(band_paths: Mapping[str, str], grid: Grid, *, whole: bool = True) -> RawScene:
    """Decode the bands :func:`transform_raw` needs: each whole file, or, for a strip of a
    larger grid, only the window under it (plus a margin for the resampling kernel)."""
    with contextlib.ExitStack() as stack:
        return read_open_scene(open_bands(band_paths, stack), grid, whole=whole)


def open_bands(band_paths: Mapping[str, str], stack: contextlib.ExitStack[Any]) -> dict[str, Any]:
    """The bands :func:`transform_raw` needs, opened (closed by ``stack``)."""
    missing = [b for b in REQUIRED_BANDS if b not in band_paths]
    if missing:
        raise RasterError(f"cannot transform: band object(s) {missing} missing")
    sources = {}
    for band in (b for b in (*REFLECTANCE_BANDS, "scl") if b in band_paths):
        try:
            sources[band] = stack.enter_context(rasterio.open(band_paths[band]))
        except rasterio.errors.RasterioError as exc:
            raise RasterError(f"cannot read {band_paths[band]}: {exc}") from exc
    return sources


def read_open_scene(sources: Mapping[str, Any], grid: Grid, *, whole: bool = True) -> RawScene:
    """:func:`read_scene` from bands already open (:func:`open_bands`): the strips of a
    large grid reuse the open files, their headers and GDAL's cache of decoded tiles
    instead of opening every band again for every strip."""
    raw = RawScene({}, {}, {}, {})
    for band, src in sources.items():
        try:
            window = None if whole else window_under(src, grid)
            raw.arrays[band] = src.read(1, window=window)
            raw.transforms[band] = src.transform if window is None else src.window_transform(window)
            raw.crs[band] = src.crs
            raw.nodata[band] = src.nodata
        except rasterio.errors.RasterioError as exc:
            raise RasterError(f"cannot read {src.name}: {exc}") from exc
    return raw


def whole_inputs(band_paths: Mapping[str, str], grid: Grid, block_pixels: int) -> RawScene | None:
    """The decoded inputs :func:`scene_products` transforms as whole arrays, or None for a
    grid it processes strip by strip (it then reads each strip itself)."""
    if in_strips(grid, block_pixels):
        return None
    return read_scene(band_paths, grid)


def in_strips(grid: Grid, block_pixels: int) -> bool:
    """Whether :func:`scene_products` processes ``grid`` strip by strip."""
    return grid.width * grid.height > block_pixels


def read_ahead(keys: Sequence[K], read: Callable[[K], V]) -> Iterator[tuple[K, V]]:
    """``(key, read(key))`` in order, reading the next key in a background thread while the
    caller works on the current one: I/O and decoding of one scene overlap the transform
    and encoding of the previous. At most two results exist at once (the one handed out
    and the one being read). An exception of ``read`` is raised at its key."""
    if not keys:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as reader:
        pending = reader.submit(read, keys[0])
        for i, key in enumerate(keys):
            value = pending.result()
            if i + 1 < len(keys):
                pending = reader.submit(read, keys[i + 1])
            yield key, value
            del value  # only the caller holds it now


def window_under(src: Any, grid: Grid) -> Window:
    """The source pixels under ``grid``, plus a margin for resampling kernels."""
    left, bottom, right, top = transform_bounds(grid.crs, src.crs, *grid.bounds)
    inv = ~src.transform
    c0, r0 = inv * (left, top)
    c1, r1 = inv * (right, bottom)
    margin = 3
    col0 = max(0, math.floor(min(c0, c1)) - margin)
    row0 = max(0, math.floor(min(r0, r1)) - margin)
    col1 = min(src.width, math.ceil(max(c0, c1)) + margin)
    row1 = min(src.height, math.ceil(max(r0, r1)) + margin)
    if col1 <= col0 or row1 <= row0:  # nothing under the strip: one pixel, placed away
        return Window(0, 0, 1, 1)
    return Window(col0, row0, col1 - col0, row1 - row0)


class _Kernel:
    """The inputs of one scene placed on (part of) the grid, and the compiled pass over
    them (:func:`geospatial_pipeline.raster.kernels.scene_pass`)."""

    def __init__(
        self, raw: RawScene, aoi: BaseGeometry, grid: Grid, settings: TransformSettings
    ) -> None:
        resampling = Resampling[settings.resampling]
        self.grid = grid
        self.bands = {
            band: place_on_grid(
                raw.arrays[band],
                raw.transforms[band],
                raw.crs[band],
                raw.nodata[band],
                grid,
                resampling=resampling,
            )
            for band in REFLECTANCE_BANDS
            if band in raw.arrays
        }
        # Classes must never be interpolated: nearest neighbour, always.
        scl = place_on_grid(
            raw.arrays["scl"],
            raw.transforms["scl"],
            raw.crs["scl"],
            raw.nodata["scl"],
            grid,
            resampling=Resampling.nearest,
            max_k=64,
        )
        self.flags = class_flags(
            settings.invalid_scl,
            CLOUD_SCL,
            SHADOW_SCL,
            EVIDENCE_SCL_CLASSES,
            DARK_SCL_CLASSES,
            NEGATIVE_OK_SCL_CLASSES,
        )
        if scl.array.dtype != np.uint8:  # the class table is indexed by the value
            nodata = scl.array == scl.nodata
            array = np.clip(scl.array, 0, 255).astype(np.uint8)
            array[nodata] = 0
            scl = Placed(array, scl.row, scl.col, scl.k, np.uint8(0))
        elif scl.nodata != 0:
            self.flags[int(scl.nodata)] |= F_NO_DATA
        self.scl = scl
        self.spans = aoi_spans(aoi, grid)
        self.layers = tuple(n for n in KERNEL_LAYERS if n != "blue" or "blue" in self.bands)

    def run(
        self,
        offset_dn: int,
        scale: float,
        *,
        write: bool,
        evidence: OffsetEvidence | None,
        out: np.ndarray,
        valid: np.ndarray,
    ) -> np.ndarray:
        """One pass; returns the counters (``kernels.C_*``). With ``evidence`` the offset
        test's counts and dark-surface histogram are added to it."""
        red, green, nir = self.bands["red"], self.bands["green"], self.bands["nir"]
        blue = self.bands.get("blue", red)
        order = (red, green, blue, nir)
        args = (
            red.array,
            green.array,
            blue.array,
            nir.array,
            "blue" in self.bands,
            np.array([(p.row, p.col) for p in order], dtype=np.int64),
            tuple(p.nodata for p in order),
            self.scl.array,
            np.array([self.scl.row, self.scl.col], dtype=np.int64),
            self.scl.k,
            self.flags,
            self.spans,
            np.float32(offset_dn),
            np.float32(scale),
            red.array.dtype.type(BOA_OFFSET_DN),
            write,
            evidence is not None,
            out,
            valid,
        )
        hist = evidence.dark_hist if evidence is not None else _NO_HIST
        counts = np.zeros(N_COUNTS, dtype=np.int64)
        scene_pass(*args, hist, counts)
        if evidence is not None:
            evidence.n += int(counts[C_POSITIVE])
            evidence.below += int(counts[C_BELOW])
        return counts

    def new_outputs(self) -> tuple[np.ndarray, np.ndarray]:
        height, width = self.grid.shape
        return np.empty((len(KERNEL_LAYERS), height, width), dtype=np.float32), np.empty(
            (height, width), dtype=bool
        )

    def stats(self, counts: np.ndarray) -> dict[str, Any]:
        return _stats(counts, len(self.bands))


_NO_HIST = np.zeros(HIST_BINS, dtype=np.int64)
_NO_OUT = np.empty((len(KERNEL_LAYERS), 1, 1), dtype=np.float32)


def _stats(counts: np.ndarray, bands: int) -> dict[str, Any]:
    """Pixel shares; the negative-reflectance share is over the values of the valid pixels
    whose class cannot be negative (``NEGATIVE_OK_SCL_CLASSES`` left out): a wrong offset
    shows there, while dark water legitimately goes below zero."""
    n_data, n_valid, n_gated = int(counts[C_DATA]), int(counts[C_VALID]), int(counts[C_GATED])
    return {
        "pixels_in_aoi": int(counts[C_INSIDE]),
        "pixels_with_data": n_data,
        "valid_pixels": n_valid,
        "valid_pixel_fraction": n_valid / n_data if n_data else 0.0,
        "cloud_fraction": int(counts[C_CLOUD]) / n_data if n_data else 0.0,
        "shadow_fraction": int(counts[C_SHADOW]) / n_data if n_data else 0.0,
        "negative_reflectance_share": int(counts[C_NEGATIVE]) / (n_gated * bands)
        if n_gated and bands
        else 0.0,
        "negative_reflectance_gated_pixels": n_gated,
    }


def _metadata_guess(meta: SceneMeta) -> int:
    return BOA_OFFSET_DN if metadata_offset_present(meta.baseline, meta.boa_offset_applied) else 0


def transform_scene(
    band_paths: Mapping[str, str],
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
) -> SceneLayers:
    """Mask, offset-correct and resample one scene onto ``grid``; compute NDVI/NDWI.

    Whole-grid arrays; large grids go through :func:`transform_scene_blocked`.
    """
    return transform_raw(read_scene(band_paths, grid), aoi, grid, meta, settings)


def transform_raw(
    raw: RawScene,
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
) -> SceneLayers:
    """:func:`transform_scene` on bands already decoded.

    One pass computes the layers with the offset the metadata claims while it gathers the
    pixel test's evidence; only when the pixels overrule the metadata does a second pass
    recompute the layers with the other offset.
    """
    kernel = _Kernel(raw, aoi, grid, settings)
    out, valid = kernel.new_outputs()
    evidence = OffsetEvidence()
    guess = _metadata_guess(meta)
    counts = kernel.run(guess, meta.scale, write=True, evidence=evidence, out=out, valid=valid)
    decision = decide_from_evidence(
        meta.baseline, meta.boa_offset_applied, meta.raster_offset, evidence
    )
    if decision.offset_dn != guess:
        again = kernel.run(
            decision.offset_dn, meta.scale, write=True, evidence=None, out=out, valid=valid
        )
        counts[C_NEGATIVE] = again[C_NEGATIVE]
    layers = {name: out[i] for i, name in enumerate(KERNEL_LAYERS) if name in kernel.layers}
    return SceneLayers(grid, layers, valid, decision, kernel.stats(counts))


Range = tuple[float | None, float | None]  # finite min and max; None when nothing is
_NO_RANGE: Range = (None, None)


def value_range(array: np.ndarray) -> Range:
    """Min and max of a layer as stored (quantised, :mod:`raster.encoding`): what a reader
    of the product sees."""
    return encoding.stored_range(encoding.quantise(array))


def _widen(a: Range, b: Range) -> Range:
    lows = [v for v in (a[0], b[0]) if v is not None]
    highs = [v for v in (a[1], b[1]) if v is not None]
    return (min(lows) if lows else None, max(highs) if highs else None)


def strip_rows(block_pixels: int, width: int) -> int:
    """Rows per strip when a grid is processed strip by strip: about a quarter of
    ``block_pixels`` per strip, at least 64 rows."""
    return max(64, block_pixels // (4 * width))


# Product layers as COG bytes, or as a COG file in the work directory (large grids; read
# only when published), each with its value range.
EncodedLayers = dict[str, tuple[bytes | Path, Range]]


@dataclass
class SceneProducts:
    decision: OffsetDecision
    stats: dict[str, Any]
    layers: EncodedLayers


def scene_products(
    band_paths: Mapping[str, str],
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
    *,
    layers: tuple[str, ...],
    block_pixels: int,
    workdir: Path,
    raw: RawScene | None = None,
) -> SceneProducts:
    """One scene's ``layers`` as COGs: as whole arrays encoded in memory, or, for grids of
    more than ``block_pixels`` pixels, strip by strip through files in ``workdir``
    (:func:`transform_scene_blocked`: memory bounded by one strip). ``raw``: the whole
    grid's inputs already decoded (:func:`whole_inputs`), else they are read here."""
    if in_strips(grid, block_pixels):
        blocked = transform_scene_blocked(
            band_paths,
            aoi,
            grid,
            meta,
            settings,
            block_rows=strip_rows(block_pixels, grid.width),
            workdir=workdir,
        )
        encoded: EncodedLayers = {n: (blocked.cogs[n], blocked.ranges[n]) for n in layers}
        return SceneProducts(blocked.decision, blocked.stats, encoded)
    if raw is None:
        raw = read_scene(band_paths, grid)
    scene = transform_raw(raw, aoi, grid, meta, settings)
    del raw  # the inputs are not needed while the layers are encoded
    encoded = {}
    for n in layers:
        stored = encoding.quantise(scene.layers[n])
        encoded[n] = (_encode_stored(stored, grid), encoding.stored_range(stored))
    return SceneProducts(scene.decision, scene.stats, encoded)


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
    ranges: dict[str, Range]


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
    with contextlib.ExitStack() as inputs:
        sources = open_bands(band_paths, inputs)
        return _blocked(sources, aoi, grid, meta, settings, strips, workdir, evidence)


def _blocked(
    sources: Mapping[str, Any],
    aoi: BaseGeometry,
    grid: Grid,
    meta: SceneMeta,
    settings: TransformSettings,
    strips: list[tuple[int, Grid]],
    workdir: Path,
    evidence: OffsetEvidence,
) -> BlockedScene:
    for _, sub in strips:
        kernel = _Kernel(read_open_scene(sources, sub, whole=False), aoi, sub, settings)
        valid = np.empty(sub.shape, dtype=bool)
        kernel.run(0, meta.scale, write=False, evidence=evidence, out=_NO_OUT, valid=valid)
        del kernel, valid
    decision = decide_from_evidence(
        meta.baseline, meta.boa_offset_applied, meta.raster_offset, evidence
    )
    totals = np.zeros(N_COUNTS, dtype=np.int64)
    bands = 0
    ranges: dict[str, Range] = {}
    with contextlib.ExitStack() as stack:
        sinks: dict[str, Any] = {}
        for row, sub in strips:
            kernel = _Kernel(read_open_scene(sources, sub, whole=False), aoi, sub, settings)
            out, valid = kernel.new_outputs()
            totals += kernel.run(
                decision.offset_dn, meta.scale, write=True, evidence=None, out=out, valid=valid
            )
            bands = len(kernel.bands)
            for i, name in enumerate(KERNEL_LAYERS):
                if name not in kernel.layers:
                    continue
                stored = encoding.quantise(out[i])
                if name not in sinks:
                    sinks[name] = stack.enter_context(
                        _strip_sink(grid, workdir / f"{name}.strips.tif")
                    )
                sinks[name].write(stored, 1, window=Window(0, row, grid.width, sub.height))
                stored_span = encoding.stored_range(stored)
                ranges[name] = _widen(ranges.get(name, _NO_RANGE), stored_span)
            del kernel, out, valid
        cogs = {name: _sink_to_cog(sink, workdir / f"{name}.tif") for name, sink in sinks.items()}
    for name in cogs:
        (workdir / f"{name}.strips.tif").unlink(missing_ok=True)
    return BlockedScene(cogs, decision, _stats(totals, bands), ranges)


@contextlib.contextmanager
def _strip_sink(grid: Grid, path: Path) -> Iterator[Any]:
    """A product layer's stored (int16) values, written strip by strip. On disk, not in
    memory: for a large AOI the layers themselves would not fit."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype=encoding.DTYPE,
        crs=grid.crs,
        transform=grid.transform,
        nodata=encoding.NODATA,
        tiled=True,
        blockxsize=COG_BLOCKSIZE,
        blockysize=COG_BLOCKSIZE,
        compress=encoding.COMPRESS,
        zstd_level=encoding.LEVEL,
        predictor=encoding.PREDICTOR,
    ) as dataset:
        encoding.set_scale(dataset)
        yield dataset


def _sink_to_cog(dataset: Any, path: Path) -> Path:
    # The copy carries the scale/offset over: the same bytes as _encode_stored's.
    rasterio.shutil.copy(dataset, str(path), **encoding.product_cog_options())
    return path


def encode_layer(array: np.ndarray, grid: Grid) -> bytes:
    """A layer of physical values (float32, NaN nodata) as a product COG: int16 scaled,
    ZSTD, horizontal predictor (:mod:`raster.encoding`)."""
    return _encode_stored(encoding.quantise(array), grid)


def _encode_stored(stored: np.ndarray, grid: Grid) -> bytes:
    height, width = stored.shape
    try:
        with MemoryFile() as mem:
            with mem.open(
                width=width,
                height=height,
                count=1,
                dtype=encoding.DTYPE,
                crs=grid.crs,
                transform=grid.transform,
                nodata=encoding.NODATA,
                **encoding.product_cog_options(),
            ) as dst:
                dst.write(stored, 1)
                encoding.set_scale(dst)
            return bytes(mem.read())
    except rasterio.errors.RasterioError as exc:
        raise RasterError(f"cannot encode COG: {exc}") from exc


def median_composite_from_paths(
    paths: list[str], grid: Grid, block_rows: int, workdir: Path
) -> tuple[Path, Range]:
    """Per-pixel median of the valid values of several product rasters on ``grid`` (either
    encoding, :func:`raster.encoding.read_physical`), read strip by strip: the median of
    the physical values, then quantised. Returns the COG file (in ``workdir``) and the
    stored value range."""
    value_span = _NO_RANGE
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(rasterio.open(p)) for p in paths]
        strips = workdir / "composite.strips.tif"
        sink = stack.enter_context(_strip_sink(grid, strips))
        for row, sub in block_grids(grid, block_rows):
            window = Window(0, row, grid.width, sub.height)
            strip = median_composite(
                [encoding.read_physical(src, window=window) for src in sources]
            )
            stored = encoding.quantise(strip)
            sink.write(stored, 1, window=window)
            value_span = _widen(value_span, encoding.stored_range(stored))
        cog = _sink_to_cog(sink, workdir / "composite.tif")
    strips.unlink(missing_ok=True)
    return cog, value_span


def median_composite(layers: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of the valid (non-NaN) values; NaN where no scene is valid
    (``np.nanmedian`` of the float32 layers, bit for bit)."""
    if not layers:
        raise ValueError("no layers to composite")
    stack = np.stack([np.asarray(layer, dtype=np.float32) for layer in layers])
    out = np.empty(stack.shape[1:], dtype=np.float32)
    nanmedian_layers(stack, out)
    return out
