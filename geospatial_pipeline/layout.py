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
