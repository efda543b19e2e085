"""Configuration validation: every bad input is refused with an error naming the field."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from geospatial_pipeline.config import (
    CONFIG_ENV_VAR,
    EARTH_SEARCH_V1,
    SnowflakeWarehouseConfig,
    load_config,
    parse_config,
    require_secrets,
)
from geospatial_pipeline.errors import ConfigError

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


BOW_TIE = {
    "type": "Polygon",
    "coordinates": [[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]],
}


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
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
    ],
    ids=[
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
    ],
)
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
