"""STAC Items for the analysis-ready products, and the static catalog that holds them.

Layout (relative links, so the catalog is self-contained wherever it is copied):

    processed/catalog.json                                   root catalog -> the collection
    processed/{collection}/collection.json                collection  -> partition sub-catalogs
    processed/{collection}/{date}/{aoi}/collection.json   (date, AOI) sub-catalog -> items
    processed/{collection}/{date}/{aoi}/{item}/item.json  product item -> ./{layer}.tif

One writer per document: a (date, AOI) partition's run writes its items and its
sub-catalog (a Collection, so it carries the partition's extent); only the root step lists
the sub-catalogs and writes the root catalog and the collection, whose extent is the union
of theirs.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shapely.geometry import mapping

from geospatial_pipeline.raster.encoding import raster_band
from geospatial_pipeline.raster.grid import Grid, grid_footprint, stac_bbox
from geospatial_pipeline.storage.object_store import ObjectStore

STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
ROOT_CATALOG_ID = "geospatial-pipeline-products"
LAYER_ROLES = {
    "red": ["data", "reflectance"],
    "green": ["data", "reflectance"],
    "blue": ["data", "reflectance"],
    "nir": ["data", "reflectance"],
    "ndvi": ["data", "index"],
    "ndwi": ["data", "index"],
    "ndvi_median": ["data", "index"],
}


@dataclass(frozen=True)
class LayerObject:
    name: str
    key: str
    bytes: int
    sha256: str


def _multihash_sha256(hex_digest: str) -> str:
    # file:checksum is a multihash: 0x12 = sha2-256, 0x20 = 32 bytes.
    return "1220" + hex_digest


def product_item(
    *,
    item_id: str,
    item_key: str,
    acquired: str,
    grid: Grid,
    layers: Iterable[LayerObject],
    source_hrefs: list[str],
    processing_datetime: str,
    software_version: str,
    lineage: str,
    extra_properties: Mapping[str, Any],
) -> dict[str, Any]:
    footprint = grid_footprint(grid)
    base = posixpath.dirname(item_key)
    assets = {
        layer.name: {
            "href": "./" + posixpath.relpath(layer.key, base),
            "type": COG_TYPE,
            "roles": LAYER_ROLES.get(layer.name, ["data"]),
            "raster:bands": [
                {
                    **raster_band(),
                    "spatial_resolution": grid.transform.a,
                    **({"unit": "1"} if "reflectance" in LAYER_ROLES.get(layer.name, []) else {}),
                }
            ],
            "file:size": layer.bytes,
            "file:checksum": _multihash_sha256(layer.sha256),
        }
        for layer in layers
    }
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": sorted(EXTENSIONS.values()),
        "id": item_id,
        "geometry": mapping(footprint),
        "bbox": stac_bbox(footprint),
        "properties": {
            "datetime": acquired,
            "proj:code": grid.crs,
            "proj:shape": [grid.height, grid.width],
            "proj:transform": list(grid.transform)[:6],
            "processing:software": {"geospatial-pipeline": software_version},
            "processing:datetime": processing_datetime,
            "processing:lineage": lineage,
            **dict(extra_properties),
        },
        "links": [
            {"rel": "derived_from", "href": href, "type": "application/geo+json"}
            for href in source_hrefs
        ],
        "assets": assets,
    }


def with_catalog_links(
    item: dict[str, Any], item_key: str, day_catalog_key: str, root_key: str
) -> dict[str, Any]:
    out = copy.deepcopy(item)
    base = posixpath.dirname(item_key)
    out["links"] = [
        {"rel": "root", "href": posixpath.relpath(root_key, base), "type": "application/json"},
        {
            "rel": "parent",
            "href": posixpath.relpath(day_catalog_key, base),
            "type": "application/json",
        },
        *item["links"],
    ]
    return out


LICENSE = "other"  # derived from Copernicus Sentinel data: see the source items' terms


def _link(rel: str, target: str, base: str, media: str = "application/json") -> dict[str, str]:
    href = posixpath.relpath(target, base)
    return {"rel": rel, "href": href if href.startswith(".") else "./" + href, "type": media}


def union_bbox(bboxes: Iterable[Sequence[float]]) -> list[float] | None:
    """The bbox covering all of them (None for none). A bbox crossing 180° (west > east)
    widens the union to every longitude rather than claiming the wrong side."""
    boxes = [list(b) for b in bboxes]
    if not boxes:
        return None
    south, north = min(b[1] for b in boxes), max(b[3] for b in boxes)
    if any(b[0] > b[2] for b in boxes):
        return [-180.0, south, 180.0, north]
    return [min(b[0] for b in boxes), south, max(b[2] for b in boxes), north]


def _collection(
    *,
    collection_id: str,
    title: str,
    description: str,
    bbox: Sequence[float],
    interval: tuple[str, str],
    links: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": collection_id,
        "title": title,
        "description": description,
        "license": LICENSE,
        "extent": {
            "spatial": {"bbox": [list(bbox)]},
            "temporal": {"interval": [list(interval)]},
        },
        "links": links,
    }


def day_interval(day: dt.date) -> tuple[str, str]:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    end = start + dt.timedelta(days=1) - dt.timedelta(seconds=1)
    return (
        start.isoformat().replace("+00:00", "Z"),
        end.isoformat().replace("+00:00", "Z"),
    )


def partition_catalog(
    *,
    collection: str,
    day: dt.date,
    aoi: str,
    catalog_key: str,
    parent_key: str,
    root_key: str,
    item_keys: Iterable[str],
    bbox: Sequence[float],
) -> dict[str, Any]:
    """The (date, AOI) sub-catalog: a Collection over the partition's product items. Its
    extent is the day (temporal) and ``bbox`` (the union of its items, or the AOI's when
    the partition has no product)."""
    base = posixpath.dirname(catalog_key)
    title = f"{collection} {day.isoformat()} {aoi}"
    return _collection(
        collection_id=f"{collection}-{day.isoformat()}-{aoi}",
        title=title,
        description=f"Analysis-ready products of {title}",
        bbox=bbox,
        interval=day_interval(day),
        links=[
            _link("root", root_key, base),
            _link("parent", parent_key, base),
            *(_link("item", k, base, "application/geo+json") for k in sorted(item_keys)),
        ],
    )


def extent_of(doc: Mapping[str, Any]) -> tuple[list[float], tuple[str, str]]:
    """A collection's overall bbox and interval (first entries, per the STAC spec)."""
    extent = doc["extent"]
    start, end = extent["temporal"]["interval"][0]
    return list(extent["spatial"]["bbox"][0]), (str(start), str(end))


def products_collection(
    *,
    collection: str,
    collection_key: str,
    root_key: str,
    sub_catalogs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The collection of every (date, AOI) sub-catalog (key -> document), extent their
    union."""
    extents = [extent_of(doc) for doc in sub_catalogs.values()]
    bbox = union_bbox(b for b, _ in extents) or [-180.0, -90.0, 180.0, 90.0]
    interval = (
        (min(i[0] for _, i in extents), max(i[1] for _, i in extents)) if extents else (None, None)
    )
    base = posixpath.dirname(collection_key)
    return _collection(
        collection_id=f"{ROOT_CATALOG_ID}-{collection}",
        title=f"Analysis-ready {collection}",
        description=f"Analysis-ready products of {collection}, one sub-catalog per day and AOI",
        bbox=bbox,
        interval=interval,  # type: ignore[arg-type]
        links=[
            _link("root", root_key, base),
            _link("parent", root_key, base),
            *(_link("child", k, base) for k in sorted(sub_catalogs)),
        ],
    )


def root_catalog(root_key: str, collection_keys: Iterable[str]) -> dict[str, Any]:
    base = posixpath.dirname(root_key)
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": ROOT_CATALOG_ID,
        "description": "Analysis-ready Sentinel-2 products (cloud-masked, offset-corrected, "
        "one grid per AOI, NDVI/NDWI) made by geospatial_pipeline",
        "links": [
            _link("root", root_key, base),
            *(_link("child", k, base) for k in sorted(collection_keys)),
        ],
    }


def validate_core(doc: Mapping[str, Any]) -> list[str]:
    """The STAC core schema of a catalog, collection or item, offline (the schemas pystac
    ships; extension schemas are published online only, so they are left out)."""
    import pystac.validation

    try:
        pystac.validation.validate_dict({**copy.deepcopy(dict(doc)), "stac_extensions": []})
    except pystac.STACValidationError as exc:
        return [f"{doc.get('id', '?')}: core schema: {exc}"]
    return []


def linked_keys(doc: Mapping[str, Any], doc_key: str, rel: str) -> list[str]:
    """Store keys of a document's links of one relation (relative hrefs resolved)."""
    base = posixpath.dirname(doc_key)
    return [
        posixpath.normpath(posixpath.join(base, str(link["href"])))
        for link in doc.get("links", [])
        if link.get("rel") == rel
    ]


def validate_product_item(item: Mapping[str, Any]) -> list[str]:
    """Problems with a product item: the STAC core schema (validated offline with the
    schemas pystac ships) plus the extension fields this pipeline relies on. Extension
    JSON schemas are published online only, so their fields are checked here instead."""
    import pystac.validation

    problems: list[str] = []
    core = {**copy.deepcopy(dict(item)), "stac_extensions": []}
    try:
        pystac.validation.validate_dict(core)
    except pystac.STACValidationError as exc:
        problems.append(f"core schema: {exc}")
    props = item.get("properties", {})
    shape = props.get("proj:shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) and v > 0 for v in shape)
    ):
        problems.append(f"proj:shape must be two positive integers, got {shape!r}")
    transform = props.get("proj:transform")
    if not (isinstance(transform, list) and len(transform) in (6, 9)):
        problems.append(f"proj:transform must have 6 or 9 numbers, got {transform!r}")
    if not isinstance(props.get("proj:code"), str):
        problems.append("proj:code missing")
    if not isinstance(props.get("processing:software"), dict):
        problems.append("processing:software must be an object")
    for key in ("processing:datetime", "processing:lineage"):
        if not isinstance(props.get(key), str):
            problems.append(f"{key} missing")
    if not any(link.get("rel") == "derived_from" for link in item.get("links", [])):
        problems.append("no derived_from link")
    for name, asset in item.get("assets", {}).items():
        bands = asset.get("raster:bands")
        if not (isinstance(bands, list) and bands and "data_type" in bands[0]):
            problems.append(f"asset {name}: raster:bands with data_type required")
        if not str(asset.get("file:checksum", "")).startswith("1220"):
            problems.append(f"asset {name}: file:checksum must be a sha2-256 multihash")
    missing_ext = sorted(set(EXTENSIONS.values()) - set(item.get("stac_extensions", [])))
    if missing_ext:
        problems.append(f"stac_extensions missing {missing_ext}")
    return problems


def _read_json(store: ObjectStore, key: str) -> dict[str, Any]:
    return dict(json.loads(store.get_bytes(key)))


def partition_catalog_problems(
    store: ObjectStore, catalog_key: str, item_keys: Iterable[str]
) -> tuple[dict[str, list[str]], list[str]]:
    """Check one day's sub-catalog against the items the day published, reading only that
    sub-catalog and those items: (problems per document, items the sub-catalog does not
    reach). Nothing outside the day is read, so the cost does not grow with history."""
    problems: dict[str, list[str]] = {}
    expected = sorted(set(item_keys))
    if store.head(catalog_key) is None:
        return {catalog_key: ["missing"]}, expected
    doc = _read_json(store, catalog_key)
    if found := validate_core(doc):
        problems[catalog_key] = found
    linked = set(linked_keys(doc, catalog_key, "item"))
    for key in expected:
        item = _read_json(store, key)
        found = validate_product_item(item)
        if catalog_key not in linked_keys(item, key, "parent"):
            found.append(f"parent link does not point at {catalog_key}")
        if found:
            problems[key] = found
    extra = sorted(linked - set(expected))
    if extra:
        problems.setdefault(catalog_key, []).append(f"links items the day did not publish: {extra}")
    return problems, [k for k in expected if k not in linked]


def catalog_tree_problems(
    store: ObjectStore, root_key: str, *, items: bool = True
) -> tuple[list[str], list[str]]:
    """Walk a static catalog from its root through the store, validating every catalog and
    collection (and every item when ``items``) offline: (problems, item keys reached)."""
    problems: list[str] = []
    reached: list[str] = []
    pending, seen = [root_key], set()
    while pending:
        key = pending.pop()
        if key in seen:
            continue
        seen.add(key)
        if store.head(key) is None:
            problems.append(f"{key}: linked but missing")
            continue
        doc = _read_json(store, key)
        problems += validate_core(doc)
        pending += linked_keys(doc, key, "child")
        for item_key in linked_keys(doc, key, "item"):
            reached.append(item_key)
            if items:
                if store.head(item_key) is None:
                    problems.append(f"{item_key}: linked but missing")
                    continue
                problems += [
                    f"{item_key}: {p}" for p in validate_product_item(_read_json(store, item_key))
                ]
    return problems, sorted(reached)
