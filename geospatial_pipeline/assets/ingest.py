"""Ingest: the day's STAC items, then the AOI windows of their bands as COGs."""

import json
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from geospatial_pipeline.assets.preview import markdown_table
from geospatial_pipeline.deployment import heavy_op_tags
from geospatial_pipeline.layout import band_key, items_key, manifest_key, raw_prefix
from geospatial_pipeline.partitions import BACKFILL_POLICY, partition_day
from geospatial_pipeline.raster.cog import gdal_env, validate_cog_path
from geospatial_pipeline.raster.extract import BandTask, extract_band_windows
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac.itemcollection import dumps, from_item_collection, to_item_collection
from geospatial_pipeline.stac.search import DayItems

STAC_ITEMS = AssetKey("stac_items")
BAND_RASTERS = AssetKey("band_rasters")


def load_day_items(store_res: ObjectStoreResource, collection: str, partition_key: str) -> DayItems:
    day = partition_day(partition_key)
    doc = json.loads(store_res.store().get_bytes(items_key(collection, day)))
    return from_item_collection(doc)


def load_manifest(store_res: ObjectStoreResource, collection: str, partition_key: str) -> Any:
    day = partition_day(partition_key)
    return json.loads(store_res.store().get_bytes(manifest_key(collection, day)))


def build_ingest_assets(
    partitions: DailyPartitionsDefinition, storage_kind: str
) -> list[AssetsDefinition]:
    @asset(
        key=STAC_ITEMS,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        group_name="ingest",
        kinds={"stac", storage_kind},
        description=(
            "The day's STAC items over every AOI (validated, deduplicated: newest processing "
            "wins), persisted as a GeoJSON ItemCollection so a run is reproducible."
        ),
    )
    def stac_items(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = partition_day(context.partition_key)
        aois = scope.aoi_configs()
        found = stac.search_day(day, aois, scope.bands)
        for bad in found.invalid:
            context.log.warning("skipped invalid item %s: %s", bad["id"], bad["reason"])
        if found.dropped_over_limit:
            context.log.warning(
                "stac.max_items_per_day=%d: dropped the %d cloudiest item(s)",
                stac.max_items_per_day,
                len(found.dropped_over_limit),
            )
        body = dumps(to_item_collection(found, api_url=stac.api_url, collection=stac.collection))
        put = object_store.store().put_bytes(
            items_key(stac.collection, day), body, "application/geo+json"
        )
        scenes = found.scenes(scope.bands)
        preview = [
            {
                "id": s.id,
                "acquired": s.acquired_at.isoformat(),
                "tile": s.mgrs_tile,
                "cloud %": s.cloud_cover,
                "baseline": s.processing_baseline,
                "aois": ",".join(a for a, ids in found.by_aoi.items() if s.id in ids),
            }
            for s in scenes.values()
        ]
        return MaterializeResult(
            metadata={
                "items": len(found.items),
                "matched_by_api": found.matched,
                "items_per_aoi": MetadataValue.json({k: len(v) for k, v in found.by_aoi.items()}),
                "invalid_items": MetadataValue.json(found.invalid),
                "superseded_items": MetadataValue.json(
                    [{"id": s.item_id, "by": s.superseded_by} for s in found.superseded]
                ),
                "dropped_over_limit": MetadataValue.json(found.dropped_over_limit),
                "cloud_filter": found.filter_mode,
                "object": MetadataValue.url(put.url) if put.url.startswith("s3://") else put.url,
                "bytes": put.size,
                "preview": MetadataValue.md(markdown_table(preview)),
            }
        )

    @asset(
        key=BAND_RASTERS,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[STAC_ITEMS],
        group_name="ingest",
        kinds={"cog", storage_kind},
        description=(
            "The AOI window of each configured band of each scene, read with HTTP range "
            "requests and published as a COG under raw/{collection}/{date}/{aoi}/{item}/."
        ),
        check_specs=[
            AssetCheckSpec(
                "cogs_valid",
                asset=BAND_RASTERS,
                blocking=True,
                description="Every published band object opens and passes rio-cogeo validation.",
            )
        ],
        op_tags=heavy_op_tags(),
    )
    def band_rasters(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = partition_day(context.partition_key)
        found = load_day_items(object_store, stac.collection, context.partition_key)
        aois = {a.name: a.shape for a in scope.aoi_configs()}
        items = {raw["id"]: raw for raw in found.items}
        tasks = [
            BandTask(
                item_id=item_id,
                aoi=aoi,
                band=band,
                href=items[item_id]["assets"][band]["href"],
                key=band_key(stac.collection, day, aoi, item_id, band),
            )
            for aoi, ids in sorted(found.by_aoi.items())
            if aoi in aois
            for item_id in ids
            for band in scope.bands
        ]
        store = object_store.store()
        options = object_store.gdal_options()
        session = object_store.gdal_session()
        results = extract_band_windows(tasks, aois, store, gdal_options=options, session=session)
        published = {r.key for r in results if r.key}
        # Objects of items that left the day (superseded, now cloudier than the limit...)
        # would otherwise linger and disagree with the warehouse.
        stale = [
            o.key for o in store.list(raw_prefix(stac.collection, day)) if o.key not in published
        ]
        for key in stale:
            store.delete(key)
        manifest = {
            "day": day.isoformat(),
            "collection": stac.collection,
            "objects": [r.manifest_entry() for r in results],
        }
        store.put_bytes(manifest_key(stac.collection, day), dumps(manifest), "application/json")

        failures: list[str] = []
        with gdal_env(options, session):
            for key in sorted(published):
                check = validate_cog_path(store.gdal_path(key))
                if not check.valid:
                    failures.append(f"{key}: {'; '.join(check.errors)}")
        written = [r for r in results if r.key]
        return MaterializeResult(
            metadata={
                "objects": len(written),
                "objects_written": sum(1 for r in written if r.written),
                "objects_unchanged": sum(1 for r in written if not r.written),
                "no_overlap": sum(1 for r in results if not r.key),
                "stale_deleted": len(stale),
                "bytes": sum(r.bytes for r in written),
                "bytes_written": sum(r.bytes for r in written if r.written),
                "pixels": sum(r.window["width"] * r.window["height"] for r in written if r.window),
                "read_seconds_sum": round(sum(r.read_s for r in results), 3),
                "prefix": store.url(raw_prefix(stac.collection, day)),
                "preview": MetadataValue.md(
                    markdown_table(
                        [
                            {
                                "key": r.key,
                                "bytes": r.bytes,
                                "window": f"{r.window['width']}x{r.window['height']}"
                                if r.window
                                else "",
                                "written": r.written,
                            }
                            for r in written[:20]
                        ]
                    )
                ),
            },
            check_results=[
                AssetCheckResult(
                    check_name="cogs_valid",
                    passed=not failures,
                    severity=AssetCheckSeverity.ERROR,
                    metadata={
                        "validated": len(published),
                        "invalid": MetadataValue.json(failures[:50]),
                    },
                )
            ],
        )

    return [stac_items, band_rasters]
