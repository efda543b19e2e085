"""The daily schedule: the latest complete UTC day, a few hours after it ends."""

from dagster import (
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from geospatial_pipeline.config import ScheduleConfig

SCHEDULE_NAME = "daily_ingest_schedule"


def build_daily_schedule(
    job: UnresolvedAssetJobDefinition, settings: ScheduleConfig
) -> ScheduleDefinition:
    # A daily partitioned schedule targets the partition of the day that just ended; the
    # delay gives the catalog time to index the day's scenes (the late-scene sensor
    # repairs what arrives later still).
    schedule = build_schedule_from_partitioned_job(
        job,
        name=SCHEDULE_NAME,
        hour_of_day=settings.delay_hours,
        minute_of_hour=0,
        description=(
            f"Materializes the latest complete UTC day at {settings.delay_hours:02d}:00 UTC."
        ),
    )
    assert isinstance(schedule, ScheduleDefinition)
    return schedule
