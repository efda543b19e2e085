"""Publishing never leaves a broken state.

- Band objects of items that left the day are removed only after scene_metadata has
  committed rows without them: a failure in between leaves every committed row's objects
  in place (dagster.materialize against rustac, SeaweedFS and DuckDB).
- On S3 an object is published with one PutObject carrying its SHA-256 checksum: no
  temporary key ever exists (not even as a noncurrent version of the versioned bucket),
  and a body corrupted on the way is refused by the server.
- In a local directory a failed write leaves the previous object intact and a published
  file gets the permissions of any file the process creates.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from geospatial_pipeline.errors import StorageError
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources.warehouse import DuckDBWarehouse
from geospatial_pipeline.storage.object_store import LocalObjectStore, S3ObjectStore
from geospatial_pipeline.warehouse.tables import PRODUCT_CATALOG, SCENE_METADATA
from tests.test_e2e import (
    ITEM,
    list_objects,
    materialize_day,
    object_store_resource,
    pipeline_config,
    s3_env,
)

CLOUDY = f"{ITEM}-cloudy"


@pytest.fixture(scope="module")
def stac_api(rkh_item: dict[str, Any], real_collection: dict[str, Any]) -> Iterator[str]:
    """The real item and a cloudier scene of the same tile ten minutes later."""
    cloudy = copy.deepcopy(rkh_item)
    cloudy["id"] = CLOUDY
    acquired = dt.datetime.fromisoformat(rkh_item["properties"]["datetime"].replace("Z", "+00:00"))
    cloudy["properties"]["datetime"] = (
        (acquired + dt.timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    )
    cloudy["properties"]["eo:cloud_cover"] = 90.0
    with RustacStacServer([rkh_item, cloudy], [real_collection]) as server:
        yield server.url


def landed_day(
    s3: Any, stac_api: str, tmp_path: Path, bucket: str, **extra: Any
) -> tuple[Any, Path]:
    """A new bucket and warehouse, and the day materialized into them: its config and
    warehouse path."""
    s3.create_bucket(bucket)
    db = tmp_path / "w.duckdb"
    config = pipeline_config(stac_api, s3, bucket, {"kind": "duckdb", "path": str(db)}, **extra)
    with s3_env(s3):
        results = materialize_day(config)
    assert {aoi: r.success for aoi, r in results.items()} == {a.name: True for a in config.aois}
    return config, db


def stricter(config: Any) -> Any:
    """``config`` with a cloud limit that drops the cloudy scene from the day."""
    return config.model_copy(
        update={"stac": config.stac.model_copy(update={"max_cloud_cover": 50})}
    )


def fail_writes_of(monkeypatch: pytest.MonkeyPatch, table_name: str) -> Callable[[], None]:
    """Make the warehouse refuse to replace ``table_name``'s partition; returns the undo."""
    original = DuckDBWarehouse.replace_partition

    def failing(self: Any, table: Any, partition_value: Any, new_rows: Any) -> int:
        if table.name == table_name:
            raise RuntimeError("warehouse unavailable")
        return original(self, table, partition_value, new_rows)

    monkeypatch.setattr(DuckDBWarehouse, "replace_partition", failing)
    return lambda: monkeypatch.setattr(DuckDBWarehouse, "replace_partition", original)


def committed_rows(db: Path) -> list[tuple[str, str, list[str]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute(
            "SELECT item_id, aoi, band_objects FROM scene_metadata ORDER BY item_id, aoi"
        ).fetchall()
    return [(item, aoi, [o["key"] for o in json.loads(objs)]) for item, aoi, objs in found]


def test_rows_never_point_at_deleted_objects(
    s3_server: Any, stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "dest-publish-order"
    config, db = landed_day(s3_server, stac_api, tmp_path, bucket)
    rows = committed_rows(db)
    assert [(item, aoi) for item, aoi, _ in rows] == [
        (ITEM, "dunes"),
        (ITEM, "wadi"),
        (CLOUDY, "dunes"),
        (CLOUDY, "wadi"),
    ]

    # The cloudy scene leaves the day (a stricter cloud limit); the warehouse write of the
    # re-run fails after band_rasters has run.
    restore = fail_writes_of(monkeypatch, SCENE_METADATA.name)
    with s3_env(s3_server):
        failed = materialize_day(stricter(config))
    assert not any(r.success for r in failed.values())
    for aoi, result in failed.items():
        # Each partition's band_rasters ran; its scene_metadata write was the failure.
        assert result.asset_materializations_for_node("band_rasters"), aoi
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "scene_metadata", aoi
    assert committed_rows(db) == rows  # nothing committed by the failed run
    objects = list_objects(s3_server, bucket)
    for item, aoi, keys in rows:
        assert keys, (item, aoi)
        for key in keys:
            assert f"pipeline/{key}" in objects, f"row {item}/{aoi} points at deleted {key}"

    # Once the rows are committed, the objects no row references go.
    restore()
    with s3_env(s3_server):
        fixed = materialize_day(stricter(config))
    for aoi, result in fixed.items():
        assert result.success, aoi
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["objects_match_rows"], aoi
        searched = result.asset_materializations_for_node("stac_items")[0].metadata
        assert searched["too_cloudy"].value == [{"id": CLOUDY, "cloud_cover": 90.0}]  # type: ignore[attr-defined]
    rows = committed_rows(db)
    assert [(item, aoi) for item, aoi, _ in rows] == [(ITEM, "dunes"), (ITEM, "wadi")]
    raw = {k for k in list_objects(s3_server, bucket) if k.startswith("pipeline/raw/")}
    assert raw == {f"pipeline/{key}" for _, _, keys in rows for key in keys}
    assert not any(CLOUDY in k for k in raw)


def committed_products(db: Path) -> list[tuple[str, str, str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [
            tuple(r)
            for r in con.execute(
                "SELECT item_id, aoi, product, object_key FROM product_catalog "
                "ORDER BY item_id, aoi, product"
            ).fetchall()
        ]


def test_product_rows_never_point_at_deleted_products(
    s3_server: Any, stac_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "dest-publish-products"
    config, db = landed_day(
        s3_server,
        stac_api,
        tmp_path,
        bucket,
        # The source files' own 100 m grid keeps the transform small.
        transform={"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]},
    )
    rows = committed_products(db)
    assert {item for item, *_ in rows} == {ITEM, CLOUDY, "composite"}

    restore = fail_writes_of(monkeypatch, PRODUCT_CATALOG.name)
    with s3_env(s3_server):
        failed = materialize_day(stricter(config))
    for aoi, result in failed.items():
        assert not result.success, aoi
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "product_catalog", aoi
    assert committed_products(db) == rows  # the failed run committed no product rows
    objects = list_objects(s3_server, bucket)
    for item, aoi, product, key in rows:
        assert f"pipeline/{key}" in objects, f"row {item}/{aoi}/{product} points at deleted {key}"

    restore()
    with s3_env(s3_server):
        fixed = materialize_day(stricter(config))
    for aoi, result in fixed.items():
        assert result.success, aoi
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["products_reconcile"], aoi
    rows = committed_products(db)
    assert {item for item, *_ in rows} == {ITEM, "composite"}
    processed = {k for k in list_objects(s3_server, bucket) if k.startswith("pipeline/processed/")}
    assert not any(CLOUDY in k for k in processed)
    assert {f"pipeline/{key}" for *_, key in rows} <= processed


# --------------------------------------------------------------------------- S3 publish


def b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


@pytest.fixture
def versioned_store(s3_server: Any, request: pytest.FixtureRequest) -> Iterator[S3ObjectStore]:
    bucket = request.node.name.replace("_", "-")[:60]
    s3_server.create_bucket(bucket)
    client = s3_server.boto3_client()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = object_store_resource(s3_server, bucket).store()
    assert isinstance(store, S3ObjectStore)
    yield store


def test_s3_publish_is_one_checksummed_put(versioned_store: S3ObjectStore) -> None:
    store = versioned_store
    sent: list[tuple[str, str, dict[str, str]]] = []

    def record(request: Any, **_: Any) -> None:
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        sent.append((request.method, request.url.split("?")[0], headers))

    store.client.meta.events.register("before-send.s3", record)
    key = "raw/sentinel-2-l2a/2020-02-19/dunes/item/red.tif"
    first, second = b"first version " * 1000, b"second version " * 1000
    assert store.put_bytes(key, first).written
    assert store.put_bytes(key, second).written
    assert not store.put_bytes(key, second).written  # unchanged content: no request but HEAD
    store.client.meta.events.unregister("before-send.s3", record)

    writes = [(m, url, h) for m, url, h in sent if m != "HEAD"]
    assert [m for m, _, _ in writes] == ["PUT", "PUT"]  # no copy, no delete
    full = f"/{store.bucket}/pipeline/{key}"
    assert all(url.endswith(full) for _, url, _ in writes)
    assert not any("x-amz-copy-source" in h for _, _, h in writes)
    assert [h["x-amz-checksum-sha256"] for _, _, h in writes] == [
        b64_sha256(first),
        b64_sha256(second),
    ]

    # No temporary key ever existed: the versioned bucket keeps every version and delete
    # marker, and all of them belong to the published key.
    versions = store.client.list_object_versions(Bucket=store.bucket)
    keys = {v["Key"] for v in versions.get("Versions", [])} | {
        m["Key"] for m in versions.get("DeleteMarkers", [])
    }
    assert keys == {f"pipeline/{key}"}
    assert len(versions["Versions"]) == 2
    head = store.client.head_object(
        Bucket=store.bucket, Key=f"pipeline/{key}", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == b64_sha256(second)
    assert store.get_bytes(key) == second


def test_s3_refuses_a_body_corrupted_on_the_way(versioned_store: S3ObjectStore) -> None:
    store = versioned_store
    key = "raw/sentinel-2-l2a/2020-02-19/dunes/item/nir.tif"
    good, update = b"good " * 1000, b"update " * 1000
    store.put_bytes(key, good)

    def corrupt(request: Any, **_: Any) -> None:
        # Before signing, so only the checksum can notice: one flipped byte.
        data = request.data
        body = bytearray(data.read() if hasattr(data, "read") else data)
        body[100] ^= 0xFF
        request.data = bytes(body)

    store.client.meta.events.register("before-sign.s3.PutObject", corrupt)
    try:
        with pytest.raises(StorageError, match=r"BadDigest|[Cc]hecksum"):
            store.put_bytes(key, update)
    finally:
        store.client.meta.events.unregister("before-sign.s3.PutObject", corrupt)
    assert store.get_bytes(key) == good


# --------------------------------------------------------------------------- local publish


def test_local_failed_write_keeps_the_previous_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path)
    key = "raw/c/2020-02-19/dunes/item/red.tif"
    store.put_bytes(key, b"previous" * 1000)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        store.put_bytes(key, b"next" * 5000)
    monkeypatch.undo()
    assert store.get_bytes(key) == b"previous" * 1000
    # No temporary file is left behind, listed or not.
    assert [p.name for p in (tmp_path / key).parent.iterdir()] == ["red.tif"]


def test_local_published_object_has_the_usual_permissions(tmp_path: Path) -> None:
    """Readable by whoever may read the store (the umask decides), like any created file:
    a temporary file from mkstemp would keep 0600 through the rename."""
    store = LocalObjectStore(tmp_path)
    key = "raw/c/2020-02-19/dunes/item/red.tif"
    previous = os.umask(0o022)
    try:
        store.put_bytes(key, b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o644


def test_folders_lists_one_level_on_both_stores(
    versioned_store: S3ObjectStore, tmp_path: Path
) -> None:
    for store in (versioned_store, LocalObjectStore(tmp_path / "local")):
        for key in ("day/2024-01-01/aoi/x.tif", "day/2024-01-02/y.json", "day/loose.json"):
            store.put_bytes(key, b"{}", "application/json")
        assert list(store.folders("day")) == ["day/2024-01-01", "day/2024-01-02"], store
        assert list(store.folders("day/2024-01-02")) == []
        assert list(store.folders("absent")) == []
