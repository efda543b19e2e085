"""Late-arriving scenes with the real recordings: ESA's reprocessed `_1_` items of
2020-03-02 appeared in Earth Search in October 2023, years after the day.

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
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from dagster import DagsterInstance, build_sensor_context, materialize

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.definitions import build_assets
from geospatial_pipeline.errors import StacSearchError
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.partitions import daily_partitions
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.sensors import build_late_scenes_sensor, parse_cursor
from geospatial_pipeline.stac.late import judge, run_key
from geospatial_pipeline.stac.search import content_fingerprint, day_window
from tests.conftest import REPO
from tests.test_e2e import list_objects, s3_env

DAY = "2020-03-02"
TILES = ("32TMT", "32TNT", "32UMU", "32UNU")
BUCKET = "late-data"


def _config(stac_url: str, s3: Any, db: Path) -> dict[str, Any]:
    return {
        "stac": {"api_url": stac_url, "page_size": 5, "max_retries": 1, "timeout_s": 5},
        "aois": [{"name": "upper-rhine", "bbox": [9.0, 47.0, 10.0, 48.0]}],
        "bands": ["red", "nir", "scl"],
        "partitions": {"start_date": "2020-03-01"},
        "storage": {"url": f"s3://{BUCKET}/pipeline", "endpoint_url": s3.endpoint_url},
        "warehouse": {"kind": "duckdb", "path": str(db)},
        # The recordings' band files are not in ../shared/data: the slice stops at metadata.
        "transform": {"enabled": False},
        "late_data": {"lookback_days": 3650, "grace_period_hours": 24},
    }


def _items(
    real_items: dict[str, dict[str, Any]], sequence: str, source: str
) -> list[dict[str, Any]]:
    out = []
    for tile in TILES:
        item = copy.deepcopy(real_items[f"S2A_{tile}_20200302_{sequence}_L2A"])
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
    home = tmp_path_factory.mktemp("dagster_home")
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
    partitions = daily_partitions(config.partitions.start_date)
    from dagster import define_asset_job

    job = define_asset_job(
        "ingest_daily", selection=build_assets(config), partitions_def=partitions
    )
    return build_late_scenes_sensor(job, partitions, config.late_data)


def _tick(world: dict[str, Any], cursor: str | None) -> tuple[list[Any], str | None, Any]:
    config = world["config"]
    resources = build_resources(config)
    context = build_sensor_context(
        instance=world["instance"],
        cursor=cursor,
        resources={k: resources[k] for k in ("stac", "scope", "object_store")},
    )
    result = _sensor(config)(context)
    requests = list(getattr(result, "run_requests", None) or [])
    new_cursor = getattr(result, "cursor", None) or context.cursor
    return requests, new_cursor, result


def _materialize(world: dict[str, Any]) -> None:
    config = world["config"]
    result = materialize(
        build_assets(config),
        partition_key=DAY,
        resources=build_resources(config),
        instance=world["instance"],
    )
    assert result.success


def _rows(db: Path) -> list[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT item_id, processing_baseline FROM scene_metadata WHERE partition_date = ? "
            "ORDER BY item_id",
            [DAY],
        ).fetchall()


def test_late_reprocessed_items_trigger_exactly_one_backfill(
    world: dict[str, Any], s3_server: Any
) -> None:
    _materialize(world)
    assert _rows(world["db"]) == [(f"S2A_{t}_20200302_0_L2A", "02.14") for t in TILES]

    # The sensor has been running: the _0_ items were seen by the run, nothing is late.
    requests, cursor, _ = _tick(world, None)
    assert requests == []
    assert parse_cursor(cursor) == dt.datetime(2022, 11, 6, 10, 55, 22, 682000, tzinfo=dt.UTC)

    # ESA's reprocessing shows up (real `updated` times, October 2023).
    world["server"].restart_with(world["first"] + world["reprocessed"], [world["collection"]])
    requests, cursor_2, _ = _tick(world, cursor)
    assert [r.partition_key for r in requests] == [DAY]
    newest = max(
        dt.datetime.fromisoformat(i["properties"]["updated"].replace("Z", "+00:00"))
        for i in world["reprocessed"]
    )
    assert requests[0].run_key == run_key(dt.date(2020, 3, 2), newest)
    assert parse_cursor(cursor_2) == newest

    objects = list_objects(s3_server, BUCKET)
    records = sorted(k for k in objects if k.startswith(f"pipeline/late_data/{DAY}/"))
    assert records == [f"pipeline/late_data/{DAY}/S2A_{t}_20200302_1_L2A.json" for t in TILES]
    client = s3_server.boto3_client()
    record = json.loads(client.get_object(Bucket=BUCKET, Key=records[0])["Body"].read())
    assert record["intended_partition"] == DAY
    assert record["arrived_at"].startswith("2023-10-13")
    assert "after the end of 2020-03-02" in record["reason"]
    assert record["item"]["id"] == "S2A_32TMT_20200302_1_L2A"

    # The same evaluation through the code location and the instance on disk.
    preview = _preview(world, s3_server, cursor)
    assert "Sensor returning run requests for 1 run(s)" in preview, preview
    assert all(f"late item S2A_{t}_20200302_1_L2A for {DAY}" in preview for t in TILES)

    # Next tick, and a restarted sensor with the same cursor: nothing new.
    assert _tick(world, cursor_2)[0] == []
    assert _tick(world, cursor_2)[0] == []

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
    """The second AOI's search fails after the first AOI's pages came back: the tick
    fails, nothing is recorded and the cursor stays where it was."""
    from tests.conftest import EARTH_SEARCH
    from tests.replay_server import ReplayState, replay_server

    second = [9.5, 47.5, 9.6, 47.6]

    def fault(method: str, path: str, count: int) -> Any:
        if method == "POST" and path.endswith("/search") and count >= 0:
            return (503, {}, {"code": "Unavailable"}) if _last_body_bbox(state) == second else None
        return None

    state = ReplayState(fault=fault)
    before = list_objects(s3_server, BUCKET)
    with replay_server(EARTH_SEARCH, state) as (url, _):
        doc = _config(url, s3_server, world["db"])
        doc["aois"].append({"name": "second", "bbox": second})
        config = parse_config(doc)
        resources = build_resources(config)
        cursor = '{"updated_after": "2020-01-01T00:00:00+00:00"}'
        context = build_sensor_context(
            instance=world["instance"],
            cursor=cursor,
            resources={k: resources[k] for k in ("stac", "scope", "object_store")},
        )
        with pytest.raises(StacSearchError, match="second"):
            _sensor(config)(context)
    first_aoi_posts = [b for m, _, b in state.requests if m == "POST" and b.get("bbox") != second]
    assert len(first_aoi_posts) == 3  # all pages of the first AOI were read
    assert context.cursor == cursor
    assert list_objects(s3_server, BUCKET) == before


def _last_body_bbox(state: Any) -> Any:
    return state.requests[-1][2].get("bbox") if state.requests else None


def test_grace_period_edges(real_items: dict[str, dict[str, Any]]) -> None:
    base = real_items["S2A_32TMT_20200305_0_L2A"]
    _, day_end = day_window(dt.date(2020, 3, 5))
    grace = dt.timedelta(hours=24)

    def item(offset: dt.timedelta, item_id: str) -> dict[str, Any]:
        out = copy.deepcopy(base)
        out["id"] = item_id
        out["properties"]["updated"] = (day_end + grace + offset).isoformat()
        return out

    inside = item(-dt.timedelta(seconds=1), "inside")
    outside = item(dt.timedelta(seconds=1), "outside")
    verdict = judge(
        [inside, outside],
        materialized_at=lambda d: None,
        seen=lambda d: {},
        grace=grace,
        first_day=dt.date(2020, 3, 1),
        last_day=dt.date(2020, 3, 31),
    )
    assert [i.item_id for i in verdict.late] == ["outside"]
    assert verdict.not_late == [{"id": "inside", "why": "within the grace period"}]

    # Materialized before the item arrived: late even inside the grace period.
    processed = day_end + dt.timedelta(hours=6)
    verdict = judge(
        [inside],
        materialized_at=lambda d: processed,
        seen=lambda d: {},
        grace=grace,
        first_day=dt.date(2020, 3, 1),
        last_day=dt.date(2020, 3, 31),
    )
    assert [i.item_id for i in verdict.late] == ["inside"]
    assert "after its partition" in verdict.late[0].reason

    # Seen by the day's run with the same content: a re-publication, never late.
    verdict = judge(
        [outside],
        materialized_at=lambda d: processed,
        seen=lambda d: {"outside": content_fingerprint(outside)},
        grace=grace,
        first_day=dt.date(2020, 3, 1),
        last_day=dt.date(2020, 3, 31),
    )
    assert verdict.late == [] and verdict.not_late[0]["why"] == "unchanged re-publication"


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
            resources={k: resources[k] for k in ("stac", "scope", "warehouse")},
            instance=world["instance"],
        )
    finally:
        world["server"].restart_with(world["first"] + world["reprocessed"], [world["collection"]])
    assert result.success
    summary = result.output_for_node("reconcile_catalog_op")
    assert summary == {"days": 3, "days_with_gaps": 2, "missing": 1, "extra": 1}
    with duckdb.connect(str(world["db"]), read_only=True) as con:
        rows = con.execute(
            "SELECT day, aoi, catalog_items, stored_items, missing, extra "
            "FROM catalog_reconciliation ORDER BY day"
        ).fetchall()
    assert [(str(r[0]), r[2], r[3], json.loads(r[4]), json.loads(r[5])) for r in rows] == [
        ("2020-03-01", 0, 0, [], []),  # checked, nothing on either side
        ("2020-03-02", 3, 4, [], ["S2A_32UNU_20200302_1_L2A"]),
        ("2020-03-03", 1, 0, ["S2A_32TMT_20200303_1_L2A"], []),
    ]
