"""Where each partition's objects live in the object store (one place for every key)."""

from __future__ import annotations

import datetime as dt

from geospatial_pipeline.storage.keys import join_key, sanitize_component


def items_key(collection: str, day: dt.date) -> str:
    return join_key("stac", sanitize_component(collection), day.isoformat(), "items.json")


def raw_prefix(collection: str, day: dt.date) -> str:
    return join_key("raw", sanitize_component(collection), day.isoformat())


def band_key(collection: str, day: dt.date, aoi: str, item_id: str, band: str) -> str:
    return join_key(
        raw_prefix(collection, day),
        sanitize_component(aoi),
        sanitize_component(item_id),
        f"{sanitize_component(band)}.tif",
    )


def manifest_key(collection: str, day: dt.date) -> str:
    return join_key(
        "manifests", sanitize_component(collection), day.isoformat(), "band_rasters.json"
    )


# The static catalog: one writer per document. Each day's run writes only its own
# sub-catalog; stac_catalog_root alone writes the root and the collection.
PRODUCTS_ROOT = "processed/catalog.json"


def products_collection_key(collection: str) -> str:
    return join_key("processed", sanitize_component(collection), "collection.json")


def processed_prefix(collection: str, day: dt.date) -> str:
    return join_key("processed", sanitize_component(collection), day.isoformat())


def day_catalog_key(collection: str, day: dt.date) -> str:
    """The day's sub-catalog (a STAC Collection, so it carries the day's extent)."""
    return join_key(processed_prefix(collection, day), "collection.json")


def product_dir(collection: str, day: dt.date, aoi: str, item_id: str) -> str:
    return join_key(
        processed_prefix(collection, day), sanitize_component(aoi), sanitize_component(item_id)
    )


def scene_products_manifest_key(collection: str, day: dt.date) -> str:
    return join_key(
        "manifests", sanitize_component(collection), day.isoformat(), "scene_products.json"
    )


def composite_manifest_key(collection: str, day: dt.date) -> str:
    return join_key(
        "manifests", sanitize_component(collection), day.isoformat(), "ndvi_composite.json"
    )


def late_record_key(day: dt.date, item_id: str) -> str:
    return join_key("late_data", day.isoformat(), f"{sanitize_component(item_id)}.json")
