"""The late-scene sensor: find items a materialized (date, AOI) partition's run did not
see, record them under late_data/{day}/ and request a run of exactly those partitions."""

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from functools import cache

from dagster import (
    AssetRecordsFilter,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from geospatial_pipeline.alerts import send_late_scenes
from geospatial_pipeline.assets.ingest import STAC_ITEMS
from geospatial_pipeline.config import LateDataConfig
from geospatial_pipeline.layout import Partition, items_key, late_record_key, manifest_key
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME, DAYS, partition_key
from geospatial_pipeline.resources.notify import NotifierResource
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac.itemcollection import dumps
from geospatial_pipeline.stac.late import (
    EPOCH,
    LateItem,
    item_updated,
    judge,
    late_record,
    parse_time,
    run_key,
    watch_window,
)
from geospatial_pipeline.stac.search import (
    AoiQuery,
    filter_mode,
    open_client,
    search_updated_since,
)

SENSOR_NAME = "late_scenes_sensor"
TRIGGER_TAG = "geospatial_pipeline/trigger"


def parse_cursor(cursor: str | None) -> dt.datetime:
    if not cursor:
        return EPOCH
    value = parse_time(json.loads(cursor).get("updated_after"))
    return value or EPOCH


def make_cursor(since: dt.datetime) -> str:
    return json.dumps({"updated_after": since.astimezone(dt.UTC).isoformat()})


def build_late_scenes_sensor(job_name: str, settings: LateDataConfig) -> SensorDefinition:
    # A function of the settings: the polling interval is configuration.
    if settings.lookback_days is not None:
        days = f"the last {settings.lookback_days} acquisition days"
    else:
        days = (
            "every partition day where the API filters on `updated` (else the last "
            f"{settings.unfiltered_lookback_days} acquisition days)"
        )

    decorate = sensor(
        name=SENSOR_NAME,
        # Named, not passed: the object define_asset_job returns has no public type.
        job_name=job_name,
        minimum_interval_seconds=settings.minimum_interval_seconds,
        description=(
            f"Polls the STAC API for items updated since {settings.cursor_overlap_hours:g} h "
            f"before the cursor over {days} and every registered AOI; an item is late "
            "for an AOI it intersects when that (day, AOI) was materialized without it. Records "
            "late ones under late_data/{day}/ and requests one run per affected (day, AOI)."
        ),
    )

    @decorate
    def late_scenes_sensor(
        context: SensorEvaluationContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
        notifier: NotifierResource,
    ) -> SensorResult | SkipReason:
        now = dt.datetime.now(dt.UTC)
        since = parse_cursor(context.cursor)
        search_settings = stac.settings()
        client = open_client(search_settings)
        watch = watch_window(
            today=now.date(),
            start_date=DAYS.start.date(),
            cursor=since,
            overlap=dt.timedelta(hours=settings.cursor_overlap_hours),
            server_filter=filter_mode(client) != "client",
            lookback_days=settings.lookback_days,
            unfiltered_lookback_days=settings.unfiltered_lookback_days,
        )
        store = object_store.store()
        registered = set(context.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME))
        # Retired AOIs are not watched: no runs for them from their retirement day on. One
        # retired from a later day is still active (the schedule runs it until then).
        records = [
            r
            for r in registry.load_all(store)
            if r.name in registered and (r.retired_on is None or now.date() < r.retired_on)
        ]
        if not records:
            return SkipReason("no registered AOI to watch (run `aois sync` or send a request)")
        queries = [AoiQuery(a.name, a.geojson, a.bbox) for a in (r.config() for r in records)]
        items = search_updated_since(
            client, search_settings, queries, watch.first_day, watch.last_day, watch.updated_after
        )
        if not items:
            return SkipReason(f"no item {watch.describe()}")

        @cache
        def materialized_at(part: Partition) -> dt.datetime | None:
            found = context.instance.fetch_materializations(
                AssetRecordsFilter(asset_key=STAC_ITEMS, asset_partitions=[partition_key(part)]),
                limit=1,
            ).records
            return dt.datetime.fromtimestamp(found[0].timestamp, dt.UTC) if found else None

        @cache
        def seen(part: Partition) -> Mapping[str, str]:
            # A materialized partition whose item list is gone saw nothing we can vouch for.
            key = items_key(stac.collection, part)
            if store.head(key) is None:
                return {}
            meta = json.loads(store.get_bytes(key)).get("geospatial_pipeline", {})
            return dict(meta.get("seen", {}))

        @cache
        def quarantined(part: Partition) -> Mapping[str, str]:
            # Items band_rasters could not land (a 404 while the files were still being
            # uploaded, say): seen, but not used, so their partition is re-run.
            key = manifest_key(stac.collection, part)
            if store.head(key) is None:
                return {}
            entries = json.loads(store.get_bytes(key)).get("quarantined", [])
            return {str(e["id"]): str(e["reason"]) for e in entries}

        verdict = judge(
            items,
            materialized_at=materialized_at,
            seen=seen,
            quarantined=quarantined,
            first_day=DAYS.start.date(),
            last_day=watch.last_day,
        )
        by_item: dict[tuple[dt.date, str], list[LateItem]] = defaultdict(list)
        by_part: dict[Partition, list[LateItem]] = defaultdict(list)
        for late in verdict.late:
            by_item[(late.partition, late.item_id)].append(late)
            by_part[late.part].append(late)
            context.log.info("late item %s for %s: %s", late.item_id, late.part, late.reason)
        recorded: list[LateItem] = []
        for (day, item_id), lates in sorted(by_item.items()):
            key = late_record_key(day, item_id)
            record = late_record(lates, now)
            # The overlap window brings recorded items back: keep the first record (and
            # its detection time) while the content and its AOIs are the same.
            if store.head(key) is None or _differs(json.loads(store.get_bytes(key)), record):
                store.put_bytes(key, dumps(record), "application/json")
                recorded += lates
        requests = [
            RunRequest(
                partition_key=partition_key(part),
                run_key=run_key(part, lates),
                tags={
                    TRIGGER_TAG: SENSOR_NAME,
                    "geospatial_pipeline/late_items": ",".join(i.item_id for i in lates)[:1000],
                },
            )
            for part, lates in sorted(by_part.items())
        ]
        # Only now that every record is written may the cursor move past these items.
        newest_seen = max((u for u in (item_updated(raw) for raw, _ in items) if u), default=since)
        cursor = make_cursor(max(newest_seen, since))
        if not requests:
            return SensorResult(
                skip_reason=(
                    f"none of the {len(items)} item(s) {watch.describe()} is late "
                    "(seen unchanged by its partition's run, or the partition not "
                    "materialized yet)"
                ),
                cursor=cursor,
            )
        # Only what this tick recorded: items brought back by the overlap are known.
        send_late_scenes(
            notifier,
            recorded,
            asset_path=STAC_ITEMS.path,
            trigger_tag=(TRIGGER_TAG, SENSOR_NAME),
            log=context.log,
        )
        return SensorResult(run_requests=requests, cursor=cursor)

    return late_scenes_sensor


def _differs(stored: Mapping[str, object], record: Mapping[str, object]) -> bool:
    return (
        stored.get("fingerprint") != record["fingerprint"] or stored.get("aois") != record["aois"]
    )
