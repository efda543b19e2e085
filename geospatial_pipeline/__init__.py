"""Dagster pipeline: STAC catalog -> COG windows in object storage -> warehouse metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geospatial-pipeline")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
