"""How products are drawn on a map: the STAC render-extension objects, and the TiTiler
links built from them (web-map-links ``tilejson``/``xyz`` plus a ``preview`` viewer page).

TiTiler reads the product item itself (its ``/stac`` endpoints take the item's address as
``url=``) and resolves the relative asset hrefs against it, so a link stays valid wherever
the store is, as long as the TiTiler process can read the store.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

RENDER_EXTENSION = "https://stac-extensions.github.io/render/v2.0.0/schema.json"
WEB_MAP_LINKS_EXTENSION = "https://stac-extensions.github.io/web-map-links/v1.2.0/schema.json"
TILE_MATRIX_SET = "WebMercatorQuad"
TILE_FORMAT = "png"  # keeps the nodata mask as transparency, unlike jpeg
NDVI_COLORMAP = "rdylgn"  # diverging: bare soil/water red, vegetation green

# Surface reflectance of land is mostly below 0.3; stretching to it gives natural colours.
REFLECTANCE_RESCALE = [0.0, 0.3]
INDEX_RESCALE = [-1.0, 1.0]

RENDERS: dict[str, dict[str, Any]] = {
    "true-color": {
        "title": "True colour",
        "assets": ["red", "green", "blue"],
        "rescale": [REFLECTANCE_RESCALE] * 3,
        "resampling": "nearest",
    },
    "ndvi": {
        "title": "NDVI",
        "assets": ["ndvi"],
        "colormap_name": NDVI_COLORMAP,
        "rescale": [INDEX_RESCALE],
        "resampling": "nearest",
    },
    # The daily composite has only its median NDVI layer.
    "ndvi-median": {
        "title": "NDVI median",
        "assets": ["ndvi_median"],
        "colormap_name": NDVI_COLORMAP,
        "rescale": [INDEX_RESCALE],
        "resampling": "nearest",
    },
}


def renders_for(asset_names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The renders whose assets an item has (an item without the bands gets no map)."""
    names = set(asset_names)
    return {
        render_id: copy.deepcopy(render)
        for render_id, render in RENDERS.items()
        if set(render["assets"]) <= names
    }


def render_query(item_url: str, render: Mapping[str, Any]) -> list[tuple[str, str]]:
    """TiTiler ``/stac`` query parameters drawing ``render`` from the item at ``item_url``.

    ``unscale=true``: the layers are stored as scaled integers (``raster.encoding``) and
    TiTiler applies the files' scale/offset only when asked, before ``rescale``, which is
    in physical values. The render extension has no field for it, so every link adds it;
    it changes nothing for the former float32 layers (scale 1, offset 0).
    """
    if not render.get("assets"):
        raise ValueError(f"render {render.get('title', '?')!r} has no assets")
    query: list[tuple[str, str]] = [("url", item_url)]
    query += [("assets", str(asset)) for asset in render["assets"]]
    query.append(("unscale", "true"))
    for low, high in render.get("rescale", []):
        query.append(("rescale", f"{low},{high}"))
    if "colormap_name" in render:
        query.append(("colormap_name", str(render["colormap_name"])))
    if "colormap" in render:
        query.append(("colormap", json.dumps(render["colormap"])))
    for field in ("resampling", "expression", "color_formula", "nodata"):
        if field in render:
            query.append((field, str(render[field])))
    return query


def _base(titiler_url: str) -> str:
    if not titiler_url.startswith(("http://", "https://")):
        raise ValueError(f"maps.titiler_url must be an http(s) URL, got {titiler_url!r}")
    return titiler_url.rstrip("/")


def tilejson_url(
    titiler_url: str, item_url: str, render: Mapping[str, Any], tms: str = TILE_MATRIX_SET
) -> str:
    query = urlencode([*render_query(item_url, render), ("tile_format", TILE_FORMAT)])
    return f"{_base(titiler_url)}/stac/{tms}/tilejson.json?{query}"


def xyz_url(
    titiler_url: str, item_url: str, render: Mapping[str, Any], tms: str = TILE_MATRIX_SET
) -> str:
    # The {z}/{x}/{y} placeholders stay literal: map clients substitute them.
    query = urlencode(render_query(item_url, render))
    return f"{_base(titiler_url)}/stac/tiles/{tms}/{{z}}/{{x}}/{{y}}.{TILE_FORMAT}?{query}"


def viewer_url(
    titiler_url: str, item_url: str, render: Mapping[str, Any], tms: str = TILE_MATRIX_SET
) -> str:
    query = urlencode([*render_query(item_url, render), ("tile_format", TILE_FORMAT)])
    return f"{_base(titiler_url)}/stac/{tms}/map.html?{query}"


def map_links(
    titiler_url: str, item_url: str, renders: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, str]]:
    """Per render: its ``tilejson``, ``xyz`` and ``preview`` (map page) links."""
    links: list[dict[str, str]] = []
    for render_id, render in renders.items():
        title = str(render.get("title", render_id))
        links += [
            {
                "rel": "tilejson",
                "href": tilejson_url(titiler_url, item_url, render),
                "type": "application/json",
                "title": f"{title} (TileJSON)",
                "render": render_id,
            },
            {
                "rel": "xyz",
                "href": xyz_url(titiler_url, item_url, render),
                "type": f"image/{TILE_FORMAT}",
                "title": f"{title} (XYZ tiles)",
                "render": render_id,
            },
            {
                "rel": "preview",
                "href": viewer_url(titiler_url, item_url, render),
                "type": "text/html",
                "title": f"{title} map",
                "render": render_id,
            },
        ]
    return links


def with_renders(
    item: Mapping[str, Any], *, titiler_url: str | None, item_url: str
) -> dict[str, Any]:
    """The item with its ``renders`` and, when a TiTiler URL is configured, the map links
    (replacing any from an earlier publication, so a re-run does not pile them up)."""
    out = copy.deepcopy(dict(item))
    renders = renders_for(out.get("assets", {}))
    if not renders:
        return out
    out["properties"]["renders"] = renders
    extensions = set(out.get("stac_extensions", [])) | {RENDER_EXTENSION}
    links = [link for link in out.get("links", []) if "render" not in link]
    if titiler_url:
        extensions.add(WEB_MAP_LINKS_EXTENSION)
        links += map_links(titiler_url, item_url, renders)
    out["stac_extensions"] = sorted(extensions)
    out["links"] = links
    return out


def viewer_links(item: Mapping[str, Any]) -> dict[str, str]:
    """Render id -> map page of an item (empty when it was published without TiTiler)."""
    return {
        str(link["render"]): str(link["href"])
        for link in item.get("links", [])
        if link.get("rel") == "preview" and "render" in link
    }


def product_viewers(products: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Metadata label -> map page for manifest entries (``viewers`` as written by
    ``publish_item``), e.g. ``"S2B_.../toulouse-centre ndvi"``."""
    return {
        f"{p['item_id']}/{p['aoi']} {render_id}": url
        for p in products
        for render_id, url in dict(p.get("viewers") or {}).items()
    }


def viewers_markdown(products: Sequence[Mapping[str, Any]]) -> str | None:
    """The map pages of manifest entries as a markdown list of links (clickable in the
    Dagster UI); None when no product has one (no TiTiler configured)."""
    viewers = product_viewers(products)
    if not viewers:
        return None
    return "\n".join(f"- [{label}]({url})" for label, url in viewers.items())
