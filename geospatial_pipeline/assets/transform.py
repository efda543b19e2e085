"""Transform, per (date, AOI): analysis-ready layers per scene, then the AOI's daily NDVI
median composite.

Each asset reads the partition's stored inputs, calls :mod:`geospatial_pipeline.stac.publish`
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
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    PreviewWarning,
    asset,
    asset_check,
)

from geospatial_pipeline.assets.ingest import (
    BAND_RASTERS,
    load_items,
    load_manifest,
)
from geospatial_pipeline.assets.preview import human_bytes, inline_images, location, table
from geospatial_pipeline.assets.runs import (
    PartitionOutcome,
    check_each,
    materialize_each,
    run_partitions,
)
from geospatial_pipeline.assets.warehouse import SCENE_METADATA_KEY
from geospatial_pipeline.deployment import RASTER_POOL, heavy_op_tags
from geospatial_pipeline.layout import (
    Partition,
    composite_manifest_key,
    scene_products_manifest_key,
)
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import BACKFILL_POLICY, PARTITIONS
from geospatial_pipeline.raster.cog import gdal_env
from geospatial_pipeline.raster.extract import landed_by_aoi
from geospatial_pipeline.raster.grid import aoi_grid
from geospatial_pipeline.raster.scene import RawScene, read_ahead, whole_inputs
from geospatial_pipeline.resources.maps import MapsResource
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.transform import TransformResource
from geospatial_pipeline.stac import publish
from geospatial_pipeline.stac.publish import ProductContext
from geospatial_pipeline.stac.render import viewers_markdown
from geospatial_pipeline.storage.object_store import ObjectStore
from geospatial_pipeline.storage.verify import MISSING, changed_since_published

# Partitioned checks are marked preview; they are deliberate (a check re-run alone targets
# one day, as the asset does), so say it once rather than on every check.
warnings.filterwarnings(
    "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning
)

SCENE_PRODUCTS = AssetKey("scene_products")
NDVI_COMPOSITE = AssetKey("ndvi_composite")
# Bumped by hand whenever a change alters what the asset writes (pixels, items, manifest):
# Dagster then shows the materialized partitions as stale against the new code.
# 3: layers stored as int16 scaled 1e-4, ZSTD (raster.encoding), no longer float32.
SCENE_PRODUCTS_VERSION = "3"
NDVI_COMPOSITE_VERSION = "3"


@contextlib.contextmanager
def _products_context(
    object_store: ObjectStoreResource,
    transform: TransformResource,
    maps: MapsResource,
    collection: str,
    part: Partition,
    workdir_prefix: str,
) -> Iterator[ProductContext]:
    """What publishing a partition's products needs: GDAL reading the store, a scratch
    directory removed afterwards, the checked settings and one timestamp."""
    with (
        gdal_env(object_store.gdal_options(), object_store.gdal_session()),
        tempfile.TemporaryDirectory(prefix=workdir_prefix) as tmp,
    ):
        yield ProductContext(
            store=object_store.store(),
            collection=collection,
            part=part,
            settings=transform.settings(),
            block_pixels=transform.block_pixels,
            workdir=Path(tmp),
            now=publish.utc_now(),
            titiler_url=maps.titiler_url,
        )


@asset(
    key=SCENE_PRODUCTS,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[BAND_RASTERS, SCENE_METADATA_KEY],
    group_name="transform",
    kinds={"cog", "stac"},
    code_version=SCENE_PRODUCTS_VERSION,
    pool=RASTER_POOL,
    op_tags=heavy_op_tags(),
    description=(
        "Per scene of the partition, on the AOI's grid: cloud/shadow-masked, "
        "offset-corrected surface reflectance (red, green, blue, nir), NDVI and NDWI as "
        "COGs (int16, scale 1e-4, nodata -32768), each with a STAC item; "
        "manifests/{collection}/{date}/{aoi}/"
        "scene_products.json lists them."
    ),
)
def scene_products(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    transform: TransformResource,
    maps: MapsResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (part, _scene_products_of(context, stac, object_store, transform, maps, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _scene_products_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    transform: TransformResource,
    maps: MapsResource,
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    collection = stac.collection
    found = load_items(object_store, collection, part)
    manifest = load_manifest(object_store, collection, part)
    items = {raw["id"]: raw for raw in found.items}
    store = object_store.store()
    band_paths: dict[str, dict[str, str]] = defaultdict(dict)
    for entry in manifest["objects"]:
        if entry["key"]:
            band_paths[entry["item_id"]][entry["band"]] = store.gdal_path(entry["key"])
    # Items band_rasters quarantined have no band objects: build nothing for them.
    item_ids = sorted(landed_by_aoi(found.by_aoi, manifest).get(aoi.name, []))
    products: list[dict[str, Any]] = []
    with _products_context(
        object_store, transform, maps, collection, part, "geospatial-scenes-"
    ) as ctx:
        s = ctx.settings
        grid = aoi_grid(aoi.shape, s.resolution, s.crs, s.anchor)

        def read(item_id: str) -> RawScene | None:
            # GDAL settings are per thread: the reader enters the store's own.
            with gdal_env(object_store.gdal_options(), object_store.gdal_session()):
                return whole_inputs(band_paths.get(item_id, {}), grid, ctx.block_pixels)

        # The next scene's windows are fetched and decoded while this one is transformed,
        # encoded and published (at most two scenes' inputs in memory).
        for item_id, inputs in read_ahead(item_ids, read):
            products.append(
                publish.publish_scene(
                    ctx,
                    aoi=aoi.name,
                    shape=aoi.shape,
                    grid=grid,
                    raw=items[item_id],
                    band_paths=band_paths.get(item_id, {}),
                    source=publish.source_href(stac.api_url, collection, items[item_id]),
                    inputs=inputs,
                )
            )
            del inputs
    key = scene_products_manifest_key(collection, part)
    publish.write_manifest(store, key, part, collection, products)
    layers = [e for p in products for e in p["layers"]]
    size = sum(e["bytes"] for e in layers)
    return PartitionOutcome(
        metadata={
            "scenes": len(products),
            "summary": f"{aoi.name}: {len(products)} scene(s) on {part.day.isoformat()}",
            "objects": len(layers),
            "size": human_bytes(size),
            "bytes": size,
            "stac_items": len(products),
            "manifest": location(store.url(key)),
            "quicklooks": inline_images(_pictures(store, products)),
            "maps": MetadataValue.md(viewers_markdown(products) or "no maps.titiler_url"),
            "offset_decisions": table(
                [_decision_row(p) for p in products], list(_DECISION_COLUMNS)
            ),
            "preview": table([_preview(p) for p in products], list(_PREVIEW_COLUMNS)),
        }
    )


_DECISION_COLUMNS = (
    "item",
    "offset_dn",
    "decided_by",
    "disagreement",
    "processing_baseline",
    "boa_offset_applied_flag",
    "metadata_offset_present",
    "pixel_verdict",
    "share_below_offset",
    "evidence_values",
    "dark_p5_dn",
    "dark_pixels",
    "raster_offset",
)
_PREVIEW_COLUMNS = (
    "item",
    "valid %",
    "cloud %",
    "offset DN",
    "decided by",
    "stac_item",
)


def _decision_row(p: dict[str, Any]) -> dict[str, Any]:
    return {"item": p["item_id"], **p["decision"]}


def _pictures(store: ObjectStore, products: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """Each product's quicklooks (captioned), read back from the store: what is shown
    is what was published."""
    return [
        (f"{p['item_id']} {look['asset']}", store.get_bytes(look["key"]))
        for p in products
        for look in p.get("quicklooks", [])
    ]


@asset(
    key=NDVI_COMPOSITE,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[SCENE_PRODUCTS],
    group_name="transform",
    kinds={"cog", "stac"},
    code_version=NDVI_COMPOSITE_VERSION,
    pool=RASTER_POOL,
    op_tags=heavy_op_tags(),
    description=(
        "The AOI's per-pixel median of the valid NDVI of the day's scenes, read back from "
        "the published scene NDVI COGs, as a COG (int16, scale 1e-4, nodata -32768) with "
        "its STAC item (none on a day "
        "without scenes)."
    ),
)
def ndvi_composite(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    transform: TransformResource,
    maps: MapsResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (part, _ndvi_composite_of(context, stac, object_store, transform, maps, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _ndvi_composite_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    transform: TransformResource,
    maps: MapsResource,
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    collection = stac.collection
    composites: list[dict[str, Any]] = []
    with _products_context(
        object_store, transform, maps, collection, part, "geospatial-composite-"
    ) as ctx:
        s = ctx.settings
        scenes = publish.scene_products_of(ctx.store, collection, part)
        if scenes:
            grid = aoi_grid(aoi.shape, s.resolution, s.crs, s.anchor)
            composites.append(
                publish.publish_composite(ctx, aoi=aoi.name, grid=grid, scenes=scenes)
            )
    key = composite_manifest_key(collection, part)
    publish.write_manifest(ctx.store, key, part, collection, composites)
    layers = [e for p in composites for e in p["layers"]]
    size = sum(e["bytes"] for e in layers)
    return PartitionOutcome(
        metadata={
            "scenes": len(scenes),
            "summary": f"{aoi.name}: median of {len(scenes)} scene(s) on {part.day.isoformat()}"
            if scenes
            else f"{aoi.name}: 0 scenes on {part.day.isoformat()}, no composite",
            "objects": len(layers),
            "size": human_bytes(size),
            "bytes": size,
            "manifest": location(ctx.store.url(key)),
            "quicklooks": inline_images(_pictures(ctx.store, composites)),
        }
    )


def _preview(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "item": p["item_id"],
        "valid %": round(100 * p["stats"]["valid_pixel_fraction"], 1),
        "cloud %": round(100 * p["stats"]["cloud_fraction"], 1),
        "offset DN": p["decision"]["offset_dn"],
        "decided by": p["decision"]["decided_by"],
        "stac_item": p["stac_item_url"],
    }


def _value_ranges(products: list[dict[str, Any]], negative_share: float | None) -> AssetCheckResult:
    out_of_range = publish.out_of_range_layers(products)
    too_negative = (
        publish.too_negative_scenes(products, negative_share) if negative_share is not None else []
    )
    return AssetCheckResult(
        passed=not (out_of_range or too_negative),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "products": len(products),
            "out_of_range": MetadataValue.json(out_of_range[:50]),
            "negative_reflectance_over_limit": MetadataValue.json(too_negative[:50]),
        },
    )


def _cogs_valid(
    object_store: ObjectStoreResource, products: list[dict[str, Any]]
) -> AssetCheckResult:
    store = object_store.store()
    layers = [layer for p in products for layer in p["layers"]]
    # Each layer was validated from its bytes before publishing: a stored object with the
    # manifest's size and SHA-256 is that validated COG, so only the others are read back.
    changed = changed_since_published(store, layers)
    with gdal_env(object_store.gdal_options(), object_store.gdal_session()):
        invalid = publish.invalid_cogs(store, [k for k, why in changed.items() if why != MISSING])
    return AssetCheckResult(
        passed=not changed,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "verified": len(layers),
            "changed_since_published": MetadataValue.json(
                [f"{k}: {why}" for k, why in changed.items()][:50]
            ),
            "invalid": MetadataValue.json(invalid[:50]),
        },
    )


def _scenes(
    stac: StacSearchResource, object_store: ObjectStoreResource, part: Partition
) -> list[dict[str, Any]]:
    return publish.scene_products_of(object_store.store(), stac.collection, part)


def _composites(
    stac: StacSearchResource, object_store: ObjectStoreResource, part: Partition
) -> list[dict[str, Any]]:
    return publish.composites_of(object_store.store(), stac.collection, part)


@asset_check(
    asset=SCENE_PRODUCTS,
    name="value_ranges",
    blocking=True,
    partitions_def=PARTITIONS,
    description="Reflectance in [-0.2, 2], indices in [-1, 1]; negative-reflectance share at "
    "most transform.max_negative_reflectance_share (water, dark-area and shadow pixels, "
    "where negative reflectance is physical, not counted).",
)
def scene_value_ranges(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    transform: TransformResource,
) -> AssetCheckResult:
    return check_each(
        context,
        lambda part: _value_ranges(
            _scenes(stac, object_store, part), transform.max_negative_reflectance_share
        ),
    )


@asset_check(
    asset=NDVI_COMPOSITE,
    name="value_ranges",
    blocking=True,
    partitions_def=PARTITIONS,
    description="The median NDVI lies in [-1, 1].",
)
def composite_value_ranges(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    return check_each(
        context, lambda part: _value_ranges(_composites(stac, object_store, part), None)
    )


@asset_check(
    asset=SCENE_PRODUCTS,
    name="product_cogs_valid",
    blocking=True,
    partitions_def=PARTITIONS,
    description="Every published scene layer is the COG validated before publishing: its "
    "stored size and SHA-256 equal the manifest's (layers that differ are validated again "
    "from storage and reported).",
)
def scene_cogs_valid(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    return check_each(
        context, lambda part: _cogs_valid(object_store, _scenes(stac, object_store, part))
    )


@asset_check(
    asset=NDVI_COMPOSITE,
    name="product_cogs_valid",
    blocking=True,
    partitions_def=PARTITIONS,
    description="The published composite is the COG validated before publishing: its stored "
    "size and SHA-256 equal the manifest's (a layer that differs is validated again from "
    "storage and reported).",
)
def composite_cogs_valid(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    return check_each(
        context, lambda part: _cogs_valid(object_store, _composites(stac, object_store, part))
    )


@asset_check(
    asset=SCENE_PRODUCTS,
    blocking=True,
    partitions_def=PARTITIONS,
    description="Valid-pixel fraction reported and at least transform.min_valid_fraction.",
)
def valid_pixel_fraction(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    transform: TransformResource,
) -> AssetCheckResult:
    return check_each(
        context, lambda part: _valid_fraction(_scenes(stac, object_store, part), transform)
    )


def _valid_fraction(scenes: list[dict[str, Any]], transform: TransformResource) -> AssetCheckResult:
    fractions = publish.valid_fractions(scenes)
    low = {k: v for k, v in fractions.items() if not transform.min_valid_fraction <= v <= 1.0}
    return AssetCheckResult(
        passed=not low,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "fractions": table(
                [
                    {"scene": k, "valid_fraction": round(v, 4), "below_minimum": k in low}
                    for k, v in fractions.items()
                ],
                ["scene", "valid_fraction", "below_minimum"],
            ),
            "below_minimum": len(low),
            "minimum": transform.min_valid_fraction,
        },
    )


@asset_check(
    asset=SCENE_PRODUCTS,
    blocking=False,
    partitions_def=PARTITIONS,
    description="Warns when the BOA-offset metadata and the pixels disagree (the pixels "
    "were followed).",
)
def offset_metadata_agrees(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    def agrees(part: Partition) -> AssetCheckResult:
        disagreements = publish.offset_disagreements(_scenes(stac, object_store, part))
        return AssetCheckResult(
            passed=not disagreements,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "disagreements": table(disagreements, list(_DECISION_COLUMNS)),
            },
        )

    return check_each(context, agrees)
