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


PRODUCTS_ROOT = "processed/catalog.json"


def processed_prefix(collection: str, day: dt.date) -> str:
    return join_key("processed", sanitize_component(collection), day.isoformat())


def day_catalog_key(collection: str, day: dt.date) -> str:
    return join_key(processed_prefix(collection, day), "catalog.json")


def product_dir(collection: str, day: dt.date, aoi: str, item_id: str) -> str:
    return join_key(
        processed_prefix(collection, day), sanitize_component(aoi), sanitize_component(item_id)
    )


def products_manifest_key(collection: str, day: dt.date) -> str:
    return join_key("manifests", sanitize_component(collection), day.isoformat(), "products.json")


def late_record_key(day: dt.date, item_id: str) -> str:
    return join_key("late_data", day.isoformat(), f"{sanitize_component(item_id)}.json")
