"""An offline Sentinel-2 L2A sample catalog that looks like Earth Search v1 ``sentinel-2-l2a``.

``generate_sample_catalog`` writes full-tile COGs for every Sentinel-2 tile that intersects an
AOI on one day and returns the STAC Collection and Item dicts describing them, so the demo
can serve a STAC API and read AOI windows with no network.

Scenes
    One datatake per day. Every MGRS tile (110 km Sentinel-2 tiles, 100 km grid) of the
    AOI's UTM zone(s) that intersects the AOI gets an item ``..._0_L2A`` (the first
    processing) plus the reprocessed duplicate ``..._1_L2A`` that Earth Search also holds for
    most scenes: for days processed before baseline 04.00 it is ESA's collection-1
    reprocessing (baseline 05.00, later generation time); for later days it is Earth Search's
    re-run of the same product (same baseline and product) that subtracted the BOA offset.

BOA offset
    From baseline 04.00 the L2A digital numbers carry ``BOA_ADD_OFFSET`` (+1000).
    ``earthsearch:boa_offset_applied: true`` means Earth Search already removed it from the
    pixels. Here the pixels follow that rule exactly: DN = reflectance * 10000 (+ 1000 only
    when baseline >= 04.00 and the flag is false), and ``raster:bands`` ``offset`` is -0.1
    exactly when the +1000 is in the pixels, so ``DN * scale + offset`` is always the
    reflectance. (Real Earth Search items also say -0.1 on already-harmonised items, a known
    metadata bug; the sample keeps metadata and pixels consistent instead.) The two items of
    a scene hold the same reflectances, so ``dn_0 - 1000 == dn_1`` where the offset applies.

Sparse COGs
    Each COG covers the full tile (10980 px at 10 m) in the tile's UTM CRS, but only the AOI
    plus ``DATA_MARGIN_M`` carries data; every other block is left out of the file
    (``SPARSE_OK``) and reads as nodata. GDAL would otherwise spend seconds per band
    averaging empty overviews, so the overview pyramid is computed here on the small data
    window and handed to the COG driver through a VRT whose ``<Overview>`` levels point at
    the pre-computed windows (``OVERVIEWS=FORCE_USE_EXISTING``).

Acquisition metadata
    The platform is Sentinel-2A, its orbit anchored on a real product (absolute orbit 24515
    on 2020-03-02), the overpass time fitted to real products; for Toulouse on 2024-06-15
    this gives relative orbit R008, which is the real one. Sun angles are computed for the
    tile centre at the item's datetime.

Pixels are a deterministic function of the UTM coordinates and the seed (sums of plane
waves, hashed field parcels, a meandering river), so overlapping tiles of one UTM zone agree
and the same inputs give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from xml.sax.saxutils import escape

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import ConfigError, RasterError

COLLECTION_ID: Final = "sentinel-2-l2a"
STAC_VERSION: Final = "1.0.0"
COG_MEDIA_TYPE: Final = "image/tiff; application=geotiff; profile=cloud-optimized"

TILE_SIZE_M: Final = 109_800
MGRS_SQUARE_M: Final = 100_000
# Blocks as in Earth Search's sentinel-cogs: 1024 px for 10 m bands, 512 px otherwise.
BLOCK_SIZE: Final[dict[int, int]] = {10: 1024, 20: 512, 60: 512}
# Data reaches this far beyond the AOI so reprojection/resampling at the AOI edge still
# reads real pixels.
DATA_MARGIN_M: Final = 2_000
# Data windows snap to 960 m: a whole number of pixels at 10/20/60 m for every overview
# factor (16 at 10 and 20 m, 4 at 60 m), so each overview pixel averages complete pixels.
ALIGN_M: Final = 960
# Beyond this the "small sample" stops being small (and slow to write).
MAX_AOI_DEGREES: Final = 0.5
BOA_ADD_OFFSET: Final = 1000
FIRST_DAY: Final = dt.date(2015, 6, 27)

LICENSE_HREF: Final = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"

ITEM_EXTENSIONS: Final = (
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
)
COLLECTION_EXTENSIONS: Final = (
    "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/scientific/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
)

# ESA's operational L2A processing baseline by first day in use (approximate; decorative
# before 04.00, where only "below 04.00 means no BOA offset" matters).
OPERATIONAL_BASELINES: Final = (
    (FIRST_DAY, "02.14"),
    (dt.date(2021, 6, 30), "03.00"),
    (dt.date(2022, 1, 25), "04.00"),
    (dt.date(2022, 12, 6), "05.09"),
    (dt.date(2023, 12, 13), "05.10"),
    (dt.date(2024, 7, 23), "05.11"),
)
# ESA's collection-1 reprocessing of the archive.
REPROCESSING_BASELINE: Final = "05.00"

# Sentinel-2A orbit anchor from a real product (S2A_MSIL2A_20200302T102021_..._R065):
# absolute orbit 24515 started its datatake then; 143 orbits repeat every 10 days.
_S2A_ORBIT_ANCHOR: Final = (dt.datetime(2020, 3, 2, 10, 20, 21, tzinfo=dt.UTC), 24515)
_ORBIT_SECONDS: Final = 10 * 86400 / 143

# Upper-left corners of real Sentinel-2 tiles; the S2 grid sits up to 40 m off the
# 100 km MGRS square corner, differently per tile, so known tiles are pinned and others
# fall back to the square corner.
KNOWN_TILE_ORIGINS: Final[dict[str, tuple[int, int]]] = {
    "31TCJ": (300000, 4900020),
    "31TDJ": (399960, 4900020),
    "31TDH": (399960, 4800000),
    "32TMT": (399960, 5300040),
    "32TNT": (499980, 5300040),
    "32UMU": (399960, 5400000),
    "32UNU": (499980, 5400000),
    "29RKH": (199980, 2800020),
}

_COLUMN_LETTERS: Final = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS: Final = "ABCDEFGHJKLMNPQRSTUV"
_BAND_LETTERS: Final = "CDEFGHJKLMNPQRSTUVWX"

# Scene classification (SCL) classes used.
SCL_DARK, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 2, 3, 4, 5, 6
SCL_UNCLASSIFIED, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 7, 8, 9, 10
CLOUD_CLASSES: Final = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)

AssetKind = Literal["reflectance", "aot", "wvp", "scl", "visual"]


@dataclass(frozen=True)
class SampleCatalog:
    collection: dict[str, Any]
    items: list[dict[str, Any]]
    root: Path


@dataclass(frozen=True)
class EoBand:
    name: str
    common_name: str
    description: str
    center_wavelength: float
    full_width_half_max: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "common_name": self.common_name,
            "description": self.description,
            "center_wavelength": self.center_wavelength,
            "full_width_half_max": self.full_width_half_max,
        }


EO_BANDS: Final[dict[str, EoBand]] = {
    b.name: b
    for b in (
        EoBand("coastal", "coastal", "Coastal aerosol (band 1)", 0.443, 0.027),
        EoBand("blue", "blue", "Blue (band 2)", 0.49, 0.098),
        EoBand("green", "green", "Green (band 3)", 0.56, 0.045),
        EoBand("red", "red", "Red (band 4)", 0.665, 0.038),
        EoBand("rededge1", "rededge", "Red edge 1 (band 5)", 0.704, 0.019),
        EoBand("rededge2", "rededge", "Red edge 2 (band 6)", 0.74, 0.018),
        EoBand("rededge3", "rededge", "Red edge 3 (band 7)", 0.783, 0.028),
        EoBand("nir", "nir", "NIR 1 (band 8)", 0.842, 0.145),
        EoBand("nir08", "nir08", "NIR 2 (band 8A)", 0.865, 0.033),
        EoBand("nir09", "nir09", "NIR 3 (band 9)", 0.945, 0.026),
        EoBand("cirrus", "cirrus", "Cirrus (band 10)", 1.3735, 0.075),
        EoBand("swir16", "swir16", "SWIR 1 (band 11)", 1.61, 0.143),
        EoBand("swir22", "swir22", "SWIR 2 (band 12)", 2.19, 0.242),
    )
}


@dataclass(frozen=True)
class AssetSpec:
    key: str
    file_name: str
    title: str
    resolution: int
    kind: AssetKind
    eo_bands: tuple[str, ...] = ()

    @property
    def block_size(self) -> int:
        return BLOCK_SIZE[self.resolution]

    @property
    def dtype(self) -> str:
        return "uint8" if self.kind in ("scl", "visual") else "uint16"


# Earth Search's COG assets, in its (alphabetical) order. The jp2 mirrors, thumbnail and
# metadata XML/JSON assets are left out: there is nothing local for them to point at.
ASSET_SPECS: Final = (
    AssetSpec("aot", "AOT.tif", "Aerosol optical thickness (AOT)", 20, "aot"),
    AssetSpec("blue", "B02.tif", "Blue (band 2) - 10m", 10, "reflectance", ("blue",)),
    AssetSpec(
        "coastal", "B01.tif", "Coastal aerosol (band 1) - 60m", 60, "reflectance", ("coastal",)
    ),
    AssetSpec("green", "B03.tif", "Green (band 3) - 10m", 10, "reflectance", ("green",)),
    AssetSpec("nir", "B08.tif", "NIR 1 (band 8) - 10m", 10, "reflectance", ("nir",)),
    AssetSpec("nir08", "B8A.tif", "NIR 2 (band 8A) - 20m", 20, "reflectance", ("nir08",)),
    AssetSpec("nir09", "B09.tif", "NIR 3 (band 9) - 60m", 60, "reflectance", ("nir09",)),
    AssetSpec("red", "B04.tif", "Red (band 4) - 10m", 10, "reflectance", ("red",)),
    AssetSpec("rededge1", "B05.tif", "Red edge 1 (band 5) - 20m", 20, "reflectance", ("rededge1",)),
    AssetSpec("rededge2", "B06.tif", "Red edge 2 (band 6) - 20m", 20, "reflectance", ("rededge2",)),
    AssetSpec("rededge3", "B07.tif", "Red edge 3 (band 7) - 20m", 20, "reflectance", ("rededge3",)),
    AssetSpec("scl", "SCL.tif", "Scene classification map (SCL)", 20, "scl"),
    AssetSpec("swir16", "B11.tif", "SWIR 1 (band 11) - 20m", 20, "reflectance", ("swir16",)),
    AssetSpec("swir22", "B12.tif", "SWIR 2 (band 12) - 20m", 20, "reflectance", ("swir22",)),
    AssetSpec("visual", "TCI.tif", "True color image", 10, "visual", ("red", "green", "blue")),
    AssetSpec("wvp", "WVP.tif", "Water vapour (WVP)", 20, "wvp"),
)

# Surface reflectance x 10000 per cover type: water, vegetation, bare soil, urban, forest,
# cloud top, and what thin cirrus adds.
_SIGNATURES: Final[dict[str, tuple[float, float, float, float, float, float, float]]] = {
    "coastal": (650, 300, 900, 1000, 250, 6500, 500),
    "blue": (600, 350, 1100, 1100, 280, 6400, 450),
    "green": (650, 800, 1400, 1250, 550, 6500, 420),
    "red": (450, 420, 1800, 1350, 300, 6600, 400),
    "rededge1": (350, 1100, 2050, 1450, 750, 6700, 380),
    "rededge2": (200, 2800, 2200, 1550, 2200, 6800, 360),
    "rededge3": (180, 3500, 2300, 1600, 2800, 6800, 350),
    "nir": (150, 3800, 2400, 1700, 3000, 6900, 340),
    "nir08": (130, 3900, 2500, 1750, 3100, 6900, 330),
    "nir09": (60, 1900, 1700, 1200, 1600, 5200, 250),
    "swir16": (50, 2000, 3200, 2300, 1500, 5000, 200),
    "swir22": (30, 950, 2600, 2100, 650, 3800, 120),
}


# --------------------------------------------------------------------------- public API


def generate_sample_catalog(
    root: Path,
    day: dt.date,
    aoi_bbox: tuple[float, float, float, float],
    *,
    seed: int = 0,
) -> SampleCatalog:
    """Write the COGs of every sample scene over ``aoi_bbox`` on ``day`` under ``root``.

    ``aoi_bbox`` is (min lon, min lat, max lon, max lat) in EPSG:4326. Returns the STAC
    Collection and Items (asset hrefs are absolute local paths). Deterministic in
    (day, aoi_bbox, seed): regenerating gives byte-identical files.
    """
    aoi = _check_aoi(aoi_bbox)
    if seed < 0:
        raise ConfigError(f"seed: must be >= 0, got {seed}")
    if day < FIRST_DAY:
        raise ConfigError(f"day: Sentinel-2 L2A starts on {FIRST_DAY}, got {day}")
    root = root.resolve()
    tiles = tiles_for_aoi(aoi)
    if not tiles:
        raise ConfigError(f"aoi_bbox: no Sentinel-2 tile intersects {aoi_bbox}")

    lon_c, lat_c = aoi.centroid.x, aoi.centroid.y
    datatake = _datatake(day, lon_c, lat_c, seed)
    sun_az, sun_el = sun_angles(datatake.sensing_time, lon_c, lat_c)
    model = SceneModel.create(seed, aoi, tiles[0].epsg, sun_az, sun_el)

    items: list[dict[str, Any]] = []
    copies: list[tuple[Path, Path]] = []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs: list[Future[None]] = []
        for tile in tiles:
            window = tile.data_window(aoi)
            if window is None:
                continue
            # Rendering the next tile overlaps with the pool writing this one's COGs.
            rasters = model.render(tile, window)
            written: dict[tuple[str, bool], Path] = {}
            for processing in _processings(day, datatake, tile, seed):
                item_dir = (
                    root / "sentinel-s2-l2a-cogs" / tile.path_prefix(day) / processing.item_id
                )
                item_dir.mkdir(parents=True, exist_ok=True)
                hrefs: dict[str, str] = {}
                for spec in ASSET_SPECS:
                    path = item_dir / spec.file_name
                    hrefs[spec.key] = str(path)
                    offset = spec.kind == "reflectance" and processing.offset_in_pixels
                    if (spec.key, offset) in written:
                        # Same pixels as the other processing's file: copy its bytes after.
                        copies.append((written[spec.key, offset], path))
                        continue
                    written[spec.key, offset] = path
                    base = rasters.asset_array(spec, boa_offset=offset)
                    jobs.append(pool.submit(_write_sparse_cog, path, tile, window, spec, base))
                items.append(_item(tile, processing, rasters.stats, hrefs))
        for job in jobs:
            job.result()
    for src, dst in copies:
        _copy_file(src, dst)

    if not items:
        raise ConfigError(f"aoi_bbox: no Sentinel-2 tile data window for {aoi_bbox}")
    items.sort(key=lambda it: it["id"])
    return SampleCatalog(collection=_collection(items), items=items, root=root)


def tiles_for_aoi(aoi: BaseGeometry) -> list[Tile]:
    """Sentinel-2 tiles (of the UTM zones the AOI touches) that intersect ``aoi``."""
    min_lon, min_lat, max_lon, max_lat = aoi.bounds
    south = (min_lat + max_lat) / 2 < 0
    zones = sorted({_utm_zone(min_lon), _utm_zone(max_lon)})
    tiles: list[Tile] = []
    for zone in zones:
        epsg = (32700 if south else 32600) + zone
        to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        aoi_utm = _project(aoi, to_utm)
        zone_band = box(-180 + 6 * (zone - 1), -90, -180 + 6 * zone, 90)
        minx, miny, maxx, maxy = aoi_utm.bounds
        for col in range(max(1, math.floor(minx / MGRS_SQUARE_M) - 1), 9):
            if col * MGRS_SQUARE_M > maxx:
                break
            # A tile reaches 9.8 km past its square to the east and south, so look one
            # square beyond the AOI on every side.
            for row in range(
                math.floor(miny / MGRS_SQUARE_M) - 1, math.floor(maxy / MGRS_SQUARE_M) + 2
            ):
                tile = Tile.from_square(zone, south, col, row)
                if tile.utm_polygon.intersects(aoi_utm) and tile.footprint.intersects(zone_band):
                    tiles.append(tile)
    return sorted(tiles, key=lambda t: t.name)


def sun_angles(when: dt.datetime, lon: float, lat: float) -> tuple[float, float]:
    """(azimuth, elevation) of the sun in degrees (NOAA's approximation, ~0.2 degrees)."""
    utc = when.astimezone(dt.UTC)
    hour = utc.hour + utc.minute / 60 + utc.second / 3600
    g = 2 * math.pi / 365 * (utc.timetuple().tm_yday - 1 + (hour - 12) / 24)
    eq_time = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    hour_angle = math.radians((hour * 60 + eq_time + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(
        hour_angle
    )
    elevation = 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
    azimuth = math.degrees(
        math.atan2(
            math.sin(hour_angle),
            math.cos(hour_angle) * math.sin(phi) - math.tan(decl) * math.cos(phi),
        )
    )
    return (azimuth + 180) % 360, elevation


# --------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class PixelWindow:
    """A window at 10 m; offsets and sizes are multiples of 6 so 20/60 m windows are exact."""

    col_off: int
    row_off: int
    width: int
    height: int

    def at(self, resolution: int) -> PixelWindow:
        f = resolution // 10
        return PixelWindow(self.col_off // f, self.row_off // f, self.width // f, self.height // f)


@dataclass(frozen=True)
class Tile:
    zone: int
    south: bool
    band: str
    square: str
    ulx: int
    uly: int

    @classmethod
    def from_square(cls, zone: int, south: bool, col: int, row: int) -> Tile:
        column_letter = _COLUMN_LETTERS[(zone - 1) % 3][col - 1]
        # Even zones start their row letters at F (MGRS "AA" lettering scheme).
        row_letter = _ROW_LETTERS[(row + (0 if zone % 2 else 5)) % 20]
        epsg = (32700 if south else 32600) + zone
        to_geo = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
        _, lat = to_geo.transform((col + 0.5) * MGRS_SQUARE_M, (row + 0.5) * MGRS_SQUARE_M)
        band = _BAND_LETTERS[min(len(_BAND_LETTERS) - 1, max(0, math.floor((lat + 80) / 8)))]
        name = f"{zone:02d}{band}{column_letter}{row_letter}"
        ulx, uly = KNOWN_TILE_ORIGINS.get(name, (col * MGRS_SQUARE_M, (row + 1) * MGRS_SQUARE_M))
        return cls(zone, south, band, column_letter + row_letter, ulx, uly)

    @property
    def name(self) -> str:
        return f"{self.zone:02d}{self.band}{self.square}"

    @property
    def epsg(self) -> int:
        return (32700 if self.south else 32600) + self.zone

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return (self.ulx, self.uly - TILE_SIZE_M, self.ulx + TILE_SIZE_M, self.uly)

    @property
    def utm_polygon(self) -> Polygon:
        return box(*self.bounds)

    @property
    def footprint(self) -> Polygon:
        """The tile's outline in EPSG:4326 (corners reprojected, like Earth Search's)."""
        to_geo = Transformer.from_crs(f"EPSG:{self.epsg}", "EPSG:4326", always_xy=True)
        minx, miny, maxx, maxy = self.bounds
        # Counter-clockwise from the upper left, as in the real items (RFC 7946 winding).
        corners = [(minx, maxy), (minx, miny), (maxx, miny), (maxx, maxy)]
        return Polygon([to_geo.transform(x, y) for x, y in corners])

    @property
    def center_lonlat(self) -> tuple[float, float]:
        to_geo = Transformer.from_crs(f"EPSG:{self.epsg}", "EPSG:4326", always_xy=True)
        lon, lat = to_geo.transform(self.ulx + TILE_SIZE_M / 2, self.uly - TILE_SIZE_M / 2)
        return float(lon), float(lat)

    def transform(self, resolution: int) -> Affine:
        return Affine(resolution, 0, self.ulx, 0, -resolution, self.uly)

    def size(self, resolution: int) -> int:
        return TILE_SIZE_M // resolution

    def path_prefix(self, day: dt.date) -> str:
        return f"{self.zone}/{self.band}/{self.square}/{day.year}/{day.month}"

    def data_window(self, aoi: BaseGeometry) -> PixelWindow | None:
        """10 m window of AOI + margin, snapped out to ALIGN_M and clipped to the tile."""
        to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{self.epsg}", always_xy=True)
        minx, miny, maxx, maxy = _project(aoi, to_utm).bounds
        x0 = max(0, math.floor((minx - DATA_MARGIN_M - self.ulx) / ALIGN_M) * ALIGN_M)
        x1 = min(TILE_SIZE_M, math.ceil((maxx + DATA_MARGIN_M - self.ulx) / ALIGN_M) * ALIGN_M)
        y0 = max(0, math.floor((self.uly - maxy - DATA_MARGIN_M) / ALIGN_M) * ALIGN_M)
        y1 = min(TILE_SIZE_M, math.ceil((self.uly - miny + DATA_MARGIN_M) / ALIGN_M) * ALIGN_M)
        if x1 <= x0 or y1 <= y0:
            return None
        return PixelWindow(x0 // 10, y0 // 10, (x1 - x0) // 10, (y1 - y0) // 10)


def _project(geom: BaseGeometry, transformer: Transformer) -> BaseGeometry:
    # Densified first: a straight lon/lat edge bulges in UTM, and corners alone can miss it.
    return shapely.transform(
        geom.segmentize(0.005), lambda x, y: transformer.transform(x, y), interleaved=False
    )


def _utm_zone(lon: float) -> int:
    return min(60, max(1, math.floor((lon + 180) / 6) + 1))


def _check_aoi(aoi_bbox: tuple[float, float, float, float]) -> Polygon:
    if len(aoi_bbox) != 4 or not all(math.isfinite(v) for v in aoi_bbox):
        raise ConfigError(f"aoi_bbox: expected 4 finite numbers, got {aoi_bbox!r}")
    min_lon, min_lat, max_lon, max_lat = aoi_bbox
    if not (-180 <= min_lon < max_lon <= 180 and -80 <= min_lat < max_lat <= 84):
        raise ConfigError(
            f"aoi_bbox: need min < max within lon [-180, 180] and UTM lat [-80, 84], got {aoi_bbox}"
        )
    if max_lon - min_lon > MAX_AOI_DEGREES or max_lat - min_lat > MAX_AOI_DEGREES:
        raise ConfigError(f"aoi_bbox: the sample is for small AOIs (<= {MAX_AOI_DEGREES} degrees)")
    return box(min_lon, min_lat, max_lon, max_lat)


# --------------------------------------------------------------------------- acquisition


@dataclass(frozen=True)
class Datatake:
    platform: str
    start: dt.datetime  # datatake start, as in the product name
    sensing_time: dt.datetime  # over the AOI centre
    aoi_lonlat: tuple[float, float]
    absolute_orbit: int
    relative_orbit: int

    def sensing_time_at(self, lon: float, lat: float) -> dt.datetime:
        # Descending pass at ~6.7 km/s: ~16.5 s per degree southwards, a few s eastwards.
        d_lat = lat - self.aoi_lonlat[1]
        d_lon = lon - self.aoi_lonlat[0]
        return self.sensing_time + dt.timedelta(seconds=-16.5 * d_lat - 3.0 * d_lon)


def _datatake(day: dt.date, lon: float, lat: float, seed: int) -> Datatake:
    # Fitted to real acquisitions (32TMT 10:27 UTC, 29RKH 11:34 UTC, 31TCJ ~10:54 UTC): the
    # 10:30 descending node shows up at mid-latitudes as ~10:42 UTC + 0.4 min/deg lat
    # - 4 min/deg lon; wrapped so the time stays inside the requested UTC day.
    minutes = (10 * 60 + 42 + 0.4 * lat - 4 * lon) % (24 * 60)
    jitter_ms = int(_rng(seed, 99).integers(0, 60_000))
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    sensing = midnight + dt.timedelta(minutes=math.floor(minutes), milliseconds=jitter_ms)
    start = (sensing - dt.timedelta(minutes=10)).replace(second=21, microsecond=0)
    start = max(start, midnight)
    anchor_time, anchor_orbit = _S2A_ORBIT_ANCHOR
    absolute = anchor_orbit + round((start - anchor_time).total_seconds() / _ORBIT_SECONDS)
    relative = (absolute + 2) % 143 + 1  # S2A numbering; matches R065/R108 of the anchors
    return Datatake("sentinel-2a", start, sensing, (lon, lat), absolute, relative)


@dataclass(frozen=True)
class Processing:
    """One Earth Search item of a tile: an ESA product as ingested by Earth Search."""

    item_id: str
    sequence: int
    baseline: str
    boa_offset_applied: bool
    sensing_time: dt.datetime
    generation_time: dt.datetime
    created: dt.datetime
    product_uri: str
    datatake_id: str
    datastrip_id: str
    granule_id: str
    software_version: str
    platform: str

    @property
    def offset_in_pixels(self) -> bool:
        return _baseline_tuple(self.baseline) >= (4, 0) and not self.boa_offset_applied


def _processings(day: dt.date, take: Datatake, tile: Tile, seed: int) -> list[Processing]:
    lon, lat = tile.center_lonlat
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    # Per-tile offsets of a few seconds must not push `datetime` out of the requested day.
    sensing = min(
        max(take.sensing_time_at(lon, lat), midnight),
        midnight + dt.timedelta(days=1, milliseconds=-2),
    )
    operational = next(b for start, b in reversed(OPERATIONAL_BASELINES) if day >= start)
    # ESA generates one product per datatake (all its tiles share the generation time);
    # Earth Search ingests each tile separately.
    rng = _rng(seed, 98)
    tile_rng = _rng(seed, 97, tile.zone, ord(tile.square[0]), ord(tile.square[1]))
    first_generation = take.start + dt.timedelta(hours=4, seconds=int(rng.integers(0, 3600)))
    first_created = first_generation + dt.timedelta(
        milliseconds=int(tile_rng.integers(3600_000, 4 * 3600_000))
    )
    if _baseline_tuple(operational) < (4, 0):
        # ESA reprocessed the archive (collection 1) in 2023; Earth Search ingested it later.
        second_baseline = REPROCESSING_BASELINE
        second_generation = dt.datetime(2023, 6, 1, tzinfo=dt.UTC) + dt.timedelta(
            days=day.toordinal() % 60, seconds=int(rng.integers(0, 86400))
        )
        second_created = second_generation + dt.timedelta(
            days=100, milliseconds=int(tile_rng.integers(0, 86400_000))
        )
    else:
        # Earth Search re-ran the same ESA product to subtract the BOA offset.
        second_baseline = operational
        second_generation = first_generation
        second_created = first_created + dt.timedelta(
            days=2, milliseconds=int(tile_rng.integers(0, 86400_000))
        )

    out = []
    for sequence, baseline, generation, created, software in (
        (0, operational, first_generation, first_created, "0.1.0"),
        (1, second_baseline, second_generation, second_created, "0.1.1"),
    ):
        sat = "S2A" if take.platform == "sentinel-2a" else "S2B"
        n_baseline = "N" + baseline.replace(".", "")
        centre = "2APS" if baseline == operational and sequence == 0 else "S2RP"
        gen = generation.strftime("%Y%m%dT%H%M%S")
        start = take.start.strftime("%Y%m%dT%H%M%S")
        out.append(
            Processing(
                item_id=f"{sat}_{tile.name}_{day:%Y%m%d}_{sequence}_L2A",
                sequence=sequence,
                baseline=baseline,
                boa_offset_applied=sequence == 1,
                # Two ingests of one datatake differ by a millisecond in Earth Search.
                sensing_time=sensing + dt.timedelta(milliseconds=sequence),
                generation_time=generation,
                created=created,
                product_uri=(
                    f"{sat}_MSIL2A_{start}_{n_baseline}_R{take.relative_orbit:03d}"
                    f"_T{tile.name}_{gen}.SAFE"
                ),
                datatake_id=f"G{sat}_{start}_{take.absolute_orbit:06d}_N{baseline}",
                # The datastrip's sensing starts minutes into the datatake (5:33 in the anchor
                # product's S20200302T102554 vs T102021).
                datastrip_id=(
                    f"{sat}_OPER_MSI_L2A_DS_{centre}_{gen}"
                    f"_S{(take.start + dt.timedelta(seconds=333)):%Y%m%dT%H%M%S}_N{baseline}"
                ),
                granule_id=(
                    f"{sat}_OPER_MSI_L2A_TL_{centre}_{gen}_A{take.absolute_orbit:06d}"
                    f"_T{tile.name}_N{baseline}"
                ),
                software_version=software,
                platform=take.platform,
            )
        )
    return out


def _baseline_tuple(baseline: str) -> tuple[int, ...]:
    return tuple(int(part) for part in baseline.split("."))


# --------------------------------------------------------------------------- pixels


def _rng(*key: int) -> np.random.Generator:
    # One independent stream per purpose, so adding a field never shifts the others.
    return np.random.default_rng(list(key))


@dataclass(frozen=True)
class WaveField:
    """A smooth random field: a normalised sum of plane waves in UTM metres."""

    kx: NDArray[np.float64]
    ky: NDArray[np.float64]
    phase: NDArray[np.float64]

    @classmethod
    def create(
        cls, seed: int, key: int, n: int, min_wl: float, max_wl: float, stretch: float = 1.0
    ) -> WaveField:
        rng = _rng(seed, key)
        wavelength = np.exp(rng.uniform(math.log(min_wl), math.log(max_wl), n))
        angle = rng.uniform(0, math.pi, n)
        k = 2 * math.pi / wavelength
        # stretch > 1 squeezes the waves' y component: streaky cirrus-like bands.
        return cls(k * np.cos(angle), k * np.sin(angle) / stretch, rng.uniform(0, 2 * math.pi, n))

    def sample(
        self, x: NDArray[np.floating[Any]], y: NDArray[np.floating[Any]]
    ) -> NDArray[np.float64]:
        """Field at the grid x (columns) by y (rows); separable, so O(n (w + h)) trig."""
        # cos(a + b) = cos a cos b - sin a sin b, with a on columns and b on rows.
        ax = np.outer(self.kx, x)
        by = np.outer(self.ky, y) + self.phase[:, None]
        rows = np.concatenate([np.cos(by), -np.sin(by)])
        cols = np.concatenate([np.cos(ax), np.sin(ax)])
        # einsum without `optimize` runs numpy's own loop, not BLAS, so the summation order
        # (and the rounded DNs) cannot change with the BLAS build or its thread count.
        out = np.einsum("kh,kw->hw", rows, cols, optimize=False)
        return np.asarray(out, dtype=np.float64) * math.sqrt(2 / self.kx.size)


def _hash01(ix: NDArray[np.int64], iy: NDArray[np.int64], seed: int) -> NDArray[np.float64]:
    """Uniform [0, 1) per integer cell, stable across windows (splitmix-style mixing)."""
    h = ix.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h ^= iy.astype(np.int64).view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= np.uint64((seed * 0x165667B1) & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def _block_mean(a: NDArray[np.float64], f: int) -> NDArray[np.float64]:
    if f == 1:
        return a
    h, w = a.shape
    return a.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


@dataclass
class TileRasters:
    """Reflectance and classification of one tile's data window (shared by its items)."""

    window: PixelWindow
    reflectance: dict[str, NDArray[np.float64]]  # band -> SR x 10000 at the band's resolution
    visual_rgb: NDArray[np.uint8]  # (3, h, w) at 10 m
    scl: NDArray[np.uint8]  # 20 m
    aot: NDArray[np.uint16]  # 20 m
    wvp: NDArray[np.uint16]  # 20 m
    stats: dict[str, float] = field(default_factory=dict)

    def asset_array(self, spec: AssetSpec, *, boa_offset: bool) -> NDArray[Any]:
        if spec.kind == "reflectance":
            sr = self.reflectance[spec.eo_bands[0]]
            dn = np.rint(sr) + (BOA_ADD_OFFSET if boa_offset else 0)
            # 0 is nodata and the product is 15-bit.
            return np.clip(dn, 1, 2**15 - 1).astype(np.uint16)[None]
        if spec.kind == "visual":
            return self.visual_rgb
        if spec.kind == "scl":
            return self.scl[None]
        if spec.kind == "aot":
            return self.aot[None]
        return self.wvp[None]


@dataclass(frozen=True)
class SceneModel:
    """Land cover, river, clouds and their shadows as functions of UTM coordinates."""

    seed: int
    river_origin: tuple[float, float]
    river_direction: float
    river_phases: tuple[float, float]
    shadow_shift: tuple[float, float]
    large: WaveField
    medium: WaveField
    texture: WaveField
    lakes: WaveField
    clouds: WaveField
    cirrus: WaveField
    aerosol: WaveField
    vapour: WaveField

    @classmethod
    def create(
        cls, seed: int, aoi: BaseGeometry, epsg: int, sun_azimuth: float, sun_elevation: float
    ) -> SceneModel:
        to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        cx, cy = to_utm.transform(aoi.centroid.x, aoi.centroid.y)
        rng = _rng(seed, 1)
        # A cloud ~1.5 km up casts its shadow away from the sun by h / tan(elevation).
        reach = 1500 / math.tan(math.radians(max(sun_elevation, 10.0)))
        az = math.radians(sun_azimuth)
        return cls(
            seed=seed,
            river_origin=(float(cx), float(cy)),
            river_direction=float(rng.uniform(0, math.pi)),
            river_phases=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
            shadow_shift=(reach * math.sin(az), reach * math.cos(az)),
            large=WaveField.create(seed, 10, 16, 2000, 9000),
            medium=WaveField.create(seed, 11, 24, 300, 1500),
            texture=WaveField.create(seed, 12, 24, 40, 200),
            lakes=WaveField.create(seed, 13, 16, 500, 2500),
            clouds=WaveField.create(seed, 14, 32, 900, 9000),
            cirrus=WaveField.create(seed, 15, 16, 1500, 9000, stretch=4.0),
            aerosol=WaveField.create(seed, 16, 8, 10000, 40000),
            vapour=WaveField.create(seed, 17, 8, 8000, 30000),
        )

    def render(self, tile: Tile, window: PixelWindow) -> TileRasters:
        # Pixel centres at 10 m in UTM metres.
        x = tile.ulx + 10 * (window.col_off + np.arange(window.width) + 0.5)
        y = tile.uly - 10 * (window.row_off + np.arange(window.height) + 0.5)
        xx, yy = np.meshgrid(x, y)

        # Water: a meandering ~150 m river through the AOI centre plus a few gravel-pit lakes.
        cx, cy = self.river_origin
        ex, ey = math.cos(self.river_direction), math.sin(self.river_direction)
        along = (xx - cx) * ex + (yy - cy) * ey
        across = -(xx - cx) * ey + (yy - cy) * ex
        p1, p2 = self.river_phases
        meander = 350 * np.sin(2 * np.pi * along / 2600 + p1) + 120 * np.sin(
            2 * np.pi * along / 900 + p2
        )
        river = np.clip((75 - np.abs(across - meander)) / 15 + 0.5, 0, 1)
        lake = np.clip((self.lakes.sample(x, y) - 2.0) * 4, 0, 1)
        water = np.maximum(river, lake)
        del along, across, meander, river, lake

        # Town where the large-scale field is high; fields (hashed ~320 x 210 m parcels on a
        # rotated grid) and woods elsewhere.
        urban = np.clip((self.large.sample(x, y) - 0.4) / 1.0, 0, 1)
        theta = 0.35
        u = xx * math.cos(theta) + yy * math.sin(theta)
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        parcel = _hash01(
            np.floor(u / 320).astype(np.int64), np.floor(v / 210).astype(np.int64), self.seed
        )
        roofs = _hash01(
            np.floor(u / 40).astype(np.int64), np.floor(v / 60).astype(np.int64), self.seed + 1
        )
        del u, v, xx, yy
        # June: ~55 % green crops/grass, ~25 % harvested or bare, the rest sparse.
        vigour = np.where(parcel < 0.55, 0.65 + 0.35 * parcel / 0.55, 0.0)
        vigour = np.where(parcel >= 0.8, 0.2 + 0.4 * (parcel - 0.8) / 0.2, vigour)
        vigour = np.where((parcel >= 0.55) & (parcel < 0.8), 0.05 * parcel, vigour)
        forest = np.clip((self.medium.sample(x, y) - 1.0) * 3, 0, 1)
        texture = self.texture.sample(x, y)

        opacity = np.clip((self.clouds.sample(x, y) - 0.95) / 0.7, 0, 1)
        sx, sy = self.shadow_shift
        shadow = np.clip((self.clouds.sample(x + sx, y + sy) - 0.95) / 0.7, 0, 1) * (1 - opacity)
        cirrus = np.clip((self.cirrus.sample(x, y) - 1.2) / 0.6, 0, 1)

        surface: dict[str, NDArray[np.float64]] = {}
        toa: dict[str, NDArray[np.float64]] = {}
        for band, (s_w, s_v, s_s, s_u, s_f, s_c, s_ci) in _SIGNATURES.items():
            land = vigour * s_v + (1 - vigour) * s_s
            land = forest * s_f + (1 - forest) * land
            land = urban * s_u * (0.7 + 0.6 * roofs) + (1 - urban) * land
            sr = (water * s_w + (1 - water) * land) * (1 + 0.06 * texture)
            surface[band] = sr
            seen = sr * (1 - 0.65 * shadow) + cirrus * s_ci
            toa[band] = (1 - opacity) * seen + opacity * s_c * (0.92 + 0.05 * texture)

        spec_res = {s.eo_bands[0]: s.resolution for s in ASSET_SPECS if s.kind == "reflectance"}
        reflectance = {b: _block_mean(a, spec_res[b] // 10) for b, a in toa.items()}
        rgb = np.stack([toa["red"], toa["green"], toa["blue"]])
        # TCI maps reflectance 0..0.2 to 1..255 (0 stays nodata), as ESA's L2A TCI does.
        visual = np.clip(np.rint(rgb * 255 / 2000), 1, 255).astype(np.uint8)

        def at20(a: NDArray[np.float64]) -> NDArray[np.float64]:
            return _block_mean(a, 2)

        red20, nir20 = at20(surface["red"]), at20(surface["nir"])
        ndvi = (nir20 - red20) / np.maximum(nir20 + red20, 1)
        o20, sh20, ci20, w20 = at20(opacity), at20(shadow), at20(cirrus), at20(water)
        scl = np.full(o20.shape, SCL_NOT_VEGETATED, dtype=np.uint8)
        scl[ndvi >= 0.4] = SCL_VEGETATION
        scl[w20 >= 0.5] = SCL_WATER
        scl[sh20 >= 0.35] = SCL_SHADOW
        scl[ci20 >= 0.5] = SCL_CIRRUS
        scl[(o20 >= 0.15) & (o20 < 0.3)] = SCL_UNCLASSIFIED
        scl[o20 >= 0.3] = SCL_CLOUD_MEDIUM
        scl[o20 >= 0.65] = SCL_CLOUD_HIGH

        aot = np.clip(np.rint(110 + 35 * at20(self.aerosol.sample(x, y))), 1, 2**15 - 1)
        wvp = np.clip(np.rint(2100 + 350 * at20(self.vapour.sample(x, y))), 1, 2**15 - 1)
        return TileRasters(
            window=window,
            reflectance=reflectance,
            visual_rgb=visual,
            scl=scl,
            aot=aot.astype(np.uint16),
            wvp=wvp.astype(np.uint16),
            stats=_scl_stats(scl, tile, window),
        )


def _scl_stats(scl: NDArray[np.uint8], tile: Tile, window: PixelWindow) -> dict[str, float]:
    """Earth Search's percentage properties, from the SCL actually written.

    Class percentages are of the valid (data) pixels, as in ESA's metadata; the nodata
    percentage is of the whole tile, which here is mostly outside the data window.
    """
    valid = scl.size
    counts = np.bincount(scl.ravel(), minlength=12)

    def pct(*classes: int) -> float:
        return round(100.0 * float(sum(int(counts[c]) for c in classes)) / valid, 6)

    tile_pixels = tile.size(20) ** 2
    return {
        "eo:cloud_cover": pct(*CLOUD_CLASSES),
        "s2:nodata_pixel_percentage": round(100.0 * (tile_pixels - valid) / tile_pixels, 6),
        "s2:dark_features_percentage": pct(SCL_DARK),
        "s2:cloud_shadow_percentage": pct(SCL_SHADOW),
        "s2:vegetation_percentage": pct(SCL_VEGETATION),
        "s2:not_vegetated_percentage": pct(SCL_NOT_VEGETATED),
        "s2:water_percentage": pct(SCL_WATER),
        "s2:unclassified_percentage": pct(SCL_UNCLASSIFIED),
        "s2:medium_proba_clouds_percentage": pct(SCL_CLOUD_MEDIUM),
        "s2:high_proba_clouds_percentage": pct(SCL_CLOUD_HIGH),
        "s2:thin_cirrus_percentage": pct(SCL_CIRRUS),
        "s2:snow_ice_percentage": pct(11),
    }


# --------------------------------------------------------------------------- COG writing


def overview_factors(size: int, block_size: int) -> list[int]:
    """The levels GDAL's COG driver makes by default: halve until within one block."""
    factors: list[int] = []
    f = 1
    while math.ceil(size / f) > block_size:
        f *= 2
        factors.append(f)
    return factors


def _downsample(a: NDArray[Any], f: int, categorical: bool) -> NDArray[Any]:
    """Overview of a (bands, h, w) window by factor f, ignoring nodata (0) like GDAL."""
    bands, h, w = a.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    padded = np.zeros((bands, hp, wp), dtype=a.dtype)
    padded[:, :h, :w] = a
    if categorical:
        # GDAL's NEAREST takes the source pixel at floor((i + 0.5) * f).
        return padded[:, f // 2 :: f, f // 2 :: f].copy()
    blocks = padded.reshape(bands, hp // f, f, wp // f, f).astype(np.int64)
    total = blocks.sum(axis=(2, 4))
    count = (blocks != 0).sum(axis=(2, 4))
    mean = (2 * total + count) // np.maximum(2 * count, 1)  # round half up, integer-exact
    return mean.astype(a.dtype)


_GDAL_TYPES: Final = {"uint8": "Byte", "uint16": "UInt16"}
_RGB: Final = ("Red", "Green", "Blue")


def _vrt_xml(
    size: int,
    transform: Affine,
    epsg: int,
    dtype: str,
    count: int,
    source: str,
    window: PixelWindow,
    overviews: Sequence[str],
) -> str:
    bands = []
    for b in range(1, count + 1):
        ovr = "".join(
            f'<Overview><SourceFilename relativeToVRT="0">{escape(p)}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand></Overview>"
            for p in overviews
        )
        color = f"<ColorInterp>{_RGB[b - 1]}</ColorInterp>" if count == 3 else ""
        bands.append(
            f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{b}">'
            f"<NoDataValue>0</NoDataValue>{color}"
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(source)}</SourceFilename>'
            f"<SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{window.width}" ySize="{window.height}"/>'
            f'<DstRect xOff="{window.col_off}" yOff="{window.row_off}" '
            f'xSize="{window.width}" ySize="{window.height}"/></SimpleSource>{ovr}'
            "</VRTRasterBand>"
        )
    geotransform = ", ".join(repr(float(v)) for v in transform.to_gdal())
    return (
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">'
        f"<SRS>EPSG:{epsg}</SRS><GeoTransform>{geotransform}</GeoTransform>"
        + "".join(bands)
        + "</VRTDataset>"
    )


def _write_sparse_cog(
    path: Path, tile: Tile, window10: PixelWindow, spec: AssetSpec, base: NDArray[Any]
) -> None:
    """Write ``base`` (the data window) into a full-tile sparse COG at ``path``."""
    res = spec.resolution
    size = tile.size(res)
    window = window10.at(res)
    categorical = spec.kind == "scl"
    count = base.shape[0]
    tmp = path.with_name(path.name + ".part")
    try:
        with ExitStack() as stack:

            def mem_tif(array: NDArray[Any], win: PixelWindow, transform: Affine) -> str:
                mem = stack.enter_context(MemoryFile(filename="window.tif"))
                with mem.open(
                    driver="GTiff",
                    width=array.shape[2],
                    height=array.shape[1],
                    count=array.shape[0],
                    dtype=array.dtype,
                    crs=CRS.from_epsg(tile.epsg),
                    transform=transform @ Affine.translation(win.col_off, win.row_off),
                    nodata=0,
                ) as dst:
                    dst.write(array)
                return str(mem.name)

            def mem_vrt(xml: str, filename: str) -> str:
                mem = stack.enter_context(MemoryFile(xml.encode(), filename=filename))
                return str(mem.name)

            overview_paths = []
            for f in overview_factors(size, spec.block_size):
                o_array = _downsample(base, f, categorical)
                o_size = -(-size // f)
                o_win = PixelWindow(
                    window.col_off // f,
                    window.row_off // f,
                    min(o_array.shape[2], o_size - window.col_off // f),
                    min(o_array.shape[1], o_size - window.row_off // f),
                )
                o_array = o_array[:, : o_win.height, : o_win.width]
                o_transform = tile.transform(res) @ Affine.scale(f)
                src = mem_tif(o_array, o_win, o_transform)
                xml = _vrt_xml(o_size, o_transform, tile.epsg, spec.dtype, count, src, o_win, [])
                overview_paths.append(mem_vrt(xml, f"ovr{f}.vrt"))
            src = mem_tif(base, window, tile.transform(res))
            xml = _vrt_xml(
                size, tile.transform(res), tile.epsg, spec.dtype, count, src, window, overview_paths
            )
            rio_copy(
                mem_vrt(xml, "tile.vrt"),
                str(tmp),
                driver="COG",
                BLOCKSIZE=str(spec.block_size),
                COMPRESS="DEFLATE",
                PREDICTOR="YES",
                SPARSE_OK="TRUE",
                OVERVIEWS="FORCE_USE_EXISTING",
                NUM_THREADS="1",
                BIGTIFF="NO",
            )
        os.replace(tmp, path)
    except (RasterioError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise RasterError(f"cannot write sample COG {path}: {exc}") from exc


def _copy_file(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".part")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RasterError(f"cannot copy sample COG {src} to {dst}: {exc}") from exc


# --------------------------------------------------------------------------- STAC


def _stamp(when: dt.datetime, digits: int = 6) -> str:
    """RFC 3339 UTC with Earth Search's precision (6 digits for datetime, 3 for created)."""
    text = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[: len(text) - (6 - digits)] + "Z"


def _raster_band(spec: AssetSpec, offset: float) -> dict[str, Any]:
    if spec.kind == "scl":
        return {"nodata": 0, "data_type": "uint8", "spatial_resolution": spec.resolution}
    band: dict[str, Any] = {
        "nodata": 0,
        "data_type": "uint16",
        "bits_per_sample": 15,
        "spatial_resolution": spec.resolution,
    }
    if spec.kind == "reflectance":
        band.update(scale=0.0001, offset=offset)
    elif spec.kind == "wvp":
        band.update(unit="cm", scale=0.001, offset=0)
    else:
        band.update(scale=0.001, offset=0)
    return band


def _asset_metadata(spec: AssetSpec, offset: float) -> dict[str, Any]:
    asset: dict[str, Any] = {"type": COG_MEDIA_TYPE, "title": spec.title}
    if spec.eo_bands:
        asset["eo:bands"] = [EO_BANDS[b].as_dict() for b in spec.eo_bands]
    if spec.kind == "reflectance":
        asset["gsd"] = spec.resolution
    if spec.kind != "visual":
        asset["raster:bands"] = [_raster_band(spec, offset)]
    asset["roles"] = ["visual"] if spec.kind == "visual" else ["data", "reflectance"]
    return asset


def _item(
    tile: Tile, proc: Processing, stats: dict[str, float], hrefs: dict[str, str]
) -> dict[str, Any]:
    footprint = tile.footprint
    lon, lat = tile.center_lonlat
    sun_az, sun_el = sun_angles(proc.sensing_time, lon, lat)
    offset = -BOA_ADD_OFFSET / 10000 if proc.offset_in_pixels else 0
    assets: dict[str, Any] = {}
    for spec in ASSET_SPECS:
        asset = {"href": hrefs[spec.key], **_asset_metadata(spec, offset)}
        n = tile.size(spec.resolution)
        asset["proj:epsg"] = tile.epsg
        asset["proj:shape"] = [n, n]
        res = spec.resolution
        asset["proj:transform"] = [res, 0, tile.ulx, 0, -res, tile.uly]
        # Keep Earth Search's key order: roles last.
        asset["roles"] = asset.pop("roles")
        assets[spec.key] = asset
    payload = hashlib.sha256(proc.product_uri.encode() + proc.item_id.encode()).hexdigest()[:32]
    properties: dict[str, Any] = {
        "created": _stamp(proc.created, 3),
        "platform": proc.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": stats["eo:cloud_cover"],
        "proj:epsg": tile.epsg,
        "mgrs:utm_zone": tile.zone,
        "mgrs:latitude_band": tile.band,
        "mgrs:grid_square": tile.square,
        "grid:code": f"MGRS-{tile.name}",
        "view:sun_azimuth": round(sun_az, 10),
        "view:sun_elevation": round(sun_el, 10),
        "s2:degraded_msi_data_percentage": 0,
        "s2:nodata_pixel_percentage": stats["s2:nodata_pixel_percentage"],
        "s2:saturated_defective_pixel_percentage": 0,
        **{
            k: v
            for k, v in stats.items()
            if k not in ("eo:cloud_cover", "s2:nodata_pixel_percentage")
        },
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": proc.baseline,
        "s2:product_uri": proc.product_uri,
        "s2:generation_time": _stamp(proc.generation_time),
        "s2:datatake_id": proc.datatake_id,
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": proc.datastrip_id,
        "s2:granule_id": proc.granule_id,
        "s2:reflectance_conversion_factor": _reflectance_conversion_factor(proc.sensing_time),
        "datetime": _stamp(proc.sensing_time),
        "s2:sequence": str(proc.sequence),
        "earthsearch:payload_id": f"roda-sentinel2/workflow-sentinel2-to-stac/{payload}",
        "earthsearch:boa_offset_applied": proc.boa_offset_applied,
        "processing:software": {"sentinel2-to-stac": proc.software_version},
        "updated": _stamp(proc.created, 3),
    }
    coords = [list(map(float, c)) for c in footprint.exterior.coords]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "id": proc.item_id,
        "properties": properties,
        "geometry": {"type": "Polygon", "coordinates": [coords]},
        "links": [{"rel": "license", "href": LICENSE_HREF}],
        "assets": assets,
        "bbox": [float(v) for v in footprint.bounds],
        "stac_extensions": list(ITEM_EXTENSIONS),
        "collection": COLLECTION_ID,
    }


def _reflectance_conversion_factor(when: dt.datetime) -> float:
    # ESA's Earth-Sun distance correction: 1 / (1 - 0.01673 cos(0.0172 (doy - 4)))^2.
    doy = when.timetuple().tm_yday
    return 1 / (1 - 0.01673 * math.cos(0.0172 * (doy - 4))) ** 2


def _collection(items: list[dict[str, Any]]) -> dict[str, Any]:
    item_assets = {}
    for spec in ASSET_SPECS:
        item_assets[spec.key] = _asset_metadata(spec, 0)
    bboxes = [it["bbox"] for it in items]
    spatial = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    times = sorted(it["properties"]["datetime"] for it in items)
    eo_summary = [b.as_dict() for b in EO_BANDS.values()]
    return {
        "type": "Collection",
        "id": COLLECTION_ID,
        "stac_version": STAC_VERSION,
        "title": "Sentinel-2 Level-2A",
        "description": (
            "Global Sentinel-2 data from the Multispectral Instrument (MSI) onboard Sentinel-2"
            " (offline synthetic sample generated by geospatial_pipeline)"
        ),
        "links": [
            {
                "rel": "cite-as",
                "href": "https://doi.org/10.5270/S2_-742ikth",
                "title": "Copernicus Sentinel-2 MSI Level-2A (L2A) Bottom-of-Atmosphere Radiance",
            },
            {"rel": "license", "href": LICENSE_HREF, "title": "proprietary"},
        ],
        "stac_extensions": list(COLLECTION_EXTENSIONS),
        "item_assets": item_assets,
        "extent": {
            "spatial": {"bbox": [spatial]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "license": "proprietary",
        "keywords": ["sentinel", "earth observation", "esa"],
        "providers": [
            {"name": "ESA", "roles": ["producer"], "url": "https://earth.esa.int/web/guest/home"},
            {"name": "Sinergise", "roles": ["processor"]},
            {"name": "Element 84", "roles": ["processor"], "url": "https://element84.com"},
        ],
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10, 20, 60],
            "view:off_nadir": [0],
            "sci:doi": ["10.5270/s2_-znk9xsj"],
            "eo:bands": eo_summary,
        },
    }


def iter_asset_paths(catalog: SampleCatalog) -> Iterator[Path]:
    """Every COG the catalog references."""
    for item in catalog.items:
        for asset in item["assets"].values():
            yield Path(asset["href"])
