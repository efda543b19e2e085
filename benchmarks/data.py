"""Benchmark inputs: the real COGs and item of ../shared/data, the AOIs, the ideal bytes.

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
    center_utm: tuple[float, float]  # where the box is centred, EPSG:32629
    note: str

    def geometry(self) -> BaseGeometry:
        """A lon/lat box of about ``size_km`` on a side around the centre."""
        to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
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

    @property
    def ideal_bytes(self) -> int:
        return self.header_bytes + self.tile_bytes


def _block_layout(src: rasterio.io.DatasetReader) -> dict[tuple[int, int], tuple[int, int]]:
    bh, bw = src.block_shapes[0]
    out = {}
    for y in range(math.ceil(src.height / bh)):
        for x in range(math.ceil(src.width / bw)):
            off = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1)
            size = src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1)
            out[(x, y)] = (int(off or 0), int(size or 0))
    return out


def header_bytes(path: Path) -> int:
    """Bytes before the first tile's data: min BLOCK_OFFSET over all IFDs (incl. overviews)."""
    offsets: list[int] = []
    with rasterio.open(path) as src:
        n_overviews = len(src.overviews(1))
    for level in range(-1, n_overviews):
        kwargs = {} if level < 0 else {"overview_level": level}
        with rasterio.open(path, **kwargs) as src:
            offsets += [off for off, size in _block_layout(src).values() if size > 0]
    return min(offsets)


def ideal_windows(aoi: BaseGeometry) -> list[IdealWindow]:
    """Per asset: the pipeline's window, the header, and the full-res tiles it intersects."""
    out = []
    for asset, name in BANDS.items():
        path = COG_DIR / name
        with rasterio.open(path) as src:
            win = aoi_window(aoi, src.crs, src.transform, src.width, src.height)
            assert win is not None, f"AOI misses {name}"
            bh, bw = src.block_shapes[0]
            layout = _block_layout(src)
        xs = range(win.col_off // bw, (win.col_off + win.width - 1) // bw + 1)
        ys = range(win.row_off // bh, (win.row_off + win.height - 1) // bh + 1)
        sizes = [layout[(x, y)][1] for y in ys for x in xs]
        out.append(IdealWindow(asset, win, header_bytes(path), len(sizes), sum(sizes)))
    return out
