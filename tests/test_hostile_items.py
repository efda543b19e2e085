"""Hostile STAC items: ids and hrefs from a remote API that must never reach a key or GDAL.

Each hostile item is rejected as an invalid item with a reason naming it and the field, and
nothing is written for it; the good item next to it lands as usual.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyproj import Transformer

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.stac.hrefs import AssetHostPolicy, default_asset_hosts
from geospatial_pipeline.stac.models import ItemValidationError, validate_item
from geospatial_pipeline.stac.search import AoiQuery, SearchSettings, open_client, search_day
from geospatial_pipeline.storage.keys import sanitize_component
from tests.conftest import EARTH_SEARCH, S2_COGS, SOURCE_BUCKET, SOURCE_PREFIX
from tests.partitioning import PARTITIONS
from tests.replay_server import Recorded, replay_server
from tests.test_e2e import materialize_day, s3_env

DAY = "2020-02-19"
GOOD = "S2A_29RKH_20200219_0_L2A"
AOIS = [{"name": "dunes", "bbox": [-11.60, 24.60, -11.52, 24.66]}]
BANDS = ["red", "green", "blue", "nir", "scl"]
FOREIGN_BUCKET = "someone-elses-bucket"
RED = f"{SOURCE_PREFIX}/B04.tif"

HOSTILE_IDS = {
    "slash": "S2A/../../escape",
    "dotdot": "..",
    "dots-prefix": "../../etc/passwd",
    "space": "S2A 29RKH 20200219",
    "unicode": "S2A_29RKH_20200219_0_L2A\u00e9",
    "lookalike": "S2A_29RKH_20200219_\u00b9_L2A",  # superscript one, not "1"
    "too-long": "S" * 201,
}
# Readable through the pipeline's own access today: a real COG on this disk, the same file
# in another bucket of the pipeline's S3 server, GDAL virtual paths to either.
HOSTILE_HREFS = {
    "local-path": str(S2_COGS / "B04.tif"),
    "file-url": f"file://{S2_COGS / 'B04.tif'}",
    "vsis3-path": f"/vsis3/{FOREIGN_BUCKET}/{RED}",
    "foreign-bucket": f"s3://{FOREIGN_BUCKET}/{RED}",
    "bucket-escape": f"s3://{SOURCE_BUCKET}/../{FOREIGN_BUCKET}/{RED}",
    "other-http-host": "http://127.0.0.1:9/B04.tif",
}


def _variant(base: dict[str, Any], item_id: str, square: str) -> dict[str, Any]:
    item = copy.deepcopy(base)
    item["id"] = item_id
    # Its own MGRS square, so the dedupe never groups it with the good item.
    item["properties"]["mgrs:grid_square"] = square
    return item


def _hostile_items(rkh_item: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(items, {id: field the reason must name})."""
    items, fields = [], {}
    squares = iter(f"Z{c}" for c in "ABCDEFGHJKLMNPQRSTUV")
    for item_id in HOSTILE_IDS.values():
        items.append(_variant(rkh_item, item_id, next(squares)))
        fields[item_id] = "id"
    for name, href in HOSTILE_HREFS.items():
        item = _variant(rkh_item, f"HOSTILE_HREF_{name}", next(squares))
        item["assets"]["red"]["href"] = href
        items.append(item)
        fields[item["id"]] = "assets.red.href"
    return items, fields


@pytest.fixture(scope="module")
def foreign_bucket(s3_server: Any, source_bucket: str) -> str:
    s3_server.create_bucket(FOREIGN_BUCKET)
    s3_server.boto3_client().upload_file(str(S2_COGS / "B04.tif"), FOREIGN_BUCKET, RED)
    return FOREIGN_BUCKET


@pytest.fixture(scope="module")
def hostile_world(
    rkh_item: dict[str, Any], real_collection: dict[str, Any], foreign_bucket: str
) -> Iterator[tuple[str, dict[str, str]]]:
    hostile, fields = _hostile_items(rkh_item)
    with RustacStacServer([rkh_item, *hostile], [real_collection]) as server:
        yield server.url, fields


def _config(stac_url: str, s3: Any, bucket: str, tmp_path: Path) -> Any:
    return parse_config(
        {
            "transform": {"enabled": False},
            "stac": {"api_url": stac_url, "allowed_asset_hosts": [f"s3://{SOURCE_BUCKET}"]},
            "aois": AOIS,
            "bands": BANDS,
            "partitions": PARTITIONS,
            "storage": {"url": f"s3://{bucket}/pipeline", "endpoint_url": s3.endpoint_url},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        }
    )


def test_hostile_items_are_invalid_and_nothing_is_written_for_them(
    s3_server: Any,
    hostile_world: tuple[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    stac_url, fields = hostile_world
    bucket = "dest-hostile"
    s3_server.create_bucket(bucket)
    config = _config(stac_url, s3_server, bucket, tmp_path)
    with s3_env(s3_server):
        result = materialize_day(config)["dunes"]
    mats = result.asset_materializations_for_node("stac_items")
    assert mats, "stac_items did not materialize"
    meta = {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()}
    invalid = {bad["id"]: bad["reason"] for bad in meta["invalid_items"]}
    assert set(invalid) == set(fields)
    for item_id, field in fields.items():
        assert invalid[item_id].startswith(f"{field}:"), (item_id, invalid[item_id])
    assert meta["items"] == 1

    client = s3_server.boto3_client()
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    ]
    tifs = sorted(k for k in keys if k.endswith(".tif"))
    assert tifs == sorted(f"pipeline/raw/sentinel-2-l2a/{DAY}/dunes/{GOOD}/{b}.tif" for b in BANDS)
    # Nothing of any hostile item anywhere: not as a key, not in the persisted items.
    for item_id in fields:
        assert not any(sanitize_component(item_id) in k for k in keys), item_id
    stored = json.loads(
        client.get_object(
            Bucket=bucket, Key=f"pipeline/stac/sentinel-2-l2a/{DAY}/dunes/items.json"
        )["Body"].read()
    )
    assert [f["id"] for f in stored["features"]] == [GOOD]
    import duckdb

    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT DISTINCT item_id FROM scene_metadata").fetchall()
    assert rows == [(GOOD,)]


def _utm_footprint(item: dict[str, Any]) -> dict[str, Any]:
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    ring = item["geometry"]["coordinates"][0]
    return {"type": "Polygon", "coordinates": [[list(to_utm.transform(x, y)) for x, y in ring]]}


def test_footprint_in_projected_metres_is_an_invalid_item() -> None:
    # Earth Search's own page, with one footprint written in UTM metres (EPSG:32632).
    original = Recorded.load

    def load(self: Recorded, name: str) -> Any:
        doc = original(self, name)
        if name == "search_page.json":
            for feature in doc["features"]:
                if feature["id"] == "S2A_32TMT_20200302_1_L2A":
                    feature["geometry"] = _utm_footprint(feature)
        return doc

    Recorded.load = load  # type: ignore[method-assign]
    try:
        with replay_server(EARTH_SEARCH) as (url, _):
            s = SearchSettings(api_url=url, collection="sentinel-2-l2a", backoff_s=0.01)
            aoi = AoiQuery("upper-rhine", {}, (9.0, 47.0, 10.0, 48.0))
            result = search_day(open_client(s), s, dt.date(2020, 3, 2), [aoi], BANDS)
    finally:
        Recorded.load = original  # type: ignore[method-assign]
    reasons = {bad["id"]: bad["reason"] for bad in result.invalid}
    assert list(reasons) == ["S2A_32TMT_20200302_1_L2A"]
    assert reasons["S2A_32TMT_20200302_1_L2A"].startswith("geometry:")
    assert "EPSG:4326" in reasons["S2A_32TMT_20200302_1_L2A"]
    kept = [i["id"] for i in result.items]
    assert "S2A_32TMT_20200302_1_L2A" not in kept
    # Its older twin is the only processing of the tile left, so it is the one used.
    assert "S2A_32TMT_20200302_0_L2A" in kept


def test_bbox_in_projected_metres_is_an_invalid_item(real_items: dict[str, Any]) -> None:
    item = copy.deepcopy(real_items[GOOD])
    item["bbox"] = [199980.0, 2690220.0, 309780.0, 2800020.0]
    with pytest.raises(ItemValidationError, match=r"item S2A_29RKH_20200219_0_L2A: bbox:"):
        validate_item(item, BANDS)


@pytest.mark.parametrize(
    "href",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "/vsis3/sentinel-cogs/x/B04.tif",
        "/vsicurl/https://sentinel-cogs.s3.us-west-2.amazonaws.com/x/B04.tif",
        "file:///vsicurl/http://127.0.0.1:9/x.tif",
        "B04.tif",
        "../B04.tif",
        "s3://other-bucket/x/B04.tif",
        "s3://sentinel-cogs/../other-bucket/x/B04.tif",
        "S3://sentinel-cogs/x/B04.tif",
        "https://other-bucket.s3.us-west-2.amazonaws.com/x/B04.tif",
        "https://sentinel-cogs.s3.us-west-2.amazonaws.com.evil.example/x/B04.tif",
        "https://user:secret@sentinel-cogs.s3.us-west-2.amazonaws.com/x/B04.tif",
        "http://sentinel-cogs.s3.us-west-2.amazonaws.com/x/B04.tif",
        "https://sentinel-cogs.s3.us-west-2.amazonaws.com:8443/x/B04.tif",
        "http://127.0.0.1:9/x/B04.tif",
        "gs://sentinel-cogs/x/B04.tif",
        "/vsizip//tmp/x.zip/B04.tif",
    ],
)
def test_earth_search_defaults_refuse_hostile_hrefs(real_items: dict[str, Any], href: str) -> None:
    hosts = AssetHostPolicy.for_catalog("https://earth-search.aws.element84.com/v1", None)
    item = copy.deepcopy(real_items[GOOD])
    item["assets"]["nir"]["href"] = href
    with pytest.raises(ItemValidationError) as err:
        validate_item(item, BANDS, hosts)
    assert err.value.item_id == GOOD
    assert err.value.reason.startswith("assets.nir.href:")
    assert repr(href) in err.value.reason


def test_defaults_accept_the_catalogs_own_hosts(real_items: dict[str, Any]) -> None:
    remote = AssetHostPolicy.for_catalog("https://earth-search.aws.element84.com/v1", None)
    local = AssetHostPolicy.for_catalog("http://127.0.0.1:8080", None)
    item = real_items[GOOD]
    assert validate_item(item, BANDS, remote).id == GOOD  # https://sentinel-cogs.s3...
    s3_item = copy.deepcopy(item)
    for asset in s3_item["assets"].values():
        asset["href"] = f"s3://sentinel-cogs/{SOURCE_PREFIX}/B04.tif"
    assert validate_item(s3_item, BANDS, remote).id == GOOD
    assert "file://" not in default_asset_hosts("https://earth-search.aws.element84.com/v1")
    # Local files only for a catalog on this machine (the demo's and the tests' rustac).
    assert local.refusal(str(S2_COGS / "B04.tif")) is None
    assert local.refusal(f"file://{S2_COGS / 'B04.tif'}") is None
    assert remote.refusal(str(S2_COGS / "B04.tif")) is not None
    assert local.refusal("/vsis3/sentinel-cogs/x.tif") is not None


def test_configured_hosts_replace_the_defaults() -> None:
    hosts = AssetHostPolicy.from_entries(["data.example.org", "http://127.0.0.1:8081", "s3://b"])
    assert hosts.refusal("https://data.example.org/a/B04.tif") is None
    assert hosts.refusal("https://DATA.example.org:443/a/B04.tif") is None
    assert hosts.refusal("http://127.0.0.1:8081/a.tif") is None
    assert hosts.refusal("s3://b/a.tif") is None
    assert hosts.refusal("http://data.example.org/a/B04.tif") is not None
    assert hosts.refusal("http://127.0.0.1:8082/a.tif") is not None
    assert hosts.refusal("https://sentinel-cogs.s3.us-west-2.amazonaws.com/a.tif") is not None
    assert hosts.refusal("/tmp/a.tif") is not None


BASE_CONFIG = {
    "aois": AOIS,
    "bands": BANDS,
    "partitions": PARTITIONS,
    "storage": {"url": "s3://bucket/prefix"},
    "warehouse": {"kind": "duckdb", "path": "/tmp/w.duckdb"},
}


@pytest.mark.parametrize(
    ("stac", "message"),
    [
        ({"allowed_asset_hosts": ["ftp://files.example.org"]}, "scheme must be s3, https or http"),
        ({"allowed_asset_hosts": ["s3://bucket/some/prefix"]}, "not a path"),
        ({"allowed_asset_hosts": ["https://user:pw@host.example"]}, "expected a host name"),
        ({"allowed_asset_hosts": [""]}, "expected a host name"),
        ({"allowed_asset_hosts": []}, "is empty"),
        ({"allowed_asset_hosts": "sentinel-cogs"}, "valid list"),
        ({"allowed_asset_hosts": ["file://"]}, "only for a catalog on this machine"),
        (
            {"api_url": "https://stac.example.org", "allowed_asset_hosts": ["file://"]},
            "only for a catalog on this machine",
        ),
    ],
)
def test_allowed_asset_hosts_errors_name_the_field(stac: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE_CONFIG, "stac": stac})
    line = next(ln for ln in str(err.value).splitlines() if "stac.allowed_asset_hosts" in ln)
    assert message in line


def test_allowed_asset_hosts_config_reaches_the_resource() -> None:
    config = parse_config(
        {
            **BASE_CONFIG,
            "stac": {"api_url": "http://127.0.0.1:9", "allowed_asset_hosts": ["file://"]},
        }
    )
    stac = build_resources(config)["stac"]
    assert stac.settings().allowed_asset_hosts == ["file://"]
    # A value edited in the launchpad is checked again, with the field named.
    edited = StacSearchResource(api_url="http://127.0.0.1:9", allowed_asset_hosts=["ftp://x"])
    with pytest.raises(ConfigError, match=r"allowed_asset_hosts: 'ftp://x'"):
        edited.settings()
