"""The static product catalog served by a local STAC API (``make dev``), searched with
pystac-client, and reloaded when a partition is materialized during the session.

The catalog is built the real way: (2020-02-19, dunes) of the real 29RKH scene through the
whole graph (transform on the source's 100 m grid) into a local store, then the root
catalog asset; later (2020-02-19, wadi) and the root again while the API runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac_client
import pytest
import rasterio
from dagster import AssetSelection, DagsterInstance, materialize

from geospatial_pipeline.assets.catalog import STAC_CATALOG, STAC_CATALOG_ROOT
from geospatial_pipeline.config import PipelineConfig, parse_config
from geospatial_pipeline.definitions import build_assets
from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.products_api import ProductsApi, load_product_catalog
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.stac.products import ROOT_CATALOG_ID
from geospatial_pipeline.storage.object_store import LocalObjectStore
from tests.partitioning import PARTITIONS, materialize_partition
from tests.test_e2e import AOIS, BANDS, DAY, ITEM, SOURCE_GRID, s3_env

COLLECTION = "sentinel-2-l2a"
PRODUCTS = f"{ROOT_CATALOG_ID}-{COLLECTION}"
DUNES_BBOX = [-11.60, 24.60, -11.52, 24.66]
assert AOIS[0] == {"name": "dunes", "bbox": DUNES_BBOX}
WADI_BBOX = [-11.08, 25.08, -10.98, 25.17]  # AOIS[1]'s polygon


def test_no_catalog_yet_serves_an_empty_products_collection(tmp_path: Path) -> None:
    items, collections = load_product_catalog(LocalObjectStore(tmp_path), COLLECTION)
    assert items == []
    assert [c["id"] for c in collections] == [PRODUCTS]


def test_an_asset_href_leaving_the_store_is_refused(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    item = {
        "type": "Feature",
        "id": "x",
        "links": [],
        "assets": {"a": {"href": "../../../../../x.tif"}},
    }
    sub = {"id": "sub", "links": [{"rel": "item", "href": "./x/item.json"}]}
    coll = {"id": "c", "links": [{"rel": "child", "href": "./d/collection.json"}]}
    root = {"id": "r", "links": [{"rel": "child", "href": "./c/collection.json"}]}
    for key, doc in {
        "processed/catalog.json": root,
        "processed/c/collection.json": coll,
        "processed/c/d/collection.json": sub,
        "processed/c/d/x/item.json": item,
    }.items():
        store.put_bytes(key, json.dumps(doc).encode())
    with pytest.raises(LocalServerError, match=r"'a'.*escapes the store"):
        load_product_catalog(store, COLLECTION)


@pytest.fixture(scope="module")
def catalog_env(
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("products-api")
    with RustacStacServer([rkh_item], [real_collection]) as source_api, s3_env(s3_server):
        config = parse_config(
            {
                "stac": {"api_url": source_api.url, "page_size": 2},
                "aois": AOIS,
                "bands": BANDS,
                "partitions": PARTITIONS,
                "storage": {"url": str(root / "objects"), "endpoint_url": s3_server.endpoint_url},
                "warehouse": {"kind": "duckdb", "path": str(root / "w.duckdb")},
                "transform": SOURCE_GRID,
            }
        )
        yield {"config": config, "store": LocalObjectStore(root / "objects")}


def _publish(config: PipelineConfig, aoi: str) -> None:
    """One partition's products and sub-catalog, then the root catalog over all."""
    result = materialize_partition(
        config,
        DAY,
        aoi,
        selection=AssetSelection.assets(STAC_CATALOG).upstream(),
        raise_on_error=True,
    )
    assert result.success
    with DagsterInstance.ephemeral() as instance:
        root = materialize(
            build_assets(config),
            selection=AssetSelection.assets(STAC_CATALOG_ROOT),
            resources=build_resources(config),
            instance=instance,
        )
    assert root.success


def _search(url: str, bbox: list[float]) -> list[Any]:
    client = pystac_client.Client.open(url)
    return list(client.search(collections=[PRODUCTS], bbox=bbox, datetime=DAY).items())


def test_products_appear_in_the_api_and_reload(catalog_env: dict[str, Any]) -> None:
    config, store = catalog_env["config"], catalog_env["store"]
    with ProductsApi(store, COLLECTION, poll_interval_s=0.5) as api:
        # Before any product: the collection exists, empty.
        client = pystac_client.Client.open(api.url)
        collection = client.get_collection(PRODUCTS)
        assert collection is not None and collection.id == PRODUCTS
        assert _search(api.url, DUNES_BBOX) == []

        _publish(config, "dunes")
        _wait_for_reload(api, 1)
        found = _search(api.url, DUNES_BBOX)
        assert {i.id for i in found} == _ids("dunes")
        scene = next(i for i in found if i.id == f"{ITEM}__dunes")
        assert scene.collection_id == PRODUCTS
        assert {"red", "nir", "ndvi", "ndwi"} <= set(scene.assets)
        ndvi = scene.assets["ndvi"].href
        assert Path(ndvi).is_absolute() and Path(ndvi).is_file(), ndvi
        with rasterio.open(ndvi) as src:
            assert src.crs.to_epsg() == 32629
            assert src.res == (100.0, 100.0)
        # Relative static-catalog links would dangle in the API: none is served.
        assert all(not str(lk.href).startswith(".") for lk in scene.links)
        assert _search(api.url, WADI_BBOX) == []
        first_count = api.item_count

        _publish(config, "wadi")
        _wait_for_reload(api, 2)
        wadi = _search(api.url, WADI_BBOX)
        assert {i.id for i in wadi} == _ids("wadi")
        assert all(i.collection_id == PRODUCTS for i in wadi)
        assert api.item_count == first_count + len(wadi)
        # The first partition's items are still served next to the new ones.
        assert {i.id for i in _search(api.url, DUNES_BBOX)} == _ids("dunes")


def _ids(aoi: str) -> set[str]:
    """A partition's product items: the scene's products and the day's NDVI composite."""
    return {f"{ITEM}__{aoi}", f"{aoi}__{DAY}__ndvi_median"}


def _wait_for_reload(api: ProductsApi, reloads: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while api.reloads < reloads:
        assert time.monotonic() < deadline, f"no reload #{reloads} within {timeout_s}s"
        time.sleep(0.2)
