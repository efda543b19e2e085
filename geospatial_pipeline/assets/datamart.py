"""Datamart, per (date, AOI): daily statistics, per-scene quality and the product catalog
in the warehouse (the partition's rows replaced on every run), from the partition's
product manifests."""

import datetime as dt
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.assets.catalog import STAC_CATALOG
from geospatial_pipeline.assets.ingest import load_manifest
from geospatial_pipeline.assets.preview import (
    human_bytes,
    inline_images,
    table,
    warehouse_table,
)
from geospatial_pipeline.assets.runs import (
    PartitionOutcome,
    check_each,
    materialize_each,
    run_partitions,
)
from geospatial_pipeline.assets.transform import NDVI_COMPOSITE, SCENE_PRODUCTS
from geospatial_pipeline.errors import PipelineError
from geospatial_pipeline.layout import Partition, partition_catalog_key, processed_prefix
from geospatial_pipeline.location import WAREHOUSE_KIND
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import BACKFILL_POLICY, PARTITIONS
from geospatial_pipeline.raster import stats as raster_stats
from geospatial_pipeline.raster.chart import CHART_SIZE_PX, HISTORY_DAYS, ndvi_history_png
from geospatial_pipeline.raster.cog import gdal_env
from geospatial_pipeline.raster.scene import strip_rows
from geospatial_pipeline.raster.stats import SceneSources, grid_of
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.transform import TransformResource
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.stac.publish import (
    COMPOSITE_ID,
    layer_key,
    partition_products,
    scene_products_of,
)
from geospatial_pipeline.storage.object_store import ObjectStore
from geospatial_pipeline.warehouse.tables import DAILY_AOI_STATS, PRODUCT_CATALOG, SCENE_QUALITY

DAILY_STATS_KEY = AssetKey("daily_aoi_stats")
PRODUCT_CATALOG_KEY = AssetKey("product_catalog")
SCENE_QUALITY_KEY = AssetKey("scene_quality")
# Bumped by hand whenever a change alters the rows the asset writes.
DAILY_STATS_VERSION = "1"
SCENE_QUALITY_VERSION = "1"
PRODUCT_CATALOG_VERSION = "1"


def _timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def scene_quality_rows(day: dt.date, products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``scene_quality`` row per scene x AOI: its offset decision and pixel shares."""
    rows: list[dict[str, Any]] = []
    for p in sorted(
        (p for p in products if p["item_id"] != COMPOSITE_ID),
        key=lambda p: (p["aoi"], p["item_id"]),
    ):
        d = p["decision"]
        rows.append(
            {
                "partition_date": day,
                "item_id": p["item_id"],
                "aoi": p["aoi"],
                "processing_baseline": d["processing_baseline"],
                "boa_offset_applied_flag": d["boa_offset_applied_flag"],
                "metadata_offset_present": d["metadata_offset_present"],
                "pixel_verdict": d["pixel_verdict"],
                "offset_dn": d["offset_dn"],
                "decided_by": d["decided_by"],
                "disagreement": d["disagreement"],
                "valid_pixel_fraction": p["stats"]["valid_pixel_fraction"],
                "cloud_fraction": p["stats"]["cloud_fraction"],
                "shadow_fraction": p["stats"]["shadow_fraction"],
                "decision": d,
            }
        )
    return rows


def daily_stats_rows(
    day: dt.date,
    products: list[dict[str, Any]],
    band_objects: list[dict[str, Any]],
    aois: dict[str, BaseGeometry],
    store: ObjectStore,
    block_pixels: int,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``daily_aoi_stats`` rows (one per AOI, over the day's mosaic:
    :mod:`geospatial_pipeline.raster.stats`) and the observed pixels per AOI."""
    scl_keys = {
        (o["item_id"], o["aoi"]): o["key"] for o in band_objects if o["band"] == "scl" and o["key"]
    }
    scenes = [p for p in products if p["item_id"] != COMPOSITE_ID]
    composites = {p["aoi"]: p for p in products if p["item_id"] == COMPOSITE_ID}
    rows: list[dict[str, Any]] = []
    observed: dict[str, int] = {}
    for aoi in sorted({p["aoi"] for p in scenes}):
        mine = sorted((p for p in scenes if p["aoi"] == aoi), key=lambda p: p["item_id"])
        if aoi not in aois:
            raise PipelineError(f"AOI {aoi!r} has products but is not configured (scope.aois)")
        if aoi not in composites:
            raise PipelineError(
                f"AOI {aoi!r} has no {COMPOSITE_ID} product in the products manifest"
            )
        missing = [p["item_id"] for p in mine if (p["item_id"], aoi) not in scl_keys]
        if missing:
            raise PipelineError(f"AOI {aoi!r}: no ingested scl object for item(s) {missing}")
        composite = store.gdal_path(layer_key(composites[aoi], "ndvi_median"))
        sources = [
            SceneSources(
                item_id=p["item_id"],
                red=store.gdal_path(layer_key(p, "red")),
                ndwi=store.gdal_path(layer_key(p, "ndwi")),
                scl=store.gdal_path(scl_keys[(p["item_id"], aoi)]),
            )
            for p in mine
        ]
        width = grid_of(composite).width
        stats = raster_stats.daily_aoi_stats(
            aois[aoi], sources, composite, block_rows=strip_rows(block_pixels, width)
        )
        observed[aoi] = stats.pixels_observed
        rows.append(
            {
                "partition_date": day,
                "aoi": aoi,
                **stats.row(),
                "offset_decisions": [{"item_id": p["item_id"], **p["decision"]} for p in mine],
            }
        )
    # A configured AOI without a scene that day still gets its row: "0 scenes" is visible in
    # the table (and to the check of usable days) instead of looking like a missing day.
    for aoi in sorted(set(aois) - {row["aoi"] for row in rows}):
        empty = dict.fromkeys((c.name for c in DAILY_AOI_STATS.columns), None)
        rows.append(
            {**empty, "partition_date": day, "aoi": aoi, "scenes_used": 0, "offset_decisions": []}
        )
    return sorted(rows, key=lambda r: r["aoi"]), observed


def days_without_usable_scene(
    history: dict[dt.date, list[dict[str, Any]]], aois: list[str]
) -> dict[str, int]:
    """For each AOI whose every day of ``history`` has a row, all without a usable scene
    (one with valid pixels): how many such days. AOIs with a usable day, or a day with no
    row (not materialized, or the AOI added since), are left out."""
    out: dict[str, int] = {}
    for aoi in aois:
        rows = [
            next((r for r in day_rows if r["aoi"] == aoi), None) for day_rows in history.values()
        ]
        if (
            history
            and all(r is not None for r in rows)
            and not any(
                r["scenes_used"] and (r["valid_pixel_fraction"] or 0.0) > 0.0 for r in rows if r
            )
        ):
            out[aoi] = len(rows)
    return out


def product_rows(day: dt.date, products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "partition_date": day,
            "item_id": p["item_id"],
            "aoi": p["aoi"],
            "product": layer["product"],
            "object_url": layer["url"],
            "object_key": layer["key"],
            "bytes": layer["bytes"],
            "sha256": layer["sha256"],
            "stac_item_url": p["stac_item_url"],
            "created": _timestamp(p["created"]),
        }
        for p in products
        for layer in p["layers"]
    ]


@asset(
    key=DAILY_STATS_KEY,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[SCENE_PRODUCTS, NDVI_COMPOSITE],
    group_name="datamart",
    kinds={WAREHOUSE_KIND, "table"},
    code_version=DAILY_STATS_VERSION,
    description=(
        "Per AOI and day, over one mosaic (each AOI pixel counted once where scenes "
        "overlap): scenes used, valid/cloud/shadow fractions from SCL, NDVI "
        "mean/median/p10/p90 of the daily composite, NDWI mean and the offset decisions."
    ),
)
def daily_aoi_stats(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
    transform: TransformResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (
                part,
                _daily_aoi_stats_of(context, stac, object_store, warehouse, transform, part, aoi),
            )
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _daily_aoi_stats_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
    transform: TransformResource,
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    store = object_store.store()
    ingested = load_manifest(object_store, stac.collection, part)
    with gdal_env(object_store.gdal_options(), object_store.gdal_session()):
        stats, observed = daily_stats_rows(
            part.day,
            partition_products(store, stac.collection, part),
            ingested["objects"],
            {aoi.name: aoi.shape},
            store,
            transform.block_pixels,
        )
    written = warehouse.replace_partition(DAILY_AOI_STATS, (part.day, part.aoi), stats)
    scenes = {row["aoi"]: row["scenes_used"] for row in stats}
    first_day = part.day - dt.timedelta(days=HISTORY_DAYS - 1)
    # One query for the AOI's whole window, today's row included as just committed.
    history = warehouse.fetch_range(DAILY_AOI_STATS, part.aoi, first_day, part.day)
    chart = ndvi_history_png(history, part.aoi, first_day, part.day)
    return PartitionOutcome(
        metadata={
            "rows": written,
            **warehouse_table(DAILY_AOI_STATS, warehouse, written),
            "scenes_per_aoi": MetadataValue.text(
                ", ".join(f"{aoi}: {n} scene{'s' * (n != 1)}" for aoi, n in scenes.items())
            ),
            "pixels_observed": sum(observed.values()),
            "ndvi_history": inline_images(
                [(f"{part.aoi}: NDVI and pixel fractions, last {HISTORY_DAYS} days", chart)],
                long_side=max(CHART_SIZE_PX),
            ),
            "history_days_with_rows": len(history),
            "preview": table(
                [
                    {
                        k: (round(v, 4) if isinstance(v, float) else v)
                        for k, v in row.items()
                        if k not in ("offset_decisions", "partition_date")
                    }
                    for row in stats
                ],
                [c.name for c in DAILY_AOI_STATS.columns if c.name not in _NOT_PREVIEWED],
            ),
        }
    )


_NOT_PREVIEWED = ("offset_decisions", "partition_date")


@asset(
    key=SCENE_QUALITY_KEY,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[SCENE_PRODUCTS],
    group_name="datamart",
    kinds={WAREHOUSE_KIND, "table"},
    code_version=SCENE_QUALITY_VERSION,
    description="One row per scene x AOI: the BOA-offset decision by metadata and by "
    "pixels, and the valid/cloud/shadow pixel shares.",
)
def scene_quality(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (part, _scene_quality_of(context, stac, object_store, warehouse, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _scene_quality_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    scenes = scene_products_of(object_store.store(), stac.collection, part)
    rows = scene_quality_rows(part.day, scenes)
    written = warehouse.replace_partition(SCENE_QUALITY, (part.day, part.aoi), rows)
    return PartitionOutcome(
        metadata={
            "rows": written,
            **warehouse_table(SCENE_QUALITY, warehouse, written),
            "disagreements": sum(1 for r in rows if r["disagreement"]),
            "preview": table(
                [
                    {
                        "item_id": r["item_id"],
                        "offset_dn": r["offset_dn"],
                        "decided_by": r["decided_by"],
                        "disagreement": r["disagreement"],
                        "valid %": round(100 * r["valid_pixel_fraction"], 1),
                        "cloud %": round(100 * r["cloud_fraction"], 1),
                        "shadow %": round(100 * r["shadow_fraction"], 1),
                    }
                    for r in rows
                ],
                [
                    "item_id",
                    "offset_dn",
                    "decided_by",
                    "disagreement",
                    "valid %",
                    "cloud %",
                    "shadow %",
                ],
            ),
        }
    )


@asset(
    key=PRODUCT_CATALOG_KEY,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    # After the day's sub-catalog: objects no product references are swept here, and
    # the sub-catalog must already link only the day's current items.
    deps=[SCENE_PRODUCTS, NDVI_COMPOSITE, STAC_CATALOG],
    group_name="datamart",
    kinds={WAREHOUSE_KIND, "table"},
    code_version=PRODUCT_CATALOG_VERSION,
    description="One row per published product object: scene, AOI, product, object "
    "URL, bytes, checksum, STAC item URL, created.",
)
def product_catalog(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (part, _product_catalog_of(context, stac, object_store, warehouse, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _product_catalog_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    store = object_store.store()
    products = partition_products(store, stac.collection, part)
    rows = product_rows(part.day, products)
    written = warehouse.replace_partition(PRODUCT_CATALOG, (part.day, part.aoi), rows)
    # Only now that the rows are committed may the objects no product references go.
    referenced = {partition_catalog_key(stac.collection, part)} | {
        key
        for product in products
        for key in (
            product["stac_item_key"],
            *(e["key"] for e in product["layers"]),
            *(e["key"] for e in product.get("quicklooks", [])),
        )
    }
    removed = sorted(
        o.key
        for o in store.list(processed_prefix(stac.collection, part))
        if o.key not in referenced
    )
    for key in removed:
        store.delete(key)
    size = sum(r["bytes"] for r in rows)
    return PartitionOutcome(
        metadata={
            "rows": written,
            **warehouse_table(PRODUCT_CATALOG, warehouse, written),
            "objects_removed": len(removed),
            "size": human_bytes(size),
            "bytes": size,
            "preview": table(
                [
                    {
                        "item_id": r["item_id"],
                        "product": r["product"],
                        "size": human_bytes(r["bytes"]),
                        "object_url": r["object_url"],
                    }
                    for r in rows
                ],
                ["item_id", "product", "size", "object_url"],
            ),
        }
    )


@asset_check(
    asset=DAILY_STATS_KEY,
    partitions_def=PARTITIONS,
    description="Warns when an AOI has had no usable scene (one with valid pixels) on "
    "any of its last transform.max_days_without_usable_scene materialized days.",
)
def aoi_has_usable_scenes(
    context: AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    transform: TransformResource,
) -> AssetCheckResult:
    def one(part: Partition) -> AssetCheckResult:
        day = part.day
        n = transform.max_days_without_usable_scene
        # The AOI's own last n days (bounded: the check's cost does not grow with history).
        history = {
            d: warehouse.fetch_partition(DAILY_AOI_STATS, (d, part.aoi))
            for d in (day - dt.timedelta(days=i) for i in range(n))
        }
        stale = days_without_usable_scene(history, [part.aoi])
        return AssetCheckResult(
            passed=not stale,
            severity=AssetCheckSeverity.WARN,
            description=(
                "; ".join(
                    f"{aoi}: no usable scene in the last {k} days" for aoi, k in stale.items()
                )
                or f"every AOI had a usable scene within {n} days (or has less history)"
            ),
            metadata={
                "days_checked": n,
                "until": day.isoformat(),
                "aois_without_usable_scene": MetadataValue.json(sorted(stale)),
            },
        )

    return check_each(context, one)


@asset_check(
    asset=PRODUCT_CATALOG_KEY,
    blocking=True,
    partitions_def=PARTITIONS,
    description="Product objects in storage and catalog rows match one to one.",
)
def products_reconcile(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
) -> AssetCheckResult:
    def one(part: Partition) -> AssetCheckResult:
        stored = {
            r["object_key"]: r["bytes"]
            for r in warehouse.fetch_partition(PRODUCT_CATALOG, (part.day, part.aoi))
        }
        actual = {
            o.key: o.size
            for o in object_store.store().list(processed_prefix(stac.collection, part))
            if o.key.endswith(".tif")
        }
        orphans = sorted(set(actual) - set(stored))
        missing = sorted(set(stored) - set(actual))
        sizes = sorted(k for k in set(actual) & set(stored) if actual[k] != stored[k])
        return AssetCheckResult(
            passed=not (orphans or missing or sizes),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "objects": len(actual),
                "rows": len(stored),
                "objects_without_row": MetadataValue.json(orphans[:50]),
                "rows_without_object": MetadataValue.json(missing[:50]),
                "size_mismatch": MetadataValue.json(sizes[:50]),
            },
        )

    return check_each(context, one)
