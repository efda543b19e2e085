"""One bad input must not sink a day: per-item quarantine of band windows.

Through dagster.materialize against the real local services of tests/test_e2e.py: rustac
serving the real 29RKH item plus broken copies of it, SeaweedFS holding the real COGs,
DuckDB. Plus the rule that tells a bad item from a systemic fault, on a local HTTP server.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dagster import AssetCheckSeverity, AssetSelection
from shapely.geometry import box

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.raster.cog import SourceFault
from geospatial_pipeline.raster.extract import BandTask, extract_band_windows
from geospatial_pipeline.raster.gdal_env import cloud_read_options
from geospatial_pipeline.storage.object_store import LocalObjectStore
from tests.conftest import S2_COGS, SOURCE_BUCKET, SOURCE_PREFIX, require_shared_data
from tests.test_e2e import (
    AOIS,
    BANDS,
    DAY,
    ITEM,
    SOURCE_GRID,
    list_objects,
    materialize_day,
    pipeline_config,
    s3_env,
)

BROKEN_PREFIX = f"{SOURCE_PREFIX}-broken"
MISSING = f"{ITEM}-404"
TRUNCATED = f"{ITEM}-truncated"
NOT_RASTER = f"{ITEM}-html"
NO_NIR = f"{ITEM}-no-nir"
BAD = (MISSING, TRUNCATED, NOT_RASTER, NO_NIR)


def variant(item: dict[str, Any], item_id: str, minutes: int) -> dict[str, Any]:
    """A copy of ``item`` that is its own scene: the dedupe merges acquisitions of one tile
    within 60 s, so each copy is acquired some minutes later."""
    out = copy.deepcopy(item)
    out["id"] = item_id
    acquired = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    out["properties"]["datetime"] = (
        (acquired + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    )
    return out


@pytest.fixture(scope="module")
def broken_items(s3_server: Any, rkh_item: dict[str, Any], source_bucket: str) -> list[Any]:
    """The good item and four broken copies: a 404 red asset, a truncated red COG, an SCL
    "COG" that is an HTML error page, and an item without a nir asset."""
    client = s3_server.boto3_client()
    red = (S2_COGS / "B04.tif").read_bytes()
    client.put_object(
        Bucket=SOURCE_BUCKET, Key=f"{BROKEN_PREFIX}/B04.tif", Body=red[: len(red) // 3]
    )
    client.put_object(
        Bucket=SOURCE_BUCKET,
        Key=f"{BROKEN_PREFIX}/SCL.tif",
        Body=b"<html><body>503 Service Unavailable</body></html>\n" * 20,
    )
    missing = variant(rkh_item, MISSING, 10)
    missing["assets"]["red"]["href"] = f"s3://{SOURCE_BUCKET}/{BROKEN_PREFIX}/absent/B04.tif"
    truncated = variant(rkh_item, TRUNCATED, 20)
    truncated["assets"]["red"]["href"] = f"s3://{SOURCE_BUCKET}/{BROKEN_PREFIX}/B04.tif"
    html = variant(rkh_item, NOT_RASTER, 30)
    html["assets"]["scl"]["href"] = f"s3://{SOURCE_BUCKET}/{BROKEN_PREFIX}/SCL.tif"
    no_nir = variant(rkh_item, NO_NIR, 40)
    del no_nir["assets"]["nir"]
    return [rkh_item, missing, truncated, html, no_nir]


@pytest.fixture(scope="module")
def stac_api(broken_items: list[Any], real_collection: dict[str, Any]) -> Iterator[str]:
    with RustacStacServer(broken_items, [real_collection]) as server:
        yield server.url


def rows(db: Path) -> list[tuple[str, str, int]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT item_id, aoi, object_count FROM scene_metadata ORDER BY item_id, aoi"
        ).fetchall()


def test_bad_items_are_quarantined_and_the_rest_of_the_day_lands(
    s3_server: Any, stac_api: str, broken_items: list[Any], tmp_path: Path
) -> None:
    bucket = "dest-isolation"
    s3_server.create_bucket(bucket)
    db = tmp_path / "w.duckdb"
    warehouse = {"kind": "duckdb", "path": str(db)}
    transform = SOURCE_GRID
    # The day's items were searched when nir was not configured yet; nir was added since,
    # so the persisted items include one that lacks it.
    config = pipeline_config(stac_api, s3_server, bucket, warehouse, transform=transform)
    before = config.model_copy(update={"bands": ["red", "green", "blue", "scl"]})
    downstream = AssetSelection.all() - AssetSelection.assets("stac_items")
    with s3_env(s3_server):
        searched = materialize_day(
            before, selection=AssetSelection.assets("stac_items"), raise_on_error=True
        )
        assert all(r.success for r in searched.values()) and len(searched) == len(AOIS)
        results = materialize_day(config, selection=downstream, raise_on_error=True)

    # Every item covers both AOIs: each partition quarantines the same four, for the same
    # reasons, and flows on.
    listed_per_aoi = {}
    for aoi, result in results.items():
        # The run succeeds: the day flows on; the failed check says what was skipped.
        assert result.success, aoi
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        failed = {name for name, e in evaluations.items() if not e.passed}
        assert failed == {"no_quarantined_items"}, aoi
        check = evaluations["no_quarantined_items"]
        assert check.severity == AssetCheckSeverity.ERROR
        listed = {q["id"]: q["reason"] for q in check.metadata["quarantined"].value}  # type: ignore[union-attr]
        assert set(listed) == set(BAD), aoi
        assert "asset not found" in listed[MISSING] and "absent/B04.tif" in listed[MISSING]
        assert listed[MISSING].startswith("red")
        assert "corrupt or truncated" in listed[TRUNCATED] and listed[TRUNCATED].startswith("red")
        assert "not a readable raster" in listed[NOT_RASTER]
        assert listed[NOT_RASTER].startswith("scl")
        assert listed[NO_NIR] == "nir: no 'nir' asset with an href"
        for item_id in BAD:
            assert item_id in (check.description or "")
        mats = result.asset_materializations_for_node("band_rasters")
        meta = mats[-1].metadata
        assert meta["items_quarantined"].value == 4
        assert {q["id"] for q in meta["quarantined"].value} == set(BAD)  # type: ignore[union-attr]
        listed_per_aoi[aoi] = listed

    # The good item's objects and rows land; nothing of the quarantined ones is kept.
    objects = list_objects(s3_server, bucket)
    raw = sorted(k for k in objects if k.startswith(f"pipeline/raw/sentinel-2-l2a/{DAY}/"))
    assert raw == sorted(
        f"pipeline/raw/sentinel-2-l2a/{DAY}/{aoi['name']}/{ITEM}/{band}.tif"
        for aoi in AOIS
        for band in BANDS
    )
    assert rows(db) == [(ITEM, "dunes", 5), (ITEM, "wadi", 5)]
    # Downstream built products for the good item only.
    processed = {
        k.split("/")[5]
        for k in objects
        if k.startswith("pipeline/processed/sentinel") and k.count("/") > 5
    }
    assert processed == {ITEM, "composite"}

    # Not lost: the 404 asset appears upstream, and a re-run of the day picks it up.
    s3_server.boto3_client().upload_file(
        str(S2_COGS / "B04.tif"), SOURCE_BUCKET, f"{BROKEN_PREFIX}/absent/B04.tif"
    )
    with s3_env(s3_server):
        reruns = materialize_day(config, selection=downstream, raise_on_error=True)
    for aoi, rerun in reruns.items():
        assert rerun.success, aoi
        check = next(
            e for e in rerun.get_asset_check_evaluations() if e.check_name == "no_quarantined_items"
        )
        relisted = {q["id"]: q["reason"] for q in check.metadata["quarantined"].value}  # type: ignore[union-attr]
        # The others stay quarantined, for the same reasons word for word.
        assert relisted == {k: v for k, v in listed_per_aoi[aoi].items() if k != MISSING}, aoi
    assert rows(db) == [
        (ITEM, "dunes", 5),
        (ITEM, "wadi", 5),
        (MISSING, "dunes", 5),
        (MISSING, "wadi", 5),
    ]


# --------------------------------------------------------------------------- fault rule


class _Source(BaseHTTPRequestHandler):
    """Serves the real red COG; /tile503/ answers 503 to every read past the header."""

    data = b""

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, *, head: bool) -> None:
        ranged = "Range" in self.headers
        first, _, last = self.headers.get("Range", "bytes=0-").split("=")[1].partition("-")
        start = int(first)
        if self.path.startswith("/missing/"):
            self._empty(404)
            return
        if self.path.startswith("/tile503/") and start > 0:
            self._empty(503)
            return
        end = min(int(last) if last else len(self.data) - 1, len(self.data) - 1)
        body = self.data[start : end + 1]
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def http_source() -> Iterator[str]:
    require_shared_data()
    _Source.data = (S2_COGS / "B04.tif").read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Source)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _tasks(base: str, paths: list[str]) -> list[BandTask]:
    return [
        BandTask(f"item{i}", "dunes", "red", f"{base}/{path}", f"raw/dunes/item{i}/red.tif")
        for i, path in enumerate(paths)
    ]


# Few, quick retries: GDAL's own retry policy is not what is tested here.
OPTIONS = {**cloud_read_options(), "GDAL_HTTP_MAX_RETRY": "1", "GDAL_HTTP_RETRY_DELAY": "0.1"}
AOI = {"dunes": box(-11.60, 24.60, -11.52, 24.66)}


def test_a_404_is_a_data_fault_of_its_item(http_source: str, tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    out = extract_band_windows(
        _tasks(http_source, ["ok/B04.tif", "missing/B04.tif"]), AOI, store, gdal_options=OPTIONS
    )
    assert [r.task.item_id for r in out.results] == ["item0"]
    assert list(out.quarantined) == ["item1"]
    assert "asset not found" in out.quarantined["item1"][0].reason
    assert [o.key for o in store.list("raw")] == ["raw/dunes/item0/red.tif"]


def test_a_transport_failure_mid_read_fails_the_run(http_source: str, tmp_path: Path) -> None:
    """Tiles that keep answering 503 read as "got 0 bytes", exactly like a truncated file;
    that must fail the run (a retry fixes it), not quarantine the item."""
    store = LocalObjectStore(tmp_path)
    with pytest.raises(RasterError) as info:
        extract_band_windows(
            _tasks(http_source, ["ok/B04.tif", "tile503/B04.tif"]),
            AOI,
            store,
            gdal_options=OPTIONS,
        )
    assert not isinstance(info.value, SourceFault)
    assert "tile503" in str(info.value)


def test_an_unreachable_endpoint_fails_the_run(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    with pytest.raises(RasterError) as info:
        extract_band_windows(
            _tasks("http://127.0.0.1:9", ["B04.tif"]), AOI, store, gdal_options=OPTIONS
        )
    assert not isinstance(info.value, SourceFault)
    assert "127.0.0.1:9" in str(info.value)


def test_a_day_on_which_every_item_fails_is_refused_and_keeps_its_rows(
    s3_server: Any, rkh_item: dict[str, Any], real_collection: dict[str, Any], tmp_path: Path
) -> None:
    """A source fault that hits every item (here: the red asset moved for all of them) must
    not replace the day's landed rows and objects with nothing."""
    bucket = "dest-all-failed"
    s3_server.create_bucket(bucket)
    db = tmp_path / "w.duckdb"
    moved = copy.deepcopy(rkh_item)
    moved["assets"]["red"]["href"] = f"s3://{SOURCE_BUCKET}/{BROKEN_PREFIX}/moved/B04.tif"
    with s3_env(s3_server):
        with RustacStacServer([rkh_item], [real_collection]) as server:
            config = pipeline_config(
                server.url, s3_server, bucket, {"kind": "duckdb", "path": str(db)}
            )
            landed_runs = materialize_day(config, raise_on_error=True)
            assert all(r.success for r in landed_runs.values())
        landed = rows(db)
        objects = list_objects(s3_server, bucket)
        assert landed and objects
        with RustacStacServer([moved], [real_collection]) as server:
            config = pipeline_config(
                server.url, s3_server, bucket, {"kind": "duckdb", "path": str(db)}
            )
            results = materialize_day(config)
    assert set(results) == {a["name"] for a in AOIS}
    for aoi, result in results.items():
        assert not result.success, aoi
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "band_rasters", aoi
        text = failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
        assert "every item of the day failed" in text and ITEM in text and "moved/B04.tif" in text
    assert rows(db) == landed
    after = list_objects(s3_server, bucket)
    assert {k: v for k, v in after.items() if "/raw/" in k} == {
        k: v for k, v in objects.items() if "/raw/" in k
    }
