"""The daily schedule: the latest complete UTC day, a few hours after it ends."""

import datetime as dt

from dagster import (
    DailyPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from geospatial_pipeline.config import ScheduleConfig

SCHEDULE_NAME = "daily_ingest_schedule"


def build_daily_schedule(
    job_name: str, partitions: DailyPartitionsDefinition, settings: ScheduleConfig
) -> ScheduleDefinition:
    # The job is named, not passed: the object define_asset_job returns has no public type.
    # The delay gives the catalog time to index the day's scenes (the late-scene sensor
    # repairs what arrives later still).
    @schedule(
        name=SCHEDULE_NAME,
        job_name=job_name,
        cron_schedule=f"0 {settings.delay_hours} * * *",
        execution_timezone="UTC",
        description=(
            f"Materializes the latest complete UTC day at {settings.delay_hours:02d}:00 UTC."
        ),
    )
    def daily_ingest_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        ended = context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)
        key = ended.isoformat()
        # Past partitions.end_date (or before the start) there is no partition to run.
        if not partitions.has_partition_key(key):
            return SkipReason(f"{key} is outside the partitions (partitions.start_date/end_date)")
        # The run key makes a repeated tick of the same day a no-op.
        return RunRequest(partition_key=key, run_key=key)

    return daily_ingest_schedule
