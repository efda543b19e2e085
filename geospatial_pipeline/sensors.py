"""The late-scene sensor: find items indexed after their day was processed, record them
under late_data/{day}/ and request a run of exactly those days."""

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from functools import cache

from dagster import (
    AssetRecordsFilter,
    DailyPartitionsDefinition,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from geospatial_pipeline.assets.ingest import STAC_ITEMS
from geospatial_pipeline.config import LateDataConfig
from geospatial_pipeline.layout import items_key, late_record_key
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac.itemcollection import dumps
from geospatial_pipeline.stac.late import EPOCH, item_updated, judge, parse_time, run_key
from geospatial_pipeline.stac.search import AoiQuery, open_client, search_updated_since

SENSOR_NAME = "late_scenes_sensor"
TRIGGER_TAG = "geospatial_pipeline/trigger"


def parse_cursor(cursor: str | None) -> dt.datetime:
    if not cursor:
        return EPOCH
    value = parse_time(json.loads(cursor).get("updated_after"))
    return value or EPOCH


def make_cursor(since: dt.datetime) -> str:
    return json.dumps({"updated_after": since.astimezone(dt.UTC).isoformat()})


def build_late_scenes_sensor(
    job: UnresolvedAssetJobDefinition,
    partitions: DailyPartitionsDefinition,
    settings: LateDataConfig,
) -> SensorDefinition:
    @sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=settings.minimum_interval_seconds,
        description=(
            "Polls the STAC API for items indexed after the cursor over the last "
            f"{settings.lookback_days} acquisition days; records late ones under "
            "late_data/{day}/ and requests one run per affected day."
        ),
    )
    def late_scenes_sensor(
        context: SensorEvaluationContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
    ) -> SensorResult | SkipReason:
        now = dt.datetime.now(dt.UTC)
        since = parse_cursor(context.cursor)
        start = partitions.start.date()
        last_day = now.date()
        first_day = max(start, last_day - dt.timedelta(days=settings.lookback_days))
        search_settings = stac.settings()
        queries = [AoiQuery(a.name, a.geojson, a.bbox) for a in scope.aoi_configs()]
        items = search_updated_since(
            open_client(search_settings), search_settings, queries, first_day, last_day, since
        )
        if not items:
            return SkipReason(f"no item indexed after {since.isoformat()}")
        store = object_store.store()

        def materialized_at(day: dt.date) -> dt.datetime | None:
            records = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=STAC_ITEMS, asset_partitions=[day.isoformat()]),
                limit=1,
            ).records
            return dt.datetime.fromtimestamp(records[0].timestamp, dt.UTC) if records else None

        @cache
        def seen(day: dt.date) -> Mapping[str, str]:
            key = items_key(stac.collection, day)
            if store.head(key) is None:
                return {}
            meta = json.loads(store.get_bytes(key)).get("geospatial_pipeline", {})
            return dict(meta.get("seen", {}))

        verdict = judge(
            items,
            materialized_at=materialized_at,
            seen=seen,
            grace=dt.timedelta(hours=settings.grace_period_hours),
            first_day=first_day,
            last_day=last_day,
        )
        newest: dict[dt.date, dt.datetime] = {}
        by_day: dict[dt.date, list[str]] = defaultdict(list)
        for late in verdict.late:
            store.put_bytes(
                late_record_key(late.partition, late.item_id),
                dumps(late.record(now)),
                "application/json",
            )
            by_day[late.partition].append(late.item_id)
            newest[late.partition] = max(newest.get(late.partition, late.updated), late.updated)
            context.log.info("late item %s for %s: %s", late.item_id, late.partition, late.reason)
        requests = [
            RunRequest(
                partition_key=day.isoformat(),
                run_key=run_key(day, newest[day]),
                tags={
                    TRIGGER_TAG: SENSOR_NAME,
                    "geospatial_pipeline/late_items": ",".join(ids)[:1000],
                },
            )
            for day, ids in sorted(by_day.items())
        ]
        # Only now that every record is written may the cursor move past these items.
        newest_seen = max((u for u in map(item_updated, items) if u), default=since)
        return SensorResult(run_requests=requests, cursor=make_cursor(max(newest_seen, since)))

    return late_scenes_sensor
