"""Imported once by the fork server, so each measurement process starts with the
libraries loaded (importing dagster, odc-stac and their dependencies takes seconds) but
without having touched GDAL: no dataset opened, no HTTP connection, empty caches."""

from __future__ import annotations

import atexit
import gc

import boto3  # noqa: F401
import botocore.config  # noqa: F401
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

# The fork server's heap (dagster, odc-stac, ...) is large. Without this, the first
# garbage collection in each measurement process walks all of it and copy-on-write
# faults hundreds of MB of pages, adding ~80 ms of noise that no freshly started
# process would see.
gc.freeze()
# ...and give them back at exit: extension modules (duckdb's nanobind) report every object
# still frozen at interpreter shutdown as a leak.
atexit.register(gc.unfreeze)
