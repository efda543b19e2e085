"""Products in a real STAC API: pgstac in a throwaway PostgreSQL + PostGIS database
(`pypgstac migrate`), stac-fastapi-pgstac on 127.0.0.1, two days of the real 29RKH
products published by the pipeline, searched back with pystac-client and loaded with
odc.stac; a re-run leaves the same rows, a superseded product is deleted.

The second day is the real scene re-dated (same COGs, another id, day and cloud cover),
so the two days' searches by date and cloud cover have different answers.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import rasterio

from geospatial_pipeline.assets.publish import PGSTAC_ITEMS
from geospatial_pipeline.config import (
    PGSTAC_PASSWORD_ENV_VAR,
    PublishConfig,
    parse_config,
    require_secrets,
)
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.local.stac_api import PgstacApiServer, api_environment
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.raster.encoding import read_physical
from geospatial_pipeline.resources.pgstac import PgstacResource
from geospatial_pipeline.stac import pgstac
from geospatial_pipeline.stac.render import RENDERS
from geospatial_pipeline.storage.object_store import LocalObjectStore
from tests.conftest import in_ci
from tests.partitioning import PARTITIONS, materialize_partition
from tests.test_e2e import AOIS, BANDS, DAY, ITEM, SOURCE_GRID, s3_env

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DAY2 = "2020-02-24"
ITEM2 = ITEM.replace("20200219", "20200224")
ITEM1_REPROCESSED = ITEM.replace("_0_", "_1_")
AOI = cast(dict[str, Any], AOIS[0])  # dunes
CLOUDY = 62.5
COLLECTION = "sentinel-2-l2a"


# ------------------------------------------------------------------ without a database


def test_dsn_with_a_password_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "aois": [AOI],
                "partitions": PARTITIONS,
                "storage": {"url": "/tmp/x"},
                "warehouse": {"kind": "duckdb", "path": "/tmp/x.duckdb"},
                "publish": {"pgstac": "postgresql://app:s3cr3t@db:5432/pgstac"},
            }
        )
    assert "publish.pgstac: holds a password" in str(err.value)
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(ValueError, match="http"):
        PublishConfig(stac_api_url="localhost:8080")


def test_the_password_variable_must_be_set_and_reaches_only_the_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_config(
        {
            "aois": [AOI],
            "partitions": PARTITIONS,
            "storage": {"url": "/tmp/x"},
            "warehouse": {"kind": "duckdb", "path": "/tmp/x.duckdb"},
            "publish": {"pgstac": "postgresql://app@db:5432/pgstac"},
        }
    )
    with pytest.raises(ConfigError, match=PGSTAC_PASSWORD_ENV_VAR):
        require_secrets(config, environ={})
    require_secrets(config, environ={PGSTAC_PASSWORD_ENV_VAR: ""})

    resource = PgstacResource.from_config(config.publish)
    # Dagster resolves it at run time; the definitions hold the variable's name only.
    assert "s3cr3t" not in repr(resource)
    monkeypatch.setenv(PGSTAC_PASSWORD_ENV_VAR, "s3cr3t")
    built = PgstacResource(dsn="postgresql://app@db:5432/pgstac", password="s3cr3t")
    assert "password=s3cr3t" in built.conninfo() and "dbname=pgstac" in built.conninfo()
    with pytest.raises(ConfigError) as err:
        PgstacResource(dsn="postgresql://app:leak@db/pgstac").conninfo()
    assert "holds a password" in str(err.value) and "leak" not in str(err.value)


def test_pgstac_items_asset_only_when_a_database_is_configured(tmp_path: Path) -> None:
    from geospatial_pipeline.definitions import build_assets

    base = {
        "aois": [AOI],
        "partitions": PARTITIONS,
        "storage": {"url": str(tmp_path)},
        "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
    }

    def keys(doc: dict[str, Any]) -> set[str]:
        return {
            k.to_user_string()
            for a in build_assets(parse_config(doc))
            for k in getattr(a, "keys", [])
        }

    assert PGSTAC_ITEMS.to_user_string() not in keys(base)
    published = {**base, "publish": {"pgstac": "postgresql://app@db/pgstac"}}
    assert PGSTAC_ITEMS.to_user_string() in keys(published)


def test_api_item_resolves_hrefs_and_keeps_provenance(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = "processed/s2/2020-02-19/dunes/X/item.json"
    doc: dict[str, Any] = {
        "type": "Feature",
        "id": "X__dunes",
        "properties": {"datetime": "2020-02-19T11:34:25Z"},
        "assets": {"ndvi": {"href": "./ndvi.tif"}, "red": {"href": "../other/red.tif"}},
        "links": [
            {"rel": "root", "href": "../../../../catalog.json"},
            {"rel": "parent", "href": "../collection.json"},
            {"rel": "derived_from", "href": "https://example.test/items/X"},
            {"rel": "preview", "href": "http://127.0.0.1:1/map.html", "render": "ndvi"},
        ],
    }
    item = pgstac.api_item(doc, item_key=key, store=store, collection="s2")
    assert item["collection"] == "geospatial-pipeline-products-s2"
    # Absolute: a client resolves a bare path against the API's address.
    assert item["assets"]["ndvi"]["href"] == (
        (tmp_path / "processed/s2/2020-02-19/dunes/X/ndvi.tif").resolve().as_uri()
    )
    assert item["assets"]["red"]["href"] == (
        (tmp_path / "processed/s2/2020-02-19/dunes/other/red.tif").resolve().as_uri()
    )
    assert [link["rel"] for link in item["links"]] == ["derived_from", "preview"]
    assert doc["assets"]["ndvi"]["href"] == "./ndvi.tif"  # the static item is untouched


def test_collection_document_carries_item_assets_renders_and_license() -> None:
    doc = pgstac.collection_document(
        COLLECTION, bbox=[1.0, 2.0, 3.0, 4.0], interval=("2020-01-01T00:00:00Z", None)
    )
    assert doc["id"] == pgstac.collection_id(COLLECTION)
    assert {"red", "green", "blue", "nir", "ndvi", "ndwi", "ndvi_median"} <= set(doc["item_assets"])
    # The layers are int16 scaled: readers need the scale and nodata from here too.
    for asset in doc["item_assets"].values():
        assert asset["raster:bands"] == [
            {"data_type": "int16", "nodata": -32768, "scale": 0.0001, "offset": 0.0}
        ]
    assert doc["renders"] == RENDERS and {"true-color", "ndvi"} <= set(doc["renders"])
    assert any("render" in e for e in doc["stac_extensions"])
    assert any("item-assets" in e for e in doc["stac_extensions"])
    assert doc["license"] and any(link["rel"] == "license" for link in doc["links"])
    assert {"licensor", "processor"} <= {r for p in doc["providers"] for r in p["roles"]}
    import pystac.validation

    # The core schema, offline (extension schemas are published online only).
    pystac.validation.validate_dict({**copy.deepcopy(doc), "stac_extensions": []})


def test_api_environment_comes_from_the_dsn() -> None:
    env = api_environment("postgresql://app@db.internal:6543/stac")
    assert env == {
        "PGHOST": "db.internal",
        "PGPORT": "6543",
        "PGUSER": "app",
        "PGPASSWORD": "",
        "PGDATABASE": "stac",
    }


# ------------------------------------------------------------------ with PostgreSQL


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A throwaway pgstac database (DSN without a password: trust on 127.0.0.1)."""
    import psycopg

    try:
        admin = psycopg.connect(ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        if in_ci():
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    name = f"gp_pgstac_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
        version = pgstac.migrate(dsn)
        assert version.startswith("0.10"), version
        yield dsn
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        gone = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        admin.close()
        assert gone is None


@pytest.fixture(scope="module")
def stac_api(database: str) -> Iterator[str]:
    with PgstacApiServer(database) as api:
        yield api.url


def _second_day(item: dict[str, Any]) -> dict[str, Any]:
    """The real scene as if acquired on DAY2 under more cloud (the same COGs, where the
    real item's assets point)."""
    other = copy.deepcopy(item)
    other["id"] = ITEM2
    for link in other["links"]:
        link["href"] = link["href"].replace(ITEM, ITEM2)
    other["properties"]["datetime"] = other["properties"]["datetime"].replace(
        "2020-02-19", "2020-02-24"
    )
    other["properties"]["eo:cloud_cover"] = CLOUDY
    return other


@pytest.fixture(scope="module")
def published(
    database: str,
    stac_api: str,
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("pgstac-store")
    items = [rkh_item, _second_day(rkh_item)]
    with (
        pytest.MonkeyPatch.context() as mp,
        RustacStacServer(items, [real_collection]) as source,
        s3_env(s3_server),
    ):
        mp.setenv(PGSTAC_PASSWORD_ENV_VAR, "")  # trust authentication on 127.0.0.1
        config = parse_config(
            {
                "stac": {"api_url": source.url},
                "aois": [AOI],
                "bands": BANDS,
                "partitions": PARTITIONS,
                # Products in a local directory (plain paths for odc.stac); the source
                # COGs in the SeaweedFS bucket.
                "storage": {"url": str(root), "endpoint_url": s3_server.endpoint_url},
                "warehouse": {"kind": "duckdb", "path": str(root / "w.duckdb")},
                "transform": SOURCE_GRID,
                "publish": {"pgstac": database, "stac_api_url": stac_api},
            }
        )
        results = {
            day: materialize_partition(config, day, AOI["name"], raise_on_error=True)
            for day in (DAY, DAY2)
        }
        yield {
            "config": config,
            "results": results,
            "source": source,
            "items": items,
            "store": LocalObjectStore(root),
            "s3_env": lambda: s3_env(s3_server),
        }


def _meta(result: Any) -> dict[str, Any]:
    mats = result.asset_materializations_for_node(PGSTAC_ITEMS.to_user_string())
    return {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()}


def _rows(database: str) -> tuple[int, int, list[str]]:
    with pgstac.pgstac_db(database) as db:
        count, distinct = db.query_one(
            "SELECT count(*), count(DISTINCT id) FROM items WHERE collection = %s",
            (pgstac.collection_id(COLLECTION),),
        )
        ids = [
            r[0]
            for r in db.query(
                "SELECT id FROM items WHERE collection = %s ORDER BY id",
                (pgstac.collection_id(COLLECTION),),
            )
        ]
    return int(count), int(distinct), ids


def _aoi_items(day: str) -> list[str]:
    return sorted([f"{ITEM if day == DAY else ITEM2}__dunes", f"dunes__{day}__ndvi_median"])


def test_each_day_publishes_its_items_and_counts_them(
    published: dict[str, Any], database: str
) -> None:
    for day, result in published["results"].items():
        meta = _meta(result)
        assert meta["dagster/row_count"] == 2, day
        assert meta["collection"] == pgstac.collection_id(COLLECTION)
        assert sorted(r.data["id"] for r in meta["items"].records) == _aoi_items(day)
        assert meta["search"].startswith(f"{published['config'].publish.stac_api_url}/collections/")
    assert _rows(database) == (4, 4, sorted(_aoi_items(DAY) + _aoi_items(DAY2)))


def test_collection_in_the_api(published: dict[str, Any], stac_api: str) -> None:
    import pystac_client

    client = pystac_client.Client.open(stac_api)
    found = client.get_collection(pgstac.collection_id(COLLECTION))
    assert found is not None
    collection = found.to_dict()
    assert {"red", "ndvi", "ndvi_median"} <= set(collection["item_assets"])
    assert {"true-color", "ndvi"} <= set(collection["renders"])
    assert collection["license"] and collection["providers"]
    # Extent and summaries computed from the rows: both days, the scenes' cloud covers.
    (start, end) = collection["extent"]["temporal"]["interval"][0]
    assert start.startswith(DAY) and end.startswith(DAY2)
    west, south, east, north = collection["extent"]["spatial"]["bbox"][0]
    aw, as_, ae, an = AOI["bbox"]
    assert west <= aw + 0.01 and east >= ae - 0.01 and south <= as_ + 0.01 and north >= an - 0.01
    cloud = collection["summaries"]["eo:cloud_cover"]
    assert cloud["minimum"] == pytest.approx(4.051854) and cloud["maximum"] == CLOUDY
    assert collection["summaries"]["geospatial_pipeline:aoi"] == ["dunes"]


def test_search_by_aoi_date_and_cloud_cover(published: dict[str, Any], stac_api: str) -> None:
    import pystac_client
    from pystac_client.conformance import ConformanceClasses

    client = pystac_client.Client.open(stac_api)
    assert client.conforms_to(ConformanceClasses.ITEM_SEARCH)
    assert client.conforms_to(ConformanceClasses.QUERY)
    aoi = published["config"].aoi("dunes").geojson
    cid = pgstac.collection_id(COLLECTION)

    def ids(**kwargs: Any) -> list[str]:
        search = client.search(collections=[cid], intersects=aoi, **kwargs)
        return sorted(i.id for i in search.items())

    assert ids(datetime=f"{DAY}/{DAY2}") == sorted(_aoi_items(DAY) + _aoi_items(DAY2))
    assert ids(datetime=DAY) == _aoi_items(DAY)
    assert ids(datetime=f"{DAY}/{DAY2}", query={"eo:cloud_cover": {"lt": 50}}) == [f"{ITEM}__dunes"]
    assert ids(datetime=f"{DAY}/{DAY2}", query={"eo:cloud_cover": {"gte": 50}}) == [
        f"{ITEM2}__dunes"
    ]
    # Elsewhere, nothing: the search is by geometry, not only by collection.
    far = {"type": "Point", "coordinates": [2.0, 48.0]}
    assert sorted(i.id for i in client.search(collections=[cid], intersects=far).items()) == []
    # Provenance survives the API.
    item = next(client.search(collections=[cid], ids=[f"{ITEM}__dunes"]).items()).to_dict()
    props = item["properties"]
    assert props["processing:software"]["geospatial-pipeline"]
    assert "SCL mask" in props["processing:lineage"]
    derived = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert len(derived) == 1 and derived[0].endswith(ITEM)


def test_odc_stac_loads_the_search_result_as_the_cog(
    published: dict[str, Any], stac_api: str
) -> None:
    import odc.stac
    import pystac_client

    client = pystac_client.Client.open(stac_api)
    search = client.search(
        collections=[pgstac.collection_id(COLLECTION)],
        intersects=published["config"].aoi("dunes").geojson,
        datetime=f"{DAY}/{DAY2}",
        query={"eo:cloud_cover": {"lt": 50}},
    )
    items = list(search.items())
    ds = odc.stac.load(items, bands=["ndvi", "red"], chunks=None)
    assert ds.sizes["time"] == 1
    assert ds.odc.crs.epsg == 32629
    for band in ("ndvi", "red"):
        with rasterio.open(items[0].assets[band].href) as src:
            stored = src.read(1)
            expected = read_physical(src)
            assert ds.odc.geobox.affine == src.transform
        got = ds[band].values[0]
        assert got.shape == expected.shape
        # odc-stac 0.5.3 returns the stored integers; the item served by the API says how
        # to read them (raster:bands scale, offset, nodata), as the README shows.
        np.testing.assert_array_equal(got, stored)
        rb = items[0].assets[band].extra_fields["raster:bands"][0]
        assert (rb["data_type"], rb["nodata"], rb["scale"], rb["offset"]) == (
            "int16",
            -32768,
            0.0001,
            0,
        )
        physical = np.where(got == rb["nodata"], np.nan, got * rb["scale"] + rb["offset"])
        np.testing.assert_array_equal(np.isnan(physical), np.isnan(expected))
        assert np.isfinite(physical).any()
        np.testing.assert_allclose(physical, expected, rtol=1.2e-7, atol=0)


def test_republishing_leaves_the_same_rows(published: dict[str, Any], database: str) -> None:
    before = _rows(database)
    with published["s3_env"]():
        again = materialize_partition(
            published["config"], DAY, "dunes", selection=[PGSTAC_ITEMS], raise_on_error=True
        )
    assert _meta(again)["dagster/row_count"] == 2 and _meta(again)["deleted"] == []
    assert _rows(database) == before


def test_a_partial_load_fails_the_publication(
    published: dict[str, Any], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row count catches a load that lands fewer rows than it was given (in its own
    collection, so the others' rows stay)."""
    from pypgstac.load import Loader

    store = published["store"]
    part_products = json.loads(
        store.get_bytes(f"manifests/{COLLECTION}/{DAY}/dunes/scene_products.json")
    )["products"]
    items = [
        pgstac.api_item(
            json.loads(store.get_bytes(p["stac_item_key"])),
            item_key=p["stac_item_key"],
            store=store,
            collection="partial",
        )
        for p in part_products
    ]
    load_items = Loader.load_items

    def drop_last(self: Loader, file: Any, *args: Any, **kwargs: Any) -> None:
        load_items(self, iter(list(file)[:-1]), *args, **kwargs)

    monkeypatch.setattr(Loader, "load_items", drop_last)
    day = dt.date.fromisoformat(DAY)
    with pytest.raises(pgstac.PgstacError, match=r"loaded 1 item\(s\).*counted 0 row"):
        pgstac.publish_partition(database, "partial", day, "dunes", items)
    # Refused before touching the database: an item of another partition.
    with pytest.raises(pgstac.PgstacError, match="not of partition"):
        pgstac.publish_partition(database, "partial", day, "wadi", items)


def test_a_superseded_product_is_deleted(published: dict[str, Any], database: str) -> None:
    """ESA reprocesses the day-1 scene (`_1_`): the re-run publishes the new product and
    deletes the old one's row; day 2 is untouched."""
    reprocessed = copy.deepcopy(published["items"][0])
    reprocessed["id"] = ITEM1_REPROCESSED
    reprocessed["properties"].update(
        {
            "s2:processing_baseline": "05.00",
            "earthsearch:boa_offset_applied": True,
            "updated": "2023-10-13T18:30:03.776Z",
            "s2:generation_time": "2023-06-18T17:37:04.000000Z",
        }
    )
    published["source"].restart_with([*published["items"], reprocessed])
    with published["s3_env"]():
        result = materialize_partition(published["config"], DAY, "dunes", raise_on_error=True)
    meta = _meta(result)
    assert meta["deleted"] == [f"{ITEM}__dunes"]
    count, distinct, ids = _rows(database)
    assert (count, distinct) == (4, 4)
    assert ids == sorted(
        [f"{ITEM1_REPROCESSED}__dunes", f"dunes__{DAY}__ndvi_median", *_aoi_items(DAY2)]
    )


# ------------------------------------------- collection summaries, incremental and exact


def _summaries(database: str, cid: str) -> dict[str, Any]:
    with pgstac.pgstac_db(database) as db:
        row = db.query_one("SELECT content->'summaries' FROM collections WHERE id = %s", (cid,))
    summaries = dict(cast(dict[str, Any], row))
    return {k: sorted(v) if isinstance(v, list) else v for k, v in summaries.items()}


def _variant(item: dict[str, Any], collection: str, day: dt.date, aoi: str, **props: Any) -> Any:
    """The published product item as another partition's (same assets)."""
    other = copy.deepcopy(item)
    other["id"] = f"{aoi}-{day}"
    other["collection"] = pgstac.collection_id(collection)
    other["properties"].update({"datetime": f"{day}T10:00:00Z", pgstac.AOI_PROPERTY: aoi, **props})
    return other


def test_summaries_stay_exact_through_new_partitions_reruns_and_concurrent_runs(
    published: dict[str, Any], database: str
) -> None:
    """A first publication merges its rows into the summaries (cheap); a re-run, which may
    remove or change rows, recomputes them from every row; concurrent publications of
    different partitions lose none of each other's values."""
    from concurrent.futures import ThreadPoolExecutor

    with pgstac.pgstac_db(database) as db:
        template = db.query_one(
            "SELECT get_item(%s, %s)",
            (f"{ITEM2}__dunes", pgstac.collection_id(COLLECTION)),
        )
    collection, cid = "summaries-test", pgstac.collection_id("summaries-test")
    day1, day2 = dt.date(2021, 5, 1), dt.date(2021, 5, 2)

    def publish(day: dt.date, aoi: str, **props: Any) -> None:
        item = _variant(template, collection, day, aoi, **props)
        pgstac.publish_partition(database, collection, day, aoi, [item])

    publish(day1, "north", **{"eo:cloud_cover": 10.0, "platform": "sentinel-2a"})
    publish(day2, "south", **{"eo:cloud_cover": 60.0, "platform": "sentinel-2b"})
    got = _summaries(database, cid)
    assert got["platform"] == ["sentinel-2a", "sentinel-2b"]
    assert got["geospatial_pipeline:aoi"] == ["north", "south"]
    assert got["eo:cloud_cover"] == {"minimum": 10.0, "maximum": 60.0}
    # A re-run of "north" with other values: the old ones must go (a merge would keep them).
    publish(day1, "north", **{"eo:cloud_cover": 30.0, "platform": "sentinel-2b"})
    got = _summaries(database, cid)
    assert got["platform"] == ["sentinel-2b"]
    assert got["eo:cloud_cover"] == {"minimum": 30.0, "maximum": 60.0}

    aois = [f"field-{i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda a: publish(day2, a, **{"eo:cloud_cover": 5.0}), aois))
    got = _summaries(database, cid)
    assert got["geospatial_pipeline:aoi"] == sorted(["north", "south", *aois])
    assert got["eo:cloud_cover"] == {"minimum": 5.0, "maximum": 60.0}
    # And the incremental result is the exact one: a full pass changes nothing.
    with pgstac.pgstac_db(database) as db:
        pgstac.refresh_collection(db, cid, None)
    assert _summaries(database, cid) == got
