"""Configuration validation: every bad input is refused with an error naming the field."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from shapely.geometry import Point, shape

from geospatial_pipeline.config import (
    CONFIG_ENV_VAR,
    EARTH_SEARCH_V1,
    SnowflakeWarehouseConfig,
    load_config,
    parse_config,
    require_secrets,
)
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.resources.stac import ScopeResource
from geospatial_pipeline.stac.search import AoiQuery, SearchSettings, _base_params
from tests.conftest import REPO

SQUARE = {
    "type": "Polygon",
    "coordinates": [[[9.0, 47.0], [9.1, 47.0], [9.1, 47.1], [9.0, 47.1], [9.0, 47.0]]],
}
BASE: dict[str, Any] = {
    "aois": [
        {"name": "lake", "geometry": SQUARE},
        {"name": "city", "bbox": [9.2, 47.2, 9.3, 47.3]},
    ],
    "partitions": {"start_date": "2020-03-01"},
    "storage": {"url": "s3://bucket/prefix"},
    "warehouse": {"kind": "duckdb", "path": "/tmp/w.duckdb"},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def test_valid_config_has_defaults() -> None:
    config = parse_config(BASE)
    assert config.stac.api_url == EARTH_SEARCH_V1
    assert config.stac.collection == "sentinel-2-l2a"
    assert config.bands == ["red", "green", "blue", "nir", "scl"]
    assert [a.name for a in config.aois] == ["lake", "city"]
    assert config.aoi("city").shape.bounds == (9.2, 47.2, 9.3, 47.3)


# Drawn straight across 180°: read as lon/lat, everything but that strip of the globe.
JUMPS_180 = {
    "type": "Polygon",
    "coordinates": [
        [[179.5, -17.2], [-179.5, -17.2], [-179.5, -17.0], [179.5, -17.0], [179.5, -17.2]]
    ],
}
BOW_TIE = {
    "type": "Polygon",
    "coordinates": [[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]],
}


# Every bad configuration the suite knows: (document, field named, words in the error).
BAD_CONFIGS: list[tuple[dict[str, Any], str, str]] = [
    (with_("aois.0.geometry", BOW_TIE), "aois.0", "Self-intersection"),
    (
        with_("aois.0.geometry", {"type": "Polygon", "coordinates": []}),
        "aois.0",
        "empty",
    ),
    (
        with_(
            "aois.0.geometry",
            {
                "type": "Polygon",
                "coordinates": [[[190, 0], [191, 0], [191, 1], [190, 1], [190, 0]]],
            },
        ),
        "aois.0",
        "longitude out of range",
    ),
    (with_("aois.1.bbox", [9.0, 91.0, 9.1, 92.0]), "aois.1", "latitude out of range"),
    (with_("aois.1.bbox", [9.3, 47.2, 9.2, 47.3]), "aois.1", "inverted"),
    (
        with_("aois.1", {"name": "lake", "bbox": [9.2, 47.2, 9.3, 47.3]}),
        "aois",
        "duplicate AOI name 'lake'",
    ),
    (with_("bands", ["red", "B04"]), "bands", "unknown band(s) ['B04']"),
    (
        with_("partitions.start_date", (dt.date.today() + dt.timedelta(days=30)).isoformat()),
        "partitions.start_date",
        "in the future",
    ),
    (with_("warehouse", {"kind": "bigquery", "path": "x"}), "warehouse", "bigquery"),
    (with_("stac.max_cloud_cover", 120), "stac.max_cloud_cover", "less than or equal"),
    (with_("storage.url", "gs://bucket"), "storage.url", "unsupported scheme"),
    (with_("aois.0.name", "Bad Name!"), "aois.0.name", "pattern"),
    (
        with_("aois.0", {"name": "both", "geometry": SQUARE, "bbox": [0, 0, 1, 1]}),
        "aois.0",
        "exactly one",
    ),
    (with_("stac.colection", "typo"), "stac.colection", "Extra inputs"),
    (with_("transform.crs", "EPSG:999999"), "transform.crs", "unknown CRS"),
    (with_("transform.invalid_scl_classes", [3, 12]), "transform.invalid_scl_classes", "0..11"),
    (with_("bands", ["red", "green", "blue"]), "bands", "the transform needs ['nir', 'scl']"),
    (with_("storage.url", ""), "storage.url", "is empty"),
    (with_("storage.url", "file://"), "storage.url", "is empty"),
    (
        with_("partitions.start_date", "2024-01-01T00:00:00+05:00"),
        "partitions.start_date",
        "that instant lies in the UTC day 2023-12-31",
    ),
    (with_("transform.crs", "EPSG:4326"), "transform.crs", "geographic CRS"),
    (with_("transform.crs", "EPSG:2263"), "transform.crs", "US survey foot"),
    (with_("aois.0.geometry", JUMPS_180), "aois.0", "cut at 180°"),
    (with_("stac.allowed_asset_hosts", ["ftp://x"]), "stac.allowed_asset_hosts", "scheme"),
    (with_("stac.allowed_asset_hosts", ["file://"]), "stac.allowed_asset_hosts", "loopback"),
    (with_("stac.api_url", "ftp://x"), "stac.api_url", "http(s) URL"),
    (with_("aois", []), "aois", "at least 1 item"),
]
BAD_CONFIG_IDS = [
    "self-intersecting",
    "empty-geometry",
    "lon-out-of-range",
    "lat-out-of-range",
    "inverted-bbox",
    "duplicate-aoi",
    "unknown-band",
    "future-start",
    "unknown-warehouse",
    "cloud-cover-range",
    "storage-scheme",
    "aoi-name",
    "geometry-and-bbox",
    "unknown-key",
    "transform-crs",
    "scl-classes",
    "transform-bands",
    "empty-storage-url",
    "empty-file-url",
    "start-date-with-offset",
    "geographic-crs",
    "feet-crs",
    "polygon-across-180",
    "asset-host-scheme",
    "remote-catalog-local-files",
    "api-url-scheme",
    "no-aois",
]


@pytest.mark.parametrize(("doc", "field", "words"), BAD_CONFIGS, ids=BAD_CONFIG_IDS)
def test_bad_config_names_the_field(doc: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "test.yaml")
    message = str(err.value)
    assert "test.yaml" in message
    assert any(line.strip().startswith(field) and words in line for line in message.splitlines()), (
        message
    )


def test_transform_defaults_and_opt_out() -> None:
    config = parse_config(BASE)
    assert config.transform.enabled and config.transform.resolution == 10.0
    assert config.transform.invalid_scl_classes == [0, 1, 3, 8, 9, 10]
    lean = parse_config({**with_("bands", ["red"]), "transform": {"enabled": False}})
    assert lean.bands == ["red"]
    assert parse_config(with_("transform.crs", "32632")).transform.crs == "EPSG:32632"


def test_missing_secret_is_named() -> None:
    doc = with_(
        "warehouse",
        {
            "kind": "snowflake",
            "account": "acme-xy123",
            "user": "PIPELINE",
            "database": "GEO",
            "schema": "RAW",
            "warehouse": "COMPUTE_WH",
        },
    )
    config = parse_config(doc)
    assert isinstance(config.warehouse, SnowflakeWarehouseConfig)
    assert config.warehouse.schema_name == "RAW"
    with pytest.raises(ConfigError, match="SNOWFLAKE_PASSWORD is not set"):
        require_secrets(config, environ={})
    require_secrets(config, environ={"SNOWFLAKE_PASSWORD": "x"})


def test_password_in_file_is_refused() -> None:
    doc = with_(
        "warehouse",
        {
            "kind": "snowflake",
            "account": "a",
            "user": "u",
            "database": "d",
            "schema": "s",
            "warehouse": "w",
            "password": "hunter2",
        },
    )
    with pytest.raises(ConfigError, match=r"warehouse\.snowflake\.password") as err:
        parse_config(doc)
    assert "hunter2" not in str(err.value)


def test_load_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "aois: [{name: a, bbox: [0, 0, 1, 1]}]\n"
        "partitions: {start_date: '2021-01-01'}\n"
        "storage: {url: /tmp/x}\n"
        "warehouse: {kind: duckdb, path: /tmp/x.duckdb}\n"
    )
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    assert load_config().partitions.start_date == dt.date(2021, 1, 1)
    path.write_text("aois: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config()
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config()


def test_default_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    config = load_config()
    assert config.stac.api_url == EARTH_SEARCH_V1


def test_antimeridian_bbox_is_searched_and_gridded_as_two_halves() -> None:
    # STAC's bbox convention: west > east crosses 180°.
    config = parse_config(with_("aois.1.bbox", [179.6, -16.9, -179.8, -16.7]))
    aoi = config.aoi("city")
    halves = sorted(p.bounds for p in aoi.shape.geoms)
    assert halves == [(-180.0, -16.9, -179.8, -16.7), (179.6, -16.9, 180.0, -16.7)]
    assert aoi.shape.covers(Point(179.9, -16.8)) and aoi.shape.covers(Point(-179.9, -16.8))
    assert not aoi.shape.covers(Point(0.0, -16.8))
    # Sent as `intersects` (read alike by every API), never as a bbox the server might
    # take as [-179.8 .. 179.6], the rest of the globe.
    params = _base_params(
        SearchSettings(api_url="http://127.0.0.1", collection="sentinel-2-l2a"),
        AoiQuery(aoi.name, aoi.geojson, aoi.bbox),
        "2024-01-01T00:00:00Z/2024-01-01T23:59:59Z",
    )
    assert "bbox" not in params
    assert shape(params["intersects"]).equals(aoi.shape)
    # The resource the assets read carries the same shape.
    again = ScopeResource.from_config(config).aoi_configs()
    assert again[1].shape.equals(aoi.shape)


def test_start_date_as_an_unquoted_yaml_datetime_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "aois: [{name: a, bbox: [0, 0, 1, 1]}]\n"
        "partitions: {start_date: 2024-01-01T00:00:00+05:00}\n"
        "storage: {url: /tmp/x}\n"
        "warehouse: {kind: duckdb, path: /tmp/x.duckdb}\n"
    )
    with pytest.raises(ConfigError, match=r"partitions\.start_date: .*UTC day 2023-12-31"):
        load_config(path)


# The date dimension every partitioned asset of a code location has, listed in the code
# location's own interpreter: the module-level partitions come from GEOSPATIAL_PIPELINE_CONFIG
# at import.
LOCATION_DAYS = """
import json
from geospatial_pipeline.config import load_config
from geospatial_pipeline.definitions import build_assets
from geospatial_pipeline.partitions import DATE_DIMENSION

days = {
    json.dumps(a.partitions_def.get_partitions_def_for_dimension(DATE_DIMENSION).get_partition_keys())
    for a in build_assets(load_config())
    if getattr(a, "partitions_def", None) is not None
}
print("DAYS " + json.dumps([json.loads(d) for d in sorted(days)]))
"""


def location_days(config_path: Path) -> list[list[str]]:
    """The distinct date-key lists of the partitioned assets of the code location
    configured by ``config_path`` (one list when they all agree)."""
    proc = subprocess.run(
        [sys.executable, "-c", LOCATION_DAYS],
        cwd=REPO,
        env={**os.environ, CONFIG_ENV_VAR: str(config_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("DAYS "))
    days: list[list[str]] = json.loads(line.removeprefix("DAYS "))
    return days


def test_end_date_bounds_the_partitions_inclusively(tmp_path: Path) -> None:
    doc = with_("partitions.end_date", "2020-03-04")
    config = parse_config(doc)
    assert config.partitions.end_date == dt.date(2020, 3, 4)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**doc, "storage": {"url": str(tmp_path / "objects")}}))
    assert location_days(path) == [["2020-03-01", "2020-03-02", "2020-03-03", "2020-03-04"]]


@pytest.mark.parametrize(
    ("end_date", "words"),
    [
        ("2020-02-29", "end date 2020-02-29 is before partitions.start_date 2020-03-01"),
        ("2020-03-04T00:00:00+05:00", "that instant lies in the UTC day 2020-03-03"),
    ],
)
def test_bad_end_date_names_the_field(end_date: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_("partitions.end_date", end_date), "test.yaml")
    lines = str(err.value).splitlines()
    assert any(ln.strip().startswith("partitions.end_date") and words in ln for ln in lines), lines


def test_partition_count_over_max_partitions_is_refused_with_the_arithmetic() -> None:
    # 366 days (2020 is a leap year) x 2 AOIs = 732 partitions per asset.
    doc = with_("partitions", {"start_date": "2020-01-01", "end_date": "2020-12-31"})
    assert parse_config({**doc, "partitions": {**doc["partitions"], "max_partitions": 732}})
    with pytest.raises(ConfigError) as err:
        parse_config({**doc, "partitions": {**doc["partitions"], "max_partitions": 700}})
    message = str(err.value)
    assert "partitions.max_partitions: 366 days x 2 AOIs = 732 partitions per asset" in message
    assert "32 over the limit of 700" in message
    assert "one MultiPolygon AOI" in message


def test_default_max_partitions_counts_days_up_to_today() -> None:
    # Without an end date every complete UTC day counts: 40 AOIs since 2019 pass 100,000.
    aois = [
        {"name": f"f{i}", "bbox": [9.0 + i / 100, 47.0, 9.005 + i / 100, 47.005]} for i in range(40)
    ]
    doc = {**with_("partitions.start_date", "2019-01-01"), "aois": aois}
    days = (dt.datetime.now(dt.UTC).date() - dt.date(2019, 1, 1)).days
    assert days * 40 > 100_000
    with pytest.raises(ConfigError, match=rf"{days:,} days x 40 AOIs = {days * 40:,} partitions"):
        parse_config(doc)
    assert parse_config({**doc, "aois": aois[:2]}).partitions.max_partitions == 100_000


def test_demo_config_lists_only_the_days_it_has_data_for(tmp_path: Path) -> None:
    from geospatial_pipeline.demo import DEMO_DAY, write_config

    path = write_config(tmp_path, "http://127.0.0.1:9")
    config = load_config(path)
    assert config.partitions.start_date == config.partitions.end_date == DEMO_DAY
    assert location_days(path) == [[DEMO_DAY.isoformat()]]
