"""Warehouse: one scene-metadata row per item of the (date, AOI) partition, replaced per
partition."""

from collections import defaultdict
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from geospatial_pipeline.assets.ingest import (
    BAND_RASTERS,
    STAC_ITEMS,
    load_items,
    load_manifest,
    scope_bands,
)
from geospatial_pipeline.assets.preview import human_bytes, table, warehouse_table
from geospatial_pipeline.assets.runs import PartitionOutcome, materialize_each, run_partitions
from geospatial_pipeline.layout import Partition, raw_prefix
from geospatial_pipeline.location import WAREHOUSE_KIND
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import BACKFILL_POLICY, PARTITIONS
from geospatial_pipeline.raster.extract import landed_by_aoi
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.stac.models import validate_item
from geospatial_pipeline.warehouse.scene_rows import scene_rows
from geospatial_pipeline.warehouse.tables import SCENE_METADATA

SCENE_METADATA_KEY = AssetKey("scene_metadata")


@asset(
    key=SCENE_METADATA_KEY,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[STAC_ITEMS, BAND_RASTERS],
    group_name="warehouse",
    kinds={WAREHOUSE_KIND, "table"},
    description=(
        "One row per scene x AOI: acquisition, tile, cloud cover, processing baseline, "
        "BOA-offset flag, footprint, band objects with sizes and checksums, and the full "
        "STAC properties. Re-running a partition replaces its rows; band objects no "
        "committed row references are removed only after the commit. Items band_rasters "
        "quarantined get no row."
    ),
    check_specs=[
        AssetCheckSpec(
            "objects_match_rows",
            asset=SCENE_METADATA_KEY,
            blocking=True,
            partitions_def=PARTITIONS,
            description=(
                "Every band object under the partition's prefix has its metadata row and "
                "every row's objects exist with the recorded size."
            ),
        )
    ],
)
def scene_metadata(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    scope: ScopeResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    bands = scope_bands(scope)
    return materialize_each(
        context,
        [
            (
                part,
                _scene_metadata_of(context, stac, scope, object_store, warehouse, bands, part, aoi),
            )
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _scene_metadata_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    scope: ScopeResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
    bands: list[str],
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    found = load_items(object_store, stac.collection, part)
    manifest = load_manifest(object_store, stac.collection, part)
    objects: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in manifest["objects"]:
        if entry["key"]:
            objects[(entry["item_id"], entry["aoi"])].append(entry)
    by_aoi = landed_by_aoi(found.by_aoi, manifest)
    landed = {item_id for ids in by_aoi.values() for item_id in ids}
    scenes = {
        raw["id"]: (raw, validate_item(raw, bands)) for raw in found.items if raw["id"] in landed
    }
    rows = scene_rows(part.day, by_aoi, scenes, objects)
    written = warehouse.replace_partition(SCENE_METADATA, (part.day, part.aoi), rows)

    # Check against what is really stored, not against what this step believes it wrote.
    stored_rows = warehouse.fetch_partition(SCENE_METADATA, (part.day, part.aoi))
    row_objects = {obj["key"]: obj["bytes"] for row in stored_rows for obj in row["band_objects"]}
    store = object_store.store()
    # Only now, with the rows committed, may objects no row references go (items that
    # left the day or were quarantined): every committed row's objects always exist.
    listed = list(store.list(raw_prefix(stac.collection, part)))
    removed = sorted(o.key for o in listed if o.key not in row_objects)
    for key in removed:
        store.delete(key)
    actual = {o.key: o.size for o in store.list(raw_prefix(stac.collection, part))}
    orphans = sorted(set(actual) - set(row_objects))
    missing = sorted(set(row_objects) - set(actual))
    size_mismatch = sorted(k for k in set(actual) & set(row_objects) if actual[k] != row_objects[k])
    passed = not (orphans or missing or size_mismatch)
    return PartitionOutcome(
        metadata={
            "rows": written,
            "rows_in_partition": len(stored_rows),
            **warehouse_table(SCENE_METADATA, warehouse, len(stored_rows)),
            "band_objects": len(row_objects),
            "band_size": human_bytes(sum(row_objects.values())),
            "band_bytes": sum(row_objects.values()),
            "objects_removed": len(removed),
            "preview": table(
                [
                    {
                        "item_id": r["item_id"],
                        "tile": r["mgrs_tile"],
                        "cloud_cover": r["cloud_cover"],
                        "baseline": r["processing_baseline"],
                        "objects": r["object_count"],
                        "size": human_bytes(r["object_bytes"]),
                    }
                    for r in rows
                ],
                ["item_id", "tile", "cloud_cover", "baseline", "objects", "size"],
            ),
        },
        checks=[
            AssetCheckResult(
                check_name="objects_match_rows",
                passed=passed,
                severity=AssetCheckSeverity.ERROR,
                metadata={
                    "objects": len(actual),
                    "row_objects": len(row_objects),
                    "objects_without_row": MetadataValue.json(orphans[:50]),
                    "rows_without_object": MetadataValue.json(missing[:50]),
                    "size_mismatch": MetadataValue.json(size_mismatch[:50]),
                },
            )
        ],
    )
