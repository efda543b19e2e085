"""Fault injection: under faults the pipeline keeps working, loses nothing and changes
nothing it should not. Every test compares outputs (object bytes, warehouse rows) with a
clean run of the same partition, not just "no exception".

- STAC faults: a seeded proxy (tests/fault_proxy.py) in front of the STAC API fails ~30 %
  of requests (500/502/503, 429 with Retry-After, connection resets, stalls longer than
  ``stac.timeout_s``); the partition equals the clean run's.
- Object store killed mid-partition: SeaweedFS is SIGKILLed while band windows are being
  written, restarted on the same data directory and ports; the re-run converges.
- Re-runs: three materializations of one partition leave identical objects and rows.
- CI must not pass by skipping: with ``CI=true`` a missing ../shared fails the run.

Real local services throughout (rustac, SeaweedFS, DuckDB) and the real 29RKH scene.
The day holds the real scene plus cloudy passes over the same tile (dropped by the cloud
limit, on the client) so that a search with ``page_size: 1`` pages many times.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from botocore.client import BaseClient

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.local import seaweed
from geospatial_pipeline.local.seaweed import SeaweedS3Server
from geospatial_pipeline.local.stac_server import RustacStacServer
from tests import conftest
from tests.conftest import REPO, S2_COGS, SOURCE_BUCKET, SOURCE_PREFIX, require_shared_data
from tests.fault_proxy import FAULT_KINDS, FaultProxy
from tests.partitioning import PARTITIONS
from tests.test_e2e import (
    AOIS,
    BANDS,
    DAY,
    FILES,
    ITEM,
    SOURCE_GRID,
    mat_meta,
    materialize_day,
    s3_env,
)

SEED = 20200219
STAC_TIMEOUT_S = 1.0
# Enough that a run of consecutive faults (0.3 ** 9 per request) never exhausts them.
STAC_RETRIES = 10
CLOUDY_PASSES = 8
MAX_CLOUD = 50.0


# ---------------------------------------------------------------------------- helpers
def day_items(rkh_item: dict[str, Any]) -> list[dict[str, Any]]:
    """The real scene and ``CLOUDY_PASSES`` earlier, fully clouded passes of its tile."""
    items = [rkh_item]
    acquired = dt.datetime.fromisoformat(rkh_item["properties"]["datetime"])
    for k in range(1, CLOUDY_PASSES + 1):
        cloudy = copy.deepcopy(rkh_item)
        # Over an hour apart: distinct acquisitions for the dedupe rule, same UTC day.
        when = acquired - dt.timedelta(minutes=70 * k)
        assert when.date() == acquired.date()
        cloudy["id"] = f"S2A_29RKH_20200219_{k + 1}_L2A"
        cloudy["properties"]["datetime"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        cloudy["properties"]["eo:cloud_cover"] = 100.0
        items.append(cloudy)
    return items


def config_for(stac_url: str, s3: Any, bucket: str, db: Path, *, transform: bool = False) -> Any:
    return parse_config(
        {
            "stac": {
                "api_url": stac_url,
                "page_size": 1,
                "max_cloud_cover": MAX_CLOUD,
                "timeout_s": STAC_TIMEOUT_S,
                "max_retries": STAC_RETRIES,
            },
            "aois": AOIS,
            "bands": BANDS,
            "partitions": PARTITIONS,
            "storage": {"url": f"s3://{bucket}/pipeline", "endpoint_url": s3.endpoint_url},
            "warehouse": {"kind": "duckdb", "path": str(db)},
            "transform": SOURCE_GRID if transform else {"enabled": False},
        }
    )


def materialize_clean(config: Any) -> dict[str, Any]:
    """The day's (day, aoi) partitions, each of which must succeed with every asset check
    passing: {aoi: result}."""
    results = materialize_day(config, raise_on_error=True)
    for aoi, result in results.items():
        assert result.success, aoi
        checks = {
            (e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()
        }
        assert checks and all(checks.values()), (aoi, checks)
    return results


@dataclass
class Snapshot:
    objects: dict[str, bytes]  # every key in the bucket -> its content
    rows: dict[str, list[tuple[Any, ...]]]  # every warehouse table -> its rows, sorted

    def digests(self) -> dict[str, str]:
        return {k: hashlib.sha256(v).hexdigest() for k, v in self.objects.items()}


def read_objects(s3: Any, bucket: str) -> dict[str, bytes]:
    client = s3.boto3_client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def read_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables ORDER BY table_name"
            ).fetchall()
        ]
        return {t: con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in tables}


def column_names(db: Path, table: str) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()]


def snapshot(s3: Any, bucket: str, db: Path) -> Snapshot:
    return Snapshot(read_objects(s3, bucket), read_rows(db))


# The AOI registry: written when the AOIs are registered, before any partition runs.
REGISTRY_PREFIX = "pipeline/aois/"


def wipe(s3: Any, bucket: str, *, keep_registry: bool = False) -> None:
    """Delete every object; with ``keep_registry`` the registered AOIs stay, so a run
    starts from an empty store as far as partitions go, with the same registrations."""
    client = s3.boto3_client()
    for key in read_objects(s3, bucket):
        if not (keep_registry and key.startswith(REGISTRY_PREFIX)):
            client.delete_object(Bucket=bucket, Key=key)
    left = set(read_objects(s3, bucket))
    assert all(k.startswith(REGISTRY_PREFIX) for k in left) if keep_registry else left == set()


def items_keys() -> dict[str, str]:
    return {a["name"]: f"pipeline/stac/sentinel-2-l2a/{DAY}/{a['name']}/items.json" for a in AOIS}


def band_keys() -> set[str]:
    return {
        f"pipeline/raw/sentinel-2-l2a/{DAY}/{aoi['name']}/{ITEM}/{band}.tif"
        for aoi in AOIS
        for band in BANDS
    }


def is_temporary(key: str) -> bool:
    """Anything but the published layout: the store's staging area, or a stray upload."""
    return "/_tmp/" in key or key.startswith("_tmp/")


def assert_no_duplicate_rows(db: Path) -> None:
    """One row per natural key: (item_id, aoi) for the scene tables, aoi for the day's."""
    keys = {
        "scene_metadata": ("item_id", "aoi"),
        "scene_quality": ("item_id", "aoi"),
        "product_catalog": ("item_id", "aoi", "product"),
        "daily_aoi_stats": ("aoi",),
    }
    if not db.exists():
        return
    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        present = {r[0] for r in tables}
        for table, key in keys.items():
            if table not in present:
                continue
            cols = ", ".join(key)
            dupes = con.execute(
                f"SELECT {cols}, count(*) FROM {table} GROUP BY {cols} HAVING count(*) > 1"
            ).fetchall()
            assert dupes == [], f"{table}: duplicate rows for {dupes}"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def stac_server(
    rkh_item: dict[str, Any], real_collection: dict[str, Any]
) -> Iterator[RustacStacServer]:
    with RustacStacServer(day_items(rkh_item), [real_collection]) as server:
        yield server


@pytest.fixture(scope="module")
def clean_run(
    s3_server: Any, stac_server: RustacStacServer, tmp_path_factory: pytest.TempPathFactory
) -> Snapshot:
    """The ingest slice of the partition through the API's own URL, no faults."""
    bucket = "faults-clean"
    s3_server.create_bucket(bucket)
    db = tmp_path_factory.mktemp("clean") / "w.duckdb"
    with s3_env(s3_server):
        results = materialize_clean(config_for(stac_server.url, s3_server, bucket, db))
    assert {aoi: mat_meta(r, "stac_items")["items"] for aoi, r in results.items()} == {
        a["name"]: 1 for a in AOIS
    }
    clean = snapshot(s3_server, bucket, db)
    assert band_keys() <= set(clean.objects)
    assert set(items_keys().values()) <= set(clean.objects)
    assert len(clean.rows["scene_metadata"]) == len(AOIS)
    return clean


# ---------------------------------------------------------------------------- STAC faults
def test_partition_through_faulty_stac_api_equals_clean_run(
    s3_server: Any, stac_server: RustacStacServer, clean_run: Snapshot, tmp_path: Path
) -> None:
    bucket = "faults-clean"  # same bucket and prefix: object URLs in rows compare exactly
    wipe(s3_server, bucket, keep_registry=True)
    db = tmp_path / "w.duckdb"
    with (
        FaultProxy(stac_server.url, seed=SEED, fault_rate=0.3, stall_s=2 * STAC_TIMEOUT_S) as proxy,
        s3_env(s3_server),
    ):
        results = materialize_clean(config_for(proxy.url, s3_server, bucket, db))
        proxy_url = proxy.url
    faulted = snapshot(s3_server, bucket, db)

    requests = len(proxy.seen)
    print(
        f"\nSTAC faults: {proxy.total_faults()} of {requests} requests "
        f"({dict(sorted(proxy.faults.items()))})"
    )
    assert set(proxy.faults) == set(FAULT_KINDS), proxy.faults
    assert 0.15 <= proxy.total_faults() / requests <= 0.5
    # Every page of both AOIs' searches went through the proxy (the API's `next` links
    # were rewritten to it), not just the first one.
    answered = [json.loads(s.body) for s in proxy.seen if s.path == "/search" and s.fault is None]
    pages = {
        (tuple(b.get("bbox") or ()), json.dumps(b.get("intersects")), b.get("skip", 0))
        for b in answered
    }
    assert len(pages) >= len(AOIS) * (1 + CLOUDY_PASSES), sorted(pages)
    for aoi, result in results.items():
        meta = mat_meta(result, "stac_items")
        assert meta["items"] == 1 and meta["matched_by_api"] == 1 + CLOUDY_PASSES, aoi

    # Same items: each saved ItemCollection differs only by the address of the API.
    for items_key in items_keys().values():
        assert proxy_url.encode() in faulted.objects[items_key]
        restored = faulted.objects[items_key].replace(proxy_url.encode(), stac_server.url.encode())
        assert restored == clean_run.objects[items_key]
    # Same objects, byte for byte; same rows, every column.
    skip = set(items_keys().values())
    others = {k: v for k, v in faulted.digests().items() if k not in skip}
    assert others == {k: v for k, v in clean_run.digests().items() if k not in skip}
    assert faulted.rows == clean_run.rows
    print(
        f"STAC faults: compared {len(faulted.objects)} objects and "
        f"{sum(map(len, faulted.rows.values()))} rows with the clean run: identical"
    )


# ---------------------------------------------------------------------------- S3 killed
class KillAfterPuts:
    """SIGKILL the S3 server as soon as the n-th PutObject of a band window is answered.

    Hooked into botocore's request path, so it counts what the pipeline really sends
    whatever its publishing scheme (temporary key then copy, or one PutObject); the other
    extraction threads are caught mid-transfer.
    """

    def __init__(self, server: SeaweedS3Server, bucket: str, after: int) -> None:
        self.server = server
        self.bucket = bucket
        self.after = after
        self.puts = 0
        self.killed = threading.Event()
        self._lock = threading.Lock()
        self._original = BaseClient._make_api_call

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = self

        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if (
                operation == "PutObject"
                and params.get("Bucket") == hook.bucket
                and str(params.get("Key", "")).endswith(".tif")
            ):
                answer = hook._original(client, operation, params)
                with hook._lock:
                    hook.puts += 1
                    if hook.puts == hook.after and not hook.killed.is_set():
                        os.killpg(hook.server.pid, signal.SIGKILL)
                        hook.killed.set()
                return answer
            return hook._original(client, operation, params)

        monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)


def upload_sources(server: SeaweedS3Server) -> None:
    """The band files the scene's hrefs name, in the source bucket of this server: the
    pipeline reads its sources through the same endpoint it writes to."""
    client = server.boto3_client()
    server.create_bucket(SOURCE_BUCKET)
    for name in sorted(set(FILES.values())):
        client.upload_file(str(S2_COGS / name), SOURCE_BUCKET, f"{SOURCE_PREFIX}/{name}")


def restart_on_same_ports(
    server: SeaweedS3Server, ports: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start ``server`` again (same data directory) on the ports it had, so the
    pipeline's configured endpoint stays valid, as for a restarted production store."""
    with monkeypatch.context() as mp:
        mp.setattr(seaweed, "free_ports", lambda n: [ports[f] for f in seaweed._PORT_FLAGS])
        mp.setattr(
            seaweed,
            "free_port_pair",
            lambda *a, **k: (ports["admin.port"], ports["admin.port.grpc"]),
        )
        server.start()
    assert server.ports == ports


def test_object_store_killed_mid_partition_rerun_converges(
    stac_server: RustacStacServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_shared_data()
    bucket = "faults-killed"
    server = SeaweedS3Server(data_dir=tmp_path / "weed").start()
    try:
        upload_sources(server)
        server.create_bucket(bucket)
        clean_db, killed_db = tmp_path / "clean.duckdb", tmp_path / "killed.duckdb"
        with s3_env(server):
            materialize_clean(config_for(stac_server.url, server, bucket, clean_db))
        clean = snapshot(server, bucket, clean_db)
        assert band_keys() <= set(clean.objects)
        wipe(server, bucket, keep_registry=True)

        config = config_for(stac_server.url, server, bucket, killed_db)
        ports = server.ports
        killer = KillAfterPuts(server, bucket, after=4)
        with monkeypatch.context() as mp, s3_env(server):
            killer.install(mp)
            # The first AOI's partition: the store dies under its band writes (the
            # other partition's run would find it down before writing anything).
            failed = materialize_day(config, aois=[AOIS[0]["name"]])[AOIS[0]["name"]]
        assert killer.killed.is_set(), f"only {killer.puts} band PutObjects were seen"
        assert not failed.success
        server.stop()

        restart_on_same_ports(server, ports, monkeypatch)
        # Nothing partial is visible after the crash: every object there is complete
        # (equal to the clean run's object under that key), and no temporary object.
        after_crash = read_objects(server, bucket)
        temporary = sorted(k for k in after_crash if is_temporary(k))
        partial = [
            k for k, v in after_crash.items() if k not in temporary and clean.objects.get(k) != v
        ]
        assert partial == [], f"objects visible after the crash differ from a clean run: {partial}"
        assert_no_duplicate_rows(killed_db)

        with s3_env(server):
            materialize_clean(config)
        converged = snapshot(server, bucket, killed_db)
    finally:
        server.stop()
    print(
        f"\nS3 killed after {killer.after} of {len(band_keys())} band PutObjects "
        f"({len(after_crash)} objects visible after restart); re-run compared "
        f"{len(converged.objects)} objects and {sum(map(len, converged.rows.values()))} rows"
    )
    published = {k: v for k, v in converged.digests().items() if not is_temporary(k)}
    assert published == clean.digests()
    assert converged.rows == clean.rows
    assert_no_duplicate_rows(killed_db)
    # Last, so a failure here means everything else converged.
    assert temporary == [], f"temporary objects left visible by the crash: {temporary}"
    assert sorted(converged.objects) == sorted(clean.objects)


# ---------------------------------------------------------------------------- re-runs
# When the products of a run were made (STAC `processing:datetime`, the manifest's and the
# catalog's `created`): a fresh store gets this run's time, everything else is equal.
RUN_TIME_FIELDS = {
    # The AOI registry: when the AOI was registered (again, in an emptied store).
    ".geojson": "created",
    "item.json": "processing:datetime",
    "scene_products.json": "created",
    "ndvi_composite.json": "created",
}
RUN_TIME_COLUMNS = {("product_catalog", "created")}


def without_run_times(key: str, data: bytes) -> Any:
    field = next((f for suffix, f in RUN_TIME_FIELDS.items() if key.endswith(suffix)), None)
    if field is None:
        return data

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != field}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(data))


def test_three_materializations_are_identical(
    s3_server: Any, stac_server: RustacStacServer, tmp_path: Path
) -> None:
    """The whole graph three times: twice over the same store and warehouse, then once
    from scratch (empty bucket, new warehouse)."""
    bucket = "faults-reruns"
    s3_server.create_bucket(bucket)
    db = tmp_path / "w.duckdb"
    fresh_db = tmp_path / "fresh.duckdb"
    with s3_env(s3_server):
        materialize_clean(config_for(stac_server.url, s3_server, bucket, db, transform=True))
        first = snapshot(s3_server, bucket, db)
        materialize_clean(config_for(stac_server.url, s3_server, bucket, db, transform=True))
        second = snapshot(s3_server, bucket, db)
        wipe(s3_server, bucket)
        materialize_clean(config_for(stac_server.url, s3_server, bucket, fresh_db, transform=True))
        third = snapshot(s3_server, bucket, fresh_db)
    assert any("/processed/" in k for k in first.objects)
    assert {"scene_metadata", "daily_aoi_stats", "product_catalog"} <= set(first.rows)
    # Over the same store nothing changes at all, run timestamps included: a product
    # whose content is unchanged keeps the time it was first made.
    assert second.digests() == first.digests()
    assert second.rows == first.rows
    # From scratch, the products are made anew, so their processing time is this run's.
    assert set(third.objects) == set(first.objects)
    differ = sorted(k for k in first.objects if third.objects[k] != first.objects[k])
    assert all(k.endswith(tuple(RUN_TIME_FIELDS)) for k in differ), differ
    for key in first.objects:
        assert without_run_times(key, third.objects[key]) == without_run_times(
            key, first.objects[key]
        ), key
    assert set(third.rows) == set(first.rows)
    for table, rows in first.rows.items():
        keep = [
            i
            for i, name in enumerate(column_names(db, table))
            if (table, name) not in RUN_TIME_COLUMNS
        ]
        assert [tuple(r[i] for i in keep) for r in third.rows[table]] == [
            tuple(r[i] for i in keep) for r in rows
        ], table
    assert_no_duplicate_rows(db)
    assert_no_duplicate_rows(fresh_db)
    print(
        f"\nRe-runs: 3 materializations, {len(first.objects)} objects and "
        f"{sum(map(len, first.rows.values()))} rows each, identical"
    )


# ---------------------------------------------------------------------------- CI=true
def run_pytest(
    args: list[str], cwd: Path, shared: Path, ci: bool
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"GEOSPATIAL_SHARED_DATA": str(shared), "PYTHONPATH": str(REPO)})
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ci_fails_instead_of_skipping_when_shared_data_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-shared" / "data"
    # A test that needs the recordings, run with this repository's conftest as a plugin.
    (tmp_path / "test_needs_shared.py").write_text(
        "from tests.conftest import require_shared_data\n\n"
        "def test_needs_shared():\n    require_shared_data()\n"
    )
    args = ["-p", "tests.conftest", "test_needs_shared.py"]
    local = run_pytest(args, tmp_path, missing, ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout + local.stderr
    ci = run_pytest(args, tmp_path, missing, ci=True)
    out = ci.stdout + ci.stderr
    assert ci.returncode == 1, out
    assert "shared recordings not found" in out and str(missing) in out and "CI=true" in out
    assert "1 skipped" not in out and "passed" not in out
    # The real layout: tests/conftest.py stops a run of any test file, before collection.
    repo_ci = run_pytest(["tests/test_keys.py"], REPO, missing, ci=True)
    out = repo_ci.stdout + repo_ci.stderr
    assert repo_ci.returncode == 1 and "shared recordings not found" in out, out
    assert "passed" not in out


def test_require_shared_data_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "EARTH_SEARCH", tmp_path / "missing")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        conftest.require_shared_data()
    monkeypatch.setenv("CI", "true")
    # Caught broadly: a skip here must fail this test, not skip it.
    with pytest.raises(BaseException) as caught:
        conftest.require_shared_data()
    assert caught.type is pytest.fail.Exception, f"{caught.type.__name__}: {caught.value}"
    assert "CI=true" in str(caught.value) and str(tmp_path / "missing") in str(caught.value)
