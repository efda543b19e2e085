"""The daily schedule: the latest complete UTC day for every registered AOI, a few hours
after the day ends."""

import datetime as dt

from dagster import (
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from geospatial_pipeline.config import ScheduleConfig
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME, day_in_range, partition_key
from geospatial_pipeline.resources.storage import ObjectStoreResource

SCHEDULE_NAME = "daily_ingest_schedule"


def build_daily_schedule(job_name: str, settings: ScheduleConfig) -> ScheduleDefinition:
    # A function of the settings: the cron string is configuration (schedule.delay_hours).
    # The job is named, not passed: the object define_asset_job returns has no public type.
    # The delay gives the catalog time to index the day's scenes (the late-scene sensor
    # repairs what arrives later still).
    @schedule(
        name=SCHEDULE_NAME,
        job_name=job_name,
        cron_schedule=f"0 {settings.delay_hours} * * *",
        execution_timezone="UTC",
        description=(
            f"At {settings.delay_hours:02d}:00 UTC, one run per registered AOI (not retired, "
            "registered from that day or earlier) for the latest complete UTC day."
        ),
    )
    def daily_ingest_schedule(
        context: ScheduleEvaluationContext, object_store: ObjectStoreResource
    ) -> list[RunRequest] | SkipReason:
        ended = context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)
        # Past partitions.end_date (or before the start) there is no partition to run.
        if not day_in_range(ended):
            return SkipReason(f"{ended} is outside the partitions (partitions.start_date/end_date)")
        partitions = set(context.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME))
        records = [r for r in registry.load_all(object_store.store()) if r.name in partitions]
        active = [r for r in records if r.active_on(ended)]
        if not active:
            return SkipReason(
                f"no registered AOI is active on {ended} ({len(records)} registered; retired "
                "ones and ones whose first day is later are left out)"
            )
        # The run key makes a repeated tick of the same day a no-op, per AOI.
        return [
            RunRequest(
                partition_key=partition_key(Partition(ended, r.name)),
                run_key=f"schedule:{ended.isoformat()}:{r.name}",
            )
            for r in active
        ]

    return daily_ingest_schedule
