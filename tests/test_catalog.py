"""The static catalog has one writer per document: day runs never touch each other.

Two days of the real 29RKH scene (the second a copy dated five days later) are materialized
concurrently by two separate processes against the same object store (SeaweedFS); then the
root asset links both. A re-run of one day, with every store operation recorded, stays
inside that day's prefixes.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    define_asset_job,
    evaluate_automation_conditions,
    materialize,
)

from geospatial_pipeline.assets.catalog import STAC_CATALOG, STAC_CATALOG_ROOT
from geospatial_pipeline.config import parse_config
from geospatial_pipeline.definitions import build_assets, build_defs
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.stac.products import catalog_tree_problems
from geospatial_pipeline.stac.store_io import load_catalog
from geospatial_pipeline.storage.object_store import ObjectStore, S3ObjectStore
from tests.conftest import REPO
from tests.test_e2e import AOIS, BANDS, DAY, ITEM, object_store_resource, s3_env

DAY2 = "2020-02-24"
ITEM2 = ITEM.replace("20200219", "20200224")
BUCKET = "dest-catalog"
COLLECTION = "sentinel-2-l2a"
TRANSFORM = {"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]}

# One day's run in its own interpreter, as a run worker would: the job every launch uses.
RUN_DAY = """
import sys, time
from dagster import DagsterInstance
from geospatial_pipeline.config import load_config
from geospatial_pipeline.definitions import build_defs

defs = build_defs(load_config(sys.argv[1]))
with DagsterInstance.ephemeral() as instance:
    start = time.time()
    result = defs.resolve_job_def("ingest_daily").execute_in_process(
        partition_key=sys.argv[2], instance=instance, raise_on_error=False
    )
    print(f"RUN-WINDOW {start} {time.time()}")
sys.exit(0 if result.success else 1)
"""


def _config_doc(stac_url: str, s3: Any, db: Path) -> dict[str, Any]:
    return {
        "stac": {"api_url": stac_url, "page_size": 2},
        "aois": AOIS,
        "bands": BANDS,
        "partitions": {"start_date": "2020-01-01"},
        "storage": {"url": f"s3://{BUCKET}/pipeline", "endpoint_url": s3.endpoint_url},
        # One warehouse file per process: DuckDB allows one writer per file.
        "warehouse": {"kind": "duckdb", "path": str(db)},
        "transform": TRANSFORM,
    }


def _second_day(item: dict[str, Any]) -> dict[str, Any]:
    later = copy.deepcopy(item)
    later["id"] = ITEM2
    when = dt.datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    later["properties"]["datetime"] = (
        (when + dt.timedelta(days=5)).isoformat().replace("+00:00", "Z")
    )
    later["links"] = [link for link in later.get("links", []) if link.get("rel") != "self"]
    return later


@pytest.fixture(scope="module")
def two_days(
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    s3_server.create_bucket(BUCKET)
    tmp = tmp_path_factory.mktemp("catalog")
    items = [rkh_item, _second_day(rkh_item)]
    with RustacStacServer(items, [real_collection]) as server, s3_env(s3_server):
        paths = []
        for day in (DAY, DAY2):
            path = tmp / f"{day}.yaml"
            path.write_text(yaml.safe_dump(_config_doc(server.url, s3_server, tmp / f"{day}.db")))
            paths.append(path)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RUN_DAY, str(path), day],
                cwd=REPO,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for path, day in zip(paths, (DAY, DAY2), strict=True)
        ]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, out[-4000:]
        # The two runs really overlapped in time.
        (a0, a1), (b0, b1) = (
            map(
                float,
                next(li for li in out.splitlines() if li.startswith("RUN-WINDOW")).split()[1:],
            )
            for out in outputs
        )
        assert max(a0, b0) < min(a1, b1), outputs
        config = parse_config(_config_doc(server.url, s3_server, tmp / "root.db"))
        store = object_store_resource(s3_server, BUCKET).store()
        yield {"config": config, "store": store, "server": server, "tmp": tmp}


def test_day_runs_leave_the_root_to_its_one_writer(two_days: dict[str, Any]) -> None:
    store = two_days["store"]
    for day in (DAY, DAY2):
        assert store.head(f"processed/{COLLECTION}/{day}/collection.json") is not None
    # Neither concurrent day run wrote the root or the collection.
    assert store.head("processed/catalog.json") is None
    assert store.head(f"processed/{COLLECTION}/collection.json") is None


def test_root_links_both_concurrent_days_and_validates(two_days: dict[str, Any]) -> None:
    config, store = two_days["config"], two_days["store"]
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            build_assets(config),
            selection=AssetSelection.assets(STAC_CATALOG_ROOT),
            resources=build_resources(config),
            instance=instance,
        )
    assert result.success
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {
        "catalog_valid": True
    }
    problems, reached = catalog_tree_problems(store, "processed/catalog.json")
    assert problems == []
    expected = {
        f"processed/{COLLECTION}/{day}/{aoi['name']}/{item}/item.json"
        for day, scene in ((DAY, ITEM), (DAY2, ITEM2))
        for aoi in AOIS
        for item in (scene, "composite")
    }
    assert set(reached) == expected
    # pystac follows the same links (relative hrefs through the store).
    catalog = load_catalog(store, "processed/catalog.json")
    ids = {i.id for i in catalog.get_items(recursive=True)}
    assert {f"{ITEM}__dunes", f"{ITEM2}__wadi"} <= ids and len(ids) == 8
    collection = json.loads(store.get_bytes(f"processed/{COLLECTION}/collection.json"))
    start, end = collection["extent"]["temporal"]["interval"][0]
    assert start.startswith(DAY) and end.startswith(DAY2)
    day_boxes = [
        json.loads(store.get_bytes(f"processed/{COLLECTION}/{d}/collection.json"))["extent"][
            "spatial"
        ]["bbox"][0]
        for d in (DAY, DAY2)
    ]
    west, south, east, north = collection["extent"]["spatial"]["bbox"][0]
    for box in day_boxes:
        assert west <= box[0] and south <= box[1] and east >= box[2] and north >= box[3]


class Recorder:
    """Every key or prefix the object store is asked about, in call order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        for cls, names in (
            (S3ObjectStore, ("head", "get_bytes", "list", "folders", "delete", "gdal_path")),
            (ObjectStore, ("put_bytes",)),
        ):
            for name in names:
                monkeypatch.setattr(cls, name, self._wrap(name, getattr(cls, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def wrapper(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, key))
            return method(store, key, *args, **kwargs)

        return wrapper


def test_a_day_run_touches_only_its_own_day(
    two_days: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run of one day, with the other day (and the root) stored: every store
    operation names a key under one of that day's prefixes."""
    config = two_days["config"]
    recorder = Recorder(monkeypatch)
    partitioned = AssetSelection.all() - AssetSelection.assets(STAC_CATALOG_ROOT)
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            build_assets(config),
            partition_key=DAY2,
            selection=partitioned,
            resources=build_resources(config),
            instance=instance,
        )
    assert result.success
    own = tuple(f"{top}/{COLLECTION}/{DAY2}/" for top in ("stac", "raw", "manifests", "processed"))
    assert recorder.calls, "nothing recorded: the recorder is not wired"
    outside = sorted({(op, key) for op, key in recorder.calls if not (key + "/").startswith(own)})
    assert outside == []
    assert {op for op, _ in recorder.calls} >= {"list", "get_bytes", "put_bytes"}


def test_root_is_requested_after_a_day_changes(two_days: dict[str, Any]) -> None:
    """Its automation condition runs the root once a day's sub-catalog is materialized,
    although most days are missing (they would hold plain eager() back forever)."""
    config = two_days["config"]
    defs = build_defs(config)
    with DagsterInstance.ephemeral() as instance:
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        materialize(
            build_assets(config),
            partition_key=DAY,
            selection=AssetSelection.all() - AssetSelection.assets(STAC_CATALOG_ROOT),
            resources=build_resources(config),
            instance=instance,
        )
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert after.get_num_requested(STAC_CATALOG_ROOT) == 1
        again = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        assert again.total_requested == 0


def test_stac_items_valid_reruns_alone_on_what_is_stored(two_days: dict[str, Any]) -> None:
    """The check alone (no asset step) for one day reads the stored day: a broken item of
    that day fails it, naming the item; the other day, untouched, passes."""
    config, store = two_days["config"], two_days["store"]
    check = AssetCheckKey(STAC_CATALOG, "stac_items_valid")
    defs = Definitions(
        assets=build_assets(config),
        jobs=[define_asset_job("check_alone", selection=AssetSelection.checks(check))],
        resources=build_resources(config),
    )
    job = defs.resolve_job_def("check_alone")
    broken_key = f"processed/{COLLECTION}/{DAY2}/wadi/{ITEM2}/item.json"
    original = store.get_bytes(broken_key)
    broken = json.loads(original)
    del broken["properties"]["proj:shape"]
    store.put_bytes(broken_key, json.dumps(broken).encode(), "application/geo+json")

    def run(day: str) -> Any:
        with DagsterInstance.ephemeral() as instance:
            result = job.execute_in_process(
                instance=instance, tags={"dagster/partition": day}, raise_on_error=False
            )
        assert not result.get_asset_materialization_events()  # the check ran alone
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    try:
        failed = run(DAY2)
        assert not failed.passed
        problems = failed.metadata["problems"].value  # type: ignore[attr-defined]
        assert list(problems) == [broken_key]
        assert "proj:shape" in problems[broken_key][0]
        assert run(DAY).passed
    finally:
        store.put_bytes(broken_key, original, "application/geo+json")
    assert run(DAY2).passed


def test_root_finds_the_days_without_listing_their_products(
    two_days: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root step's cost grows with the days, not with every product of the history:
    one folder listing under the collection, then each day's own sub-catalog."""
    config = two_days["config"]
    recorder = Recorder(monkeypatch)
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            build_assets(config),
            selection=AssetSelection.assets(STAC_CATALOG_ROOT),
            resources=build_resources(config),
            instance=instance,
        )
    assert result.success
    ops = [op for op, _ in recorder.calls]
    assert "list" not in ops
    assert [key for op, key in recorder.calls if op == "folders"] == [
        f"processed/{COLLECTION}"
    ] * ops.count("folders")
    read = {key for op, key in recorder.calls if op in ("head", "get_bytes")}
    assert not any(key.endswith(".tif") for key in read)
