"""A map of every product: render settings, TiTiler links on the product items, and a tile
served by the local TiTiler compared with the published COG read directly.

The end-to-end part materializes one (date, AOI) partition of the real 29RKH scene into a
local store (transform on the source's own 100 m pixel grid, as tests/test_e2e_transform.py
does) with ``maps.titiler_url`` pointing at a TiTiler started for this module.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import morecantile
import numpy as np
import pytest
import rasterio
import requests
from dagster import AssetKey, AssetSelection
from pyproj import Transformer
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject

from geospatial_pipeline.config import MapsConfig, parse_config
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.local.titiler import TiTilerServer
from geospatial_pipeline.stac import render
from geospatial_pipeline.stac.publish import layer_key, publish_item, scene_products_of
from geospatial_pipeline.storage.object_store import LocalObjectStore, S3ObjectStore
from tests.partitioning import PARTITIONS, materialize_partition
from tests.test_e2e import AOIS, BANDS, DAY, ITEM, SOURCE_GRID, s3_env

SCENE_ASSETS = ["red", "green", "blue", "nir", "ndvi", "ndwi", "thumbnail", "overview"]
TITILER = "http://127.0.0.1:8123"
COLLECTION = "sentinel-2-l2a"
AOI = "dunes"  # AOIS[0]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# ------------------------------------------------------------------ render settings, links


def test_renders_follow_the_item_assets() -> None:
    assert set(render.renders_for(SCENE_ASSETS)) == {"true-color", "ndvi"}
    assert set(render.renders_for(["ndvi_median", "overview"])) == {"ndvi-median"}
    # Without all three bands there is no true-colour map.
    assert render.renders_for(["red", "green"]) == {}


def test_render_objects() -> None:
    true_color = render.RENDERS["true-color"]
    assert true_color["assets"] == ["red", "green", "blue"]
    assert true_color["rescale"] == [[0.0, 0.3]] * 3
    ndvi = render.RENDERS["ndvi"]
    assert ndvi["assets"] == ["ndvi"]
    assert ndvi["colormap_name"] == "rdylgn"
    assert ndvi["rescale"] == [[-1.0, 1.0]]


def test_links_carry_the_render_as_titiler_parameters() -> None:
    item_url = "/data/processed/x/item.json"
    xyz = render.xyz_url(TITILER + "/", item_url, render.RENDERS["true-color"])
    assert xyz.startswith(f"{TITILER}/stac/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?")
    q = _query(xyz)
    assert q["url"] == [item_url]
    assert q["assets"] == ["red", "green", "blue"]
    assert q["rescale"] == ["0.0,0.3"] * 3
    # The layers are scaled integers: TiTiler must apply the scale before the rescale.
    assert q["unscale"] == ["true"]
    assert q["resampling"] == ["nearest"]
    tilejson = render.tilejson_url(TITILER, item_url, render.RENDERS["ndvi"])
    assert tilejson.startswith(f"{TITILER}/stac/WebMercatorQuad/tilejson.json?")
    q = _query(tilejson)
    assert q["assets"] == ["ndvi"]
    assert q["colormap_name"] == ["rdylgn"]
    assert q["rescale"] == ["-1.0,1.0"]
    assert q["unscale"] == ["true"]
    viewer = render.viewer_url(TITILER, item_url, render.RENDERS["ndvi"])
    assert urlsplit(viewer).path == "/stac/WebMercatorQuad/map.html"
    with pytest.raises(ValueError, match="titiler_url"):
        render.xyz_url("127.0.0.1:8123", item_url, render.RENDERS["ndvi"])
    with pytest.raises(ValueError, match="no assets"):
        render.render_query(item_url, {"title": "empty"})


def test_maps_config() -> None:
    assert MapsConfig().titiler_url is None
    assert MapsConfig(titiler_url=TITILER).titiler_url == TITILER
    with pytest.raises(ValueError, match="titiler_url"):
        MapsConfig(titiler_url="127.0.0.1:8123")


def _item(assets: list[str]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [],
        "id": "scene__aoi",
        "geometry": {"type": "Point", "coordinates": [0.0, 0.0]},
        "bbox": [0.0, 0.0, 0.0, 0.0],
        "properties": {"datetime": "2024-06-15T10:00:00Z", "processing:datetime": "now"},
        "links": [{"rel": "derived_from", "href": "https://example.invalid/source"}],
        "assets": {name: {"href": f"./{name}.tif"} for name in assets},
    }


def test_with_renders_adds_links_once() -> None:
    plain = render.with_renders(_item(SCENE_ASSETS), titiler_url=None, item_url="/x/item.json")
    assert set(plain["properties"]["renders"]) == {"true-color", "ndvi"}
    assert render.RENDER_EXTENSION in plain["stac_extensions"]
    assert [link["rel"] for link in plain["links"]] == ["derived_from"]
    assert render.viewer_links(plain) == {}

    mapped = render.with_renders(plain, titiler_url=TITILER, item_url="/x/item.json")
    again = render.with_renders(mapped, titiler_url=TITILER, item_url="/x/item.json")
    assert again == mapped  # a re-publication does not pile links up
    rels = sorted(link["rel"] for link in mapped["links"])
    assert rels == sorted(["derived_from"] + ["tilejson", "xyz", "preview"] * 2)
    assert render.WEB_MAP_LINKS_EXTENSION in mapped["stac_extensions"]
    viewers = render.viewer_links(mapped)
    assert set(viewers) == {"true-color", "ndvi"}
    assert _query(viewers["ndvi"])["assets"] == ["ndvi"]

    # An item without the render's bands is left alone.
    other = _item(["scl"])
    assert render.with_renders(other, titiler_url=TITILER, item_url="/x") == other


def test_publish_item_writes_links_and_lists_viewers(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = "processed/c/2024-06-15/aoi/scene/item.json"
    entry = publish_item(
        store,
        _item(SCENE_ASSETS),
        key,
        "processed/c/2024-06-15/aoi/collection.json",
        item_id="scene",
        aoi="aoi",
        decision=None,
        stats={},
        layers=[],
        titiler_url=TITILER,
    )
    written = json.loads(store.get_bytes(key))
    assert entry["viewers"] == render.viewer_links(written)
    assert _query(entry["viewers"]["true-color"])["url"] == [store.url(key)]
    assert render.product_viewers([entry]) == {
        "scene/aoi true-color": entry["viewers"]["true-color"],
        "scene/aoi ndvi": entry["viewers"]["ndvi"],
    }
    markdown = render.viewers_markdown([entry])
    assert markdown is not None and f"[scene/aoi ndvi]({entry['viewers']['ndvi']})" in markdown
    assert render.viewers_markdown([{**entry, "viewers": {}}]) is None


# ------------------------------------------------------------- a published product's tile


def publish_scene_products(
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    titiler_url: str,
    root: Path,
) -> dict[str, Any]:
    """The scene products of (DAY, dunes) materialized into a local store under ``root``,
    items linked to the TiTiler at ``titiler_url``; the source COGs are read from the S3
    source bucket. Returns the store, the product's manifest entry and its item."""
    with RustacStacServer([rkh_item], [real_collection]) as stac_api, s3_env(s3_server):
        config = parse_config(
            {
                "stac": {"api_url": stac_api.url, "page_size": 2},
                "aois": AOIS[:1],
                "bands": BANDS,
                "partitions": PARTITIONS,
                "storage": {"url": str(root / "objects"), "endpoint_url": s3_server.endpoint_url},
                "warehouse": {"kind": "duckdb", "path": str(root / "w.duckdb")},
                "transform": SOURCE_GRID,
                "maps": {"titiler_url": titiler_url},
            }
        )
        result = materialize_partition(
            config,
            DAY,
            AOI,
            selection=AssetSelection.assets(AssetKey("scene_products")).upstream(),
            raise_on_error=True,
        )
    assert result.success
    store = LocalObjectStore(root / "objects")
    entries = scene_products_of(store, COLLECTION, Partition(dt.date.fromisoformat(DAY), AOI))
    assert [e["item_id"] for e in entries] == [ITEM]
    item = json.loads(store.get_bytes(entries[0]["stac_item_key"]))
    return {"store": store, "entry": entries[0], "item": item}


@pytest.fixture(scope="module")
def published(
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    titiler: TiTilerServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    return publish_scene_products(
        s3_server, rkh_item, real_collection, titiler.url, tmp_path_factory.mktemp("maps")
    )


def _tile_over(bounds_4326: tuple[float, float, float, float]) -> morecantile.Tile:
    """The deepest WebMercatorQuad tile holding the whole bbox."""
    tms = morecantile.tms.get("WebMercatorQuad")
    west, south, east, north = bounds_4326
    for zoom in range(18, -1, -1):
        tile = tms.tile(west, north, zoom)
        if tile == tms.tile(east, south, zoom):
            return tile
    raise AssertionError(f"no tile holds {bounds_4326}")


# GDAL's warper maps output pixels to the source through an approximate transformer (error
# up to 0.125 output pixel: rasterio's default tolerance, in TiTiler's WarpedVRT and in
# reproject alike, each interpolating over its own spans). Where an output pixel's centre
# falls that close to a source pixel's edge, nearest neighbour may take either side.
APPROXIMATION_PX = 0.125


def _source_position(
    src: rasterio.io.DatasetReader, tile_transform: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional source (col, row) of each tile pixel centre, transformed exactly."""
    cols, rows = np.meshgrid(np.arange(256) + 0.5, np.arange(256) + 0.5)
    x, y = tile_transform * (cols, rows)
    ux, uy = Transformer.from_crs("EPSG:3857", src.crs, always_xy=True).transform(x, y)
    fcol, frow = ~src.transform * (ux, uy)
    return np.asarray(fcol), np.asarray(frow)


def assert_tile_equals_cog(
    http: requests.Session, titiler_url: str, cog_url: str, cog: str | bytes
) -> None:
    """The single-band tile covering the AOI, served by the TiTiler at ``titiler_url``
    from ``cog_url`` (nearest, its default) with ``unscale=true``, against the COG
    (``cog``: a path, or its bytes as read from the store) reprojected onto the same tile
    by rasterio (nearest): the physical values (stored integer x scale + offset) wherever
    both are valid and nearest neighbour is well defined; on a source pixel's edge, one
    of the pixels that meet there. Without ``unscale`` the tile holds the stored
    integers."""
    tms = morecantile.tms.get("WebMercatorQuad")
    tile = _tile_over(tuple(AOIS[0]["bbox"]))  # type: ignore[index]

    def served_tile(**params: str) -> tuple[np.ndarray, np.ndarray]:
        response = http.get(
            f"{titiler_url}/cog/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy",
            params={"url": cog_url, **params},
            timeout=60,
        )
        assert response.status_code == 200, response.text[:500]
        served = np.load(io.BytesIO(response.content))
        # One data band, then TiTiler's mask (255 valid, 0 nodata) as the last band.
        assert served.shape == (2, 256, 256)
        return served[0], served[1] > 0

    data, mask = served_tile(unscale="true")
    raw, raw_mask = served_tile()

    tile_transform = from_bounds(*tms.xy_bounds(tile), 256, 256)
    stored = np.full((256, 256), np.nan, dtype="float64")
    with rasterio.open(io.BytesIO(cog) if isinstance(cog, bytes) else cog) as src:
        assert src.dtypes == ("int16",) and src.scales == (1e-4,), (src.dtypes, src.scales)
        scale, offset = src.scales[0], src.offsets[0]
        reproject(
            source=rasterio.band(src, 1),
            destination=stored,
            src_nodata=src.nodata,
            dst_transform=tile_transform,
            dst_crs="EPSG:3857",
            dst_nodata=math.nan,
            resampling=Resampling.nearest,
        )
        cog = src.read(1)
        fcol, frow = _source_position(src, tile_transform)
    expected = (stored * scale + offset).astype(np.float32)
    both = mask & np.isfinite(expected) & np.isfinite(data)
    # The approximation bound in source pixels (an output pixel is ~0.7 source pixel here).
    step = np.hypot(fcol[128, 128] - fcol[128, 127], frow[128, 128] - frow[128, 127])
    margin = APPROXIMATION_PX * float(step) + 1e-3
    on_edge = (np.abs(fcol - np.round(fcol)) < margin) | (np.abs(frow - np.round(frow)) < margin)
    # The AOI fills much of its tile: thousands of pixels compared.
    assert (both & ~on_edge).sum() > 5000, (both.sum(), (both & on_edge).sum())
    clear = both & ~on_edge
    # TiTiler scales in float32, the expectation in float64 rounded to float32: at most
    # one float32 step apart. The stored integers behind them are equal exactly.
    np.testing.assert_array_max_ulp(data[clear].astype(np.float32), expected[clear], maxulp=1)
    np.testing.assert_array_equal(np.rint((data[clear] - offset) / scale), stored[clear])
    # Without unscale: the integers themselves (what the render would stretch wrongly).
    np.testing.assert_array_equal(raw_mask, mask)
    np.testing.assert_array_equal(raw[clear], stored[clear])
    # On an edge: the value of a source pixel within the margin of the exact position.
    rows, cols = np.nonzero(both & on_edge)
    for r, c in zip(rows, cols, strict=True):
        near = {
            int(cog[i, j])
            for i in {
                int(np.floor(frow[r, c] - margin)),
                int(np.floor(frow[r, c] + margin)),
            }
            for j in {
                int(np.floor(fcol[r, c] - margin)),
                int(np.floor(fcol[r, c] + margin)),
            }
            if 0 <= i < cog.shape[0] and 0 <= j < cog.shape[1]
        }
        assert round((float(data[r, c]) - offset) / scale) in near, (r, c, data[r, c], near)
    # Valid where the COG is valid, and nowhere else (up to the same edge pixels).
    assert np.array_equal((mask == np.isfinite(expected)) | on_edge, np.ones_like(mask))


def test_ndvi_tile_equals_the_cog_reprojected(
    published: dict[str, Any], titiler: TiTilerServer, http: requests.Session
) -> None:
    store, entry = published["store"], published["entry"]
    ndvi_path = store.gdal_path(layer_key(entry, "ndvi"))
    assert_tile_equals_cog(http, titiler.url, ndvi_path, ndvi_path)


def test_item_links_resolve_on_titiler(
    published: dict[str, Any], titiler: TiTilerServer, http: requests.Session
) -> None:
    item, entry = published["item"], published["entry"]
    assert set(item["properties"]["renders"]) == {"true-color", "ndvi"}
    by_rel = {
        (link["rel"], link["render"]): link["href"] for link in item["links"] if "render" in link
    }
    assert set(by_rel) == {
        (rel, render_id)
        for rel in ("tilejson", "xyz", "preview")
        for render_id in ("true-color", "ndvi")
    }
    for render_id in ("true-color", "ndvi"):
        tilejson = http.get(by_rel[("tilejson", render_id)], timeout=60)
        assert tilejson.status_code == 200, tilejson.text[:500]
        doc = tilejson.json()
        assert doc["tiles"] and doc["tiles"][0].startswith(f"{titiler.url}/stac/tiles/")
        # The served TileJSON covers the product.
        west, south, east, north = doc["bounds"]
        assert west <= item["bbox"][0] + 1e-6 and east >= item["bbox"][2] - 1e-6
        assert south <= item["bbox"][1] + 1e-6 and north >= item["bbox"][3] - 1e-6
    # A tile from the item's own xyz template: a PNG of the rendered NDVI.
    west, south, east, north = item["bbox"]
    tile = _tile_over((west, south, east, north))
    href = by_rel[("xyz", "ndvi")].format(z=tile.z, x=tile.x, y=tile.y)
    png = http.get(href, timeout=60)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), png.text[:500]
    viewer = http.get(entry["viewers"]["ndvi"], timeout=60)
    assert viewer.status_code == 200 and "text/html" in viewer.headers["content-type"]


# ------------------------------------------------- a product in an S3-compatible store


@pytest.fixture(scope="module")
def s3_product(published: dict[str, Any], s3_server: Any) -> dict[str, Any]:
    """The published product's folder (item and COGs) copied under the same keys into a
    SeaweedFS bucket, as an S3 object store holds it."""
    local, entry = published["store"], published["entry"]
    s3_server.create_bucket("products")
    store = S3ObjectStore(
        "s3://products/objects",
        client=s3_server.boto3_client(),
        endpoint_url=s3_server.endpoint_url,
    )
    folder = entry["stac_item_key"].rsplit("/", 1)[0]
    keys = [info.key for info in local.list(folder)]
    assert layer_key(entry, "ndvi") in keys and entry["stac_item_key"] in keys, keys
    for key in keys:
        store.put_bytes(key, local.get_bytes(key))
    return {"store": store, "entry": entry}


@pytest.fixture(scope="module")
def titiler_s3(s3_server: Any) -> Iterator[TiTilerServer]:
    """A TiTiler given the store's GDAL options, and nothing else of it."""
    with TiTilerServer(env=s3_server.gdal_env_options()) as server:
        # The credentials reach its environment, never its command line (ps shows that).
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
        assert f"AWS_SECRET_ACCESS_KEY={s3_server.secret_key}".encode() in environ
        assert s3_server.secret_key.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        yield server


def test_s3_tile_equals_the_cog(
    s3_product: dict[str, Any], titiler_s3: TiTilerServer, http: requests.Session
) -> None:
    store, entry = s3_product["store"], s3_product["entry"]
    key = layer_key(entry, "ndvi")
    cog_url = store.url(key)
    assert cog_url.startswith("s3://products/")
    # The expected side: the object's bytes as the store holds them.
    assert_tile_equals_cog(http, titiler_s3.url, cog_url, store.get_bytes(key))


def test_s3_item_renders_through_stac(
    s3_product: dict[str, Any], titiler_s3: TiTilerServer, http: requests.Session
) -> None:
    """The /stac endpoints read the item itself from the bucket (boto3 in TiTiler, through
    the same AWS_S3_ENDPOINT) and its relative asset hrefs resolve beside it."""
    store, entry = s3_product["store"], s3_product["entry"]
    item_url = store.url(entry["stac_item_key"])
    tilejson = http.get(
        render.tilejson_url(titiler_s3.url, item_url, render.RENDERS["ndvi"]), timeout=60
    )
    assert tilejson.status_code == 200, tilejson.text[:500]
    west, south, east, north = tilejson.json()["bounds"]
    tile = _tile_over((west, south, east, north))
    href = render.xyz_url(titiler_s3.url, item_url, render.RENDERS["ndvi"])
    png = http.get(href.format(z=tile.z, x=tile.x, y=tile.y), timeout=60)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG"), png.text[:500]
