"""Products in a STAC API: each (date, AOI) partition's product items in pgstac, served by
stac-fastapi-pgstac (locally, or an eoAPI deployment in production).

One writer per row: a partition's run upserts its own items and deletes its own rows that
are no longer published, so runs of different partitions never touch each other's rows.
The collection is upserted by every run, not by an unpartitioned step like
``stac_catalog_root``: its document is the same in every run (item_assets, renders,
providers, license), and its extent and summaries are recomputed from the rows by one SQL
statement after each load, so concurrent runs converge on the complete collection, and a
partition's items are searchable as soon as its run ends rather than after a sensor tick.
"""

import json

from dagster import (
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from geospatial_pipeline.assets.catalog import STAC_CATALOG
from geospatial_pipeline.assets.runs import PartitionOutcome, materialize_each, run_partitions
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.partitions import BACKFILL_POLICY, PARTITIONS
from geospatial_pipeline.resources.pgstac import PgstacResource
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.stac import pgstac as pgstac_rows
from geospatial_pipeline.stac import publish

PGSTAC_ITEMS = AssetKey("pgstac_items")
# Bumped by hand whenever a change alters the rows the asset writes.
PGSTAC_ITEMS_VERSION = "1"
ITEMS_SCHEMA = TableSchema(
    columns=[
        TableColumn("id", "string", description="item id in the API"),
        TableColumn("datetime", "string"),
        TableColumn("assets", "int", description="layers (COGs) of the product"),
    ]
)


@asset(
    key=PGSTAC_ITEMS,
    partitions_def=PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    # After the sub-catalog: its blocking check (every item validates) gates publication.
    deps=[STAC_CATALOG],
    group_name="publish",
    kinds={"stac", "postgres"},
    code_version=PGSTAC_ITEMS_VERSION,
    description=(
        "The partition's product items in pgstac (the collection "
        "geospatial-pipeline-products-{collection}, served by stac-fastapi-pgstac): "
        "upserted, the partition's rows no longer published deleted, rows counted."
    ),
)
def pgstac_items(
    context: AssetExecutionContext,
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    pgstac: PgstacResource,
) -> MaterializeResult:
    return materialize_each(
        context,
        [
            (part, _publish_partition(stac, object_store, pgstac, part))
            for part, _ in run_partitions(context, object_store)
        ],
    )


def _publish_partition(
    stac: StacSearchResource,
    object_store: ObjectStoreResource,
    pgstac: PgstacResource,
    part: Partition,
) -> PartitionOutcome:
    store = object_store.store()
    items = [
        pgstac_rows.api_item(
            json.loads(store.get_bytes(p["stac_item_key"])),
            item_key=p["stac_item_key"],
            store=store,
            collection=stac.collection,
        )
        for p in publish.partition_products(store, stac.collection, part)
    ]
    done = pgstac_rows.publish_partition(
        pgstac.conninfo(), stac.collection, part.day, part.aoi, items
    )
    metadata = {
        "dagster/row_count": done.rows,
        "collection": done.collection_id,
        "deleted": MetadataValue.json(done.deleted),
        "items": MetadataValue.table(
            [
                TableRecord(
                    {
                        "id": i["id"],
                        "datetime": i["properties"]["datetime"],
                        "assets": len(i["assets"]),
                    }
                )
                for i in items
            ],
            schema=ITEMS_SCHEMA,
        ),
    }
    if pgstac.stac_api_url:
        metadata["search"] = MetadataValue.url(
            f"{pgstac.stac_api_url}/collections/{done.collection_id}/items"
            f"?datetime={part.day.isoformat()}T00:00:00Z/{part.day.isoformat()}T23:59:59Z"
        )
    return PartitionOutcome(metadata=metadata)
