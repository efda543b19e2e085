"""GDAL settings for reading COG windows over HTTP/S3 (see shared PERFORMANCE.md).

Each was measured to matter: without EMPTY_DIR every open adds a LIST request; merged
ranges fold neighbouring tiles into one GET; VSI_CACHE is off (with it on, the default
ingest size at open costs a second request); and GDAL merges a window's tile fetches only
while they fit the raw block cache (a floor here; the reader raises it per window,
raster/cog.py raw_block_cache_bytes).
"""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024


def cloud_read_options(max_window_bytes: int = 64 * MIB) -> dict[str, Any]:
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        # Each COG is opened once and one window read: the VSI cache gains nothing, and a
        # smaller first read fits a COG header (benchmarks: bytes 1.039 -> 1.023 x ideal).
        "VSI_CACHE": "FALSE",
        "GDAL_INGESTED_BYTES_AT_OPEN": "16384",
        "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": str(max(max_window_bytes, 10 * MIB)),
        "GDAL_CACHEMAX": 256 * MIB,  # rasterio hands this one to GDALSetCacheMax64: bytes
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GDAL_HTTP_MAX_RETRY": "4",
        "GDAL_HTTP_RETRY_DELAY": "0.5",
        "GDAL_HTTP_TIMEOUT": "60",
        "GDAL_HTTP_CONNECTTIMEOUT": "10",
    }


def s3_endpoint_options(endpoint_url: str | None) -> dict[str, Any]:
    """Options for an S3-compatible server (e.g. SeaweedFS/MinIO); none for AWS itself."""
    if not endpoint_url:
        return {}
    secure = endpoint_url.startswith("https://")
    host = endpoint_url.split("://", 1)[-1].rstrip("/")
    return {
        "AWS_S3_ENDPOINT": host,
        "AWS_HTTPS": "YES" if secure else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


def gdal_path_for_href(href: str) -> str:
    """Map a STAC asset href to the path GDAL opens (HTTP range reads, never a download)."""
    if href.startswith("s3://"):
        return "/vsis3/" + href[5:]
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("file://"):
        return href[7:]
    return href
