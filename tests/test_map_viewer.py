"""The product map viewer offline: the local TiTiler's ``map.html`` loads Leaflet from the
TiTiler itself and requests nothing beyond it, and in Chromium it draws the published
product's tiles.

The product is the real 29RKH scene of one AOI, materialized as tests/test_titiler.py does,
its items linked to a TiTiler started for this module; the page opened is the item's own
``preview`` link. Screenshots of the viewer (``map-true-color.png``, ``map-ndvi.png``) are
kept under ``.test-artifacts/browser/``; ``docs/screenshots.py`` composes the README's
``docs/screenshots/map.png`` from them.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from geospatial_pipeline.local.ports import LOOPBACK
from geospatial_pipeline.local.titiler import TiTilerServer
from geospatial_pipeline.local.titiler_app import LEAFLET_PATH
from tests.test_browser import ARTIFACTS, launch_chromium
from tests.test_titiler import publish_scene_products

RENDERS = ("true-color", "ndvi")
# Playwright waits, in milliseconds: a cold TiTiler renders the first tiles in a second or
# two, more on a loaded CI machine.
WAIT_MS = 45_000


@pytest.fixture(scope="module")
def previews(
    s3_server: Any,
    rkh_item: dict[str, Any],
    real_collection: dict[str, Any],
    titiler: TiTilerServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """The published product item's ``preview`` links, by render."""
    published = publish_scene_products(
        s3_server, rkh_item, real_collection, titiler.url, tmp_path_factory.mktemp("viewer")
    )
    links = {
        link["render"]: link["href"]
        for link in published["item"]["links"]
        if link["rel"] == "preview"
    }
    assert set(links) == set(RENDERS), links
    return links


class _References(HTMLParser):
    """Every ``src`` and ``href`` attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append((tag, name, value))


def _is_local(url: str, port: int) -> bool:
    """Relative, or on this TiTiler's loopback address."""
    parts = urlsplit(url)
    if not parts.scheme and not parts.netloc:
        return True
    return parts.scheme == "http" and parts.hostname == LOOPBACK and parts.port == port


def test_viewer_page_references_only_the_local_titiler(
    previews: dict[str, str], titiler: TiTilerServer, http: requests.Session
) -> None:
    for render_id, href in previews.items():
        page = http.get(href, timeout=60)
        assert page.status_code == 200, page.text[:500]
        assert "text/html" in page.headers["content-type"]
        parser = _References()
        parser.feed(page.text)
        assert parser.urls, f"{render_id}: no src/href at all"
        outside = [u for u in parser.urls if not _is_local(u[2], titiler.port)]
        assert not outside, f"{render_id} viewer references other hosts: {outside}"
        # Nor any absolute URL in the inline script (the TileJSON address is one, local).
        absolute = [w for w in page.text.split() if "://" in w]
        assert absolute and all(f"//{LOOPBACK}:{titiler.port}/" in w for w in absolute), absolute

        # Leaflet itself, from this server.
        assets = {
            urlsplit(urljoin(href, value)).path: urljoin(href, value)
            for tag, _, value in parser.urls
            if tag in ("script", "link")
        }
        assert set(assets) == {f"{LEAFLET_PATH}/leaflet.js", f"{LEAFLET_PATH}/leaflet.css"}
        for path, url in assets.items():
            response = http.get(url, timeout=30)
            assert response.status_code == 200, (url, response.status_code)
            kind = "javascript" if path.endswith(".js") else "css"
            assert kind in response.headers["content-type"], response.headers
            assert len(response.content) > 10_000, (url, len(response.content))
    # The image Leaflet's stylesheet asks for (the layer control's icon), relative to it.
    icon = http.get(f"{titiler.url}{LEAFLET_PATH}/images/layers.png", timeout=30)
    assert icon.status_code == 200 and icon.content.startswith(b"\x89PNG")


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as b:
        yield b


# Per loaded tile image: its size and how many of its pixels are not transparent (the
# tiles come from the page's own origin, so the canvas may read them).
_TILES_JS = """() => [...document.querySelectorAll('img.leaflet-tile')].map(img => {
    const out = {src: img.src, loaded: img.classList.contains('leaflet-tile-loaded'),
                 w: img.naturalWidth, h: img.naturalHeight, opaque: 0};
    if (out.loaded && out.w > 0) {
        const canvas = document.createElement('canvas');
        canvas.width = out.w; canvas.height = out.h;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const data = ctx.getImageData(0, 0, out.w, out.h).data;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) out.opaque++;
    }
    return out;
})"""


def _open_viewer(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 800, "height": 600})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.state !== 'loading'", timeout=WAIT_MS)
    # Leaflet fades tiles in after they load: a screenshot before that shows them faint.
    page.wait_for_function(
        """() => [...document.querySelectorAll('img.leaflet-tile')]
            .every(i => getComputedStyle(i).opacity === '1')""",
        timeout=WAIT_MS,
    )
    return page, requested


def _outside(requested: list[str], port: int) -> list[str]:
    return [u for u in requested if not u.startswith("data:") and not _is_local(u, port)]


@pytest.mark.slow
@pytest.mark.parametrize("render_id", RENDERS)
def test_viewer_draws_the_product_offline(
    previews: dict[str, str],
    titiler: TiTilerServer,
    http: requests.Session,
    browser: Any,
    render_id: str,
) -> None:
    page, requested = _open_viewer(browser, previews[render_id])
    try:
        state = page.evaluate("() => document.body.dataset.state")
        message = page.locator("#message").text_content()
        assert state == "ready", f"viewer state {state!r}: {message}"
        tiles: list[dict[str, Any]] = page.evaluate(_TILES_JS)
        failed: list[str] = page.evaluate("() => window.viewerTileErrors")
        # The product's bounds on screen, in CSS pixels (one per tile pixel: the tiles are
        # rendered at the map's zoom).
        bounds_px: float = page.evaluate(
            """() => {
                const b = window.viewerBounds, map = window.viewerMap;
                const nw = map.latLngToContainerPoint(b.getNorthWest());
                const se = map.latLngToContainerPoint(b.getSouthEast());
                return (se.x - nw.x) * (se.y - nw.y);
            }"""
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"map-{render_id}.png"
        page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        hidden = page.locator("#message").is_hidden()
    finally:
        page.close()
    assert hidden, f"the viewer shows a message: {message}"
    assert tiles, "no Leaflet tile images on the page"
    # Every tile decoded (no broken image), and the product drawn: opaque pixels, beyond
    # the transparent nodata around it.
    drawn = [t for t in tiles if t["src"] not in failed]
    assert drawn and all(t["loaded"] and t["w"] == 256 and t["h"] == 256 for t in drawn), tiles
    # A tile that failed is one merely touching the bounds, which TiTiler declines.
    for src in failed:
        response = http.get(src, timeout=60)
        assert response.status_code == 404 and "outside bounds" in response.text, (src, response)
    # The map fits the product: its bounds fill much of the 800 x 600 view.
    assert 800 * 600 > bounds_px > 0.2 * 800 * 600, bounds_px
    # The data (reprojected, with nodata in its corners) covers most of its bounds.
    opaque = sum(t["opaque"] for t in drawn)
    assert opaque > 0.5 * bounds_px, (opaque, bounds_px, tiles)
    assert all("/stac/tiles/WebMercatorQuad/" in t["src"] for t in tiles), tiles
    # Offline: everything the page asked for came from this TiTiler.
    assert not _outside(requested, titiler.port), _outside(requested, titiler.port)
    paths = {urlsplit(u).path for u in requested}
    assert {f"{LEAFLET_PATH}/leaflet.js", f"{LEAFLET_PATH}/leaflet.css"} <= paths, paths
    assert "/stac/WebMercatorQuad/tilejson.json" in paths, paths
    assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_viewer_explains_other_tile_matrix_sets(
    previews: dict[str, str], titiler: TiTilerServer, browser: Any
) -> None:
    """Leaflet alone draws Web Mercator only: another TileMatrixSet gets a message on the
    page instead of a broken map, and still nothing is requested elsewhere."""
    url = previews["ndvi"].replace("/stac/WebMercatorQuad/", "/stac/WorldCRS84Quad/")
    assert url != previews["ndvi"]
    page, requested = _open_viewer(browser, url)
    try:
        state = page.evaluate("() => document.body.dataset.state")
        message = page.locator("#message").text_content() or ""
        tiles = page.locator("img.leaflet-tile").count()
    finally:
        page.close()
    assert state == "error"
    assert "WorldCRS84Quad" in message and "proj4leaflet" in message, message
    assert tiles == 0
    assert not _outside(requested, titiler.port), _outside(requested, titiler.port)
