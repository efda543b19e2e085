"""Read the AOI window of a (remote) COG and write it as a new COG, all in memory."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import EnvError, RasterioError
from rasterio.io import MemoryFile
from rasterio.session import Session
from rasterio.windows import transform as window_transform
from rio_cogeo.cogeo import cog_validate
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.window import PixelWindow, aoi_window

COG_BLOCKSIZE = 512
# The raw band windows' codec: for the five windows of a full-size scene under a 20 km AOI
# ZSTD level 1 with the horizontal predictor takes 2 % more bytes than DEFLATE (GDAL's
# default level 6) and encodes 2.6x, decodes 1.6x faster (benchmarks/raw_windows.py);
# every window is encoded once and decoded by three steps.
RAW_COMPRESS = "ZSTD"
RAW_LEVEL = 1
DEFAULT_RAW_BLOCK_CACHE = 10 * 1024 * 1024  # GDAL's own GDAL_MAX_RAW_BLOCK_CACHE_SIZE

FaultKind = Literal["not_found", "not_raster", "corrupt"]


class SourceFault(RasterError):
    """One source raster is bad in itself: missing, not a raster, or corrupt/truncated.

    Retrying now cannot fix it and no other item is affected, so the caller quarantines
    the item. Every other read failure (endpoint down, credentials, throttling after
    GDAL's retries, anything unrecognised) stays a plain RasterError and fails the run.
    """

    def __init__(self, path: str, kind: FaultKind, detail: str) -> None:
        super().__init__(f"{path}: {_KIND_TEXT[kind]}: {detail}")
        self.kind = kind
        self.detail = detail


_KIND_TEXT: dict[FaultKind, str] = {
    "not_found": "asset not found",
    "not_raster": "not a readable raster",
    "corrupt": "corrupt or truncated raster",
}
# GDAL error classes/messages, checked against SeaweedFS, a plain HTTP server and local
# files (GDAL 3.10): each names a property of the file itself, not of the way to it.
_NOT_FOUND = re.compile(
    r"specified key does not exist|HTTP response code: (404|410)\b|No such file or directory"
    r"|does not exist in the file system"
)
_NOT_RASTER = re.compile(r"not recognized as (being in )?a supported file format|Not a TIFF")
_CORRUPT = re.compile(
    r"TIFFFillTile|TIFFReadEncoded(Tile|Strip)|IReadBlock failed|TIFFReadDirectory"
    r"|Read error at|TIFFFetch|Cannot read TIFF header|Incorrect count for"
)
# Transport trouble GDAL reports as a warning while retrying ("HTTP error code: 503 ...
# Retrying again"): a tile read that then fails reads as "got 0 bytes", exactly like a
# truncated file, so these warnings are what tells the two apart.
_TRANSPORT_WARNING = re.compile(r"HTTP error code|CURL error|Retrying", re.IGNORECASE)
_local = threading.local()


class _TransportWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        seen = getattr(_local, "transport", None)
        if seen is not None and _TRANSPORT_WARNING.search(record.getMessage()):
            seen.append(record.getMessage())


# rasterio routes GDAL's warnings to this logger; the handler runs in the reading thread.
logging.getLogger("rasterio._err").addHandler(_TransportWarnings(logging.WARNING))


@contextlib.contextmanager
def _watch_transport() -> Iterator[list[str]]:
    seen: list[str] = []
    _local.transport = seen
    try:
        yield seen
    finally:
        _local.transport = None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, outermost first (rasterio chains GDAL's error stack)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def source_fault_kind(exc: BaseException, transport_warnings: list[str]) -> FaultKind | None:
    """The data fault a failed open/read proves, or None: systemic or unknown, so the run
    must fail and a retry can fix it."""
    text = "\n".join(f"{type(e).__name__}: {e}" for e in _chain(exc))
    if "CPLE_AWSObjectNotFoundError" in text or _NOT_FOUND.search(text):
        return "not_found"
    if transport_warnings or re.search(r"CURL error|HTTP response code|CPLE_AWS", text):
        return None
    if _NOT_RASTER.search(text):
        return "not_raster"
    if _CORRUPT.search(text):
        return "corrupt"
    return None


def cog_options(
    *,
    predictor: int,
    categorical: bool = False,
    compress: str = "DEFLATE",
    level: int | None = None,
) -> dict[str, Any]:
    """GDAL COG creation options for every COG the pipeline writes: 512 px tiles,
    internal overviews (nearest for classes, so none is invented), one thread so the
    output is the same bytes for the same input. ``predictor``: 2 for integers, 3 for
    floats. ``compress`` and ``level``: the codec (the raw band windows':
    :data:`RAW_COMPRESS`; the products': ``raster.encoding``)."""
    options: dict[str, Any] = {
        "driver": "COG",
        "compress": compress,
        "predictor": predictor,
        "blocksize": COG_BLOCKSIZE,
        "overview_resampling": "nearest" if categorical else "average",
        "num_threads": "1",
    }
    if level is not None:
        options["level"] = level
    return options


@dataclass(frozen=True)
class WindowData:
    array: np.ndarray  # (bands, rows, cols)
    crs_wkt: str
    epsg: int | None
    transform: Affine
    nodata: float | None
    window: PixelWindow
    source_size: tuple[int, int]  # (height, width) of the source raster

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[2])


@dataclass(frozen=True)
class CogValidation:
    valid: bool
    errors: list[str]
    warnings: list[str]


@contextlib.contextmanager
def gdal_env(options: Mapping[str, Any], session: Session | None = None) -> Iterator[None]:
    """Enter GDAL settings (thread-local in rasterio, so enter it in each worker)."""
    with rasterio.Env(session=session, **options):
        yield


def read_aoi_window(
    path: str, aoi: BaseGeometry, *, reserve: Callable[[int], None] | None = None
) -> WindowData | None:
    """Read only the pixels covering ``aoi``: GDAL fetches the header and those tiles.

    ``reserve``, if given, is called with the window's decoded size in bytes once the
    header is read and before any pixel is, so callers can bound what is in memory.
    Raises SourceFault when the file itself is bad (see there), RasterError otherwise.
    """
    with _watch_transport() as transport:
        try:
            return _read_aoi_window(path, aoi, reserve)
        except RasterioError as exc:
            kind = source_fault_kind(exc, transport)
            if kind is not None:
                # The innermost GDAL message is the specific one ("... got 0 bytes").
                raise SourceFault(path, kind, str(_chain(exc)[-1])) from exc
            raise RasterError(f"cannot read window of {path}: {exc}") from exc


def _read_aoi_window(
    path: str, aoi: BaseGeometry, reserve: Callable[[int], None] | None
) -> WindowData | None:
    with rasterio.open(path) as src:
        win = aoi_window(aoi, src.crs, src.transform, src.width, src.height)
        if win is None:
            return None
        if reserve is not None:
            reserve(win.width * win.height * sum(np.dtype(d).itemsize for d in src.dtypes))
        with rasterio.Env(GDAL_MAX_RAW_BLOCK_CACHE_SIZE=str(raw_block_cache_bytes(src, win))):
            array = src.read(window=win.as_rasterio())
        return WindowData(
            array=array,
            crs_wkt=src.crs.to_wkt(),
            epsg=src.crs.to_epsg(),
            transform=window_transform(win.as_rasterio(), src.transform),
            nodata=src.nodata,
            window=win,
            source_size=(src.height, src.width),
        )


def raw_block_cache_bytes(src: Any, win: PixelWindow) -> int:
    """Room for every tile of ``win`` in GDAL's raw block cache, never less than what the
    environment allows already.

    GDAL fetches a window's tiles with merged multi-range requests only while their
    compressed size fits this cache, else tile run by tile run: a fixed limit costs large
    windows extra requests and bytes (a 60 km AOI of 10 m band tiles holds 73 MB: 13
    requests instead of 8 for its nir band, benchmarks/README.md). The tiles' uncompressed
    size bounds their compressed one (DEFLATE adds under 0.1 % to incompressible data, the
    10 % margin covers it), and the cache holds only what a batch fetched, so a small
    window costs nothing more.
    """
    rows, cols = src.block_shapes[0]
    tiles_x = (win.col_off + win.width - 1) // cols - win.col_off // cols + 1
    tiles_y = (win.row_off + win.height - 1) // rows - win.row_off // rows + 1
    pixel_bytes = sum(np.dtype(d).itemsize for d in src.dtypes)
    needed = int(tiles_x * tiles_y * rows * cols * pixel_bytes * 1.1)
    try:
        configured = int(rasterio.env.getenv().get("GDAL_MAX_RAW_BLOCK_CACHE_SIZE") or 0)
    except EnvError:  # no environment entered: GDAL's default applies
        configured = 0
    return max(needed, configured, DEFAULT_RAW_BLOCK_CACHE)


def encode_cog(
    data: WindowData,
    *,
    categorical: bool = False,
    compress: str = RAW_COMPRESS,
    level: int | None = RAW_LEVEL,
) -> bytes:
    """Encode a window as a Cloud-Optimized GeoTIFF (by default ZSTD level 1 with the
    horizontal predictor, internal overviews; ``compress``/``level`` for benchmarks).

    Categorical rasters (e.g. SCL) get nearest-neighbour overviews so no class is invented.
    The output is deterministic for the same input, which makes unchanged re-runs no-ops.
    """
    bands, height, width = data.array.shape
    try:
        with MemoryFile() as mem:
            with mem.open(
                width=width,
                height=height,
                count=bands,
                dtype=data.array.dtype,
                crs=data.crs_wkt,
                transform=data.transform,
                nodata=data.nodata,
                **cog_options(predictor=2, categorical=categorical, compress=compress, level=level),
            ) as dst:
                dst.write(data.array)
            return bytes(mem.read())
    except RasterioError as exc:
        raise RasterError(f"cannot encode COG: {exc}") from exc


def validate_cog_path(path: str) -> CogValidation:
    try:
        valid, errors, warnings = cog_validate(path, quiet=True)
    except Exception as exc:  # rio-cogeo raises plain Exceptions for unreadable files
        return CogValidation(False, [f"cannot open: {exc}"], [])
    return CogValidation(bool(valid), list(errors), list(warnings))


def validate_cog_bytes(data: bytes) -> CogValidation:
    with MemoryFile(data) as mem:
        return validate_cog_path(mem.name)
