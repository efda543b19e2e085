"""Transform: analysis-ready rasters per scene x AOI, a daily NDVI median composite, and
the static STAC catalog that publishes them."""

import datetime as dt
import json
import tempfile
from collections import defaultdict
from pathlib import Path
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

from geospatial_pipeline import __version__
from geospatial_pipeline.assets.ingest import BAND_RASTERS, load_day_items, load_manifest
from geospatial_pipeline.assets.preview import markdown_table
from geospatial_pipeline.assets.warehouse import SCENE_METADATA_KEY
from geospatial_pipeline.deployment import heavy_op_tags
from geospatial_pipeline.layout import (
    PRODUCTS_ROOT,
    day_catalog_key,
    product_dir,
    products_manifest_key,
)
from geospatial_pipeline.partitions import BACKFILL_POLICY, partition_day
from geospatial_pipeline.raster.cog import gdal_env, validate_cog_bytes, validate_cog_path
from geospatial_pipeline.raster.extract import COG_CONTENT_TYPE, landed_by_aoi
from geospatial_pipeline.raster.grid import aoi_grid
from geospatial_pipeline.raster.scene import (
    EncodedLayers,
    median_composite_from_paths,
    scene_meta,
    scene_products,
    strip_rows,
)
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.transform import TransformResource
from geospatial_pipeline.stac.itemcollection import dumps
from geospatial_pipeline.stac.products import (
    LayerObject,
    day_catalog,
    product_item,
    root_catalog,
    validate_product_item,
    with_catalog_links,
)
from geospatial_pipeline.stac.store_io import load_catalog
from geospatial_pipeline.storage.keys import join_key
from geospatial_pipeline.storage.object_store import ObjectStore

ANALYSIS_READY = AssetKey("analysis_ready_rasters")
PRODUCT_LAYERS = ("red", "green", "blue", "nir", "ndvi", "ndwi")
REFLECTANCE_LIMITS = (-0.2, 2.0)  # saturated/specular pixels exceed 1; below -0.2 is wrong
INDEX_LIMITS = (-1.0, 1.0)
COMPOSITE_ID = "composite"


def load_products_manifest(
    store_res: ObjectStoreResource, collection: str, partition_key: str
) -> Any:
    day = partition_day(partition_key)
    return json.loads(store_res.store().get_bytes(products_manifest_key(collection, day)))


def _publish_layers(
    store: ObjectStore, directory: str, encoded: EncodedLayers
) -> tuple[list[LayerObject], list[dict[str, Any]], bool]:
    objects: list[LayerObject] = []
    entries: list[dict[str, Any]] = []
    changed = False
    for name, (source, (low, high)) in encoded.items():
        data = source.read_bytes() if isinstance(source, Path) else source
        check = validate_cog_bytes(data)
        if not check.valid:
            raise RuntimeError(f"product {directory}/{name}.tif is not a valid COG: {check.errors}")
        put = store.put_bytes(join_key(directory, f"{name}.tif"), data, COG_CONTENT_TYPE)
        changed |= put.written
        objects.append(LayerObject(name, put.key, put.size, put.sha256))
        entries.append(
            {
                "product": name,
                "key": put.key,
                "url": put.url,
                "bytes": put.size,
                "sha256": put.sha256,
                "min": low,
                "max": high,
            }
        )
    return objects, entries, changed


def _processing_time(store: ObjectStore, item_key: str, changed: bool, now: str) -> str:
    """Keep the first processing time while the products are byte-identical, so a re-run
    republishes nothing."""
    if not changed and store.head(item_key) is not None:
        previous = json.loads(store.get_bytes(item_key))
        return str(previous["properties"]["processing:datetime"])
    return now


def _publish_item(
    store: ObjectStore,
    doc: dict[str, Any],
    item_key: str,
    catalog_key: str,
    *,
    item_id: str,
    aoi: str,
    decision: dict[str, Any] | None,
    stats: dict[str, Any],
    layers: list[dict[str, Any]],
) -> dict[str, Any]:
    """Publish a product's STAC item; return its entry of the products manifest."""
    doc = with_catalog_links(doc, item_key, catalog_key, PRODUCTS_ROOT)
    put = store.put_bytes(item_key, dumps(doc), "application/geo+json")
    return {
        "item_id": item_id,
        "aoi": aoi,
        "stac_item_key": item_key,
        "stac_item_url": put.url,
        "created": doc["properties"]["processing:datetime"],
        "decision": decision,
        "stats": stats,
        "layers": layers,
    }


def _source_href(api_url: str, collection: str, raw: dict[str, Any]) -> str:
    for link in raw.get("links", []):
        if link.get("rel") == "self" and str(link.get("href", "")).startswith("http"):
            return str(link["href"])
    return f"{api_url}/collections/{collection}/items/{raw['id']}"


def build_transform_assets(partitions: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    @asset(
        key=ANALYSIS_READY,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[BAND_RASTERS, SCENE_METADATA_KEY],
        group_name="transform",
        kinds={"cog", "stac"},
        description=(
            "Per scene x AOI on one grid per AOI: cloud/shadow-masked, offset-corrected "
            "surface reflectance (red, green, blue, nir), NDVI and NDWI as float32 COGs, a "
            "daily NDVI median composite, each with a STAC item in a static catalog."
        ),
        check_specs=[
            AssetCheckSpec(
                "value_ranges",
                asset=ANALYSIS_READY,
                blocking=True,
                description="Reflectance in [-0.2, 2], indices in [-1, 1], "
                "negative-reflectance share bounded (water, dark-area and shadow pixels, "
                "where negative reflectance is physical, not counted).",
            ),
            AssetCheckSpec(
                "valid_pixel_fraction",
                asset=ANALYSIS_READY,
                blocking=True,
                description="Valid-pixel fraction reported and at least "
                "transform.min_valid_fraction.",
            ),
            AssetCheckSpec(
                "product_cogs_valid",
                asset=ANALYSIS_READY,
                blocking=True,
                description="Every published product passes COG validation.",
            ),
            AssetCheckSpec(
                "stac_items_valid",
                asset=ANALYSIS_READY,
                blocking=True,
                description="Every product item validates and the catalog reaches all of them.",
            ),
            AssetCheckSpec(
                "offset_metadata_agrees",
                asset=ANALYSIS_READY,
                blocking=False,
                description="Warns when the BOA-offset metadata and the pixels "
                "disagree (the pixels were followed).",
            ),
        ],
        op_tags=heavy_op_tags(),
    )
    def analysis_ready_rasters(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
        transform: TransformResource,
    ) -> MaterializeResult:
        day = partition_day(context.partition_key)
        collection = stac.collection
        settings = transform.settings()
        aois = {a.name: a.shape for a in scope.aoi_configs()}
        found = load_day_items(object_store, collection, context.partition_key)
        manifest = load_manifest(object_store, collection, context.partition_key)
        items = {raw["id"]: raw for raw in found.items}
        store = object_store.store()
        band_paths: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for entry in manifest["objects"]:
            if entry["key"]:
                band_paths[(entry["item_id"], entry["aoi"])][entry["band"]] = store.gdal_path(
                    entry["key"]
                )
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        products: list[dict[str, Any]] = []
        item_keys: list[str] = []
        with (
            gdal_env(object_store.gdal_options(), object_store.gdal_session()),
            tempfile.TemporaryDirectory(prefix="geospatial-transform-") as tmp,
        ):
            workdir = Path(tmp)
            # Items band_rasters quarantined have no band objects: build nothing for them.
            by_aoi = landed_by_aoi(found.by_aoi, manifest)
            for aoi_name in sorted(by_aoi):
                if aoi_name not in aois or not by_aoi[aoi_name]:
                    continue
                grid = aoi_grid(aois[aoi_name], settings.resolution, settings.crs, settings.anchor)
                ndvi_sources: list[str] = []
                sources: list[str] = []
                for item_id in sorted(by_aoi[aoi_name]):
                    paths = band_paths.get((item_id, aoi_name), {})
                    raw = items[item_id]
                    directory = product_dir(collection, day, aoi_name, item_id)
                    scene = scene_products(
                        paths,
                        aois[aoi_name],
                        grid,
                        scene_meta(raw),
                        settings,
                        layers=PRODUCT_LAYERS,
                        block_pixels=transform.block_pixels,
                        workdir=workdir,
                    )
                    objects, entries, changed = _publish_layers(store, directory, scene.layers)
                    ndvi_sources.append(store.gdal_path(join_key(directory, "ndvi.tif")))
                    source = _source_href(stac.api_url, collection, raw)
                    sources.append(source)
                    item_key = join_key(directory, "item.json")
                    doc = product_item(
                        item_id=f"{item_id}__{aoi_name}",
                        item_key=item_key,
                        acquired=raw["properties"]["datetime"],
                        grid=grid,
                        layers=objects,
                        source_hrefs=[source],
                        processing_datetime=_processing_time(store, item_key, changed, now),
                        software_version=__version__,
                        lineage=(
                            f"SCL mask {list(settings.invalid_scl)}; BOA offset "
                            f"{scene.decision.offset_dn} DN removed (decided by "
                            f"{scene.decision.decided_by}); {settings.resampling} onto "
                            f"{grid.crs} at {settings.resolution} m; NDVI, NDWI"
                        ),
                        extra_properties={
                            "geospatial_pipeline:aoi": aoi_name,
                            "geospatial_pipeline:source_item": item_id,
                            "geospatial_pipeline:offset_dn": scene.decision.offset_dn,
                            "eo:cloud_cover": raw["properties"].get("eo:cloud_cover"),
                            "platform": raw["properties"].get("platform"),
                        },
                    )
                    products.append(
                        _publish_item(
                            store,
                            doc,
                            item_key,
                            day_catalog_key(collection, day),
                            item_id=item_id,
                            aoi=aoi_name,
                            decision=scene.decision.as_dict(),
                            stats=scene.stats,
                            layers=entries,
                        )
                    )
                    item_keys.append(item_key)
                    del scene
                directory = product_dir(collection, day, aoi_name, COMPOSITE_ID)
                # Read back from the published NDVI COGs strip by strip: memory stays at
                # one strip per scene, whatever the AOI size.
                composite = median_composite_from_paths(
                    ndvi_sources,
                    grid,
                    block_rows=strip_rows(transform.block_pixels, grid.width),
                    workdir=workdir,
                )
                objects, entries, changed = _publish_layers(
                    store, directory, {"ndvi_median": composite}
                )
                item_key = join_key(directory, "item.json")
                start = dt.datetime.combine(day, dt.time(), dt.UTC)
                doc = product_item(
                    item_id=f"{aoi_name}__{day.isoformat()}__ndvi_median",
                    item_key=item_key,
                    acquired=start.isoformat().replace("+00:00", "Z"),
                    grid=grid,
                    layers=objects,
                    source_hrefs=sources,
                    processing_datetime=_processing_time(store, item_key, changed, now),
                    software_version=__version__,
                    lineage=f"per-pixel median of the valid NDVI of {len(sources)} scene(s)",
                    extra_properties={"geospatial_pipeline:aoi": aoi_name},
                )
                products.append(
                    _publish_item(
                        store,
                        doc,
                        item_key,
                        day_catalog_key(collection, day),
                        item_id=COMPOSITE_ID,
                        aoi=aoi_name,
                        decision=None,
                        stats={"scenes": len(sources)},
                        layers=entries,
                    )
                )
                item_keys.append(item_key)

            # Products of scenes that left the day stay until product_catalog has committed
            # rows without them: a failure in between never leaves a row without its object.
            catalog_key = day_catalog_key(collection, day)
            store.put_bytes(
                catalog_key,
                dumps(
                    day_catalog(
                        f"{collection}-{day.isoformat()}",
                        catalog_key,
                        PRODUCTS_ROOT,
                        item_keys,
                        f"{collection} {day.isoformat()}",
                    )
                ),
                "application/json",
            )
            # Rebuilt from what is stored, so every materialized day stays reachable.
            day_catalogs = sorted(
                o.key
                for o in store.list("processed")
                if o.key.endswith("/catalog.json") and o.key.count("/") == 3
            )
            store.put_bytes(
                PRODUCTS_ROOT, dumps(root_catalog(PRODUCTS_ROOT, day_catalogs)), "application/json"
            )
            store.put_bytes(
                products_manifest_key(collection, day),
                dumps({"day": day.isoformat(), "collection": collection, "products": products}),
                "application/json",
            )
            checks = _checks(store, products, item_keys, catalog_key, transform)

        scenes = [p for p in products if p["item_id"] != COMPOSITE_ID]
        layers = [e for p in products for e in p["layers"]]
        return MaterializeResult(
            metadata={
                "scenes": len(scenes),
                "aois": len({p["aoi"] for p in products}),
                "objects": len(layers),
                "bytes": sum(e["bytes"] for e in layers),
                "stac_items": len(item_keys),
                "catalog": store.url(PRODUCTS_ROOT),
                "offset_decisions": MetadataValue.json(
                    [{"item": p["item_id"], "aoi": p["aoi"], **p["decision"]} for p in scenes]
                ),
                "preview": MetadataValue.md(
                    markdown_table(
                        [
                            {
                                "item": p["item_id"],
                                "aoi": p["aoi"],
                                "valid %": round(100 * p["stats"]["valid_pixel_fraction"], 1),
                                "cloud %": round(100 * p["stats"]["cloud_fraction"], 1),
                                "offset DN": p["decision"]["offset_dn"],
                                "decided by": p["decision"]["decided_by"],
                            }
                            for p in scenes
                        ]
                    )
                ),
            },
            check_results=checks,
        )

    return [analysis_ready_rasters]


def _checks(
    store: ObjectStore,
    products: list[dict[str, Any]],
    item_keys: list[str],
    catalog_key: str,
    transform: TransformResource,
) -> list[AssetCheckResult]:
    scenes = [p for p in products if p["item_id"] != COMPOSITE_ID]
    out_of_range: list[str] = []
    for product in products:
        for layer in product["layers"]:
            low, high = (
                INDEX_LIMITS
                if layer["product"].startswith(("ndvi", "ndwi"))
                else REFLECTANCE_LIMITS
            )
            if layer["min"] is not None and (layer["min"] < low or layer["max"] > high):
                out_of_range.append(f"{layer['key']}: [{layer['min']:.4f}, {layer['max']:.4f}]")
    too_negative = [
        f"{p['item_id']}/{p['aoi']}: {p['stats']['negative_reflectance_share']:.4f}"
        for p in scenes
        if p["stats"]["negative_reflectance_share"] > transform.max_negative_reflectance_share
    ]
    fractions = {f"{p['item_id']}/{p['aoi']}": p["stats"]["valid_pixel_fraction"] for p in scenes}
    low_valid = {k: v for k, v in fractions.items() if not transform.min_valid_fraction <= v <= 1.0}

    invalid_cogs = []
    for product in products:
        for layer in product["layers"]:
            result = validate_cog_path(store.gdal_path(layer["key"]))
            if not result.valid:
                invalid_cogs.append(f"{layer['key']}: {result.errors}")

    item_problems = {
        key: problems
        for key in item_keys
        if (problems := validate_product_item(json.loads(store.get_bytes(key))))
    }
    try:
        reachable = {
            item.id for item in load_catalog(store, PRODUCTS_ROOT).get_items(recursive=True)
        }
        expected = {json.loads(store.get_bytes(k))["id"] for k in item_keys}
        unreachable = sorted(expected - reachable)
    except Exception as exc:  # a catalog that does not load is itself the finding
        unreachable = [f"catalog does not load: {exc}"]
    disagreements = [
        {"item": p["item_id"], "aoi": p["aoi"], **p["decision"]}
        for p in scenes
        if p["decision"]["disagreement"]
    ]
    return [
        AssetCheckResult(
            check_name="value_ranges",
            passed=not (out_of_range or too_negative),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "out_of_range": MetadataValue.json(out_of_range[:50]),
                "negative_reflectance_over_limit": MetadataValue.json(too_negative[:50]),
            },
        ),
        AssetCheckResult(
            check_name="valid_pixel_fraction",
            passed=not low_valid,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "fractions": MetadataValue.json(fractions),
                "below_minimum": MetadataValue.json(low_valid),
                "minimum": transform.min_valid_fraction,
            },
        ),
        AssetCheckResult(
            check_name="product_cogs_valid",
            passed=not invalid_cogs,
            severity=AssetCheckSeverity.ERROR,
            metadata={"invalid": MetadataValue.json(invalid_cogs[:50])},
        ),
        AssetCheckResult(
            check_name="stac_items_valid",
            passed=not (item_problems or unreachable),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "items": len(item_keys),
                "problems": MetadataValue.json(item_problems),
                "unreachable_from_catalog": MetadataValue.json(unreachable),
                "note": "STAC core schema validated offline; extension fields checked by "
                "the pipeline (extension schemas are published online only)",
            },
        ),
        AssetCheckResult(
            check_name="offset_metadata_agrees",
            passed=not disagreements,
            severity=AssetCheckSeverity.WARN,
            metadata={"disagreements": MetadataValue.json(disagreements)},
        ),
    ]
