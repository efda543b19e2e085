"""TiTiler's application (``titiler.application.main:app``) with a map page that works
offline, for the local TiTiler (``make dev``, the tests).

TiTiler's own ``map.html`` loads Leaflet, proj4 and proj4leaflet from a CDN and its
basemaps from public tile servers, so without internet access the page stays blank. This
app serves Leaflet itself (from the ``xstatic-leaflet`` package, under
:data:`LEAFLET_PATH`) and renders ``templates/map.html`` of this package instead: the same
template context, Leaflet from this server, no basemap, the product's bounds outlined.
Every endpoint and its path stay TiTiler's, so item links built for any TiTiler (the
production ``/stac/{tms}/map.html``) resolve here too.

Run it as ``uvicorn geospatial_pipeline.local.titiler_app:app``.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import xstatic.pkg.leaflet
from starlette.staticfiles import StaticFiles
from titiler.application import main as titiler_main

TEMPLATES = Path(__file__).resolve().parent / "templates"
LEAFLET_PATH = "/static/leaflet"
# The mount's route name: the template asks ``url_for('leaflet', path=...)`` for its files,
# which also honours a root path the server runs under.
LEAFLET_ROUTE = "leaflet"


def _prefer_package_templates(env: jinja2.Environment) -> None:
    """Look templates up here first, then wherever TiTiler looked (its
    ``TITILER_API_TEMPLATE_DIRECTORY``, then its packages).

    The loader is swapped on TiTiler's own environment rather than set through that
    variable: every factory already holds this environment, and the variable only counts
    if it is set before ``titiler.application.main`` is first imported in the process.
    """
    if env.loader is None:
        raise RuntimeError("TiTiler's Jinja environment has no template loader")
    env.loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(TEMPLATES), env.loader])


if not (TEMPLATES / "map.html").is_file():
    raise RuntimeError(f"the offline map template is missing: {TEMPLATES / 'map.html'}")
_prefer_package_templates(titiler_main.jinja2_env)

app = titiler_main.app
app.mount(
    LEAFLET_PATH,
    StaticFiles(directory=xstatic.pkg.leaflet.BASE_DIR),
    name=LEAFLET_ROUTE,
)
