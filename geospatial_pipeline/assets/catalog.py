"""The static STAC catalog of the products, one writer per document.

``stac_catalog`` (per day) writes only the day's sub-catalog, from the day's manifests;
``stac_catalog_root`` (unpartitioned, the only step that looks across days) lists the day
sub-catalogs and writes the collection and the root catalog. So runs of different days
never read or rewrite each other's documents, and their cost does not grow with history.
"""

import json

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DailyPartitionsDefinition,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from geospatial_pipeline.assets.transform import NDVI_COMPOSITE, SCENE_PRODUCTS
from geospatial_pipeline.layout import (
    PRODUCTS_ROOT,
    day_catalog_key,
    products_collection_key,
)
from geospatial_pipeline.partitions import BACKFILL_POLICY, partition_day
from geospatial_pipeline.raster.grid import stac_bbox
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac import publish
from geospatial_pipeline.stac.itemcollection import dumps
from geospatial_pipeline.stac.products import (
    catalog_tree_problems,
    day_catalog,
    day_catalog_problems,
    products_collection,
    root_catalog,
    union_bbox,
)
from geospatial_pipeline.storage.keys import join_key
from geospatial_pipeline.storage.object_store import ObjectStore

STAC_CATALOG = AssetKey("stac_catalog")
STAC_CATALOG_ROOT = AssetKey("stac_catalog_root")
# Bumped by hand whenever a change alters the documents the asset writes.
STAC_CATALOG_VERSION = "1"
STAC_CATALOG_ROOT_VERSION = "1"
# After any day's sub-catalog changes (a partition run, a backfill, a late-data re-run).
# Most days are never materialized, so "missing upstream" must not hold it back; never
# while a sub-catalog or the root itself is being written.
ROOT_AUTOMATION = (
    AutomationCondition.eager()
    .without(~AutomationCondition.any_deps_missing())
    .with_label("eager_allow_missing")
)

CATALOG_ROOT_SENSOR = "stac_catalog_root_sensor"


def catalog_root_sensor() -> AutomationConditionSensorDefinition:
    """Evaluates the root's automation condition. Running by default: Dagster's implicit
    automation sensor starts stopped, and a stopped one would leave new days unlinked."""
    return AutomationConditionSensorDefinition(
        CATALOG_ROOT_SENSOR,
        target=[STAC_CATALOG_ROOT],
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description="Rewrites the root catalog and the collection after day sub-catalogs change.",
    )


def day_catalog_keys(store: ObjectStore, collection: str) -> list[str]:
    """The day sub-catalogs stored for ``collection``: the root step's one listing, one
    folder level deep (a HEAD per day), never every product object of the history."""
    prefix = products_collection_key(collection).rsplit("/", 1)[0]
    candidates = (join_key(folder, "collection.json") for folder in store.folders(prefix))
    return [key for key in candidates if store.head(key) is not None]


def build_catalog_assets(
    partitions: DailyPartitionsDefinition,
) -> list[AssetsDefinition | AssetChecksDefinition]:
    @asset(
        key=STAC_CATALOG,
        partitions_def=partitions,
        backfill_policy=BACKFILL_POLICY,
        deps=[SCENE_PRODUCTS, NDVI_COMPOSITE],
        group_name="transform",
        kinds={"stac"},
        code_version=STAC_CATALOG_VERSION,
        description=(
            "The day's STAC sub-catalog (processed/{collection}/{date}/collection.json, a "
            "Collection with the day's extent) linking the day's product items; read from "
            "the day's manifests only."
        ),
    )
    def stac_catalog(
        context: AssetExecutionContext,
        stac: StacSearchResource,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
    ) -> MaterializeResult:
        day = partition_day(context.partition_key)
        store = object_store.store()
        products = publish.day_products(store, stac.collection, day)
        # A day without products still gets its sub-catalog (empty), over its AOIs.
        bbox = union_bbox(p["bbox"] for p in products) or union_bbox(
            stac_bbox(a.shape) for a in scope.aoi_configs()
        )
        key = day_catalog_key(stac.collection, day)
        doc = day_catalog(
            collection=stac.collection,
            day=day,
            catalog_key=key,
            parent_key=products_collection_key(stac.collection),
            root_key=PRODUCTS_ROOT,
            item_keys=[p["stac_item_key"] for p in products],
            bbox=bbox or [-180.0, -90.0, 180.0, 90.0],
        )
        put = store.put_bytes(key, dumps(doc), "application/json")
        return MaterializeResult(
            metadata={
                "stac_items": len(products),
                "sub_catalog": put.url,
                "bbox": MetadataValue.json(doc["extent"]["spatial"]["bbox"][0]),
            }
        )

    @asset_check(
        asset=STAC_CATALOG,
        blocking=True,
        partitions_def=partitions,
        description="Every product item of the day validates (STAC core schema offline plus "
        "the extension fields the pipeline relies on) and the day's sub-catalog reaches "
        "each of them. Reads only the day's sub-catalog and items.",
    )
    def stac_items_valid(
        context: AssetCheckExecutionContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
    ) -> AssetCheckResult:
        day = partition_day(context.partition_key)
        store = object_store.store()
        products = publish.day_products(store, stac.collection, day)
        problems, unreachable = day_catalog_problems(
            store, day_catalog_key(stac.collection, day), [p["stac_item_key"] for p in products]
        )
        return AssetCheckResult(
            passed=not (problems or unreachable),
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "items": len(products),
                "problems": MetadataValue.json(problems),
                "unreachable_from_catalog": MetadataValue.json(unreachable),
                "note": "STAC core schema validated offline; extension fields checked by "
                "the pipeline (extension schemas are published online only)",
            },
        )

    @asset(
        key=STAC_CATALOG_ROOT,
        deps=[STAC_CATALOG],
        group_name="transform",
        kinds={"stac"},
        code_version=STAC_CATALOG_ROOT_VERSION,
        automation_condition=ROOT_AUTOMATION,
        description=(
            "processed/catalog.json and the collection (processed/{collection}/"
            "collection.json, extent the union of the days'), linking every day "
            "sub-catalog in storage. The only writer of both; not part of ingest_daily, so "
            "concurrent day runs never race on them: the automation condition sensor runs it "
            "after day sub-catalogs change."
        ),
    )
    def stac_catalog_root(
        stac: StacSearchResource, object_store: ObjectStoreResource
    ) -> MaterializeResult:
        store = object_store.store()
        keys = day_catalog_keys(store, stac.collection)
        days = {k: json.loads(store.get_bytes(k)) for k in keys}
        collection_key = products_collection_key(stac.collection)
        collection = products_collection(
            collection=stac.collection,
            collection_key=collection_key,
            root_key=PRODUCTS_ROOT,
            day_catalogs=days,
        )
        store.put_bytes(collection_key, dumps(collection), "application/json")
        put = store.put_bytes(
            PRODUCTS_ROOT, dumps(root_catalog(PRODUCTS_ROOT, [collection_key])), "application/json"
        )
        return MaterializeResult(
            metadata={
                "day_catalogs": len(keys),
                "first_day": _day_of(keys[0]) if keys else "",
                "last_day": _day_of(keys[-1]) if keys else "",
                "extent": MetadataValue.json(collection["extent"]),
                "catalog": put.url,
            }
        )

    @asset_check(
        asset=STAC_CATALOG_ROOT,
        blocking=True,
        description="The root catalog, the collection and every day sub-catalog validate "
        "(STAC core schema, offline) and every stored day sub-catalog is linked.",
    )
    def catalog_valid(
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
    ) -> AssetCheckResult:
        store = object_store.store()
        # Items are checked per day (stac_items_valid): here only the tree's documents.
        problems, _ = catalog_tree_problems(store, PRODUCTS_ROOT, items=False)
        root = json.loads(store.get_bytes(products_collection_key(stac.collection)))
        linked = {_day_of(link["href"]) for link in root["links"] if link["rel"] == "child"}
        stored = {_day_of(k) for k in day_catalog_keys(store, stac.collection)}
        return AssetCheckResult(
            passed=not problems and stored <= linked,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "problems": MetadataValue.json(problems[:50]),
                "days_not_linked": MetadataValue.json(sorted(stored - linked)),
                "days_linked": len(linked),
            },
        )

    return [stac_catalog, stac_items_valid, stac_catalog_root, catalog_valid]


def _day_of(href: str) -> str:
    return href.rstrip("/").split("/")[-2]
