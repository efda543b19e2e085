"""Snowflake authentication in the deployment: key pair when ``SNOWFLAKE_PRIVATE_KEY`` is set
(the External Secrets Operator copies it from Secrets Manager), the password otherwise; the
credential is read from the environment by Dagster and never shows in a repr, a log line or
an error.

No real Snowflake: fakesnow stands in for ``snowflake.connector.connect``, wrapped to see
the arguments the resource passes to it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import fakesnow
import pytest
import snowflake.connector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from geospatial_pipeline.config import PipelineConfig, parse_config, require_secrets
from geospatial_pipeline.errors import ConfigError, WarehouseError
from geospatial_pipeline.resources import build_warehouse
from geospatial_pipeline.resources.snowflake import SnowflakeWarehouse
from geospatial_pipeline.warehouse.tables import SCENE_METADATA

pytestmark = [
    pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning"),
    pytest.mark.timeout(120),
]

KEY_VARS = ("SNOWFLAKE_PRIVATE_KEY", "SNOWFLAKE_PRIVATE_KEY_PASSWORD")
PASSWORD_VAR = "SNOWFLAKE_PASSWORD"
PASSPHRASE = "correct horse battery staple"
DAY = datetime.date(2024, 5, 1)


def snowflake_config() -> PipelineConfig:
    return parse_config(
        {
            "stac": {"api_url": "http://127.0.0.1:9/v1"},
            "aois": [{"name": "toulouse", "bbox": [1.40, 43.56, 1.43, 43.58]}],
            "partitions": {"start_date": "2024-06-01"},
            "storage": {"url": "/tmp/unused-objects"},
            "warehouse": {
                "kind": "snowflake",
                "account": "myorg-myaccount",
                "user": "GEOSPATIAL_PIPELINE",
                "database": "GEO",
                "schema": "RAW",
                "warehouse": "COMPUTE_WH",
            },
        },
        "test",
    )


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def encrypted_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    ).decode()


def der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def secret_fragments(pem: str) -> list[str]:
    """Pieces of the key material that must never be printed: the passphrase and every
    base64 line of the PEM body."""
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return [PASSPHRASE, *body]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (PASSWORD_VAR, *KEY_VARS):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def connect_calls(tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    """fakesnow, with the arguments of every connect call recorded."""
    calls: list[dict[str, Any]] = []
    (tmp_path / "fakesnow").mkdir()
    with fakesnow.patch(db_path=tmp_path / "fakesnow"):
        fake_connect = snowflake.connector.connect

        def record(**kwargs: Any) -> Any:
            calls.append(kwargs)
            return fake_connect(**kwargs)

        with mock.patch.object(snowflake.connector, "connect", record):
            yield calls


@pytest.mark.usefixtures("clean_env")
def test_password_when_no_key_is_set(
    monkeypatch: pytest.MonkeyPatch, connect_calls: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "fakesnow-accepts-anything")
    warehouse = build_warehouse(snowflake_config())
    assert isinstance(warehouse, SnowflakeWarehouse)
    assert warehouse.snowflake.password == dg.EnvVar(PASSWORD_VAR)
    assert warehouse.snowflake.private_key is None
    with dg.build_resources({"warehouse": warehouse}) as resources:
        assert resources.warehouse.count_rows(SCENE_METADATA) == 0
    assert connect_calls[-1]["password"] == "fakesnow-accepts-anything"
    assert "private_key" not in connect_calls[-1]


@pytest.mark.usefixtures("clean_env")
def test_key_pair_when_the_key_is_set(
    key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    connect_calls: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem = encrypted_pem(key)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY", pem)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PASSWORD", PASSPHRASE)
    # Both present (a secret holding both): the key wins, the password is not used.
    monkeypatch.setenv(PASSWORD_VAR, "not-this-one")
    config = snowflake_config()
    require_secrets(config)

    warehouse = build_warehouse(config)
    assert isinstance(warehouse, SnowflakeWarehouse)
    # Only the variables' names are in the definitions.
    assert warehouse.snowflake.private_key == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY")
    assert warehouse.snowflake.private_key_password == dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSWORD")
    assert warehouse.snowflake.password is None

    caplog.set_level(logging.DEBUG)
    with dg.build_resources({"warehouse": warehouse}) as resources:
        live = resources.warehouse
        written = live.replace_partition(
            SCENE_METADATA, (DAY, "toulouse"), [{"item_id": "S2A_1", "aoi": "toulouse"} | _row()]
        )
        assert written == 1 and live.count_rows(SCENE_METADATA, (DAY, "toulouse")) == 1
        printed = [repr(live), str(live), live.describe()]

    # The connector got the decrypted key (DER, as Snowflake wants it), no password.
    assert connect_calls and all(call["private_key"] == der(key) for call in connect_calls)
    assert all("password" not in call for call in connect_calls)
    shown = "\n".join([*printed, caplog.text, *capsys.readouterr()])
    assert "Replaced scene_metadata partition partition_date=2024-05-01, aoi=toulouse" in (
        caplog.text
    )  # logs were captured
    leaked = [fragment for fragment in secret_fragments(pem) if fragment in shown]
    assert leaked == []


@pytest.mark.usefixtures("clean_env")
def test_unencrypted_key_needs_no_passphrase(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch, connect_calls: list[dict[str, Any]]
) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY", pem)
    warehouse = build_warehouse(snowflake_config())
    assert isinstance(warehouse, SnowflakeWarehouse)
    assert warehouse.snowflake.private_key_password is None
    with dg.build_resources({"warehouse": warehouse}) as resources:
        assert resources.warehouse.count_rows(SCENE_METADATA) == 0
    assert connect_calls[-1]["private_key"] == der(key)


@pytest.mark.usefixtures("clean_env")
def test_a_wrong_passphrase_fails_without_showing_the_key(
    key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch, connect_calls: list[dict[str, Any]]
) -> None:
    pem = encrypted_pem(key)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY", pem)
    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PASSWORD", "wrong passphrase")
    warehouse = build_warehouse(snowflake_config())
    with (
        dg.build_resources({"warehouse": warehouse}) as resources,
        pytest.raises(WarehouseError, match="counting rows of table 'scene_metadata'") as err,
    ):
        resources.warehouse.count_rows(SCENE_METADATA)
    message = f"{err.value}\n{err.value.__cause__!r}"
    assert [f for f in secret_fragments(pem) if f in message] == []
    assert "wrong passphrase" not in message
    assert connect_calls == []  # refused before any connection


@pytest.mark.usefixtures("clean_env")
def test_some_credential_is_required() -> None:
    config = snowflake_config()
    with pytest.raises(ConfigError, match=r"SNOWFLAKE_PASSWORD is not set.*SNOWFLAKE_PRIVATE_KEY"):
        require_secrets(config, {})
    require_secrets(config, {"SNOWFLAKE_PRIVATE_KEY": "pem"})
    require_secrets(config, {PASSWORD_VAR: "x"})


def _row() -> dict[str, Any]:
    acquired = datetime.datetime(2024, 5, 1, 10, 20, 31, tzinfo=datetime.UTC)
    return {
        "collection": "sentinel-2-l2a",
        "acquired_at": acquired,
        "partition_date": DAY,
        "mgrs_tile": "31TCJ",
        "platform": "sentinel-2a",
        "cloud_cover": 12.5,
        "processing_baseline": "05.10",
        "boa_offset_applied": True,
        "created": acquired,
        "updated": acquired,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[1.0, 43.0], [2.0, 43.0], [2.0, 44.0], [1.0, 43.0]]],
        },
        "bbox": [1.0, 43.0, 2.0, 44.0],
        "band_objects": [],
        "properties": {},
        "object_count": 0,
        "object_bytes": 0,
    }
