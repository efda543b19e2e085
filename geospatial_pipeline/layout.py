"""Where each (date, AOI) partition's objects live in the object store (one place for
every key). Every key of a partition sits under a prefix that names both its day and its
AOI, so a run of (d, a) can list, rewrite and delete its own objects without touching
(d, b) or (e, a)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from geospatial_pipeline.storage.keys import join_key, sanitize_component


@dataclass(frozen=True, order=True)
class Partition:
    """One (UTC day, AOI) partition."""

    day: dt.date
    aoi: str

    def __str__(self) -> str:
        return f"{self.day.isoformat()}/{self.aoi}"

    @property
    def path(self) -> str:
        """The key segment ``{date}/{aoi}`` every object of the partition sits under."""
        return join_key(self.day.isoformat(), sanitize_component(self.aoi))


def items_key(collection: str, part: Partition) -> str:
    return join_key("stac", sanitize_component(collection), part.path, "items.json")


def raw_prefix(collection: str, part: Partition) -> str:
    return join_key("raw", sanitize_component(collection), part.path)


def band_key(collection: str, part: Partition, item_id: str, band: str) -> str:
    return join_key(
        raw_prefix(collection, part),
        sanitize_component(item_id),
        f"{sanitize_component(band)}.tif",
    )


def _manifest(collection: str, part: Partition, name: str) -> str:
    return join_key("manifests", sanitize_component(collection), part.path, name)


def manifest_key(collection: str, part: Partition) -> str:
    return _manifest(collection, part, "band_rasters.json")


def scene_products_manifest_key(collection: str, part: Partition) -> str:
    return _manifest(collection, part, "scene_products.json")


def composite_manifest_key(collection: str, part: Partition) -> str:
    return _manifest(collection, part, "ndvi_composite.json")


# The static catalog: one writer per document. Each partition's run writes only its own
# sub-catalog; stac_catalog_root alone writes the root and the collection.
PRODUCTS_ROOT = "processed/catalog.json"
SUB_CATALOG_NAME = "collection.json"


def products_collection_key(collection: str) -> str:
    return join_key("processed", sanitize_component(collection), "collection.json")


def products_prefix(collection: str) -> str:
    return join_key("processed", sanitize_component(collection))


def processed_prefix(collection: str, part: Partition) -> str:
    return join_key(products_prefix(collection), part.path)


def partition_catalog_key(collection: str, part: Partition) -> str:
    """The partition's sub-catalog (a STAC Collection, so it carries its extent)."""
    return join_key(processed_prefix(collection, part), SUB_CATALOG_NAME)


def product_dir(collection: str, part: Partition, item_id: str) -> str:
    return join_key(processed_prefix(collection, part), sanitize_component(item_id))


def late_record_key(day: dt.date, item_id: str) -> str:
    return join_key("late_data", day.isoformat(), f"{sanitize_component(item_id)}.json")
