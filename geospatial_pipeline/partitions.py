"""The pipeline's one partitioning: UTC days from the configured start date."""

from __future__ import annotations

import datetime as dt

from dagster import DailyPartitionsDefinition


def daily_partitions(start_date: dt.date) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(start_date=start_date.isoformat(), timezone="UTC")


def partition_day(partition_key: str) -> dt.date:
    return dt.date.fromisoformat(partition_key)
