"""Daily partitions: partitions.end_date is the last day included, whatever Dagster's
exclusive end_date; the schedule stops at it, and asks for one run per active AOI."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster import build_schedule_context, instance_for_test
from shapely.geometry import box, mapping

from geospatial_pipeline.config import AoiConfig, parse_config
from geospatial_pipeline.definitions import build_defs
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME, daily_partitions
from geospatial_pipeline.resources.storage import ObjectStoreResource
from tests.conftest import REPO
from tests.partitioning import PARTITIONS, key

START = dt.date(2024, 2, 27)


@pytest.mark.parametrize("end", [START, dt.date(2024, 2, 28), dt.date(2024, 3, 2)])
def test_end_date_is_the_last_partition(end: dt.date) -> None:
    keys = daily_partitions(START, end).get_partition_keys()
    expected = [(START + dt.timedelta(days=i)).isoformat() for i in range((end - START).days + 1)]
    assert keys == expected  # 2024-02-29 included: consecutive UTC days


def test_end_date_in_the_future_stops_at_the_latest_complete_day() -> None:
    now = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
    keys = daily_partitions(START, dt.date(2024, 12, 31)).get_partition_keys(current_time=now)
    assert keys == ["2024-02-27", "2024-02-28", "2024-02-29"]
    assert daily_partitions(START).get_partition_keys(current_time=now) == keys


# The schedule of a code location whose partitions end on 2024-06-15: the module-level
# partitions come from GEOSPATIAL_PIPELINE_CONFIG at import, so in its own interpreter.
TICKS_AFTER_THE_END = """
import datetime as dt, json, sys
from dagster import build_schedule_context, instance_for_test
from geospatial_pipeline.config import load_config
from geospatial_pipeline.definitions import build_defs
from geospatial_pipeline.resources.storage import ObjectStoreResource
from tests.partitioning import register_aois

config = load_config()
repo = build_defs(config).get_repository_def()
schedule = repo.get_schedule_def("daily_ingest_schedule")
resources = {"object_store": ObjectStoreResource.from_config(config.storage)}
ticks = {}
with instance_for_test() as instance:
    register_aois(config, instance)
    for day in (15, 16, 17):
        when = dt.datetime(2024, 6, day, 6, 0, tzinfo=dt.UTC)
        with build_schedule_context(
            instance=instance, scheduled_execution_time=when, resources=resources,
            repository_def=repo,
        ) as ctx:
            result = schedule.evaluate_tick(ctx)
        ticks[day] = {
            "requests": [[str(r.partition_key), r.run_key] for r in result.run_requests or []],
            "skip": result.skip_message,
        }
print("TICKS " + json.dumps(ticks))
"""


def test_schedule_skips_days_after_the_end_date(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "aois": [{"name": "a", "bbox": [9.0, 47.0, 9.1, 47.1]}],
                "partitions": {"start_date": "2024-01-01", "end_date": "2024-06-15"},
                "storage": {"url": str(tmp_path / "objects")},
                "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", TICKS_AFTER_THE_END],
        cwd=REPO,
        env={**os.environ, "GEOSPATIAL_PIPELINE_CONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("TICKS "))
    ticks = json.loads(line.removeprefix("TICKS "))
    assert ticks["15"]["requests"] == [["a|2024-06-14", "schedule:2024-06-14:a"]]
    assert ticks["16"]["requests"] == [["a|2024-06-15", "schedule:2024-06-15:a"]]
    assert ticks["17"]["requests"] == []
    assert "2024-06-16 is outside the partitions" in ticks["17"]["skip"]


def _aoi(name: str, west: float) -> AoiConfig:
    return AoiConfig(name=name, geometry=mapping(box(west, 47.0, west + 0.1, 47.1)))


def test_schedule_requests_only_the_active_aois(tmp_path: Path) -> None:
    """Three registered AOIs on the day the tick runs for (2024-06-15): one active, one
    retired on that very day, one whose first day is the day after. Only the active one
    gets a run."""
    day = dt.date(2024, 6, 15)
    config = parse_config(
        {
            "aois": [{"name": "active", "bbox": [9.0, 47.0, 9.1, 47.1]}],
            "partitions": PARTITIONS,
            "storage": {"url": str(tmp_path / "objects")},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        }
    )
    object_store = ObjectStoreResource.from_config(config.storage)
    store = object_store.store()
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    firsts = {"active": config.partitions.start_date, "retired": config.partitions.start_date}
    firsts["later"] = day + dt.timedelta(days=1)
    for i, (name, first_day) in enumerate(sorted(firsts.items())):
        record = registry.new_record(
            _aoi(name, 9.0 + i), first_day=first_day, origin=registry.CONFIG_ORIGIN, now=now
        )
        assert registry.register(store, record).created
    registry.retire(store, "retired", day)
    assert [r.active_on(day) for r in registry.load_all(store)] == [True, False, False]
    repo = build_defs(config).get_repository_def()
    schedule = repo.get_schedule_def("daily_ingest_schedule")
    when = dt.datetime(2024, 6, 16, 6, 0, tzinfo=dt.UTC)
    # A persistent instance: the context re-opens it by reference once resources are bound.
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(AOI_PARTITIONS_NAME, sorted(firsts))
        with build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            resources={"object_store": object_store},
            repository_def=repo,
        ) as context:
            requests = schedule.evaluate_tick(context).run_requests or []
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (key(day, "active"), "schedule:2024-06-15:active")
    ]
