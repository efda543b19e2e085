"""Imported once by the fork server, so each measurement process starts with the
libraries loaded (importing dagster, odc-stac and their dependencies takes seconds) but
without having touched GDAL: no dataset opened, no HTTP connection, empty caches."""

from __future__ import annotations

import numpy  # noqa: F401
import odc.geo
import odc.loader._rio
import odc.stac  # noqa: F401
import pystac  # noqa: F401
import rasterio
import rasterio.session  # noqa: F401
import shapely.geometry  # noqa: F401

import benchmarks.workers  # noqa: F401
import geospatial_pipeline.raster.extract
import geospatial_pipeline.resources.storage  # noqa: F401
