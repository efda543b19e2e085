"""Late-arriving scenes with the real recordings: ESA's reprocessed `_1_` items of
2020-03-02 appeared in Earth Search in October 2023, years after the day. A late item
re-runs exactly the (date, AOI) partitions whose AOI it intersects and that were
materialized without it.

Real local STAC API (rustac), real S3 (SeaweedFS) for the late-data records, DuckDB.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from dagster import DagsterInstance, build_sensor_context
from shapely.geometry import shape

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.errors import ConfigError, StacSearchError
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.sensors import build_late_scenes_sensor, parse_cursor
from geospatial_pipeline.stac.late import judge, late_record, run_key
from geospatial_pipeline.stac.search import content_fingerprint
from tests.conftest import REPO, S2_COGS, dagster_home
from tests.partitioning import PARTITIONS, key, materialize_partition, register_aois
from tests.stac_query_proxy import query_proxy
from tests.test_e2e import list_objects, s3_env

DAY = "2020-03-02"
TILES = ("32TMT", "32TNT", "32UMU", "32UNU")
BUCKET = "late-data"
AOI = "upper-rhine"
# Intersects all four tiles of the recordings.
UPPER_RHINE = {"name": AOI, "bbox": [9.0, 47.0, 10.0, 48.0]}
# rustac cannot filter on `updated`: without a lookback the sensor would watch 30 days.
LOOKBACK = {"lookback_days": 3650}


def _config(
    stac_url: str,
    s3: Any,
    db: Path,
    *,
    prefix: str = "pipeline",
    late_data: dict[str, Any] | None = None,
    aois: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    doc = {
        "stac": {"api_url": stac_url, "page_size": 5, "max_retries": 1, "timeout_s": 5},
        "aois": copy.deepcopy(aois or [UPPER_RHINE]),
        "bands": ["red", "nir", "scl"],
        "partitions": dict(PARTITIONS),
        "storage": {"url": f"s3://{BUCKET}/{prefix}", "endpoint_url": s3.endpoint_url},
        "warehouse": {"kind": "duckdb", "path": str(db)},
        # The recordings' band files are not in ../shared/data: the slice stops at metadata.
        "transform": {"enabled": False},
        "late_data": dict(LOOKBACK),
    }
    if late_data is not None:
        doc["late_data"] = late_data
    if not doc["late_data"]:
        del doc["late_data"]  # the defaults, exactly as a config without the section
    return doc


def _items(
    real_items: dict[str, dict[str, Any]], sequence: str, source: str, day: str = DAY
) -> list[dict[str, Any]]:
    out = []
    for tile in TILES:
        item = copy.deepcopy(real_items[f"S2A_{tile}_{day.replace('-', '')}_{sequence}_L2A"])
        for asset in item["assets"].values():
            # The real files of these scenes are not available offline: point the bands at
            # the source bucket's 29RKH files (no overlap with this AOI -> no windows).
            if asset["href"].endswith(".tif"):
                asset["href"] = f"{source}/{asset['href'].rsplit('/', 1)[1]}"
        out.append(item)
    return out


@pytest.fixture(scope="module")
def world(
    s3_server: Any,
    source_bucket: str,
    real_items: dict[str, dict[str, Any]],
    real_collection: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    s3_server.create_bucket(BUCKET)
    home = dagster_home(tmp_path_factory.mktemp("dagster_home"))
    db = home / "w.duckdb"
    first = _items(real_items, "0", source_bucket)
    reprocessed = _items(real_items, "1", source_bucket)
    with RustacStacServer(first, [real_collection]) as server, s3_env(s3_server):
        config = parse_config(_config(server.url, s3_server, db))
        with DagsterInstance.local_temp(str(home)) as instance:
            yield {
                "server": server,
                "config": config,
                "instance": instance,
                "home": home,
                "db": db,
                "first": first,
                "reprocessed": reprocessed,
                "collection": real_collection,
            }


def _sensor(config: Any) -> Any:
    return build_late_scenes_sensor("ingest_daily", config.late_data)


def _sensor_context(config: Any, instance: DagsterInstance, cursor: str | None) -> Any:
    resources = build_resources(config)
    return build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={k: resources[k] for k in ("stac", "object_store", "notifier")},
    )


def _tick(world: dict[str, Any], cursor: str | None) -> tuple[list[Any], str | None, Any]:
    with _sensor_context(world["config"], world["instance"], cursor) as context:
        result = _sensor(world["config"])(context)
        requests = list(getattr(result, "run_requests", None) or [])
        new_cursor = getattr(result, "cursor", None) or context.cursor
    return requests, new_cursor, result


def _materialize(world: dict[str, Any], day: str = DAY, aoi: str = AOI) -> None:
    # Registers the configuration's AOIs (registry and the instance's "aois") first.
    result = materialize_partition(world["config"], day, aoi, instance=world["instance"])
    assert result.success


def _store(config: Any) -> Any:
    return ObjectStoreResource.from_config(config.storage).store()


def _rows(db: Path, aoi: str = AOI) -> list[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT item_id, processing_baseline FROM scene_metadata "
            "WHERE partition_date = ? AND aoi = ? ORDER BY item_id",
            [DAY, aoi],
        ).fetchall()


def _requested(requests: list[Any]) -> list[tuple[Any, str]]:
    """(partition key, late item ids) of each run request."""
    return [(r.partition_key, r.tags["geospatial_pipeline/late_items"]) for r in requests]


def test_late_reprocessed_items_trigger_exactly_one_backfill(
    world: dict[str, Any], s3_server: Any
) -> None:
    _materialize(world)
    assert _rows(world["db"]) == [(f"S2A_{t}_20200302_0_L2A", "02.14") for t in TILES]

    # The sensor has been running: the _0_ items were seen by the run, nothing is late.
    requests, cursor, _ = _tick(world, None)
    assert requests == []
    assert cursor is not None
    assert parse_cursor(cursor) == dt.datetime(2022, 11, 6, 10, 55, 22, 682000, tzinfo=dt.UTC)

    # ESA's reprocessing shows up (real `updated` times, October 2023).
    world["server"].restart_with(world["first"] + world["reprocessed"], [world["collection"]])
    requests, cursor_2, _ = _tick(world, cursor)
    assert [r.partition_key for r in requests] == [key(DAY, AOI)]
    newest = max(
        dt.datetime.fromisoformat(i["properties"]["updated"].replace("Z", "+00:00"))
        for i in world["reprocessed"]
    )
    assert requests[0].run_key.startswith(f"late-scenes:{DAY}:{AOI}:{newest.isoformat()}:")
    assert parse_cursor(cursor_2) == newest

    objects = list_objects(s3_server, BUCKET)
    records = sorted(k for k in objects if k.startswith(f"pipeline/late_data/{DAY}/"))
    assert records == [f"pipeline/late_data/{DAY}/S2A_{t}_20200302_1_L2A.json" for t in TILES]
    client = s3_server.boto3_client()
    record = json.loads(client.get_object(Bucket=BUCKET, Key=records[0])["Body"].read())
    assert record["intended_partition"] == DAY
    assert record["aois"] == [AOI]
    assert record["arrived_at"].startswith("2023-10-13")
    assert f"not among the 4 item(s) the run of {DAY}/{AOI}" in record["reasons"][AOI]
    assert record["item"]["id"] == "S2A_32TMT_20200302_1_L2A"

    # The same evaluation through the code location and the instance on disk.
    preview = _preview(world, s3_server, cursor)
    assert "Sensor returning run requests for 1 run(s)" in preview, preview
    assert all(f"late item S2A_{t}_20200302_1_L2A for {DAY}/{AOI}" in preview for t in TILES)

    # Next tick, and a restarted sensor with the same cursor: the overlap window brings the
    # same items back before the backfill ran; same run key (Dagster launches it once) and
    # the records are kept as first written.
    written = {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in records}
    for _ in range(2):
        again, cursor_again, _ = _tick(world, cursor_2)
        assert [(r.partition_key, r.run_key) for r in again] == [
            (key(DAY, AOI), requests[0].run_key)
        ]
        assert cursor_again == cursor_2
    assert written == {k: client.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in records}

    # The requested backfill replaces the older version: the _1_ items only, once each.
    _materialize(world)
    assert _rows(world["db"]) == [(f"S2A_{t}_20200302_1_L2A", "05.00") for t in TILES]
    assert _tick(world, cursor_2)[0] == []
    # Even from the old cursor: the backfill's run has now seen these items.
    assert _tick(world, cursor)[0] == []
    assert "returning run requests" not in _preview(world, s3_server, cursor)
    world["state_cursor"] = cursor_2


def test_republication_without_change_is_not_late(world: dict[str, Any]) -> None:
    cursor = world.get("state_cursor")
    if cursor is None:
        pytest.skip("needs the backfill test's state")
    republished = []
    for item in world["reprocessed"]:
        copy_ = copy.deepcopy(item)
        copy_["properties"]["updated"] = "2025-01-01T00:00:00Z"
        republished.append(copy_)
    world["server"].restart_with(world["first"] + republished, [world["collection"]])
    requests, new_cursor, _ = _tick(world, cursor)
    assert requests == []
    assert parse_cursor(new_cursor) == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    world["server"].restart_with(world["first"] + world["reprocessed"], [world["collection"]])


def test_api_error_mid_tick_keeps_cursor(world: dict[str, Any], s3_server: Any) -> None:
    """The second registered AOI's search fails after the first AOI's pages came back: the
    tick fails, nothing is recorded and the cursor stays where it was."""
    from tests.conftest import EARTH_SEARCH
    from tests.replay_server import ReplayState, replay_server

    # Registered AOIs are searched by name: upper-rhine first, then waldshut.
    second = (9.5, 47.5, 9.6, 47.6)

    def fault(method: str, path: str, count: int) -> Any:
        if method == "POST" and path.endswith("/search") and count >= 0:
            last = state.requests[-1][2] if state.requests else {}
            return (503, {}, {"code": "Unavailable"}) if _searched(last) == second else None
        return None

    state = ReplayState(fault=fault)
    with replay_server(EARTH_SEARCH, state) as (url, _), DagsterInstance.ephemeral() as inst:
        aois = [UPPER_RHINE, {"name": "waldshut", "bbox": list(second)}]
        config = parse_config(_config(url, s3_server, world["db"], prefix="api-error", aois=aois))
        assert register_aois(config, inst) == [AOI, "waldshut"]
        before = list_objects(s3_server, BUCKET)
        cursor = '{"updated_after": "2020-01-01T00:00:00+00:00"}'
        with (
            _sensor_context(config, inst, cursor) as context,
            pytest.raises(StacSearchError, match="waldshut"),
        ):
            _sensor(config)(context)
    searches = [b for m, path, b in state.requests if m == "POST" and path.endswith("/search")]
    first_aoi_posts = [b for b in searches if _searched(b) != second]
    assert len(first_aoi_posts) == 3  # all pages of the first AOI were read
    assert _searched(first_aoi_posts[0]) == tuple(UPPER_RHINE["bbox"])
    assert context.cursor == cursor
    assert list_objects(s3_server, BUCKET) == before


def _searched(body: Any) -> tuple[float, ...] | None:
    """The bounds of the area a search body asked for (the sensor sends registered AOIs as
    `intersects`; a `next` page repeats the body)."""
    if not isinstance(body, dict) or "intersects" not in body:
        return None
    return tuple(shape(body["intersects"]).bounds)


def test_late_means_not_seen_by_the_partitions_run(
    real_items: dict[str, dict[str, Any]],
) -> None:
    """The rule on the real twins of 2020-03-05: timestamps do not matter, what the
    (day, AOI) partition's run saw does. A superseded twin the run saw is not late; a new
    twin is, for each AOI it intersects whose partition was materialized."""
    old, new = real_items["S2A_32TMT_20200305_0_L2A"], real_items["S2A_32TMT_20200305_1_L2A"]
    changed = copy.deepcopy(old)
    changed["properties"]["eo:cloud_cover"] = 12.5
    day = dt.date(2020, 3, 5)
    part = Partition(day, AOI)
    # The partition's run saw the _0_ item (and deduped it away in favour of nothing newer).
    run_saw = {old["id"]: content_fingerprint(old)}
    processed = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # long after every `updated`

    def verdict(
        items: list[dict[str, Any]],
        materialized: bool,
        aois: tuple[str, ...] = (AOI,),
        done: tuple[str, ...] = (AOI,),
        last_day: dt.date = dt.date(2020, 3, 31),
    ) -> Any:
        return judge(
            [(i, list(aois)) for i in items],
            materialized_at=lambda p: (
                processed if materialized and p.day == day and p.aoi in done else None
            ),
            seen=lambda p: run_saw if p.day == day and p.aoi in done else {},
            first_day=dt.date(2020, 3, 1),
            last_day=last_day,
        )

    seen_twice = verdict([old], materialized=True)
    assert seen_twice.late == []
    assert seen_twice.not_late == [{"id": old["id"], "why": f"seen unchanged by the run of {part}"}]

    twin = verdict([new], materialized=True)
    assert [(i.item_id, i.part) for i in twin.late] == [(new["id"], part)]
    assert twin.late[0].partition == day
    assert twin.late[0].reason.startswith(f"not among the 1 item(s) the run of {part}")
    assert twin.late[0].fingerprint == content_fingerprint(new)

    edited = verdict([changed], materialized=True)
    assert [i.item_id for i in edited.late] == [old["id"]]
    assert edited.late[0].reason.startswith("content differs from the version")

    # A partition never materialized: its own run will get the item.
    assert verdict([new], materialized=False).late == []
    # A day after the partitions' last day is not judged at all.
    outside = verdict([new], materialized=True, last_day=dt.date(2020, 3, 4))
    assert outside.late == []
    assert outside.not_late == [{"id": new["id"], "why": f"day {day} outside the partitions"}]

    # The item intersects two AOIs: late only where that (day, AOI) was materialized.
    two = (AOI, "zurich")
    only_one = verdict([new], materialized=True, aois=two)
    assert [i.part for i in only_one.late] == [part]
    assert {"id": new["id"], "why": f"{day}/zurich not materialized yet"} in only_one.not_late
    both = verdict([new], materialized=True, aois=two, done=two)
    assert [i.part for i in both.late] == [part, Partition(day, "zurich")]
    record = late_record(both.late, processed)
    assert record["intended_partition"] == day.isoformat()
    assert record["aois"] == [AOI, "zurich"]
    assert set(record["reasons"]) == {AOI, "zurich"}
    # One run per (day, AOI): the keys name the AOI, so they differ.
    assert run_key(both.late[0].part, both.late[:1]) != run_key(both.late[1].part, both.late[1:])

    # Run keys: same items -> same key; another item with the same `updated` -> another key.
    tie = copy.deepcopy(new)
    tie["id"] = "S2A_32TNT_20200305_1_L2A"
    pair = verdict([new, tie], materialized=True).late
    assert run_key(part, twin.late) == run_key(part, verdict([new], materialized=True).late)
    assert run_key(part, pair) != run_key(part, twin.late)
    assert run_key(part, pair).startswith(
        f"late-scenes:2020-03-05:{AOI}:2024-06-29T14:41:57.577000+00:00:"
    )


def _preview(world: dict[str, Any], s3: Any, cursor: str) -> str:
    """`dagster sensor preview` loads the code location from the module and evaluates the
    sensor against the real instance, where the partition's materializations live."""
    config_path = world["home"] / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(_config(world["server"].url, s3, world["db"])))
    env = {
        **os.environ,
        "GEOSPATIAL_PIPELINE_CONFIG": str(config_path),
        "DAGSTER_HOME": str(world["home"]),
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
    }
    dagster = str(Path(sys.executable).parent / "dagster")
    proc = subprocess.run(
        [
            dagster,
            "sensor",
            "preview",
            "late_scenes_sensor",
            "-m",
            "geospatial_pipeline.definitions",
            "--cursor",
            cursor,
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_reconciliation_reports_gaps_both_ways(world: dict[str, Any]) -> None:
    from geospatial_pipeline.reconciliation import reconcile_catalog_job

    if world.get("state_cursor") is None:
        pytest.skip("needs the backfill test's state")
    # The catalog loses one stored scene and gains one the pipeline never stored.
    kept = [i for i in world["first"] + world["reprocessed"] if "32UNU" not in i["id"]]
    newcomer = copy.deepcopy(world["reprocessed"][0])
    newcomer["id"] = "S2A_32TMT_20200303_1_L2A"
    newcomer["properties"]["datetime"] = "2020-03-03T10:17:44.564000Z"
    world["server"].restart_with([*kept, newcomer], [world["collection"]])
    try:
        resources = build_resources(world["config"])
        result = reconcile_catalog_job.execute_in_process(
            run_config={
                "ops": {
                    "reconcile_catalog_op": {
                        "config": {"start_date": "2020-03-01", "end_date": "2020-03-03"}
                    }
                }
            },
            resources={k: resources[k] for k in ("stac", "scope", "object_store", "warehouse")},
            instance=world["instance"],
        )
    finally:
        world["server"].restart_with(world["first"] + world["reprocessed"], [world["collection"]])
    assert result.success
    summary = result.output_for_node("reconcile_catalog_op")
    assert summary == {
        "days": 3,
        "partitions_checked": 3,  # the one registered AOI on each day
        "partitions_with_gaps": 2,
        "missing": 1,
        "extra": 1,
    }
    with duckdb.connect(str(world["db"]), read_only=True) as con:
        rows = con.execute(
            "SELECT day, aoi, catalog_items, stored_items, missing, extra "
            "FROM catalog_reconciliation ORDER BY day"
        ).fetchall()
    assert [(str(r[0]), r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5])) for r in rows] == [
        ("2020-03-01", AOI, 0, 0, [], []),  # checked, nothing on either side
        ("2020-03-02", AOI, 3, 4, [], ["S2A_32UNU_20200302_1_L2A"]),
        ("2020-03-03", AOI, 1, 0, ["S2A_32TMT_20200303_1_L2A"], []),
    ]


@contextmanager
def _fresh_world(
    tmp_path: Path,
    s3: Any,
    items: list[dict[str, Any]],
    collection: dict[str, Any],
    *,
    late_data: dict[str, Any] | None,
    server_filters_updated: bool,
    aois: list[dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """A world of its own (catalog, storage prefix, warehouse, Dagster instance).
    ``server_filters_updated``: the API declares `query` and filters on `updated` like
    Earth Search (rustac behind a proxy that adds the extension); else plain rustac."""
    s3.create_bucket(BUCKET)
    db = tmp_path / "w.duckdb"
    with RustacStacServer(items, [collection]) as server, s3_env(s3), ExitStack() as stack:
        url, proxy = server.url, None
        if server_filters_updated:
            url, proxy = stack.enter_context(query_proxy(server.url))
        doc = _config(url, s3, db, prefix=tmp_path.name, late_data=late_data, aois=aois)
        with DagsterInstance.local_temp(str(dagster_home(tmp_path / "home"))) as instance:
            yield {
                "server": server,
                "proxy": proxy,
                "config": parse_config(doc),
                "instance": instance,
                "db": db,
                "prefix": tmp_path.name,
                "collection": collection,
            }


@dataclass
class Fresh:
    """What a test on a world of its own starts from: the services and the recordings."""

    s3: Any
    source_bucket: str
    real_items: dict[str, dict[str, Any]]
    collection: dict[str, Any]
    tmp_path: Path

    def items(self, sequence: str, day: str = DAY) -> list[dict[str, Any]]:
        return _items(self.real_items, sequence, self.source_bucket, day)

    def world(
        self,
        items: list[dict[str, Any]],
        *,
        late_data: dict[str, Any] | None = LOOKBACK,
        server_filters_updated: bool = False,
        aois: list[dict[str, Any]] | None = None,
    ) -> AbstractContextManager[dict[str, Any]]:
        return _fresh_world(
            self.tmp_path,
            self.s3,
            items,
            self.collection,
            late_data=late_data,
            server_filters_updated=server_filters_updated,
            aois=aois,
        )


@pytest.fixture
def fresh(
    s3_server: Any,
    source_bucket: str,
    real_items: dict[str, dict[str, Any]],
    real_collection: dict[str, Any],
    tmp_path: Path,
) -> Fresh:
    return Fresh(s3_server, source_bucket, real_items, real_collection, tmp_path)


def _records(s3: Any, world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    client = s3.boto3_client()
    prefix = f"{world['prefix']}/late_data/"
    return {
        key[len(prefix) :]: json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        for key in list_objects(s3, BUCKET)
        if key.startswith(prefix)
    }


def test_item_searchable_after_the_days_search_is_late(
    s3_server: Any,
    fresh: Fresh,
) -> None:
    """Indexed 6 h after its day (long before the day's run) but searchable only after the
    run's search: its `updated` is earlier than the materialization and inside what used
    to be the grace period, yet the run never saw it."""
    first = fresh.items("0")
    nrt = fresh.items("1")[0]
    nrt["properties"]["created"] = nrt["properties"]["updated"] = "2020-03-03T06:00:00Z"
    with fresh.world(first) as world:
        _materialize(world)
        world["server"].restart_with([*first, nrt])
        requests, _, _ = _tick(world, None)
        assert _requested(requests) == [(key(DAY, AOI), nrt["id"])]
        records = _records(s3_server, world)
        assert list(records) == [f"{DAY}/{nrt['id']}.json"]
        record = records[f"{DAY}/{nrt['id']}.json"]
        assert record["arrived_at"] == "2020-03-03T06:00:00+00:00"
        assert record["aois"] == [AOI]
        assert record["item"]["id"] == nrt["id"]
        assert record["fingerprint"] == content_fingerprint(record["item"])
        assert f"not among the 4 item(s) the run of {DAY}/{AOI}" in record["reasons"][AOI]


def test_item_updated_before_the_cursor_is_still_found(
    s3_server: Any,
    fresh: Fresh,
) -> None:
    """Real timestamps: the 2020-03-05 `_0_` item of 32UNU was indexed at 07:25 on
    2022-11-06, hours before items that moved the cursor to 11:09; it becomes searchable
    only after that tick. The overlap window behind the cursor still finds it."""
    late_day = "2020-03-05"
    *visible, hidden = [*fresh.items("0"), *fresh.items("0", late_day)]
    assert hidden["id"] == "S2A_32UNU_20200305_0_L2A"
    with fresh.world(visible) as world:
        _materialize(world, DAY)
        _materialize(world, late_day)
        requests, cursor, _ = _tick(world, None)
        assert requests == []
        assert parse_cursor(cursor) == dt.datetime(2022, 11, 6, 11, 9, 42, 477000, tzinfo=dt.UTC)

        world["server"].restart_with([*visible, hidden])
        requests, cursor_2, _ = _tick(world, cursor)
        assert _requested(requests) == [(key(late_day, AOI), hidden["id"])]
        assert list(_records(s3_server, world)) == [f"{late_day}/{hidden['id']}.json"]
        assert parse_cursor(cursor_2) == parse_cursor(cursor)  # never moves back


def test_reprocessing_years_later_found_with_default_settings(
    s3_server: Any,
    fresh: Fresh,
) -> None:
    """No late_data section at all, an API that filters on `updated` like Earth Search:
    2020-03-02 processed from the `_0_` items, ESA's `_1_` reprocessing (indexed October
    2023, 3.5 years after the day) is found."""
    first = fresh.items("0")
    reprocessed = fresh.items("1")
    with fresh.world(first, late_data={}, server_filters_updated=True) as world:
        _materialize(world)
        requests, cursor, first_tick = _tick(world, None)
        assert requests == []

        world["server"].restart_with([*first, *reprocessed])
        world["proxy"].searches.clear()
        requests, _, _ = _tick(world, cursor)
        assert [r.partition_key for r in requests] == [key(DAY, AOI)]
        assert sorted(_records(s3_server, world)) == sorted(
            f"{DAY}/{i['id']}.json" for i in reprocessed
        )
        # What went to the server: every day from the code location's partitions.start_date
        # (tests/location_config.yaml), updated since cursor - 72 h.
        search = world["proxy"].searches[0]
        assert all("next" in later for later in world["proxy"].searches[1:])
        assert search["datetime"].startswith(f"{PARTITIONS['start_date']}T00:00:00Z/")
        assert search["query"] == {"updated": {"gt": "2022-11-03T10:55:22.682000Z"}}
    # The tick before the reprocessing said what it watched.
    message = first_tick.skip_reason.skip_message
    assert f"acquired {PARTITIONS['start_date']}.." in message
    assert "(every partition day from partitions.start_date)" in message
    assert "filtered on the server" in message


@pytest.mark.parametrize(
    ("filters", "late_data", "bound"),
    [
        (True, {"lookback_days": 30}, "lookback of late_data.lookback_days=30"),
        (False, {}, "lookback of late_data.unfiltered_lookback_days=30: the API declares"),
    ],
    ids=["configured-lookback", "api-cannot-filter"],
)
def test_bounded_lookback_says_which_window_it_searched(
    fresh: Fresh,
    filters: bool,
    late_data: dict[str, Any],
    bound: str,
) -> None:
    items = [*fresh.items("0"), *fresh.items("1")]
    with fresh.world(items, late_data=late_data, server_filters_updated=filters) as world:
        today = dt.datetime.now(dt.UTC).date()
        unregistered = _tick(world, None)[2]
        assert unregistered.skip_message.startswith("no registered AOI to watch")
        # Registered, never materialized: the sensor searches its AOI, nothing is late.
        register_aois(world["config"], world["instance"])
        requests, _, result = _tick(world, '{"updated_after": "2023-01-01T00:00:00+00:00"}')
    assert requests == []
    message = result.skip_message
    assert f"acquired {today - dt.timedelta(days=30)}..{today} ({bound}" in message
    assert "updated after 2022-12-29T00:00:00+00:00" in message
    assert "cursor 2023-01-01T00:00:00+00:00 minus the 72 h overlap" in message
    assert ("filtered on the server" if filters else "filtered on the client") in message


def test_removed_grace_period_is_rejected_by_name(tmp_path: Path) -> None:
    doc = {
        "aois": [{"name": "upper-rhine", "bbox": [9.0, 47.0, 10.0, 48.0]}],
        "partitions": dict(PARTITIONS),
        "storage": {"url": str(tmp_path / "store")},
        "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        "late_data": {"grace_period_hours": 24},
    }
    with pytest.raises(ConfigError, match=r"late_data: grace_period_hours is no longer used"):
        parse_config(doc)
    del doc["late_data"]
    late = parse_config(doc).late_data
    assert (late.lookback_days, late.unfiltered_lookback_days, late.cursor_overlap_hours) == (
        None,
        30,
        72.0,
    )


def test_quarantined_item_is_late_until_a_run_lands_it(
    s3_server: Any,
    fresh: Fresh,
) -> None:
    """The day's run saw the item but could not read it (its file was not there yet): the
    item was never used, so the sensor asks for the day again once, and not after a run
    that landed it."""
    items = fresh.items("0")
    pending = items[0]
    pending["assets"]["red"]["href"] = f"{fresh.source_bucket}/not-yet-uploaded/B04.tif"
    with fresh.world(items) as world:
        _materialize(world)
        requests, cursor, _ = _tick(world, None)
        assert _requested(requests) == [(key(DAY, AOI), pending["id"])]
        record = _records(s3_server, world)[f"{DAY}/{pending['id']}.json"]
        assert record["aois"] == [AOI]
        assert f"quarantined by the run of {DAY}/{AOI}" in record["reasons"][AOI]
        assert "not-yet-uploaded/B04.tif" in record["reasons"][AOI]

        # The file arrives; the re-run lands the item; nothing is late any more.
        bucket, prefix = fresh.source_bucket.removeprefix("s3://").split("/", 1)
        s3_server.boto3_client().put_object(
            Bucket=bucket,
            Key=f"{prefix}/not-yet-uploaded/B04.tif",
            Body=(S2_COGS / "B04.tif").read_bytes(),
        )
        _materialize(world)
        requests, _, _ = _tick(world, cursor)
        assert requests == []


# Over the recordings' tiles of 2020-03-02: zurich lies in 32TMT only; old-site crosses
# 32TMT and 32TNT; unrun lies in 32TMT and its partition is never materialized.
ZURICH = {"name": "zurich", "bbox": [8.3, 47.2, 8.6, 47.5]}
OLD_SITE = {"name": "old-site", "bbox": [8.3, 47.2, 9.6, 47.5]}
UNRUN = {"name": "unrun", "bbox": [8.4, 47.3, 8.5, 47.4]}


def test_late_item_reruns_exactly_the_date_aoi_partitions_it_intersects(
    s3_server: Any,
    fresh: Fresh,
) -> None:
    """An item is late for the AOIs it intersects whose (date, AOI) was materialized
    without it, one run per such partition; a retired AOI gets none, an AOI whose
    retirement is still ahead keeps being watched."""
    first = fresh.items("0")
    tmt, tnt = (i for i in fresh.items("1") if "32TMT" in i["id"] or "32TNT" in i["id"])
    aois = [UPPER_RHINE, ZURICH, OLD_SITE, UNRUN]
    with fresh.world(first, aois=aois) as world:
        for aoi in (AOI, "zurich", "old-site"):
            _materialize(world, DAY, aoi)
        assert _rows(world["db"], "zurich") == [("S2A_32TMT_20200302_0_L2A", "02.14")]
        store = _store(world["config"])
        today = dt.datetime.now(dt.UTC).date()
        registry.retire(store, "old-site", today)
        requests, cursor, _ = _tick(world, None)
        assert requests == []

        # 32TNT's reprocessing: of zurich and upper-rhine it intersects upper-rhine only
        # (and the retired old-site).
        world["server"].restart_with([*first, tnt])
        requests, cursor_2, _ = _tick(world, cursor)
        assert _requested(requests) == [(key(DAY, AOI), tnt["id"])]
        tnt_updated = "2023-10-13T18:43:31.831000+00:00"
        assert requests[0].run_key.startswith(f"late-scenes:{DAY}:{AOI}:{tnt_updated}:")
        records = _records(s3_server, world)
        assert list(records) == [f"{DAY}/{tnt['id']}.json"]
        assert records[f"{DAY}/{tnt['id']}.json"]["aois"] == [AOI]

        # 32TMT's reprocessing intersects upper-rhine and zurich, both materialized: two
        # runs (upper-rhine's with both late items); unrun was never materialized.
        world["server"].restart_with([*first, tnt, tmt])
        requests, cursor_3, _ = _tick(world, cursor_2)
        both = ",".join(sorted([tmt["id"], tnt["id"]]))
        assert _requested(requests) == [(key(DAY, AOI), both), (key(DAY, "zurich"), tmt["id"])]
        assert requests[0].run_key.startswith(f"late-scenes:{DAY}:{AOI}:{tnt_updated}:")
        assert requests[1].run_key.startswith(
            f"late-scenes:{DAY}:zurich:2023-10-13T18:30:03.776000+00:00:"
        )
        records = _records(s3_server, world)
        assert sorted(records) == sorted(f"{DAY}/{i['id']}.json" for i in (tmt, tnt))
        assert records[f"{DAY}/{tmt['id']}.json"]["aois"] == [AOI, "zurich"]
        assert records[f"{DAY}/{tnt['id']}.json"]["aois"] == [AOI]

        # The tick again (the overlap brings both back): same run keys, records as written.
        again, _, _ = _tick(world, cursor_3)
        assert [r.run_key for r in again] == [r.run_key for r in requests]
        assert _records(s3_server, world) == records

        # Retired from tomorrow instead: still active today, so its partition is watched.
        registry.unretire(store, "old-site")
        registry.retire(store, "old-site", today + dt.timedelta(days=1))
        requests, _, _ = _tick(world, cursor_3)
        assert _requested(requests) == [
            (key(DAY, "old-site"), both),
            (key(DAY, AOI), both),
            (key(DAY, "zurich"), tmt["id"]),
        ]
        records = _records(s3_server, world)
        assert records[f"{DAY}/{tmt['id']}.json"]["aois"] == ["old-site", AOI, "zurich"]
        assert records[f"{DAY}/{tnt['id']}.json"]["aois"] == ["old-site", AOI]
