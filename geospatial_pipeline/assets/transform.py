"""Transform: analysis-ready layers per scene x AOI, then the daily NDVI median composite.

Each asset reads the day's stored inputs, calls :mod:`geospatial_pipeline.stac.publish`
and writes its own manifest; its checks read that manifest and the published objects back,
so each check can be re-run alone. The static catalog is in assets/catalog.py.
"""

import contextlib
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DailyPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    PreviewWarning,
    asset,
    asset_check,
)

from geospatial_pipeline.assets.ingest import BAND_RASTERS, load_day_items, load_manifest
from geospatial_pipeline.assets.preview import markdown_table
from geospatial_pipeline.assets.warehouse import SCENE_METADATA_KEY
from geospatial_pipeline.deployment import RASTER_POOL, heavy_op_tags
from geospatial_pipeline.layout import composite_manifest_key, scene_products_manifest_key
from geospatial_pipeline.partitions import BACKFILL_POLICY, partition_day
from geospatial_pipeline.raster.cog import gdal_env
from geospatial_pipeline.raster.extract import landed_by_aoi
from geospatial_pipeline.raster.grid import aoi_grid
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.transform import TransformResource
from geospatial_pipeline.stac import publish
from geospatial_pipeline.stac.publish import ProductContext

# Partitioned checks are marked preview; they are deliberate (a check re-run alone targets
# one day, as the asset does), so say it once rather than on every check.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning
)

SCENE_PRODUCTS = AssetKey("scene_products")
NDVI_COMPOSITE = AssetKey("ndvi_composite")
# Bumped by hand whenever a change alters what the asset writes (pixels, items, manifest):
# Dagster then shows the materialized partitions as stale against the new code.
SCENE_PRODUCTS_VERSION = "1"
NDVI_COMPOSITE_VERSION = "1"


@contextlib.contextmanager
def _products_context(
    object_store: ObjectStoreResource,
    transform: TransformResource,
    collection: str,
    partition_key: str,
    workdir_prefix: str,
) -> Iterator[ProductContext]:
    """What publishing a day's products needs: GDAL reading the store, a scratch
    directory removed afterwards, the checked settings and one timestamp."""
    with (
        gdal_env(object_store.gdal_options(), object_store.gdal_session()),
        tempfile.TemporaryDirectory(prefix=workdir_prefix) as tmp,
    ):
        yield ProductContext(
            store=object_store.store(),
            collection=collection,
            day=partition_day(partition_key),
            settings=transform.settings(),
            block_pixels=transform.block_pixels,
            workdir=Path(tmp),
            now=publish.utc_now(),
        )


def build_transform_assets(
    partitions: DailyPartitionsDefinition,
) -> list[AssetsDefinition | AssetChecksDefinition]:
    @asset(
        key=SCENE_PRODUCTS,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[BAND_RASTERS, SCENE_METADATA_KEY],
        group_name="transform",
        kinds={"cog", "stac"},
        code_version=SCENE_PRODUCTS_VERSION,
        pool=RASTER_POOL,
        op_tags=heavy_op_tags(),
        description=(
            "Per scene x AOI on one grid per AOI: cloud/shadow-masked, offset-corrected "
            "surface reflectance (red, green, blue, nir), NDVI and NDWI as float32 COGs, each "
            "with a STAC item; manifests/{collection}/{date}/scene_products.json lists them."
        ),
    )
    def scene_products(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
        transform: TransformResource,
    ) -> MaterializeResult:
        collection = stac.collection
        found = load_day_items(object_store, collection, context.partition_key)
        manifest = load_manifest(object_store, collection, context.partition_key)
        items = {raw["id"]: raw for raw in found.items}
        aois = {a.name: a.shape for a in scope.aoi_configs()}
        store = object_store.store()
        band_paths: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for entry in manifest["objects"]:
            if entry["key"]:
                band_paths[(entry["item_id"], entry["aoi"])][entry["band"]] = store.gdal_path(
                    entry["key"]
                )
        products: list[dict[str, Any]] = []
        with _products_context(
            object_store, transform, collection, context.partition_key, "geospatial-scenes-"
        ) as ctx:
            s = ctx.settings
            # Items band_rasters quarantined have no band objects: build nothing for them.
            for aoi, item_ids in sorted(landed_by_aoi(found.by_aoi, manifest).items()):
                if aoi not in aois:
                    continue
                grid = aoi_grid(aois[aoi], s.resolution, s.crs, s.anchor)
                for item_id in sorted(item_ids):
                    products.append(
                        publish.publish_scene(
                            ctx,
                            aoi=aoi,
                            shape=aois[aoi],
                            grid=grid,
                            raw=items[item_id],
                            band_paths=band_paths.get((item_id, aoi), {}),
                            source=publish.source_href(stac.api_url, collection, items[item_id]),
                        )
                    )
        day = ctx.day
        publish.write_manifest(
            store, scene_products_manifest_key(collection, day), day, collection, products
        )
        layers = [e for p in products for e in p["layers"]]
        return MaterializeResult(
            metadata={
                "scenes": len(products),
                "aois": len({p["aoi"] for p in products}),
                "objects": len(layers),
                "bytes": sum(e["bytes"] for e in layers),
                "stac_items": len(products),
                "manifest": store.url(scene_products_manifest_key(collection, day)),
                "offset_decisions": MetadataValue.json(
                    [{"item": p["item_id"], "aoi": p["aoi"], **p["decision"]} for p in products]
                ),
                "preview": MetadataValue.md(markdown_table([_preview(p) for p in products])),
            }
        )

    @asset(
        key=NDVI_COMPOSITE,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[SCENE_PRODUCTS],
        group_name="transform",
        kinds={"cog", "stac"},
        code_version=NDVI_COMPOSITE_VERSION,
        pool=RASTER_POOL,
        op_tags=heavy_op_tags(),
        description=(
            "Per AOI and day: the per-pixel median of the valid NDVI of the day's scenes, "
            "read back from the published scene NDVI COGs, as a COG with its STAC item."
        ),
    )
    def ndvi_composite(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
        transform: TransformResource,
    ) -> MaterializeResult:
        collection = stac.collection
        aois = {a.name: a.shape for a in scope.aoi_configs()}
        composites: list[dict[str, Any]] = []
        with _products_context(
            object_store, transform, collection, context.partition_key, "geospatial-composite-"
        ) as ctx:
            s = ctx.settings
            scenes = publish.scene_products_of(ctx.store, collection, ctx.day)
            for aoi in sorted({p["aoi"] for p in scenes} & set(aois)):
                grid = aoi_grid(aois[aoi], s.resolution, s.crs, s.anchor)
                mine = [p for p in scenes if p["aoi"] == aoi]
                composites.append(publish.publish_composite(ctx, aoi=aoi, grid=grid, scenes=mine))
        key = composite_manifest_key(collection, ctx.day)
        publish.write_manifest(ctx.store, key, ctx.day, collection, composites)
        layers = [e for p in composites for e in p["layers"]]
        return MaterializeResult(
            metadata={
                "aois": len(composites),
                "scenes_per_aoi": MetadataValue.json(
                    {p["aoi"]: p["stats"]["scenes"] for p in composites}
                ),
                "objects": len(layers),
                "bytes": sum(e["bytes"] for e in layers),
                "manifest": ctx.store.url(key),
            }
        )

    return [
        scene_products,
        ndvi_composite,
        *_product_checks(SCENE_PRODUCTS, partitions, publish.scene_products_of),
        *_product_checks(NDVI_COMPOSITE, partitions, publish.composites_of),
        *_scene_checks(partitions),
    ]


def _preview(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "item": p["item_id"],
        "aoi": p["aoi"],
        "valid %": round(100 * p["stats"]["valid_pixel_fraction"], 1),
        "cloud %": round(100 * p["stats"]["cloud_fraction"], 1),
        "offset DN": p["decision"]["offset_dn"],
        "decided by": p["decision"]["decided_by"],
    }


def _product_checks(
    key: AssetKey, partitions: DailyPartitionsDefinition, load: Any
) -> list[AssetChecksDefinition]:
    """value_ranges and product_cogs_valid of one product asset, from its stored manifest."""

    @asset_check(
        asset=key,
        name="value_ranges",
        blocking=True,
        partitions_def=partitions,
        description="Reflectance in [-0.2, 2], indices in [-1, 1]"
        + (
            "; negative-reflectance share at most transform.max_negative_reflectance_share "
            "(water, dark-area and shadow pixels, where negative reflectance is physical, "
            "not counted)."
            if key == SCENE_PRODUCTS
            else "."
        ),
    )
    def value_ranges(
        context: AssetCheckExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
        transform: TransformResource,
    ) -> AssetCheckResult:
        day = partition_day(context.partition_key)
        products = load(object_store.store(), stac.collection, day)
        out_of_range = publish.out_of_range_layers(products)
        too_negative = (
            publish.too_negative_scenes(products, transform.max_negative_reflectance_share)
            if key == SCENE_PRODUCTS
            else []
        )
        return AssetCheckResult(
            passed=not (out_of_range or too_negative),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "out_of_range": MetadataValue.json(out_of_range[:50]),
                "negative_reflectance_over_limit": MetadataValue.json(too_negative[:50]),
            },
        )

    @asset_check(
        asset=key,
        name="product_cogs_valid",
        blocking=True,
        partitions_def=partitions,
        description="Every published product passes COG validation, read back from storage.",
    )
    def product_cogs_valid(
        context: AssetCheckExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
    ) -> AssetCheckResult:
        day = partition_day(context.partition_key)
        store = object_store.store()
        products = load(store, stac.collection, day)
        with gdal_env(object_store.gdal_options(), object_store.gdal_session()):
            invalid = publish.invalid_cogs(store, products)
        return AssetCheckResult(
            passed=not invalid,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "validated": sum(len(p["layers"]) for p in products),
                "invalid": MetadataValue.json(invalid[:50]),
            },
        )

    return [value_ranges, product_cogs_valid]


def _scene_checks(partitions: DailyPartitionsDefinition) -> list[AssetChecksDefinition]:
    @asset_check(
        asset=SCENE_PRODUCTS,
        blocking=True,
        partitions_def=partitions,
        description="Valid-pixel fraction reported and at least transform.min_valid_fraction.",
    )
    def valid_pixel_fraction(
        context: AssetCheckExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
        transform: TransformResource,
    ) -> AssetCheckResult:
        day = partition_day(context.partition_key)
        fractions = publish.valid_fractions(
            publish.scene_products_of(object_store.store(), stac.collection, day)
        )
        low = {k: v for k, v in fractions.items() if not transform.min_valid_fraction <= v <= 1.0}
        return AssetCheckResult(
            passed=not low,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "fractions": MetadataValue.json(fractions),
                "below_minimum": MetadataValue.json(low),
                "minimum": transform.min_valid_fraction,
            },
        )

    @asset_check(
        asset=SCENE_PRODUCTS,
        blocking=False,
        partitions_def=partitions,
        description="Warns when the BOA-offset metadata and the pixels disagree (the pixels "
        "were followed).",
    )
    def offset_metadata_agrees(
        context: AssetCheckExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
    ) -> AssetCheckResult:
        day = partition_day(context.partition_key)
        scenes = publish.scene_products_of(object_store.store(), stac.collection, day)
        disagreements = publish.offset_disagreements(scenes)
        return AssetCheckResult(
            passed=not disagreements,
            severity=AssetCheckSeverity.WARN,
            metadata={"disagreements": MetadataValue.json(disagreements)},
        )

    return [valid_pixel_fraction, offset_metadata_agrees]
