"""The static STAC catalog of the products, one writer per document.

``stac_catalog`` (per date x AOI) writes only its partition's sub-catalog, from the
partition's manifests; ``stac_catalog_root`` (unpartitioned, the only step that looks
across partitions) lists the sub-catalogs and writes the collection and the root catalog.
So runs of different partitions never read or rewrite each other's documents, and their
cost does not grow with history.
"""

import json

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from geospatial_pipeline.assets.preview import location, table
from geospatial_pipeline.assets.runs import (
    PartitionOutcome,
    check_each,
    materialize_each,
    run_partitions,
)
from geospatial_pipeline.assets.transform import NDVI_COMPOSITE, SCENE_PRODUCTS
from geospatial_pipeline.layout import (
    PRODUCTS_ROOT,
    SUB_CATALOG_NAME,
    Partition,
    partition_catalog_key,
    products_collection_key,
    products_prefix,
)
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import BACKFILL_POLICY, PARTITIONS
from geospatial_pipeline.raster.grid import stac_bbox
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac import publish
from geospatial_pipeline.stac.itemcollection import dumps
from geospatial_pipeline.stac.products import (
    catalog_tree_problems,
    partition_catalog,
    partition_catalog_problems,
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


def sub_catalog_keys(store: ObjectStore, collection: str) -> list[str]:
    """The (date, AOI) sub-catalogs stored for ``collection``: folder listings two levels
    deep (days, then their AOIs) and a HEAD per partition, never every product object of
    the history."""
    candidates = (
        join_key(aoi_folder, SUB_CATALOG_NAME)
        for day_folder in store.folders(products_prefix(collection))
        for aoi_folder in store.folders(day_folder)
    )
    return [key for key in candidates if store.head(key) is not None]


@asset(
    key=STAC_CATALOG,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    deps=[SCENE_PRODUCTS, NDVI_COMPOSITE],
    group_name="transform",
    kinds={"stac"},
    code_version=STAC_CATALOG_VERSION,
    description=(
        "The partition's STAC sub-catalog (processed/{collection}/{date}/{aoi}/"
        "collection.json, a Collection with its extent) linking its product items; read "
        "from the partition's manifests only."
    ),
)
def stac_catalog(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (part, _stac_catalog_of(context, stac, object_store, part, aoi))
            for part, aoi in run_partitions(context, object_store)
        ],
    )


def _stac_catalog_of(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    part: Partition,
    aoi: registry.AoiRecord,
) -> PartitionOutcome:
    store = object_store.store()
    products = publish.partition_products(store, stac.collection, part)
    # A partition without products still gets its sub-catalog (empty), over its AOI.
    bbox = union_bbox(p["bbox"] for p in products) or union_bbox([stac_bbox(aoi.shape)])
    key = partition_catalog_key(stac.collection, part)
    doc = partition_catalog(
        collection=stac.collection,
        day=part.day,
        aoi=part.aoi,
        catalog_key=key,
        parent_key=products_collection_key(stac.collection),
        root_key=PRODUCTS_ROOT,
        item_keys=[p["stac_item_key"] for p in products],
        bbox=bbox or [-180.0, -90.0, 180.0, 90.0],
    )
    put = store.put_bytes(key, dumps(doc), "application/json")
    return PartitionOutcome(
        metadata={
            "stac_items": len(products),
            "sub_catalog": location(put.url),
            "bbox": _bbox_text(doc["extent"]["spatial"]["bbox"][0]),
            "items": table(
                [{"item": p["item_id"], "stac_item": p["stac_item_url"]} for p in products],
                ["item", "stac_item"],
            ),
        }
    )


@asset_check(
    asset=STAC_CATALOG,
    blocking=True,
    partitions_def=PARTITIONS,
    description="Every product item of the partition validates (STAC core schema offline "
    "plus the extension fields the pipeline relies on) and its sub-catalog reaches each "
    "of them. Reads only the partition's sub-catalog and items.",
)
def stac_items_valid(
    context: AssetCheckExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    def one(part: Partition) -> AssetCheckResult:
        store = object_store.store()
        products = publish.partition_products(store, stac.collection, part)
        problems, unreachable = partition_catalog_problems(
            store,
            partition_catalog_key(stac.collection, part),
            [p["stac_item_key"] for p in products],
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

    return check_each(context, one)


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
    keys = sub_catalog_keys(store, stac.collection)
    subs = {k: json.loads(store.get_bytes(k)) for k in keys}
    collection_key = products_collection_key(stac.collection)
    collection = products_collection(
        collection=stac.collection,
        collection_key=collection_key,
        root_key=PRODUCTS_ROOT,
        sub_catalogs=subs,
    )
    store.put_bytes(collection_key, dumps(collection), "application/json")
    put = store.put_bytes(
        PRODUCTS_ROOT, dumps(root_catalog(PRODUCTS_ROOT, [collection_key])), "application/json"
    )
    return MaterializeResult(
        metadata={
            "sub_catalogs": len(keys),
            "days": len({_partition_of(k)[0] for k in keys}),
            "aois": len({_partition_of(k)[1] for k in keys}),
            "first_day": _partition_of(keys[0])[0] if keys else "",
            "last_day": _partition_of(keys[-1])[0] if keys else "",
            "bbox": _bbox_text(collection["extent"]["spatial"]["bbox"][0]),
            "catalog": location(put.url),
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
    linked = {_partition_of(link["href"]) for link in root["links"] if link["rel"] == "child"}
    stored = {_partition_of(k) for k in sub_catalog_keys(store, stac.collection)}
    return AssetCheckResult(
        passed=not problems and stored <= linked,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "problems": MetadataValue.json(problems[:50]),
            "not_linked": MetadataValue.json(["/".join(p) for p in sorted(stored - linked)]),
            "sub_catalogs_linked": len(linked),
        },
    )


def _bbox_text(bbox: list[float]) -> str:
    west, south, east, north = bbox
    return f"W {west:.5f}, S {south:.5f}, E {east:.5f}, N {north:.5f}"


def _partition_of(href: str) -> tuple[str, str]:
    """(date, aoi) of a sub-catalog key or link: .../{date}/{aoi}/collection.json."""
    parts = href.rstrip("/").split("/")
    return parts[-3], parts[-2]
