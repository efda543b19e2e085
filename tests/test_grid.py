"""AOI grids: the UTM zone and extent of AOIs crossing the antimeridian, metric CRSs only."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pyproj import Geod, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info
from shapely.geometry import MultiPolygon, Point, box

from geospatial_pipeline.config import AoiConfig
from geospatial_pipeline.raster.grid import aoi_grid, aoi_mask, grid_footprint, stac_bbox

Bounds = tuple[float, float, float, float]  # (west, south, east, north); west > east crosses 180°
FIJI = (179.7, -17.2, -179.9, -17.0)  # mostly west of 180°
ALEUTIANS = (179.95, 51.7, -179.6, 51.8)  # mostly east of 180°
ZURICH = (8.5, 47.3, 8.6, 47.4)


def _halves(w: float, s: float, e: float, n: float) -> list[Bounds]:
    return [(w, s, 180.0, n), (-180.0, s, e, n)] if w > e else [(w, s, e, n)]


def _as_bbox(bounds: Bounds) -> AoiConfig:
    return AoiConfig(name="aoi", bbox=bounds)


def _as_multipolygon(bounds: Bounds) -> AoiConfig:
    geometry = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[w, s], [e, s], [e, n], [w, n], [w, s]]] for w, s, e, n in _halves(*bounds)
        ],
    }
    return AoiConfig(name="aoi", geometry=geometry)


def _utm_zone_at(lon: float, lat: float) -> str:
    """The UTM CRS PROJ's database gives for a point."""
    found = query_utm_crs_info(
        datum_name="WGS 84",
        area_of_interest=AreaOfInterest(lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4),
    )
    assert len(found) == 1, found
    return f"EPSG:{found[0].code}"


def _centre(w: float, s: float, e: float, n: float) -> tuple[float, float]:
    width = (e - w) % 360.0
    lon = (w + width / 2 + 180.0) % 360.0 - 180.0
    return lon, (s + n) / 2


@pytest.mark.parametrize("bounds", [FIJI, ALEUTIANS, ZURICH], ids=["fiji", "aleutians", "zurich"])
@pytest.mark.parametrize("form", [_as_bbox, _as_multipolygon], ids=["bbox", "multipolygon"])
def test_grid_is_in_the_utm_zone_of_the_aoi(
    bounds: Bounds, form: Callable[[Bounds], AoiConfig]
) -> None:
    aoi = form(bounds)
    assert aoi_grid(aoi.shape, 60.0).crs == _utm_zone_at(*_centre(*bounds))


@pytest.mark.parametrize("bounds", [FIJI, ALEUTIANS], ids=["fiji", "aleutians"])
def test_grid_covers_both_halves_of_an_antimeridian_aoi(bounds: Bounds) -> None:
    aoi = _as_multipolygon(bounds).shape
    grid = aoi_grid(aoi, 20.0)
    mask = aoi_mask(aoi, grid)
    rows, cols = np.nonzero(mask)
    xs, ys = grid.transform * (cols + 0.5, rows + 0.5)
    lons, _ = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    geod = Geod(ellps="WGS84")
    west, east = (box(*half) for half in _halves(*bounds))
    for half, inside in ((west, lons > 0), (east, lons < 0)):
        area_m2 = abs(geod.geometry_area_perimeter(half)[0])
        # UTM scale error is ~0.2% three degrees from the central meridian.
        assert int(inside.sum()) * 400.0 == pytest.approx(area_m2, rel=0.01)


def test_footprint_of_an_antimeridian_grid_is_cut_at_180() -> None:
    aoi = _as_bbox(FIJI).shape
    footprint = grid_footprint(aoi_grid(aoi, 20.0))
    assert isinstance(footprint, MultiPolygon) and footprint.is_valid
    assert all(part.bounds[2] - part.bounds[0] < 1.0 for part in footprint.geoms)
    assert footprint.buffer(1e-9).covers(aoi)
    assert not footprint.contains(Point(0.0, -17.1))


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:2263"])
def test_grid_refuses_a_crs_not_in_metres(crs: str) -> None:
    with pytest.raises(ValueError, match=r"^crs: .*resolution is in metres"):
        aoi_grid(box(*ZURICH), 10.0, crs)


@pytest.mark.parametrize("bounds", [FIJI, ALEUTIANS, ZURICH], ids=["fiji", "aleutians", "zurich"])
def test_product_bbox_is_west_over_east_across_180(bounds: Bounds) -> None:
    footprint = grid_footprint(aoi_grid(_as_bbox(bounds).shape, 20.0))
    west, south, east, north = stac_bbox(footprint)
    # The grid is a UTM rectangle around the AOI: a little wider in degrees, never narrower.
    assert (west, south, east, north) == pytest.approx(bounds, abs=0.02)
    assert west <= bounds[0] and south <= bounds[1] and east >= bounds[2] and north >= bounds[3]
    assert (west > east) == (bounds[0] > bounds[2])
