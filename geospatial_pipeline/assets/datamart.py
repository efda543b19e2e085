"""Datamart: daily AOI statistics, per-scene quality and the product catalog, in the
warehouse (partition rows replaced on every run)."""

import datetime as dt
from typing import Any

import numpy as np
import rasterio
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
from geospatial_pipeline.assets.transform import (
    ANALYSIS_READY,
    COMPOSITE_ID,
    load_products_manifest,
)
from geospatial_pipeline.layout import processed_prefix
from geospatial_pipeline.partitions import BACKFILL_POLICY, partition_day
from geospatial_pipeline.raster.cog import gdal_env
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.warehouse.tables import DAILY_AOI_STATS, PRODUCT_CATALOG, SCENE_QUALITY

DAILY_STATS_KEY = AssetKey("daily_aoi_stats")
PRODUCT_CATALOG_KEY = AssetKey("product_catalog")


def _timestamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _layer_values(store_res: ObjectStoreResource, product: dict[str, Any], name: str) -> np.ndarray:
    layer = next(e for e in product["layers"] if e["product"] == name)
    with rasterio.open(store_res.store().gdal_path(layer["key"])) as src:
        return _finite(src.read(1))


def daily_stats_rows(
    day: dt.date, products: list[dict[str, Any]], store_res: ObjectStoreResource
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stats_rows: list[dict[str, Any]] = []
    quality_rows: list[dict[str, Any]] = []
    scenes = [p for p in products if p["item_id"] != COMPOSITE_ID]
    for aoi in sorted({p["aoi"] for p in scenes}):
        mine = [p for p in scenes if p["aoi"] == aoi]
        data = sum(p["stats"]["pixels_with_data"] for p in mine)
        ndvi = np.concatenate([_layer_values(store_res, p, "ndvi") for p in mine])
        ndwi = np.concatenate([_layer_values(store_res, p, "ndwi") for p in mine])

        def share(key: str, rows: list[dict[str, Any]] = mine, total: int = data) -> float | None:
            if not total:
                return None
            return sum(p["stats"][key] * p["stats"]["pixels_with_data"] for p in rows) / total

        def stat(values: np.ndarray, fn: Any) -> float | None:
            return float(fn(values)) if values.size else None

        stats_rows.append(
            {
                "partition_date": day,
                "aoi": aoi,
                "scenes_used": len(mine),
                "pixels_in_aoi": max(p["stats"]["pixels_in_aoi"] for p in mine),
                "valid_pixel_fraction": share("valid_pixel_fraction"),
                "cloud_fraction": share("cloud_fraction"),
                "shadow_fraction": share("shadow_fraction"),
                "ndvi_mean": stat(ndvi, np.mean),
                "ndvi_median": stat(ndvi, np.median),
                "ndvi_p10": stat(ndvi, lambda v: np.percentile(v, 10)),
                "ndvi_p90": stat(ndvi, lambda v: np.percentile(v, 90)),
                "ndwi_mean": stat(ndwi, np.mean),
                "offset_decisions": [{"item_id": p["item_id"], **p["decision"]} for p in mine],
            }
        )
        for p in mine:
            d = p["decision"]
            quality_rows.append(
                {
                    "partition_date": day,
                    "item_id": p["item_id"],
                    "aoi": aoi,
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
    return stats_rows, quality_rows


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


def build_datamart_assets(
    partitions: DailyPartitionsDefinition, warehouse_kind: str
) -> list[AssetsDefinition]:
    @asset(
        key=DAILY_STATS_KEY,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[ANALYSIS_READY],
        group_name="datamart",
        kinds={warehouse_kind, "table"},
        description=(
            "Per AOI and day: scenes used, valid/cloud/shadow fractions from SCL, NDVI "
            "mean/median/p10/p90, NDWI mean and the offset decisions; plus the per-scene "
            "table scene_quality (offset decision by metadata and by pixels)."
        ),
    )
    def daily_aoi_stats(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
        warehouse: WarehouseResource,
    ) -> MaterializeResult:
        day = partition_day(context.partition_key)
        manifest = load_products_manifest(object_store, stac.collection, context.partition_key)
        with gdal_env(object_store.gdal_options(), object_store.gdal_session()):
            stats, quality = daily_stats_rows(day, manifest["products"], object_store)
        written = warehouse.replace_partition(DAILY_AOI_STATS, day, stats)
        warehouse.replace_partition(SCENE_QUALITY, day, quality)
        return MaterializeResult(
            metadata={
                "rows": written,
                "scene_quality_rows": len(quality),
                "tables": f"{DAILY_AOI_STATS.name}, {SCENE_QUALITY.name}",
                "warehouse": warehouse.describe(),
                "preview": MetadataValue.md(
                    markdown_table(
                        [
                            {
                                k: (round(v, 4) if isinstance(v, float) else v)
                                for k, v in row.items()
                                if k not in ("offset_decisions", "partition_date")
                            }
                            for row in stats
                        ]
                    )
                ),
            }
        )

    @asset(
        key=PRODUCT_CATALOG_KEY,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[ANALYSIS_READY],
        group_name="datamart",
        kinds={warehouse_kind, "table"},
        description="One row per published product object: scene, AOI, product, object "
        "URL, bytes, checksum, STAC item URL, created.",
        check_specs=[
            AssetCheckSpec(
                "products_reconcile",
                asset=PRODUCT_CATALOG_KEY,
                blocking=True,
                description="Product objects in storage and catalog rows match one to one.",
            )
        ],
    )
    def product_catalog(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
        warehouse: WarehouseResource,
    ) -> MaterializeResult:
        day = partition_day(context.partition_key)
        manifest = load_products_manifest(object_store, stac.collection, context.partition_key)
        rows = product_rows(day, manifest["products"])
        written = warehouse.replace_partition(PRODUCT_CATALOG, day, rows)
        stored = {
            r["object_key"]: r["bytes"] for r in warehouse.fetch_partition(PRODUCT_CATALOG, day)
        }
        actual = {
            o.key: o.size
            for o in object_store.store().list(processed_prefix(stac.collection, day))
            if o.key.endswith(".tif")
        }
        orphans = sorted(set(actual) - set(stored))
        missing = sorted(set(stored) - set(actual))
        sizes = sorted(k for k in set(actual) & set(stored) if actual[k] != stored[k])
        return MaterializeResult(
            metadata={
                "rows": written,
                "table": PRODUCT_CATALOG.name,
                "warehouse": warehouse.describe(),
                "bytes": sum(r["bytes"] for r in rows),
            },
            check_results=[
                AssetCheckResult(
                    check_name="products_reconcile",
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
            ],
        )

    return [daily_aoi_stats, product_catalog]
