"""What moves bytes and time: GDAL option variants (not part of ``make bench``).

``.venv/bin/python -m benchmarks.explore [--repetitions N]``: same server, data, AOIs,
cold fresh-process runs and proxy as ``benchmarks.run``; each variant lays GDAL options
over the reader's own (pipeline: ``ObjectStoreResource.gdal_options()``) or configures
odc-stac differently. No same-work check here: ``benchmarks.run`` does that.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext
from typing import Any

from benchmarks import data
from benchmarks.proxy import ByteCountingProxy
from benchmarks.run import run_fresh, stop_fork_server
from benchmarks.workers import Job

PIPELINE_OPTIONS_FOR_ODC = {  # the pipeline's read tuning, handed to odc-stac
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024 * 1024),
    "GDAL_MAX_RAW_BLOCK_CACHE_SIZE": str(64 * 1024 * 1024),
}


@dataclass(frozen=True)
class Variant:
    method: str
    extra: dict[str, Any] = field(default_factory=dict)
    odc_credentials: str = "session"


VARIANTS: dict[str, Variant] = {
    "pipeline as configured": Variant("pipeline"),
    "pipeline VSI_CACHE=FALSE, ingest 16K": Variant(
        "pipeline", {"VSI_CACHE": "FALSE", "GDAL_INGESTED_BYTES_AT_OPEN": "16384"}
    ),
    "pipeline VSI_CACHE=TRUE, ingest 16K": Variant(
        "pipeline", {"GDAL_INGESTED_BYTES_AT_OPEN": "16384"}
    ),
    "pipeline VSI_CACHE=FALSE, chunk 4K": Variant(
        "pipeline",
        {
            "VSI_CACHE": "FALSE",
            "GDAL_INGESTED_BYTES_AT_OPEN": "16384",
            "CPL_VSIL_CURL_CHUNK_SIZE": "4096",
        },
    ),
    "odc-stac aws= session (benchmark)": Variant("odc-stac"),
    "odc-stac AWS_* env variables": Variant("odc-stac", odc_credentials="env"),
    "odc-stac + pipeline GDAL options": Variant("odc-stac", PIPELINE_OPTIONS_FOR_ODC),
}


def _explore(
    ctx: ForkServerContext,
    args: argparse.Namespace,
    aois: list[data.Aoi],
    ideal: dict[str, int],
    grid: tuple[float, float, float],
    item: dict[str, Any],
    rows: list[list[Any]],
) -> None:
    from geospatial_pipeline.local.seaweed import SeaweedS3Server

    x0, y0, res = grid
    with SeaweedS3Server() as s3:
        s3.create_bucket(data.BUCKET)
        client = s3.boto3_client()
        for asset, name in data.BANDS.items():
            client.upload_file(str(data.COG_DIR / name), data.BUCKET, data.object_key(asset))

        def job(aoi: data.Aoi, endpoint: str, variant: Variant) -> Job:
            return Job.for_aoi(
                variant.method,
                aoi,
                endpoint,
                s3,
                item,
                bucket=data.BUCKET,
                paths=tuple(data.gdal_paths()),
                bands=tuple(data.BANDS),
                epsg=data.EPSG,
                resolution=res,
                anchor=((x0 / res) % 1.0, (y0 / res) % 1.0),
                threads=args.threads,
                extra=variant.extra,
                odc_credentials=variant.odc_credentials,
            )

        for variant in VARIANTS.values():  # warm-up
            run_fresh(ctx, job(aois[0], s3.endpoint_url, variant))
        with ByteCountingProxy(("127.0.0.1", s3.s3_port)) as proxy:
            for label, variant in VARIANTS.items():
                fetched = requests = 0
                per_aoi = []
                for aoi in aois:
                    proxy.reset()
                    run_fresh(ctx, job(aoi, proxy.endpoint_url, variant))
                    proxy.wait_idle()
                    snap = proxy.snapshot()
                    b = sum(s.body_bytes for s in snap.values())
                    fetched += b
                    requests += sum(s.requests for s in snap.values())
                    per_aoi.append(b / ideal[aoi.name])
                rows.append([label, fetched / sum(ideal.values()), requests, per_aoi])
        ms: dict[str, dict[str, list[float]]] = {v: {a.name: [] for a in aois} for v in VARIANTS}
        for rep in range(args.repetitions):  # variants interleaved, order rotating
            labels = list(VARIANTS)
            labels = labels[rep % len(labels) :] + labels[: rep % len(labels)]
            for aoi in aois:
                for label in labels:
                    out = run_fresh(ctx, job(aoi, s3.endpoint_url, VARIANTS[label]))
                    ms[label][aoi.name].append(out["ms"])
        for row in rows:
            row.append([statistics.median(ms[row[0]][a.name]) for a in aois])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    aois = data.aois()
    ideal = {a.name: sum(w.ideal_bytes for w in data.ideal_windows(a.geometry())) for a in aois}
    x0, y0, res, _ = data.file_grid()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmarks._preload"])
    rows: list[list[Any]] = []
    try:
        _explore(ctx, args, aois, ideal, (x0, y0, res), data.item_dict(), rows)
    finally:
        stop_fork_server()

    names = " ".join(f"{a.name:>6}" for a in aois)
    print(f"{'variant':<36} {'ratio':>6} {'req':>4}  ratio/AOI {names}   ms/AOI {names}")
    for label, ratio, requests, per_aoi, ms in rows:
        r = " ".join(f"{v:>6.3f}" for v in per_aoi)
        t = " ".join(f"{v:>6.0f}" for v in ms)
        print(f"{label:<36} {ratio:>6.3f} {requests:>4}            {r}          {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
