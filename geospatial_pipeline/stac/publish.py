"""Publish analysis-ready products into the object store: each layer as a COG, each
product's STAC item, and the manifests that list them (what downstream steps and the
checks read back). No Dagster here: the assets call these with one (date, AOI)
partition's inputs.

Manifests (one writer each, all under the partition's prefix):

    manifests/{collection}/{date}/{aoi}/scene_products.json   one entry per scene
    manifests/{collection}/{date}/{aoi}/ndvi_composite.json   the AOI's composite
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry.base import BaseGeometry

from geospatial_pipeline import __version__
from geospatial_pipeline.errors import PipelineError
from geospatial_pipeline.layout import (
    PRODUCTS_ROOT,
    Partition,
    composite_manifest_key,
    partition_catalog_key,
    product_dir,
    scene_products_manifest_key,
)
from geospatial_pipeline.raster.cog import validate_cog_bytes, validate_cog_path
from geospatial_pipeline.raster.extract import COG_CONTENT_TYPE
from geospatial_pipeline.raster.grid import Grid
from geospatial_pipeline.raster.quicklook import PNG_CONTENT_TYPE, ndvi_png, true_colour_png
from geospatial_pipeline.raster.scene import (
    EncodedLayers,
    RawScene,
    TransformSettings,
    median_composite_from_paths,
    scene_meta,
    scene_products,
    strip_rows,
)
from geospatial_pipeline.stac.itemcollection import dumps
from geospatial_pipeline.stac.products import LayerObject, product_item, with_catalog_links
from geospatial_pipeline.stac.render import viewer_links, with_renders
from geospatial_pipeline.storage.keys import join_key
from geospatial_pipeline.storage.object_store import ObjectStore

PRODUCT_LAYERS = ("red", "green", "blue", "nir", "ndvi", "ndwi")
COMPOSITE_ID = "composite"
REFLECTANCE_LIMITS = (-0.2, 2.0)  # saturated/specular pixels exceed 1; below -0.2 is wrong
INDEX_LIMITS = (-1.0, 1.0)
NDVI_PICTURE_NOTE = "RdYlGn colour map over [-1, 1], legend below"
QUICKLOOK_ROLES = {"thumbnail": ["thumbnail"], "overview": ["overview"]}


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def publish_layers(
    store: ObjectStore, directory: str, encoded: EncodedLayers
) -> tuple[list[LayerObject], list[dict[str, Any]], bool]:
    """Put each encoded layer (validated as a COG first); return the item's layer objects,
    the manifest's layer entries and whether any byte changed."""
    objects: list[LayerObject] = []
    entries: list[dict[str, Any]] = []
    changed = False
    for name, (source, (low, high)) in encoded.items():
        data = source.read_bytes() if isinstance(source, Path) else source
        check = validate_cog_bytes(data)
        if not check.valid:
            raise PipelineError(
                f"product {directory}/{name}.tif is not a valid COG: {check.errors}"
            )
        put = store.put_bytes(join_key(directory, f"{name}.tif"), data, COG_CONTENT_TYPE)
        changed |= put.written
        objects.append(LayerObject(name, put.key, put.size, put.sha256))
        entries.append(
            {
                "product": name,
                "key": put.key,
                "url": put.url,
                "bytes": put.size,
                "sha256": put.sha256,
                "min": low,
                "max": high,
            }
        )
    return objects, entries, changed


@dataclass(frozen=True)
class Quicklook:
    """A PNG to publish next to a product, as the item asset ``asset``."""

    asset: str
    filename: str
    title: str
    png: bytes


def scene_quicklooks(encoded: EncodedLayers) -> list[Quicklook]:
    """A scene's true-colour thumbnail and NDVI overview, from its encoded layers."""

    def source(name: str) -> bytes | Path:
        return encoded[name][0]

    return [
        Quicklook(
            "thumbnail",
            "thumbnail.png",
            "True colour (red, green, blue; 2-98 % stretch per band)",
            true_colour_png(source("red"), source("green"), source("blue")),
        ),
        Quicklook(
            "overview",
            "ndvi.png",
            f"NDVI ({NDVI_PICTURE_NOTE})",
            ndvi_png(source("ndvi")),
        ),
    ]


def publish_quicklooks(
    store: ObjectStore, directory: str, quicklooks: Sequence[Quicklook]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], bool]:
    """Put each PNG next to the product; return the item's assets for them, the manifest's
    entries and whether any byte changed."""
    assets: dict[str, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    changed = False
    for look in quicklooks:
        put = store.put_bytes(join_key(directory, look.filename), look.png, PNG_CONTENT_TYPE)
        changed |= put.written
        assets[look.asset] = {
            "href": f"./{look.filename}",
            "type": PNG_CONTENT_TYPE,
            "title": look.title,
            "roles": QUICKLOOK_ROLES[look.asset],
            # Red, green, blue and alpha: the raster and file fields every asset carries.
            "raster:bands": [{"data_type": "uint8"}] * 4,
            "file:size": put.size,
            "file:checksum": "1220" + put.sha256,  # multihash sha2-256, as the layers
        }
        entries.append(
            {
                "asset": look.asset,
                "key": put.key,
                "url": put.url,
                "bytes": put.size,
                "sha256": put.sha256,
            }
        )
    return assets, entries, changed


def processing_time(store: ObjectStore, item_key: str, changed: bool, now: str) -> str:
    """Keep the first processing time while the products are byte-identical, so a re-run
    republishes nothing."""
    if not changed and store.head(item_key) is not None:
        previous = json.loads(store.get_bytes(item_key))
        return str(previous["properties"]["processing:datetime"])
    return now


def publish_item(
    store: ObjectStore,
    doc: dict[str, Any],
    item_key: str,
    catalog_key: str,
    *,
    item_id: str,
    aoi: str,
    decision: dict[str, Any] | None,
    stats: dict[str, Any],
    layers: list[dict[str, Any]],
    titiler_url: str | None = None,
) -> dict[str, Any]:
    """Publish a product's STAC item (with its map links when ``titiler_url`` is set);
    return its manifest entry."""
    doc = with_catalog_links(doc, item_key, catalog_key, PRODUCTS_ROOT)
    doc = with_renders(doc, titiler_url=titiler_url, item_url=store.url(item_key))
    put = store.put_bytes(item_key, dumps(doc), "application/geo+json")
    return {
        "item_id": item_id,
        "aoi": aoi,
        "stac_item_key": item_key,
        "stac_item_url": put.url,
        "created": doc["properties"]["processing:datetime"],
        "bbox": doc["bbox"],
        "datetime": doc["properties"]["datetime"],
        "decision": decision,
        "stats": stats,
        "layers": layers,
        "viewers": viewer_links(doc),
    }


def source_href(api_url: str, collection: str, raw: Mapping[str, Any]) -> str:
    for link in raw.get("links", []):
        if link.get("rel") == "self" and str(link.get("href", "")).startswith("http"):
            return str(link["href"])
    return f"{api_url}/collections/{collection}/items/{raw['id']}"


@dataclass(frozen=True)
class ProductContext:
    """What every product of one (collection, day, AOI) partition needs to be published."""

    store: ObjectStore
    collection: str
    part: Partition
    settings: TransformSettings
    block_pixels: int
    workdir: Path
    now: str
    # maps.titiler_url: the items get map links to it (stac/render.py).
    titiler_url: str | None = None

    @property
    def catalog_key(self) -> str:
        return partition_catalog_key(self.collection, self.part)

    @property
    def day(self) -> dt.date:
        return self.part.day


def publish_scene(
    ctx: ProductContext,
    *,
    aoi: str,
    shape: BaseGeometry,
    grid: Grid,
    raw: Mapping[str, Any],
    band_paths: Mapping[str, str],
    source: str,
    inputs: RawScene | None = None,
) -> dict[str, Any]:
    """One scene x AOI: analysis-ready layers as COGs plus their STAC item. ``inputs``: the
    scene's decoded band windows when already read (:func:`raster.scene.whole_inputs`)."""
    item_id = str(raw["id"])
    directory = product_dir(ctx.collection, ctx.part, item_id)
    scene = scene_products(
        band_paths,
        shape,
        grid,
        scene_meta(raw),
        ctx.settings,
        layers=PRODUCT_LAYERS,
        block_pixels=ctx.block_pixels,
        workdir=ctx.workdir,
        raw=inputs,
    )
    objects, entries, changed = publish_layers(ctx.store, directory, scene.layers)
    pictures, picture_entries, pictures_changed = publish_quicklooks(
        ctx.store, directory, scene_quicklooks(scene.layers)
    )
    changed |= pictures_changed
    item_key = join_key(directory, "item.json")
    s = ctx.settings
    doc = product_item(
        item_id=f"{item_id}__{aoi}",
        item_key=item_key,
        acquired=raw["properties"]["datetime"],
        grid=grid,
        layers=objects,
        source_hrefs=[source],
        processing_datetime=processing_time(ctx.store, item_key, changed, ctx.now),
        software_version=__version__,
        lineage=(
            f"SCL mask {list(s.invalid_scl)}; BOA offset {scene.decision.offset_dn} DN "
            f"removed (decided by {scene.decision.decided_by}); {s.resampling} onto "
            f"{grid.crs} at {s.resolution} m; NDVI, NDWI"
        ),
        extra_properties={
            "geospatial_pipeline:aoi": aoi,
            "geospatial_pipeline:source_item": item_id,
            "geospatial_pipeline:offset_dn": scene.decision.offset_dn,
            "eo:cloud_cover": raw["properties"].get("eo:cloud_cover"),
            "platform": raw["properties"].get("platform"),
        },
    )
    doc["assets"].update(pictures)
    entry = publish_item(
        ctx.store,
        doc,
        item_key,
        ctx.catalog_key,
        item_id=item_id,
        aoi=aoi,
        decision=scene.decision.as_dict(),
        stats=scene.stats,
        layers=entries,
        titiler_url=ctx.titiler_url,
    )
    entry["source_href"] = source
    entry["quicklooks"] = picture_entries
    return entry


def publish_composite(
    ctx: ProductContext, *, aoi: str, grid: Grid, scenes: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The AOI's daily NDVI median composite, read back from the published scene NDVI
    COGs strip by strip (memory stays at one strip per scene, whatever the AOI size)."""
    ndvi = [ctx.store.gdal_path(layer_key(p, "ndvi")) for p in scenes]
    sources = [str(p["source_href"]) for p in scenes]
    composite = median_composite_from_paths(
        ndvi,
        grid,
        block_rows=strip_rows(ctx.block_pixels, grid.width),
        workdir=ctx.workdir,
    )
    directory = product_dir(ctx.collection, ctx.part, COMPOSITE_ID)
    objects, entries, changed = publish_layers(ctx.store, directory, {"ndvi_median": composite})
    overview = Quicklook(
        "overview", "ndvi.png", f"NDVI median ({NDVI_PICTURE_NOTE})", ndvi_png(composite[0])
    )
    pictures, picture_entries, pictures_changed = publish_quicklooks(
        ctx.store, directory, [overview]
    )
    changed |= pictures_changed
    item_key = join_key(directory, "item.json")
    start = dt.datetime.combine(ctx.day, dt.time(), dt.UTC)
    doc = product_item(
        item_id=f"{aoi}__{ctx.day.isoformat()}__ndvi_median",
        item_key=item_key,
        acquired=start.isoformat().replace("+00:00", "Z"),
        grid=grid,
        layers=objects,
        source_hrefs=sources,
        processing_datetime=processing_time(ctx.store, item_key, changed, ctx.now),
        software_version=__version__,
        lineage=f"per-pixel median of the valid NDVI of {len(sources)} scene(s)",
        extra_properties={"geospatial_pipeline:aoi": aoi},
    )
    doc["assets"].update(pictures)
    entry = publish_item(
        ctx.store,
        doc,
        item_key,
        ctx.catalog_key,
        item_id=COMPOSITE_ID,
        aoi=aoi,
        decision=None,
        stats={"scenes": len(sources)},
        layers=entries,
        titiler_url=ctx.titiler_url,
    )
    entry["quicklooks"] = picture_entries
    return entry


def layer_key(product: Mapping[str, Any], name: str) -> str:
    for layer in product["layers"]:
        if layer["product"] == name:
            return str(layer["key"])
    raise PipelineError(f"product {product['item_id']}/{product['aoi']} has no {name!r} layer")


# ------------------------------------------------------------------------------ manifests


def write_manifest(
    store: ObjectStore, key: str, part: Partition, collection: str, products: Any
) -> None:
    doc = {"day": part.day.isoformat(), "aoi": part.aoi, "collection": collection}
    store.put_bytes(key, dumps({**doc, "products": products}), "application/json")


def read_manifest(store: ObjectStore, key: str) -> list[dict[str, Any]]:
    if store.head(key) is None:
        raise PipelineError(f"{key} is missing: materialize its asset for this partition first")
    return list(json.loads(store.get_bytes(key))["products"])


def scene_products_of(store: ObjectStore, collection: str, part: Partition) -> list[dict[str, Any]]:
    return read_manifest(store, scene_products_manifest_key(collection, part))


def composites_of(store: ObjectStore, collection: str, part: Partition) -> list[dict[str, Any]]:
    return read_manifest(store, composite_manifest_key(collection, part))


def partition_products(
    store: ObjectStore, collection: str, part: Partition
) -> list[dict[str, Any]]:
    """Every product of the partition: its scenes, then its composite."""
    return scene_products_of(store, collection, part) + composites_of(store, collection, part)


# ------------------------------------------------------------------ checks on what is stored


def out_of_range_layers(products: Sequence[Mapping[str, Any]]) -> list[str]:
    """Layers whose value range leaves the physical limits (indices [-1, 1],
    reflectance [-0.2, 2])."""
    found: list[str] = []
    for product in products:
        for layer in product["layers"]:
            low, high = (
                INDEX_LIMITS
                if layer["product"].startswith(("ndvi", "ndwi"))
                else REFLECTANCE_LIMITS
            )
            if layer["min"] is not None and (layer["min"] < low or layer["max"] > high):
                found.append(f"{layer['key']}: [{layer['min']:.4f}, {layer['max']:.4f}]")
    return found


def too_negative_scenes(scenes: Sequence[Mapping[str, Any]], limit: float) -> list[str]:
    return [
        f"{p['item_id']}/{p['aoi']}: {p['stats']['negative_reflectance_share']:.4f}"
        for p in scenes
        if p["stats"]["negative_reflectance_share"] > limit
    ]


def valid_fractions(scenes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {f"{p['item_id']}/{p['aoi']}": p["stats"]["valid_pixel_fraction"] for p in scenes}


def invalid_cogs(store: ObjectStore, keys: Sequence[str]) -> list[str]:
    """Stored objects among ``keys`` that fail COG validation, read back from the store
    (call inside the store's GDAL environment)."""
    found = []
    for key in keys:
        result = validate_cog_path(store.gdal_path(key))
        if not result.valid:
            found.append(f"{key}: {result.errors}")
    return found


def offset_disagreements(scenes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"item": p["item_id"], "aoi": p["aoi"], **p["decision"]}
        for p in scenes
        if p["decision"]["disagreement"]
    ]
