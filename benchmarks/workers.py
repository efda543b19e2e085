"""What one measurement runs, in its own freshly forked process (GDAL caches empty).

Imports of the heavy libraries happen in the fork server (``benchmarks._preload``), never
inside the timed section; here they are looked up again from ``sys.modules`` at no cost.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

# Option names whose values must not end up in the printed output.
_SECRET = ("SECRET", "ACCESS_KEY", "TOKEN", "PASSWORD")


@dataclass(frozen=True)
class Job:
    method: str  # "pipeline" | "odc-stac" | "raw-gets"
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    paths: tuple[str, ...]  # /vsis3/ paths, pipeline
    item: dict[str, Any]  # STAC item, odc-stac
    bands: tuple[str, ...]
    bbox: tuple[float, float, float, float]  # lon/lat AOI (a box)
    geopolygon: dict[str, Any]  # the same box densified like the pipeline does, GeoJSON
    epsg: int
    resolution: float
    anchor: tuple[float, float]  # odc-stac pixel snapping: the files' grid
    threads: int
    return_arrays: bool = False
    region: str = "us-east-1"
    # GDAL options laid over each reader's own (empty in the benchmark; for exploring).
    extra: dict[str, Any] = field(default_factory=dict)
    # odc-stac credentials: "session" = configure_rio(aws={...}) (the benchmark's, and the
    # faster of the two here), "env" = AWS_* environment variables (exploring only).
    odc_credentials: str = "session"
    # raw-gets: per object key, the byte ranges (first, last) a COG reader must fetch: the
    # header first, then the intersected tiles.
    raw_ranges: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = ()

    @classmethod
    def for_aoi(
        cls,
        method: str,
        aoi: Any,
        endpoint: str,
        s3: Any,
        item: dict[str, Any],
        *,
        bucket: str,
        paths: tuple[str, ...],
        bands: tuple[str, ...],
        epsg: int,
        resolution: float,
        anchor: tuple[float, float],
        threads: int,
        **options: Any,
    ) -> Job:
        """One reader's job over ``aoi`` (a ``benchmarks.data.Aoi``), both readers alike."""
        from shapely.geometry import mapping

        from geospatial_pipeline.raster.window import DENSIFY_DEGREES

        return cls(
            method=method,
            endpoint_url=endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            bucket=bucket,
            paths=paths,
            item=item,
            bands=bands,
            bbox=aoi.bbox,
            geopolygon=mapping(aoi.geometry().segmentize(DENSIFY_DEGREES)),
            epsg=epsg,
            resolution=resolution,
            anchor=anchor,
            threads=threads,
            **options,
        )


def _clean_aws_environment() -> None:
    # Ambient settings must not steer either reader (both get explicit credentials).
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_S3_ENDPOINT", "AWS_NO_SIGN_REQUEST"):
        os.environ.pop(name, None)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


def _sanitize(options: dict[str, Any]) -> dict[str, str]:
    return {
        k: ("***" if any(s in k.upper() for s in _SECRET) else str(v)) for k, v in options.items()
    }


def read_windows(
    paths: list[str],
    aoi: Any,
    *,
    gdal_options: dict[str, Any],
    session: Any = None,
    max_workers: int = 8,
) -> list[Any]:
    """The AOI window of many rasters, read concurrently with the pipeline's reader
    (``raster.cog.read_aoi_window`` in its GDAL environment): what the benchmark times."""
    from concurrent.futures import ThreadPoolExecutor

    from geospatial_pipeline.raster.cog import gdal_env, read_aoi_window

    def one(path: str) -> Any:
        with gdal_env(gdal_options, session):
            return read_aoi_window(path, aoi)

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(paths) or 1))) as pool:
        return list(pool.map(one, paths))


def run_pipeline(job: Job) -> dict[str, Any]:
    from shapely.geometry import box

    from geospatial_pipeline.resources.storage import ObjectStoreResource

    aoi = box(*job.bbox)
    start = time.perf_counter()
    resource = ObjectStoreResource(
        url=f"s3://{job.bucket}",
        endpoint_url=job.endpoint_url,
        access_key_id=job.access_key,
        secret_access_key=job.secret_key,
        region=job.region,
    )
    options = {**resource.gdal_options(), **job.extra}  # extra: exploration only
    session = resource.gdal_session()
    windows = read_windows(
        list(job.paths), aoi, gdal_options=options, session=session, max_workers=job.threads
    )
    elapsed = time.perf_counter() - start

    result: dict[str, Any] = {
        "ms": elapsed * 1000,
        "shapes": {
            b: list(w.array.shape[1:]) if w else None
            for b, w in zip(job.bands, windows, strict=True)
        },
        "gdal_options": _sanitize(options),
    }
    if job.return_arrays:
        result["arrays"] = {b: w.array[0] for b, w in zip(job.bands, windows, strict=True) if w}
        result["windows"] = {
            b: (w.window.col_off, w.window.row_off)
            for b, w in zip(job.bands, windows, strict=True)
            if w
        }
    return result


def run_odc_stac(job: Job) -> dict[str, Any]:
    import odc.stac
    import pystac
    from odc.geo import xy_

    item = pystac.Item.from_dict(job.item)
    host = job.endpoint_url.split("://", 1)[-1]
    gdal_options = {"AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE", **job.extra}
    aws: dict[str, Any] | None = {
        "aws_access_key_id": job.access_key,
        "aws_secret_access_key": job.secret_key,
        "region_name": job.region,
        "endpoint_url": host,
    }
    if job.odc_credentials == "env":
        aws = None
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": job.access_key,
                "AWS_SECRET_ACCESS_KEY": job.secret_key,
                "AWS_REGION": job.region,
                "AWS_S3_ENDPOINT": host,
                "AWS_HTTPS": "NO",
                "AWS_VIRTUAL_HOSTING": "FALSE",
            }
        )
    start = time.perf_counter()
    odc.stac.configure_rio(cloud_defaults=True, aws=aws, **gdal_options)
    ds = odc.stac.load(
        [item],
        bands=list(job.bands),
        geopolygon=job.geopolygon,
        crs=f"EPSG:{job.epsg}",
        resolution=job.resolution,
        anchor=xy_(*job.anchor),
        pool=job.threads,
    )
    ds = ds.load()  # a no-op without chunks=; kept so nothing stays lazy
    elapsed = time.perf_counter() - start

    result: dict[str, Any] = {
        "ms": elapsed * 1000,
        "shapes": {b: list(ds[b].shape[1:]) for b in job.bands},
        "gdal_options": _sanitize({**odc.loader._rio.GDAL_CLOUD_DEFAULTS, **gdal_options}),
    }
    if job.return_arrays:
        result["arrays"] = {b: ds[b].values[0] for b in job.bands}
        affine = ds.odc.geobox.affine
        result["origin"] = (affine.c, affine.f)
    return result


def run_raw_gets(job: Job) -> dict[str, Any]:
    """The limit: exactly the ideal byte ranges with boto3 range GETs on ``job.threads``
    threads, no decoding. Per object the header GET comes first (a reader learns the tile
    offsets from it), then its tile ranges are queued to the same pool, so the headers of
    all objects and the tiles of the first ones overlap as they would in the best reader.

    The client (one, shared by the threads) is built before the clock starts: botocore
    parses its service model then, a local one-off cost that is not I/O (printed apart).
    Connections are new in every run (fresh process).
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    import boto3
    from botocore.config import Config

    setup = time.perf_counter()
    client = boto3.client(
        "s3",
        endpoint_url=job.endpoint_url,
        aws_access_key_id=job.access_key,
        aws_secret_access_key=job.secret_key,
        region_name=job.region,
        config=Config(
            max_pool_connections=max(10, job.threads),
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )
    setup_ms = (time.perf_counter() - setup) * 1000

    def get(key: str, first: int, last: int) -> int:
        response = client.get_object(Bucket=job.bucket, Key=key, Range=f"bytes={first}-{last}")
        body = response["Body"].read()
        if len(body) != last - first + 1:
            raise RuntimeError(f"{key}: got {len(body)} bytes for range {first}-{last}")
        return len(body)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=job.threads) as pool:

        def chain(key: str, ranges: tuple[tuple[int, int], ...]) -> list[Future[int]]:
            get(key, *ranges[0])
            return [pool.submit(get, key, *r) for r in ranges[1:]]

        chains = [pool.submit(chain, key, ranges) for key, ranges in job.raw_ranges]
        tiles = [f for c in chains for f in c.result()]
        fetched = sum(f.result() for f in tiles)
    elapsed = time.perf_counter() - start
    fetched += sum(r[0][1] - r[0][0] + 1 for _, r in job.raw_ranges)
    return {
        "ms": elapsed * 1000,
        "setup_ms": setup_ms,
        "bytes": fetched,
        "requests": sum(len(r) for _, r in job.raw_ranges),
        "gdal_options": {},
    }


RUNNERS = {"pipeline": run_pipeline, "odc-stac": run_odc_stac, "raw-gets": run_raw_gets}


def child_main(job: Job, conn: Connection) -> None:
    """Entry point of the forked measurement process: run once, send the result, exit."""
    try:
        _clean_aws_environment()
        conn.send(("ok", RUNNERS[job.method](job)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
