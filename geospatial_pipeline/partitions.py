"""The pipeline's one partitioning: UTC days from the configured start date."""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import BackfillPolicy, BetaWarning, DailyPartitionsDefinition

# One run per day in backfills: each day is independent, a failed day does not fail its
# neighbours, and runs spread over the Kubernetes run launcher's concurrency. Grouping days
# into runs (multi_run(N > 1), single_run) would spare the per-run cost measured in
# benchmarks/README.md ("Dagster overhead": ~8 s of queueing, process start and code
# location import per run against ~2 s of steps for one small AOI-day), but the asset
# bodies read context.partition_key, which Dagster refuses in a run over a range of
# partitions: grouping needs bodies that loop over context.partition_keys.
BACKFILL_POLICY = BackfillPolicy.multi_run(max_partitions_per_run=1)
# The parameter is marked beta; the policy is deliberate, so say it once, not per asset.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)


def daily_partitions(
    start_date: dt.date, end_date: dt.date | None = None
) -> DailyPartitionsDefinition:
    """UTC days from ``start_date`` to ``end_date`` (both included; None: up to the latest
    complete day)."""
    # Dagster's end_date is the first day without a partition.
    end = None if end_date is None else (end_date + dt.timedelta(days=1)).isoformat()
    return DailyPartitionsDefinition(
        start_date=start_date.isoformat(), end_date=end, timezone="UTC"
    )


def partition_day(partition_key: str) -> dt.date:
    return dt.date.fromisoformat(partition_key)
