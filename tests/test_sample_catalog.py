"""The offline Sentinel-2 sample catalog: real files, generated once per module."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from pystac.extensions.projection import ProjectionExtension
from rasterio.windows import Window, from_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box, shape

from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.local.sample_catalog import (
    ASSET_SPECS,
    CLOUD_CLASSES,
    SampleCatalog,
    generate_sample_catalog,
    iter_asset_paths,
    tiles_for_aoi,
)

DAY = dt.date(2024, 6, 15)
AOI = (1.40, 43.55, 1.46, 43.60)
REAL_DATA_ASSETS = {
    "aot", "blue", "coastal", "green", "nir", "nir08", "nir09", "red",
    "rededge1", "rededge2", "rededge3", "scl", "swir16", "swir22", "visual", "wvp",
}  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SampleCatalog, float]:
    start = time.perf_counter()
    catalog = generate_sample_catalog(tmp_path_factory.mktemp("sample"), DAY, AOI, seed=0)
    return catalog, time.perf_counter() - start


@pytest.fixture(scope="module")
def catalog(generated: tuple[SampleCatalog, float]) -> SampleCatalog:
    return generated[0]


def _by_id(catalog: SampleCatalog) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in catalog.items}


def _aoi_window(src: rasterio.DatasetReader) -> Window:
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
    xs, ys = to_utm.transform([AOI[0], AOI[2], AOI[0], AOI[2]], [AOI[1], AOI[1], AOI[3], AOI[3]])
    win = from_bounds(min(xs), min(ys), max(xs), max(ys), src.transform)
    return win.round_offsets().round_lengths()


def test_scenes_of_the_day(catalog: SampleCatalog) -> None:
    # Toulouse lies in 31TCJ only (31TDJ starts ~25 km east); the day has the first
    # processing and Earth Search's offset-harmonised re-run of it.
    assert sorted(_by_id(catalog)) == ["S2A_31TCJ_20240615_0_L2A", "S2A_31TCJ_20240615_1_L2A"]
    aoi = box(*AOI)
    for item in catalog.items:
        assert re.fullmatch(r"S2[AB]_\d{2}[C-X][A-Z]{2}_\d{8}_\d_L2A", item["id"])
        assert item["collection"] == "sentinel-2-l2a"
        assert item["stac_version"] == "1.0.0"
        geom = shape(item["geometry"])
        assert geom.contains(aoi)
        assert item["bbox"] == pytest.approx(list(geom.bounds))
        when = dt.datetime.fromisoformat(item["properties"]["datetime"])
        assert when.date() == DAY and when.utcoffset() == dt.timedelta(0)


def test_items_carry_earth_search_fields(catalog: SampleCatalog) -> None:
    required = {
        "platform", "constellation", "instruments", "eo:cloud_cover", "proj:epsg",
        "mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square", "grid:code",
        "s2:processing_baseline", "s2:product_uri", "s2:datatake_id", "s2:generation_time",
        "s2:sequence", "earthsearch:boa_offset_applied", "created", "updated", "datetime",
        "view:sun_azimuth", "view:sun_elevation",
    }  # fmt: skip
    for item in catalog.items:
        props = item["properties"]
        assert required <= props.keys()
        assert props["grid:code"] == "MGRS-31TCJ"
        assert (props["mgrs:utm_zone"], props["mgrs:latitude_band"]) == (31, "T")
        assert props["mgrs:grid_square"] == "CJ"
        assert props["proj:epsg"] == 32631
        assert props["s2:sequence"] == item["id"].split("_")[3]
        assert "_T31TCJ_" in props["s2:product_uri"]
        assert props["s2:product_uri"].startswith("S2A_MSIL2A_20240615T")
        # Real 31TCJ passes on this date come from relative orbit 8, late morning.
        assert "_R008_" in props["s2:product_uri"]
        assert 100 < props["view:sun_azimuth"] < 180 and 55 < props["view:sun_elevation"] < 75
        assert set(item["stac_extensions"]) >= {
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
            "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
        }
        assert set(item["assets"]) == REAL_DATA_ASSETS


def test_assets_describe_their_files(catalog: SampleCatalog) -> None:
    for item in catalog.items:
        for key, asset in item["assets"].items():
            path = Path(asset["href"])
            assert path.is_absolute() and path.is_file(), key
            with rasterio.open(path) as src:
                assert src.crs.to_epsg() == asset["proj:epsg"] == 32631
                assert [src.height, src.width] == asset["proj:shape"]
                assert list(src.transform)[:6] == asset["proj:transform"]
                assert src.nodata == 0
                if "raster:bands" in asset:
                    assert src.dtypes[0] == asset["raster:bands"][0]["data_type"]
                else:  # visual: 3-band uint8 like Earth Search's TCI
                    assert (src.count, src.dtypes[0]) == (3, "uint8")
        assert item["assets"]["red"]["proj:shape"] == [10980, 10980]
        assert item["assets"]["swir16"]["proj:shape"] == [5490, 5490]
        assert item["assets"]["coastal"]["proj:shape"] == [1830, 1830]
        assert item["assets"]["scl"]["raster:bands"][0]["data_type"] == "uint8"


def test_every_cog_validates(catalog: SampleCatalog) -> None:
    blocks = {spec.key: spec.block_size for spec in ASSET_SPECS}
    for item in catalog.items:
        for key, asset in item["assets"].items():
            valid, errors, warnings = cog_validate(asset["href"], quiet=True)
            assert valid and not errors and not warnings, (asset["href"], errors, warnings)
            with rasterio.open(asset["href"]) as src:
                assert src.block_shapes[0] == (blocks[key], blocks[key])
                assert src.compression is not None and src.compression.value == "DEFLATE"
                assert src.overviews(1)


def test_pystac_reads_items_and_collection(catalog: SampleCatalog) -> None:
    for raw in catalog.items:
        item = pystac.Item.from_dict(raw, migrate=False)
        out = item.to_dict(include_self_link=False, transform_hrefs=False)
        # pystac stamps its own STAC version on output; everything else survives as is.
        assert {**out, "stac_version": raw["stac_version"]} == raw
        proj = ProjectionExtension.ext(item)
        assert proj.epsg == 32631
        red = ProjectionExtension.ext(item.assets["red"])
        assert red.shape == [10980, 10980]
        assert red.transform == [10, 0, 300000, 0, -10, 4900020]
        # Migrated to the newest projection extension, the fields still read the same.
        migrated = pystac.Item.from_dict(raw)
        assert ProjectionExtension.ext(migrated.assets["scl"]).shape == [5490, 5490]
    collection = pystac.Collection.from_dict(catalog.collection, migrate=False)
    assert collection.id == "sentinel-2-l2a"
    assert set(collection.item_assets) == REAL_DATA_ASSETS


def test_aoi_has_data_and_the_rest_is_sparse(catalog: SampleCatalog) -> None:
    item = _by_id(catalog)["S2A_31TCJ_20240615_1_L2A"]
    with rasterio.open(item["assets"]["red"]["href"]) as red:
        win = _aoi_window(red)
        aoi_red = red.read(1, window=win)
        assert aoi_red.size > 250_000 and (aoi_red > 0).all()
        # Far from the AOI: nodata, and the blocks are absent from the file.
        assert not red.read(1, window=Window(0, 0, 1024, 1024)).any()
        assert red.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) in (None, "0")
        assert red.get_tag_item("BLOCK_OFFSET_10_10", "TIFF", bidx=1) in (None, "0")
        block_col = int(win.col_off + win.width / 2) // 1024
        block_row = int(win.row_off + win.height / 2) // 1024
        offset = red.get_tag_item(f"BLOCK_OFFSET_{block_col}_{block_row}", "TIFF", bidx=1)
        assert offset not in (None, "0")
        valid_fraction = float((red.read(1, out_shape=(1098, 1098)) > 0).mean())
        assert valid_fraction < 0.02


def test_reflectances_are_plausible(catalog: SampleCatalog) -> None:
    item = _by_id(catalog)["S2A_31TCJ_20240615_1_L2A"]  # offset removed: DN = SR * 10000
    with (
        rasterio.open(item["assets"]["red"]["href"]) as red_src,
        rasterio.open(item["assets"]["nir"]["href"]) as nir_src,
        rasterio.open(item["assets"]["scl"]["href"]) as scl_src,
    ):
        win = _aoi_window(red_src)
        red = red_src.read(1, window=win, out_shape=(win.height // 2, win.width // 2))
        nir = nir_src.read(1, window=win, out_shape=(win.height // 2, win.width // 2))
        scl = scl_src.read(1, window=_aoi_window(scl_src), out_shape=red.shape)
    red_f, nir_f = red.astype(float), nir.astype(float)
    ndvi = (nir_f - red_f) / (nir_f + red_f)
    clear_land = np.isin(scl, (4, 5))
    assert 300 < np.median(red[clear_land]) < 4000
    assert np.ptp(red[clear_land]) > 1000  # spatial structure, not a constant
    assert ndvi[scl == 4].mean() > 0.5  # vegetation: nir >> red
    assert ndvi[scl == 6].mean() < 0  # water: low nir
    assert red[np.isin(scl, (8, 9))].mean() > 4000  # clouds are bright


def test_scl_has_clouds_and_cloud_cover_matches(catalog: SampleCatalog) -> None:
    for item in catalog.items:
        with rasterio.open(item["assets"]["scl"]["href"]) as src:
            scl = src.read(1)
        valid = scl[scl > 0]
        classes = set(np.unique(valid).tolist())
        assert {3, 4, 5, 6, 8, 9, 10} <= classes
        cloudy = 100 * np.isin(valid, CLOUD_CLASSES).mean()
        assert 1 < cloudy < 60
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(cloudy, abs=1e-4)
        props = item["properties"]
        parts = sum(
            props[f"s2:{name}_percentage"]
            for name in ("medium_proba_clouds", "high_proba_clouds", "thin_cirrus")
        )
        assert props["eo:cloud_cover"] == pytest.approx(parts, abs=1e-4)


def test_boa_offset_matches_metadata(catalog: SampleCatalog) -> None:
    items = _by_id(catalog)
    first, rerun = items["S2A_31TCJ_20240615_0_L2A"], items["S2A_31TCJ_20240615_1_L2A"]
    for item in (first, rerun):
        assert item["properties"]["s2:processing_baseline"] == "05.10"
    assert first["properties"]["earthsearch:boa_offset_applied"] is False
    assert rerun["properties"]["earthsearch:boa_offset_applied"] is True
    for key in ("red", "swir16", "coastal"):
        offsets = []
        arrays = []
        for item in (first, rerun):
            band = item["assets"][key]["raster:bands"][0]
            offsets.append(band["offset"])
            with rasterio.open(item["assets"][key]["href"]) as src:
                win = _aoi_window(src)
                arrays.append(src.read(1, window=win).astype(np.int64))
                scale = band["scale"]
        assert offsets == [-0.1, 0]
        assert (arrays[0] - 1000 == arrays[1]).all()
        # DN * scale + offset gives the same reflectance for both processings.
        assert np.allclose(arrays[0] * scale + offsets[0], arrays[1] * scale + offsets[1])


def test_generation_is_deterministic(
    catalog: SampleCatalog, tmp_path_factory: pytest.TempPathFactory
) -> None:
    again = generate_sample_catalog(tmp_path_factory.mktemp("again"), DAY, AOI, seed=0)

    def digests(cat: SampleCatalog) -> dict[str, str]:
        return {
            str(p.relative_to(cat.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in iter_asset_paths(cat)
        }

    assert digests(again) == digests(catalog)

    def without_hrefs(cat: SampleCatalog) -> list[dict[str, Any]]:
        return [
            {
                **item,
                "assets": {
                    k: {f: v for f, v in a.items() if f != "href"}
                    for k, a in item["assets"].items()
                },
            }
            for item in cat.items
        ]

    assert without_hrefs(again) == without_hrefs(catalog)
    assert again.collection == catalog.collection


def test_small_and_quick(generated: tuple[SampleCatalog, float]) -> None:
    catalog, seconds = generated
    assert sum(p.stat().st_size for p in iter_asset_paths(catalog)) < 100 * 1024 * 1024
    # The target is well under 20 s; the bound leaves room for a loaded CI machine.
    assert seconds < 60


def test_tile_selection() -> None:
    assert [t.name for t in tiles_for_aoi(box(*AOI))] == ["31TCJ"]
    # East of Toulouse the AOI sits in the 9.8 km overlap of two adjacent tiles.
    overlap = box(1.78, 43.55, 1.84, 43.60)
    tiles = tiles_for_aoi(overlap)
    assert [t.name for t in tiles] == ["31TCJ", "31TDJ"]
    for tile in tiles:
        assert tile.footprint.contains(overlap)
    # A tile recorded from Earth Search keeps its real origin.
    (tmt,) = tiles_for_aoi(box(8.40, 47.30, 8.46, 47.35))
    assert (tmt.name, tmt.ulx, tmt.uly) == ("32TMT", 399960, 5300040)


@pytest.mark.parametrize(
    "bbox",
    [(1.46, 43.55, 1.40, 43.60), (1.0, 43.0, 2.0, 44.0), (1.4, 85.0, 1.5, 85.1)],
)
def test_rejects_bad_aoi(tmp_path: Path, bbox: tuple[float, float, float, float]) -> None:
    with pytest.raises(ConfigError, match="aoi_bbox"):
        generate_sample_catalog(tmp_path, DAY, bbox)
    assert not any(tmp_path.iterdir())
