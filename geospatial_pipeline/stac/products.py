"""STAC Items for the analysis-ready products, and the static catalog that holds them.

Layout (relative links, so the catalog is self-contained wherever it is copied):

    processed/catalog.json                                   root catalog -> day catalogs
    processed/{collection}/{date}/catalog.json               day catalog  -> items
    processed/{collection}/{date}/{aoi}/{item}/item.json     product item -> ./{layer}.tif
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shapely.geometry import mapping

from geospatial_pipeline.raster.grid import Grid, grid_footprint, stac_bbox

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
                    "data_type": "float32",
                    "nodata": "nan",
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


def day_catalog(
    catalog_id: str, catalog_key: str, root_key: str, item_keys: Iterable[str], title: str
) -> dict[str, Any]:
    base = posixpath.dirname(catalog_key)
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": catalog_id,
        "title": title,
        "description": f"Analysis-ready products of {title}",
        "links": [
            {"rel": "root", "href": posixpath.relpath(root_key, base), "type": "application/json"},
            {
                "rel": "parent",
                "href": posixpath.relpath(root_key, base),
                "type": "application/json",
            },
            *(
                {
                    "rel": "item",
                    "href": "./" + posixpath.relpath(k, base),
                    "type": "application/geo+json",
                }
                for k in sorted(item_keys)
            ),
        ],
    }


def root_catalog(root_key: str, day_catalog_keys: Iterable[str]) -> dict[str, Any]:
    base = posixpath.dirname(root_key)
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": ROOT_CATALOG_ID,
        "description": "Analysis-ready Sentinel-2 products (cloud-masked, offset-corrected, "
        "one grid per AOI, NDVI/NDWI) made by geospatial_pipeline",
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            *(
                {
                    "rel": "child",
                    "href": "./" + posixpath.relpath(k, base),
                    "type": "application/json",
                }
                for k in sorted(day_catalog_keys)
            ),
        ],
    }


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
