"""The pipeline's one partitioning: UTC day x AOI, defined once for every asset.

The AOI dimension is dynamic (``aois``): an AOI becomes a partition when it is registered
(the YAML file's AOIs by ``aois sync`` or the request sensor's first tick, new ones by a
request), without a redeploy. The day dimension runs from ``partitions.start_date`` of the
code location's configuration (``GEOSPATIAL_PIPELINE_CONFIG``), read once at import: the
assets are module-level definitions, so their partitions exist before ``defs`` is built.

Partition keys: Dagster orders the dimensions by name, so a key reads ``{aoi}|{date}``
(``sahel_site|2024-06-01``), e.g. ``dagster asset materialize --partition
'sahel_site|2024-06-01'``.
"""

from __future__ import annotations

import datetime as dt
import warnings

from dagster import (
    BackfillPolicy,
    BetaWarning,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

from geospatial_pipeline.layout import Partition
from geospatial_pipeline.location import LOCATION_CONFIG

DATE_DIMENSION = "date"
AOI_DIMENSION = "aoi"
AOI_PARTITIONS_NAME = "aois"

# The parameter is marked beta; the policy is deliberate, so say it once, not per asset.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)

AOI_PARTITIONS = DynamicPartitionsDefinition(name=AOI_PARTITIONS_NAME)


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


def date_aoi_partitions(days: DailyPartitionsDefinition) -> MultiPartitionsDefinition:
    return MultiPartitionsDefinition({DATE_DIMENSION: days, AOI_DIMENSION: AOI_PARTITIONS})


# The code location's partitions settings, read once: build_defs refuses a configuration
# whose partitions section differs (the assets were already defined with these).
PARTITIONS_SETTINGS = LOCATION_CONFIG.partitions
# Backfills group up to partitions.backfill_partitions_per_run days of one AOI per run
# (Dagster forms ranges along the date dimension for one AOI): each run costs a queue
# slot, a process start and a code location import (~6 s locally, measured in
# benchmarks/README.md, "Dagster overhead") against ~2 s of steps for a small AOI-day, so
# one run per partition would spend most of a backfill outside the asset bodies. The
# asset bodies loop over their run's partitions (assets/runs.py), each iteration touching
# only its own partition. Runs from the UI, the schedule and the sensors stay one per
# partition.
BACKFILL_POLICY = BackfillPolicy.multi_run(
    max_partitions_per_run=PARTITIONS_SETTINGS.backfill_partitions_per_run
)
DAYS = daily_partitions(PARTITIONS_SETTINGS.start_date, PARTITIONS_SETTINGS.end_date)
PARTITIONS = date_aoi_partitions(DAYS)


def partition_key(part: Partition) -> MultiPartitionKey:
    return MultiPartitionKey({DATE_DIMENSION: part.day.isoformat(), AOI_DIMENSION: part.aoi})


def partition_of(key: str) -> Partition:
    """The (day, AOI) of a partition key (a MultiPartitionKey, or its ``aoi|date`` text)."""
    if isinstance(key, MultiPartitionKey):
        dims = key.keys_by_dimension
        return Partition(dt.date.fromisoformat(dims[DATE_DIMENSION]), dims[AOI_DIMENSION])
    aoi, sep, day = str(key).partition("|")
    if not sep:
        raise ValueError(f"partition key {key!r} is not of the form 'aoi|YYYY-MM-DD'")
    return Partition(dt.date.fromisoformat(day), aoi)


def day_in_range(day: dt.date) -> bool:
    return DAYS.has_partition_key(day.isoformat())
