"""The static catalog has one writer per document: partition runs never touch each other.

Four (date, AOI) partitions (two AOIs, "dunes" and "wadi", on two days of the real 29RKH
scene, the second a copy dated five days later) are materialized by two separate processes
at the same time against the same object store (SeaweedFS): the two AOIs of the first day
run concurrently. Then the root asset links all four sub-catalogs. A re-run of one
partition, with every store operation recorded, stays inside that partition's prefixes and
never touches the other AOI of the same day.
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
from geospatial_pipeline.assets.transform import SCENE_PRODUCTS
from geospatial_pipeline.config import parse_config
from geospatial_pipeline.definitions import build_assets, build_defs
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.stac import publish
from geospatial_pipeline.stac.products import catalog_tree_problems
from geospatial_pipeline.stac.store_io import load_catalog
from geospatial_pipeline.storage.object_store import ObjectStore, S3ObjectStore
from tests.conftest import REPO
from tests.partitioning import PARTITIONS, key, register_aois
from tests.test_e2e import AOIS, BANDS, DAY, ITEM, object_store_resource, s3_env

DAY2 = "2020-02-24"
ITEM2 = ITEM.replace("20200219", "20200224")
BUCKET = "dest-catalog"
COLLECTION = "sentinel-2-l2a"
TRANSFORM = {"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]}
NAMES = [str(a["name"]) for a in AOIS]  # type: ignore[index]
assert NAMES == ["dunes", "wadi"]
PARTS = [(day, aoi) for day in (DAY, DAY2) for aoi in NAMES]
# Two processes; each starts with one AOI of DAY, so the two AOIs of one day run together.
PROCESSES = {
    "a": [(DAY, "dunes"), (DAY2, "wadi")],
    "b": [(DAY, "wadi"), (DAY2, "dunes")],
}
TOPS = ("stac", "raw", "manifests", "processed")

# Partition runs in their own interpreter, as a run worker would: the job every launch
# uses, the AOIs registered (store registry and dynamic partitions) as the sensors do.
RUN_PARTITIONS = """
import sys, time
from dagster import DagsterInstance
from geospatial_pipeline.config import load_config
from geospatial_pipeline.definitions import build_defs
from tests.partitioning import key, register_aois

config = load_config(sys.argv[1])
job = build_defs(config).resolve_job_def("ingest_daily")
ok = True
with DagsterInstance.ephemeral() as instance:
    register_aois(config, instance)
    for arg in sys.argv[2:]:
        day, aoi = arg.split("/")
        start = time.time()
        result = job.execute_in_process(
            partition_key=key(day, aoi), instance=instance, raise_on_error=False
        )
        print(f"RUN-WINDOW {arg} {start} {time.time()} {result.success}")
        ok = ok and result.success
sys.exit(0 if ok else 1)
"""


def prefixes(day: str, aoi: str) -> tuple[str, ...]:
    """Every prefix a (day, aoi) partition's objects live under (layout.py)."""
    return tuple(f"{top}/{COLLECTION}/{day}/{aoi}/" for top in TOPS)


def _config_doc(stac_url: str, s3: Any, db: Path) -> dict[str, Any]:
    return {
        "stac": {"api_url": stac_url, "page_size": 2},
        "aois": AOIS,
        "bands": BANDS,
        "partitions": PARTITIONS,
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
def partitions(
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    s3_server.create_bucket(BUCKET)
    tmp = tmp_path_factory.mktemp("catalog")
    items = [rkh_item, _second_day(rkh_item)]
    with RustacStacServer(items, [real_collection]) as server, s3_env(s3_server):
        procs = []
        for name, parts in PROCESSES.items():
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(_config_doc(server.url, s3_server, tmp / f"{name}.db")))
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", RUN_PARTITIONS, str(path)]
                    + [f"{day}/{aoi}" for day, aoi in parts],
                    cwd=REPO,
                    env=dict(os.environ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=900)[0] for p in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, out[-4000:]
        windows = {
            fields[1]: (float(fields[2]), float(fields[3]))
            for out in outputs
            for fields in (li.split() for li in out.splitlines() if li.startswith("RUN-WINDOW"))
        }
        assert set(windows) == {f"{day}/{aoi}" for day, aoi in PARTS}, outputs
        # The two AOIs of one day really ran at the same time.
        (a0, a1), (b0, b1) = windows[f"{DAY}/dunes"], windows[f"{DAY}/wadi"]
        assert max(a0, b0) < min(a1, b1), windows
        config = parse_config(_config_doc(server.url, s3_server, tmp / "root.db"))
        store = object_store_resource(s3_server, BUCKET).store()
        yield {"config": config, "store": store, "server": server, "tmp": tmp}


def test_partition_runs_leave_the_root_to_its_one_writer(partitions: dict[str, Any]) -> None:
    store = partitions["store"]
    for day, aoi in PARTS:
        assert store.head(f"processed/{COLLECTION}/{day}/{aoi}/collection.json") is not None
    # No concurrent partition run wrote the root or the collection.
    assert store.head("processed/catalog.json") is None
    assert store.head(f"processed/{COLLECTION}/collection.json") is None


def test_root_links_every_concurrent_partition_and_validates(partitions: dict[str, Any]) -> None:
    config, store = partitions["config"], partitions["store"]
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
        f"processed/{COLLECTION}/{day}/{aoi}/{item}/item.json"
        for day, scene in ((DAY, ITEM), (DAY2, ITEM2))
        for aoi in NAMES
        for item in (scene, "composite")
    }
    assert set(reached) == expected
    collection = json.loads(store.get_bytes(f"processed/{COLLECTION}/collection.json"))
    children = {
        link["href"].removeprefix("./") for link in collection["links"] if link["rel"] == "child"
    }
    # Both AOIs of each day are linked (relative to the collection).
    assert children == {f"{day}/{aoi}/collection.json" for day, aoi in PARTS}
    # pystac follows the same links (relative hrefs through the store).
    catalog = load_catalog(store, "processed/catalog.json")
    ids = {i.id for i in catalog.get_items(recursive=True)}
    assert {f"{ITEM}__dunes", f"{ITEM}__wadi", f"{ITEM2}__dunes", f"{ITEM2}__wadi"} <= ids
    assert len(ids) == 8
    start, end = collection["extent"]["temporal"]["interval"][0]
    assert start.startswith(DAY) and end.startswith(DAY2)
    sub_boxes = [
        json.loads(store.get_bytes(f"processed/{COLLECTION}/{day}/{aoi}/collection.json"))[
            "extent"
        ]["spatial"]["bbox"][0]
        for day, aoi in PARTS
    ]
    # The two AOIs are far apart: their sub-catalogs have their own extents.
    assert sub_boxes[0] != sub_boxes[1]
    west, south, east, north = collection["extent"]["spatial"]["bbox"][0]
    for box in sub_boxes:
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


def test_a_partition_run_touches_only_its_own_prefixes(
    partitions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run of (DAY, wadi), with (DAY, dunes) of the same day, the other day and the
    root stored: no store operation lists, reads, writes or deletes a key of (DAY, dunes)
    (nor a parent prefix whose listing would include it); every key is under one of the
    partition's own prefixes or is its AOI's registry record."""
    config = partitions["config"]
    partitioned = AssetSelection.all() - AssetSelection.assets(STAC_CATALOG_ROOT)
    with DagsterInstance.ephemeral() as instance:
        # Registering reads the whole registry: done before recording starts, as the
        # sensors do it before the run.
        register_aois(config, instance)
        recorder = Recorder(monkeypatch)
        result = materialize(
            build_assets(config),
            partition_key=key(DAY, "wadi"),
            selection=partitioned,
            resources=build_resources(config),
            instance=instance,
        )
    assert result.success
    assert recorder.calls, "nothing recorded: the recorder is not wired"
    ops = {op for op, _ in recorder.calls}
    assert ops >= {"list", "get_bytes", "put_bytes"}
    other = prefixes(DAY, "dunes")
    touching_other = sorted(
        {
            (op, k)
            for op, k in recorder.calls
            if (k + "/").startswith(other) or any(o.startswith(k.rstrip("/") + "/") for o in other)
        }
    )
    assert touching_other == []
    own = prefixes(DAY, "wadi")
    allowed = {"aois/wadi.geojson"}
    outside = sorted(
        {(op, k) for op, k in recorder.calls if not (k + "/").startswith(own) and k not in allowed}
    )
    assert outside == []
    # The run did read and write its own partition under each kind of prefix it owns.
    assert {
        top for top in TOPS if any((k + "/").startswith(f"{top}/") for _, k in recorder.calls)
    } == set(TOPS)


def test_root_is_requested_after_a_partition_changes(partitions: dict[str, Any]) -> None:
    """Its automation condition runs the root once a partition's sub-catalog is
    materialized, although most partitions are missing (they would hold plain eager()
    back forever)."""
    config = partitions["config"]
    defs = build_defs(config)
    with DagsterInstance.ephemeral() as instance:
        register_aois(config, instance)
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        result = materialize(
            build_assets(config),
            partition_key=key(DAY, "dunes"),
            selection=AssetSelection.all() - AssetSelection.assets(STAC_CATALOG_ROOT),
            resources=build_resources(config),
            instance=instance,
        )
        assert result.success
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert after.get_num_requested(STAC_CATALOG_ROOT) == 1
        assert after.total_requested == 1
        again = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        assert again.total_requested == 0


def check_alone(config: Any, check: AssetCheckKey, day: str, aoi: str) -> Any:
    """``check`` run alone (no asset step) for one partition: its evaluation."""
    defs = Definitions(
        assets=build_assets(config),
        jobs=[define_asset_job("check_alone", selection=AssetSelection.checks(check))],
        resources=build_resources(config),
    )
    job = defs.resolve_job_def("check_alone")
    with DagsterInstance.ephemeral() as instance:
        register_aois(config, instance)
        # Tags, not partition_key: a job of checks alone has no partitions definition
        # to validate a key against (the multi-partition dimension tags as a run of
        # the partition carries them).
        tags = {
            "dagster/partition": str(key(day, aoi)),
            "dagster/partition/date": day,
            "dagster/partition/aoi": aoi,
        }
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert not result.get_asset_materialization_events()  # the check ran alone
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_stac_items_valid_reruns_alone_on_what_is_stored(partitions: dict[str, Any]) -> None:
    """The check alone (no asset step) for one partition reads the stored partition: a
    broken item of (DAY2, wadi) fails it, naming the item; the other AOI of that day and
    the other day of that AOI, untouched, pass."""
    config, store = partitions["config"], partitions["store"]
    check = AssetCheckKey(STAC_CATALOG, "stac_items_valid")
    broken_key = f"processed/{COLLECTION}/{DAY2}/wadi/{ITEM2}/item.json"
    original = store.get_bytes(broken_key)
    broken = json.loads(original)
    del broken["properties"]["proj:shape"]
    store.put_bytes(broken_key, json.dumps(broken).encode(), "application/geo+json")
    try:
        failed = check_alone(config, check, DAY2, "wadi")
        assert not failed.passed
        problems = failed.metadata["problems"].value
        assert list(problems) == [broken_key]
        assert "proj:shape" in problems[broken_key][0]
        assert check_alone(config, check, DAY2, "dunes").passed
        assert check_alone(config, check, DAY, "wadi").passed
    finally:
        store.put_bytes(broken_key, original, "application/geo+json")
    assert check_alone(config, check, DAY2, "wadi").passed


def test_product_cogs_valid_reads_back_only_what_changed_since_publishing(
    partitions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every layer was validated from its bytes before the PUT, so the check alone compares
    each stored object's size and SHA-256 with the manifest and re-validates nothing that
    is unchanged. A layer altered in place, replaced by bytes that are not a COG, or
    deleted fails it, naming the layer (and, for the non-COG, the validation errors); a
    flipped byte that COG validation alone would pass fails it too."""
    config, store = partitions["config"], partitions["store"]
    check = AssetCheckKey(SCENE_PRODUCTS, "product_cogs_valid")
    validated: list[str] = []
    real_validate = publish.validate_cog_path

    def counting(path: str) -> Any:
        validated.append(path)
        return real_validate(path)

    monkeypatch.setattr(publish, "validate_cog_path", counting)
    ndvi = f"processed/{COLLECTION}/{DAY2}/wadi/{ITEM2}/ndvi.tif"
    ndwi = ndvi.replace("ndvi.tif", "ndwi.tif")
    original, ndwi_original = store.get_bytes(ndvi), store.get_bytes(ndwi)
    passed = check_alone(config, check, DAY2, "wadi")
    assert passed.passed and passed.metadata["verified"].value == 6
    assert validated == []
    try:
        # One byte of the last tile's data flipped: same size, still a structurally valid
        # COG, other pixels. Only the checksum tells.
        tampered = bytearray(original)
        tampered[-10] ^= 0xFF
        store.put_bytes(ndvi, bytes(tampered), "image/tiff")
        failed = check_alone(config, check, DAY2, "wadi")
        assert not failed.passed
        (changed,) = failed.metadata["changed_since_published"].value
        assert changed.startswith(f"{ndvi}: stored SHA-256 ")
        assert failed.metadata["invalid"].value == []
        assert len(validated) == 1 and validated[0].endswith(ndvi)
        store.put_bytes(ndvi, original, "image/tiff")
        # Not a TIFF at all: validated again from storage, and the errors reported. (Another
        # layer: GDAL caches what it read of the first one for the process.)
        store.put_bytes(ndwi, b"not a TIFF " * 100, "image/tiff")
        failed = check_alone(config, check, DAY2, "wadi")
        assert not failed.passed
        (invalid,) = failed.metadata["invalid"].value
        assert invalid.startswith(f"{ndwi}: ")
        store.put_bytes(ndwi, ndwi_original, "image/tiff")
        store.delete(ndvi)
        failed = check_alone(config, check, DAY2, "wadi")
        assert failed.metadata["changed_since_published"].value == [f"{ndvi}: missing"]
        # The other AOI of the day is its own partition: untouched, it passes.
        assert check_alone(config, check, DAY2, "dunes").passed
    finally:
        store.put_bytes(ndvi, original, "image/tiff")
        store.put_bytes(ndwi, ndwi_original, "image/tiff")
    assert check_alone(config, check, DAY2, "wadi").passed


def test_root_finds_the_partitions_without_listing_their_products(
    partitions: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root step's cost grows with the partitions, not with every product of the
    history: one folder listing under the collection, one per day (its AOIs), then each
    partition's own sub-catalog."""
    config = partitions["config"]
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
    folders = [k for op, k in recorder.calls if op == "folders"]
    top = f"processed/{COLLECTION}"
    rounds = folders.count(top)  # the asset and its check each look once
    assert rounds >= 1
    assert sorted(folders) == sorted(
        [top] * rounds + [f"{top}/{day}" for day in (DAY, DAY2)] * rounds
    )
    read = {k for op, k in recorder.calls if op in ("head", "get_bytes")}
    assert not any(k.endswith(".tif") for k in read)
    assert not any(k.endswith("/item.json") for k in read)
