"""The product collection and items in pgstac (served by stac-fastapi-pgstac / eoAPI).

A (date, AOI) partition's publication: the collection upserted (its static parts are the
same in every run, so concurrent runs write the same document), the partition's items
upserted with pypgstac's loader, the partition's rows that are no longer published
deleted, the collection's extent and summaries recomputed from the rows, and the
partition's rows counted: pgstac users report partial loads under concurrency, so a count
that differs from what was loaded fails the publication.

A partition's rows are those of the collection whose ``geospatial_pipeline:aoi`` is the
AOI and whose datetime falls in the UTC day (scene items: the acquisition; the composite:
the day's start), the same set the static sub-catalog links.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geospatial_pipeline.errors import PipelineError
from geospatial_pipeline.raster.encoding import raster_band
from geospatial_pipeline.stac.products import (
    COG_TYPE,
    EXTENSIONS,
    LAYER_ROLES,
    LICENSE,
    ROOT_CATALOG_ID,
    STAC_VERSION,
    union_bbox,
)
from geospatial_pipeline.stac.render import RENDER_EXTENSION, RENDERS
from geospatial_pipeline.storage.object_store import ObjectStore

ITEM_ASSETS_EXTENSION = "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"
AOI_PROPERTY = "geospatial_pipeline:aoi"
SOURCE_LICENSE_URL = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
# Links the API writes itself, and the static catalog's relative ones, which mean nothing
# outside the object store.
_API_LINK_RELS = {"self", "root", "parent", "collection", "items"}


class PgstacError(PipelineError):
    """A pgstac publication that did not land as loaded."""


def collection_id(collection: str) -> str:
    """The product collection's id: the static catalog's collection id, so both name the
    same products."""
    return f"{ROOT_CATALOG_ID}-{collection}"


def collection_document(
    collection: str,
    *,
    bbox: Sequence[float],
    interval: tuple[str | None, str | None],
) -> dict[str, Any]:
    """The product collection for the STAC API: item_assets per product layer, the
    render extension (true colour, NDVI), providers, license and an extent (which the
    publication then recomputes from the rows)."""
    item_assets = {
        name: {
            "type": COG_TYPE,
            "roles": roles,
            "title": name.replace("_", " "),
            "raster:bands": [raster_band()],
        }
        for name, roles in LAYER_ROLES.items()
    }
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": sorted({ITEM_ASSETS_EXTENSION, RENDER_EXTENSION, EXTENSIONS["raster"]}),
        "id": collection_id(collection),
        "title": f"Analysis-ready {collection}",
        "description": (
            f"Analysis-ready products of {collection} per scene and AOI (surface "
            "reflectance, NDVI, NDWI on the AOI's grid) and each AOI's daily NDVI median "
            "composite, published by geospatial-pipeline."
        ),
        "keywords": ["analysis-ready", "NDVI", "NDWI", collection],
        "license": LICENSE,
        "providers": [
            {
                "name": "ESA / Copernicus",
                "roles": ["licensor", "producer"],
                "url": "https://sentinel.esa.int",
            },
            {"name": "geospatial-pipeline", "roles": ["processor", "host"]},
        ],
        "extent": {
            "spatial": {"bbox": [list(bbox)]},
            "temporal": {"interval": [list(interval)]},
        },
        "summaries": {},
        "item_assets": item_assets,
        "renders": copy.deepcopy(RENDERS),
        "links": [
            {
                "rel": "license",
                "href": SOURCE_LICENSE_URL,
                "type": "application/pdf",
                "title": "Copernicus Sentinel data terms (the products derive from them)",
            }
        ],
    }


def api_item(
    doc: Mapping[str, Any], *, item_key: str, store: ObjectStore, collection: str
) -> dict[str, Any]:
    """A static product item as the API serves it: in the collection, asset hrefs
    absolute in the store (the static ones are relative to the item), the static
    catalog's relative links dropped; provenance (``derived_from``, processing:*) and the
    map links kept."""
    out = copy.deepcopy(dict(doc))
    out["collection"] = collection_id(collection)
    base = posixpath.dirname(item_key)
    for name, asset in out.get("assets", {}).items():
        href = str(asset.get("href", ""))
        if not href:
            raise PgstacError(f"item {out.get('id')!r} asset {name!r} has no href")
        if "://" not in href and not href.startswith("/"):
            asset["href"] = absolute_href(store.url(posixpath.normpath(posixpath.join(base, href))))
    out["links"] = [
        link
        for link in out.get("links", [])
        if link.get("rel") not in _API_LINK_RELS and "://" in str(link.get("href", ""))
    ]
    return out


def absolute_href(url: str) -> str:
    """A store address as an href readers resolve the same from anywhere: a local path
    becomes a file:// URI (clients would read a bare path as relative to the API's
    address)."""
    return url if "://" in url else Path(url).resolve().as_uri()


def item_extent(items: Sequence[Mapping[str, Any]]) -> tuple[list[float], tuple[str, str]]:
    """The bbox and datetime interval of ``items`` (at least one)."""
    if not items:
        raise PgstacError("no items: an extent needs at least one")
    bbox = union_bbox(i["bbox"] for i in items)
    assert bbox is not None
    times = sorted(str(i["properties"]["datetime"]) for i in items)
    return bbox, (times[0], times[-1])


# ------------------------------------------------------------------------------ database


@contextmanager
def pgstac_db(conninfo: str) -> Iterator[Any]:
    """A pypgstac database handle (one pooled connection), closed on exit."""
    from pypgstac.db import PgstacDB

    db = PgstacDB(dsn=conninfo)
    try:
        yield db
    finally:
        pool = db.pool
        db.disconnect()  # returns the connection to the pool and forgets the pool
        if pool is not None:
            pool.close()


def migrate(conninfo: str) -> str:
    """``pypgstac migrate``: install or upgrade pgstac in the database; its version."""
    from pypgstac.migrate import Migrate

    with pgstac_db(conninfo) as db:
        return str(Migrate(db).run_migration())


def _day_range(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return start, start + dt.timedelta(days=1)


def partition_rows(db: Any, collection: str, day: dt.date, aoi: str) -> list[str]:
    """Ids of the collection's rows of the (day, AOI) partition, with duplicates (a
    partial or doubled load shows here)."""
    start, end = _day_range(day)
    rows = db.query(
        """
        SELECT id FROM items
        WHERE collection = %s AND datetime >= %s AND datetime < %s
          AND content->'properties'->>%s = %s
        ORDER BY id
        """,
        (collection_id(collection), start, end, AOI_PROPERTY, aoi),
    )
    return [str(row[0]) for row in rows]


Extent = tuple[list[float], tuple[str | None, str | None]]


def _existing_extent(db: Any, cid: str) -> Extent | None:
    extent = db.query_one("SELECT content->'extent' FROM collections WHERE id = %s", (cid,))
    if not isinstance(extent, dict):
        return None
    start, end = extent["temporal"]["interval"][0]
    return list(extent["spatial"]["bbox"][0]), (start, end)


def _upserted_extent(
    items: Sequence[Mapping[str, Any]], previous: Extent | None, day: dt.date
) -> Extent:
    """The extent the upserted collection carries until it is recomputed from the rows:
    the stored one widened by the items, so a reader never sees it shrink meanwhile."""
    if not items:
        start = _day_range(day)[0].isoformat().replace("+00:00", "Z")
        return previous or ([-180.0, -90.0, 180.0, 90.0], (start, None))
    bbox, (first, last) = item_extent(items)
    if previous is None:
        return bbox, (first, last)
    (old_bbox, (old_first, old_last)) = previous
    # ISO 8601 UTC strings compare as their instants to the second ('Z' and '+00:00'
    # forms may misorder within one): close enough until the recompute from the rows.
    return (
        union_bbox([bbox, old_bbox]) or bbox,
        (min(first, old_first) if old_first else None, max(last, old_last) if old_last else None),
    )


# The collection's summaries, aggregated over the properties ``p`` of a row source. Its
# extent comes from pgstac's partition statistics (cheap at any size), brought up to date
# by _UPDATE_STATS beforehand.
_REFRESH_COLLECTION = """
UPDATE collections SET content = jsonb_set_lax(
    content || jsonb_build_object('summaries', (
        SELECT jsonb_strip_nulls(jsonb_build_object(
            'platform', jsonb_agg(DISTINCT p->'platform')
                FILTER (WHERE p ? 'platform' AND jsonb_typeof(p->'platform') = 'string'),
            'proj:code', jsonb_agg(DISTINCT p->'proj:code') FILTER (WHERE p ? 'proj:code'),
            'geospatial_pipeline:aoi', jsonb_agg(DISTINCT p->'geospatial_pipeline:aoi')
                FILTER (WHERE p ? 'geospatial_pipeline:aoi'),
            'eo:cloud_cover', CASE WHEN count(p->'eo:cloud_cover') FILTER (
                    WHERE jsonb_typeof(p->'eo:cloud_cover') = 'number') > 0
                THEN jsonb_build_object(
                    'minimum', min((p->>'eo:cloud_cover')::float8)
                        FILTER (WHERE jsonb_typeof(p->'eo:cloud_cover') = 'number'),
                    'maximum', max((p->>'eo:cloud_cover')::float8)
                        FILTER (WHERE jsonb_typeof(p->'eo:cloud_cover') = 'number'))
                END
        ))
        FROM ({source}) rows
    )),
    '{{extent}}'::text[], collection_extent(%(id)s, FALSE), true, 'return_target')
WHERE id = %(id)s
"""
# Every row of the collection: exact whatever changed, but it reads every item's content
# (about 45 ms per 1 000 items, benchmarks/publish_cost.py).
_ALL_ROWS = "SELECT content->'properties' AS p FROM items WHERE collection = %(id)s"
# The summaries so far as rows, plus the partition's rows: exact when the partition only
# added items (aggregates of a union), and as cheap as the partition is small.
_SUMMARIES_AND_PARTITION = """
SELECT content->'properties' AS p FROM items
WHERE collection = %(id)s AND datetime >= %(start)s AND datetime < %(end)s
  AND content->'properties'->>%(aoi_property)s = %(aoi)s
UNION ALL
SELECT jsonb_build_object(s.field, v.value) FROM collections c,
    LATERAL jsonb_each(c.content->'summaries') s(field, list), jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.list) = 'array' THEN s.list ELSE '[]' END) v(value)
WHERE c.id = %(id)s
UNION ALL
SELECT jsonb_build_object('eo:cloud_cover', b.bound) FROM collections c,
    LATERAL (VALUES (c.content->'summaries'->'eo:cloud_cover'->'minimum'),
                    (c.content->'summaries'->'eo:cloud_cover'->'maximum')) b(bound)
WHERE c.id = %(id)s AND b.bound IS NOT NULL
"""
# pgstac's upsert_collection, but the summaries so far are kept: the incremental refresh
# builds on them, and the row lock ON CONFLICT takes reads the latest ones.
_UPSERT_COLLECTION = """
INSERT INTO collections (content) VALUES (%(doc)s::jsonb)
ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content
    || jsonb_build_object('summaries', coalesce(collections.content->'summaries', '{}'))
"""
# Outside the lock below: it locks the collection's item partitions, and a load holding
# one of those waits for the collection's row (its foreign key check): with the row lock
# held, that is a deadlock (seen with concurrent partitions).
_UPDATE_STATS = "SELECT collection_extent(%(id)s, TRUE)"
# Held while the summaries are computed and written: a statement started after the lock
# is granted sees every item committed before, so concurrent partitions' refreshes (exact
# or incremental) never overwrite each other's additions.
_LOCK_COLLECTION = "SELECT 1 FROM collections WHERE id = %(id)s FOR UPDATE"


def refresh_collection(db: Any, cid: str, partition: tuple[dt.date, str] | None) -> None:
    """Recompute the collection's summaries and extent: from every row (``partition``
    None), or, after a partition's first publication, from the summaries so far plus that
    partition's rows."""
    params: dict[str, Any] = {"id": cid}
    source = _ALL_ROWS
    if partition is not None:
        day, aoi = partition
        start, end = _day_range(day)
        params |= {"start": start, "end": end, "aoi_property": AOI_PROPERTY, "aoi": aoi}
        source = _SUMMARIES_AND_PARTITION
    conn = db.connect()
    conn.execute(_UPDATE_STATS, params)
    # Not through db.query: it iterates the cursor, and an UPDATE returns no rows.
    with conn.transaction():
        conn.execute(_LOCK_COLLECTION, params)
        conn.execute(_REFRESH_COLLECTION.format(source=source), params)


@dataclass(frozen=True)
class Publication:
    """What one partition's publication did."""

    collection_id: str
    loaded: list[str]
    deleted: list[str]
    rows: int  # the partition's rows counted after the load


def publish_partition(
    conninfo: str,
    collection: str,
    day: dt.date,
    aoi: str,
    items: Sequence[Mapping[str, Any]],
) -> Publication:
    """Publish the (day, AOI) partition's product items (``api_item`` documents): the
    partition's rows afterwards are exactly ``items``; anything else in the partition
    (a product no longer published) is deleted. Raises PgstacError when the rows counted
    differ from what was loaded."""
    from pypgstac.load import Loader, Methods

    cid = collection_id(collection)
    start, end = _day_range(day)
    for item in items:
        problems = []
        if item.get("collection") != cid:
            problems.append(f"collection {item.get('collection')!r}, expected {cid!r}")
        if item.get("properties", {}).get(AOI_PROPERTY) != aoi:
            problems.append(f"{AOI_PROPERTY} {item.get('properties', {}).get(AOI_PROPERTY)!r}")
        when = dt.datetime.fromisoformat(str(item["properties"]["datetime"]).replace("Z", "+00:00"))
        if not start <= when < end:
            problems.append(f"datetime {item['properties']['datetime']} outside {day}")
        if problems:
            raise PgstacError(
                f"item {item.get('id')!r} is not of partition {day}/{aoi}: {problems}"
            )
    ids = sorted(str(i["id"]) for i in items)
    if len(set(ids)) != len(ids):
        raise PgstacError(f"partition {day}/{aoi}: duplicate item ids in {ids}")
    with pgstac_db(conninfo) as db:
        loader = Loader(db=db)
        before = partition_rows(db, collection, day, aoi)
        bbox, interval = _upserted_extent(items, _existing_extent(db, cid), day)
        doc = collection_document(collection, bbox=bbox, interval=interval)
        db.connect().execute(_UPSERT_COLLECTION, {"doc": json.dumps(doc)})
        if items:
            loader.load_items(iter([dict(i) for i in items]), insert_mode=Methods.upsert)
        stale = sorted(set(partition_rows(db, collection, day, aoi)) - set(ids))
        for item_id in stale:
            db.query_one("SELECT delete_item(%s, %s)", (item_id, cid))
        # A first publication only adds rows: merging them into the summaries is exact.
        # A re-run may have removed or changed rows, which only a full pass accounts for.
        refresh_collection(db, cid, None if before else (day, aoi))
        rows = partition_rows(db, collection, day, aoi)
    if rows != ids:
        raise PgstacError(
            f"partition {day}/{aoi}: loaded {len(ids)} item(s) into {cid} but counted "
            f"{len(rows)} row(s) (missing {sorted(set(ids) - set(rows))}, duplicated "
            f"{sorted({r for r in rows if rows.count(r) > 1})}, unexpected "
            f"{sorted(set(rows) - set(ids))})"
        )
    return Publication(collection_id=cid, loaded=ids, deleted=stale, rows=len(rows))
