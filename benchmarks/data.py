"""Benchmark inputs: the datasets (realistic full-size scenes, ``benchmarks/realistic.py``;
the real but decimated COGs and item of ../shared/data), their AOIs, the ideal bytes.

Nothing under ../shared/data is modified: the item is rewritten in memory.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from pyproj import Transformer
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.raster.window import PixelWindow, aoi_window

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCENE = "S2A_29RKH_20200219_0_L2A"
COG_DIR = SHARED_DATA / "sentinel-2-cogs" / SCENE
ITEM_PATH = SHARED_DATA / "earth-search-v1" / "items" / f"{SCENE}.json"

BUCKET = "sentinel-cogs"
PREFIX = f"sentinel-s2-l2a-cogs/29/R/KH/2020/2/{SCENE}"
EPSG = 32629

# STAC asset key -> file name (legacy band names in the COG bucket).
BANDS: dict[str, str] = {
    "red": "B04.tif",
    "green": "B03.tif",
    "blue": "B02.tif",
    "nir": "B08.tif",
    "scl": "SCL.tif",
}


@dataclass(frozen=True)
class Aoi:
    name: str
    size_km: float
    center_utm: tuple[float, float]  # where the box is centred, in ``epsg``
    note: str
    epsg: int = EPSG

    def geometry(self) -> BaseGeometry:
        """A lon/lat box of about ``size_km`` on a side around the centre."""
        to_ll = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        lon, lat = to_ll.transform(*self.center_utm)
        half_lat = self.size_km * 500 / 111_320
        half_lon = half_lat / math.cos(math.radians(lat))
        return box(lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        minx, miny, maxx, maxy = self.geometry().bounds
        return (minx, miny, maxx, maxy)


def file_grid() -> tuple[float, float, float, int]:
    with rasterio.open(COG_DIR / BANDS["red"]) as src:
        t = src.transform
        return t.c, t.f, t.a, src.block_shapes[0][0]


def aois() -> list[Aoi]:
    """Two AOIs inside one 512-px tile (1 tile per band), two spanning 4 and 9 tiles."""
    x0, y0, res, block = file_grid()
    tile = block * res  # 51.2 km at these decimated 100 m pixels
    # Centres are moved by half a pixel (50 m east, 50 m south) so that no AOI edge falls
    # within 1/100 pixel of a pixel edge: there odc-geo's snapping tolerance (0.01 px) and
    # the pipeline's outward rounding legitimately differ by one row/column, and the two
    # readers would no longer read the same window.
    nudge = res / 2
    in_tile = (x0 + 1.5 * tile + nudge, y0 - 1.5 * tile - nudge)  # in full-res tile (1, 1)
    with rasterio.open(COG_DIR / BANDS["red"]) as src:
        b = src.bounds
        centre = ((b.left + b.right) / 2 + nudge, (b.bottom + b.top) / 2 - nudge)
    return [
        Aoi("5km", 5, in_tile, "inside one tile"),
        Aoi("20km", 20, in_tile, "inside one tile"),
        Aoi("60km", 60, centre, "scene centre, 2x2 tiles"),
        Aoi("100km", 100, centre, "scene centre, 3x3 tiles"),
    ]


def object_key(asset: str) -> str:
    return f"{PREFIX}/{BANDS[asset]}"


def gdal_paths() -> list[str]:
    return [f"/vsis3/{BUCKET}/{object_key(a)}" for a in BANDS]


def item_dict() -> dict[str, Any]:
    """The real item, data hrefs -> s3://, per-asset grid metadata matching the real files.

    The item's ``proj:shape``/``proj:transform``/``gsd``/``raster:bands`` describe the 10 m
    originals; odc-stac would build the wrong grid from them, so they are replaced by what
    the (10x decimated) files actually hold.
    """
    item: dict[str, Any] = copy.deepcopy(json.loads(ITEM_PATH.read_text()))
    for asset, name in BANDS.items():
        meta = item["assets"][asset]
        meta["href"] = f"s3://{BUCKET}/{object_key(asset)}"
        with rasterio.open(COG_DIR / name) as src:
            meta["proj:shape"] = [src.height, src.width]
            meta["proj:transform"] = list(src.transform)[:6]
            meta["proj:epsg"] = src.crs.to_epsg()
            res = float(src.res[0])
        if "gsd" in meta:
            meta["gsd"] = res
        for rb in meta.get("raster:bands", []):
            rb["spatial_resolution"] = res
    return item


@dataclass(frozen=True)
class IdealWindow:
    asset: str
    window: PixelWindow
    header_bytes: int
    tiles: int
    tile_bytes: int
    # What a COG reader must fetch, as (first byte, last byte) ranges: the header, then
    # the intersected full-resolution tiles, consecutive ones merged (same bytes).
    ranges: tuple[tuple[int, int], ...] = ()

    @property
    def ideal_bytes(self) -> int:
        return self.header_bytes + self.tile_bytes


def header_bytes(path: Path) -> int:
    """Bytes before the first tile's data: min TileOffsets over all IFDs (incl. overviews)."""
    from benchmarks.realistic import header_bytes as tiff_header_bytes

    return tiff_header_bytes(path)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start == out[-1][1] + 1:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def ideal_windows(aoi: BaseGeometry, files: dict[str, Path] | None = None) -> list[IdealWindow]:
    """Per asset: the pipeline's window, the header, and the full-res tiles it intersects
    (sizes from the file's TileByteCounts). ``files``: asset -> local copy of the COG
    (default: the decimated shared files)."""
    from benchmarks.realistic import tiff_layout

    files = files or {asset: COG_DIR / name for asset, name in BANDS.items()}
    out = []
    for asset, path in files.items():
        with rasterio.open(path) as src:
            win = aoi_window(aoi, src.crs, src.transform, src.width, src.height)
            assert win is not None, f"AOI misses {path}"
        full = tiff_layout(path)[0]
        bw, bh = full.tile_width, full.tile_height
        xs = range(win.col_off // bw, (win.col_off + win.width - 1) // bw + 1)
        ys = range(win.row_off // bh, (win.row_off + win.height - 1) // bh + 1)
        tiles = [full.tile(x, y) for y in ys for x in xs]
        header = header_bytes(path)
        ranges = [(0, header - 1), *_merge([(o, o + n - 1) for o, n in tiles if n])]
        out.append(
            IdealWindow(asset, win, header, len(tiles), sum(n for _, n in tiles), tuple(ranges))
        )
    return out


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """One scene's five band COGs as the window-read benchmark uses them."""

    name: str
    description: str
    bucket: str
    item: dict[str, Any]  # STAC item with s3:// hrefs (for odc-stac)
    files: dict[str, Path]  # asset -> local copy of the COG (ideal bytes, upload)
    keys: dict[str, str]  # asset -> object key in ``bucket``
    epsg: int
    aois: tuple[Aoi, ...]

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.files)

    def gdal_paths(self) -> list[str]:
        return [f"/vsis3/{self.bucket}/{self.keys[a]}" for a in self.files]

    def object_path(self, asset: str) -> str:
        """The request path a path-style S3 GET of the asset carries (proxy counts)."""
        return f"/{self.bucket}/{self.keys[asset]}"

    def file_grid(self) -> tuple[float, float, float, int]:
        """x0, y0, resolution and block size of the first (finest) band."""
        with rasterio.open(next(iter(self.files.values()))) as src:
            t = src.transform
            return t.c, t.f, t.a, src.block_shapes[0][0]


def decimated() -> Dataset:
    """The real 29RKH COGs of ../shared/data, decimated 10x (100 m, 512-px tiles)."""
    return Dataset(
        name="decimated",
        description=(
            f"{SCENE}: REAL Sentinel-2 L2A pixels, but decimated 10x per axis (10 m bands "
            "1098x1098 at 100 m, SCL 549x549 at 200 m; DEFLATE, 512-px tiles = 51.2 km per "
            "tile, overviews)"
        ),
        bucket=BUCKET,
        item=item_dict(),
        files={asset: COG_DIR / name for asset, name in BANDS.items()},
        keys={asset: object_key(asset) for asset in BANDS},
        epsg=EPSG,
        aois=tuple(aois()),
    )


REALISTIC_SCENE = "S2A_30TYN_20240615_0_L2A"


def realistic(manifest: dict[str, Any]) -> Dataset:
    """One full-size scene of ``benchmarks/realistic.py`` (``manifest`` from ``prepare``).

    AOIs (lon/lat boxes, centres nudged by half a pixel as in :func:`aois`): 2 km at the
    centre of one 1024-px tile (10.24 km), so it straddles no tile boundary; 10, 20 and
    60 km around a point a quarter tile inside a tile corner near the scene centre, so they
    meet 2x2, 3x3 and 7x7 tiles per 10 m band.
    """
    from benchmarks import realistic as rd

    item = next(it for it in manifest["items"] if it["id"] == REALISTIC_SCENE)
    files = rd.item_files(item)
    epsg = int(item["properties"]["proj:epsg"])
    with rasterio.open(files["red"]) as src:
        x0, y0, res = src.transform.c, src.transform.f, src.transform.a
        block = src.block_shapes[0][0]
    tile = block * res
    nudge = res / 2
    in_tile = (x0 + 5.5 * tile + nudge, y0 - 5.5 * tile - nudge)
    near_corner = (x0 + 5.25 * tile + nudge, y0 - 5.25 * tile - nudge)
    scene_aois = (
        Aoi("2km", 2, in_tile, "centre of one tile", epsg),
        Aoi("10km", 10, near_corner, "near a tile corner", epsg),
        Aoi("20km", 20, near_corner, "near a tile corner", epsg),
        Aoi("60km", 60, near_corner, "near a tile corner", epsg),
    )
    return Dataset(
        name="realistic",
        description=(
            f"{REALISTIC_SCENE}: full-size Sentinel-2 L2A-like COGs (benchmarks/realistic.py: "
            "10 m bands 10980x10980, 1024-px tiles, DEFLATE+predictor 2; SCL 5490x5490 at "
            "20 m, 512-px tiles; overviews; texture from the real 29RKH pixels + noise)"
        ),
        bucket=rd.BUCKET,
        item=item,
        files=files,
        keys={asset: rd.object_key(item, asset) for asset in files},
        epsg=epsg,
        aois=scene_aois,
    )


def run_json_module(module: str, *args: str) -> dict[str, Any]:
    """``python -m module args`` in a fresh interpreter, from the repository (benchmarks
    that import the package need their own code location configuration): its report is
    printed here, its last line (one JSON object) returned."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", module, *args]
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.rstrip("\n").splitlines()
    print("\n".join(lines[:-1]), flush=True)
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode})")
    return dict(json.loads(lines[-1]))
