"""Ingest, per (date, AOI): the STAC items over the AOI, then the AOI windows of their
bands as COGs."""

import json
import warnings
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    PreviewWarning,
    asset,
)

from geospatial_pipeline.assets.preview import human_bytes, location, table
from geospatial_pipeline.assets.runs import PartitionOutcome, materialize_each, run_partitions
from geospatial_pipeline.deployment import RASTER_POOL, heavy_op_tags
from geospatial_pipeline.layout import Partition, band_key, items_key, manifest_key, raw_prefix
from geospatial_pipeline.location import STORAGE_KIND
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import BACKFILL_POLICY, PARTITIONS
from geospatial_pipeline.raster.cog import gdal_env
from geospatial_pipeline.raster.extract import extract_band_windows, plan_band_tasks
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac.itemcollection import dumps, from_item_collection, to_item_collection
from geospatial_pipeline.stac.publish import invalid_cogs
from geospatial_pipeline.stac.search import DayItems
from geospatial_pipeline.storage.verify import MISSING, changed_since_published

# Partitioned checks are marked preview; they are deliberate (a check's result belongs to
# the day it checked, and a check re-run alone targets one day, as the asset does), so say
# it once, here, where the first of them is declared, rather than on every check.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning
)

STAC_ITEMS = AssetKey("stac_items")
BAND_RASTERS = AssetKey("band_rasters")


def load_items(store_res: ObjectStoreResource, collection: str, part: Partition) -> DayItems:
    return from_item_collection(
        json.loads(store_res.store().get_bytes(items_key(collection, part)))
    )


def load_manifest(store_res: ObjectStoreResource, collection: str, part: Partition) -> Any:
    return json.loads(store_res.store().get_bytes(manifest_key(collection, part)))


def scope_bands(scope: ScopeResource) -> list[str]:
    """The band keys to fetch. The whole scope resource is re-validated first: a value
    edited in the launchpad skips the YAML validation, and must fail with the file's
    errors before anything is searched or written (the run's AOI geometry comes from the
    registry, but a run configured with a broken scope is refused all the same)."""
    scope.aoi_configs()
    return list(scope.bands)


@asset(
    key=STAC_ITEMS,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    group_name="ingest",
    kinds={"stac", STORAGE_KIND},
    description=(
        "The day's STAC items over the partition's AOI (validated, deduplicated: newest "
        "processing wins), persisted as a GeoJSON ItemCollection under "
        "stac/{collection}/{date}/{aoi}/ so a run is reproducible."
    ),
)
def stac_items(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    scope: ScopeResource,
    object_store: ObjectStoreResource,
) -> MaterializeResult:
    bands = scope_bands(scope)
    return materialize_each(
        context,
        [
            (part, _search(context, stac, object_store, bands, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _search(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    bands: list[str],
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    found = stac.search_day(part.day, [aoi.config()], bands)
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
        items_key(stac.collection, part), body, "application/geo+json"
    )
    scenes = found.scenes(bands)
    preview = [
        {
            "id": s.id,
            "acquired": s.acquired_at.isoformat(),
            "tile": s.mgrs_tile,
            "cloud %": s.cloud_cover,
            "baseline": s.processing_baseline,
        }
        for s in scenes.values()
    ]
    return PartitionOutcome(
        metadata={
            "items": len(found.items),
            "matched_by_api": found.matched,
            "invalid_items": MetadataValue.json(found.invalid),
            "superseded_items": MetadataValue.json(
                [{"id": s.item_id, "by": s.superseded_by} for s in found.superseded]
            ),
            "dropped_over_limit": MetadataValue.json(found.dropped_over_limit),
            # Newest processings above stac.max_cloud_cover: their older twins stay out.
            "too_cloudy": MetadataValue.json(found.too_cloudy),
            "cloud_filter": found.filter_mode,
            "object": location(put.url),
            "size": human_bytes(put.size),
            "bytes": put.size,
            "preview": table(preview, ["id", "acquired", "tile", "cloud %", "baseline"]),
        }
    )


@asset(
    key=BAND_RASTERS,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[STAC_ITEMS],
    group_name="ingest",
    kinds={"cog", STORAGE_KIND},
    description=(
        "The AOI window of each configured band of each scene, read with HTTP range "
        "requests and published as a COG under raw/{collection}/{date}/{aoi}/{item}/. "
        "An item with a bad input (missing band asset, 404, not a raster, corrupt or "
        "truncated file) is quarantined and the rest of the day lands; objects of items "
        "that left the day are removed by scene_metadata once its rows are committed."
    ),
    check_specs=[
        AssetCheckSpec(
            "cogs_valid",
            asset=BAND_RASTERS,
            blocking=True,
            partitions_def=PARTITIONS,
            description="Every band object is the COG validated before its PUT: stored size and "
            "SHA-256 equal the manifest's (objects that differ are validated again from "
            "storage and reported).",
        ),
        AssetCheckSpec(
            "no_quarantined_items",
            asset=BAND_RASTERS,
            partitions_def=PARTITIONS,
            # Not blocking: the good items of the day must still flow downstream.
            blocking=False,
            description=(
                "Every item of the day landed. Fails naming each quarantined item and "
                "why; downstream assets skip those items and a re-run retries them."
            ),
        ),
    ],
    op_tags=heavy_op_tags(),
    pool=RASTER_POOL,
)
def band_rasters(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    scope: ScopeResource,
    object_store: ObjectStoreResource,
) -> MaterializeResult:
    bands = scope_bands(scope)
    return materialize_each(
        context,
        [
            (part, _cut_windows(context, stac, object_store, bands, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _cut_windows(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    bands: list[str],
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    found = load_items(object_store, stac.collection, part)
    aois = {aoi.name: aoi.shape}
    items = {raw["id"]: raw for raw in found.items}
    tasks, missing_bands = plan_band_tasks(
        items,
        found.by_aoi,
        [a for a in found.by_aoi if a in aois],
        bands,
        lambda _aoi, item_id, band: band_key(stac.collection, part, item_id, band),
    )
    store = object_store.store()
    options = object_store.gdal_options()
    session = object_store.gdal_session()
    extraction = extract_band_windows(tasks, aois, store, gdal_options=options, session=session)
    extraction.quarantine(missing_bands)
    extraction.require_some_landed(
        sorted({t.item_id for t in tasks} | {f.item_id for f in missing_bands})
    )
    results = extraction.results
    quarantined = extraction.quarantine_entries()
    for entry in quarantined:
        context.log.warning("quarantined item %s: %s", entry["id"], entry["reason"])
    published = {r.key for r in results if r.key}
    # Objects of items that left the day (or were quarantined) stay until scene_metadata
    # has committed rows without them: deleting them here would leave the committed
    # rows pointing at missing objects if anything failed in between.
    manifest = extraction.manifest(part.day.isoformat(), stac.collection)
    store.put_bytes(manifest_key(stac.collection, part), dumps(manifest), "application/json")

    # Each object was validated from its bytes before the PUT (extract._run_task): one whose
    # stored size and SHA-256 are the manifest's is that COG; only the others are read back.
    changed = changed_since_published(store, [e for e in manifest["objects"] if e["key"]])
    failures = [f"{key}: {why}" for key, why in sorted(changed.items())]
    with gdal_env(options, session):
        failures += invalid_cogs(store, sorted(k for k, why in changed.items() if why != MISSING))
    written = [r for r in results if r.key]
    return PartitionOutcome(
        metadata={
            "objects": len(written),
            "objects_written": sum(1 for r in written if r.written),
            "objects_unchanged": sum(1 for r in written if not r.written),
            "no_overlap": sum(1 for r in results if not r.key),
            "items_quarantined": len(quarantined),
            "quarantined": MetadataValue.json(quarantined),
            "size": human_bytes(sum(r.bytes for r in written)),
            "size_written": human_bytes(sum(r.bytes for r in written if r.written)),
            "bytes": sum(r.bytes for r in written),
            "bytes_written": sum(r.bytes for r in written if r.written),
            "pixels": sum(r.window["width"] * r.window["height"] for r in written if r.window),
            "read_seconds_sum": round(sum(r.read_s for r in results), 3),
            "prefix": location(store.url(raw_prefix(stac.collection, part))),
            "preview": table(
                [
                    {
                        "key": r.key,
                        "size": human_bytes(r.bytes),
                        "window": f"{r.window['width']}x{r.window['height']}" if r.window else "",
                        "written": r.written,
                    }
                    for r in written
                ],
                ["key", "size", "window", "written"],
            ),
        },
        checks=[
            AssetCheckResult(
                check_name="cogs_valid",
                passed=not failures,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "verified": len(published),
                    "invalid": MetadataValue.json(failures[:50]),
                },
            ),
            AssetCheckResult(
                check_name="no_quarantined_items",
                passed=not quarantined,
                severity=AssetCheckSeverity.ERROR,
                description=(
                    f"{len(quarantined)} item(s) skipped: "
                    + "; ".join(f"{q['id']} ({q['reason']})" for q in quarantined)
                    if quarantined
                    else "every item landed"
                )[:2000],
                metadata={
                    "items_quarantined": len(quarantined),
                    "quarantined": MetadataValue.json(
                        [{"id": q["id"], "reason": q["reason"]} for q in quarantined]
                    ),
                    "items_landed": len({r.task.item_id for r in results}),
                },
            ),
        ],
    )
