"""Daily partitions: partitions.end_date is the last day included, whatever Dagster's
exclusive end_date; the schedule stops at it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import build_schedule_context

from geospatial_pipeline.partitions import daily_partitions

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


def test_schedule_skips_days_after_the_end_date(tmp_path: Path) -> None:
    from geospatial_pipeline.config import parse_config
    from geospatial_pipeline.definitions import build_defs

    config = parse_config(
        {
            "aois": [{"name": "a", "bbox": [9.0, 47.0, 9.1, 47.1]}],
            "partitions": {"start_date": "2024-01-01", "end_date": "2024-06-15"},
            "storage": {"url": str(tmp_path)},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        }
    )
    repo = build_defs(config).get_repository_def()
    schedule = repo.get_schedule_def("daily_ingest_schedule")

    def tick(day: int) -> list[str | None]:
        when = dt.datetime(2024, 6, day, 6, 0, tzinfo=dt.UTC)
        with build_schedule_context(scheduled_execution_time=when, repository_def=repo) as ctx:
            result = schedule.evaluate_tick(ctx)
        return [r.partition_key for r in result.run_requests or []]

    assert tick(16) == ["2024-06-15"]
    assert tick(17) == []
