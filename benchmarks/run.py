"""Benchmark: the pipeline's COG window reads vs odc-stac and vs raw range GETs of the
ideal bytes, against a real S3 server.

``make bench`` (= ``.venv/bin/python -m benchmarks.run``). See benchmarks/README.md.

1. Start SeaweedFS (a real S3 server) on 127.0.0.1 and upload one full-size scene of the
   realistic data (``benchmarks/realistic.py``, generated once and cached; or, with
   ``--data decimated``, the real decimated COGs of ../shared/data); its STAC item has
   ``s3://`` hrefs.
2. Bytes pass: the three readers go through a byte-counting proxy, once per AOI; the
   arrays of the pipeline and odc-stac are compared (same shapes, same values) so that
   both measure the same work; the raw GETs must fetch exactly the ideal bytes.
3. Timing pass: the readers go straight to the server; every repetition runs in a
   freshly forked process (cold GDAL caches, new connections), the readers rotating.
4. Transform benchmark (``benchmarks/transform.py``): ``transform_raw`` on a 20 km AOI
   at 10 m against a memory-bandwidth bound (decode timed apart), and its peak RSS.
5. Dagster overhead (``benchmarks/dagster_overhead.py``, only with ``--overhead-days N``):
   a backfill of one AOI over N sample days through ``dagster dev`` as the UI launches
   it, grouped as configured and one run per partition; share of wall time outside the
   step bodies. The realistic backfill (11) measures the same share on full-size data.
6. Request sensor (``benchmarks/request_sensor.py``, in its own process): the tick that
   accepts a 30-day request for a new AOI among 500 registered ones, and an idle tick.
7. Metadata weight (``benchmarks/metadata_weight.py``, in its own process): the size of the
   Dagster events one real (date, AOI) partition writes, per asset and in total, and the
   bytes the UI's partition pages transfer.
8. Publication cost (``benchmarks/publish_cost.py``, in its own process):
   ``publish_partition`` with 0, 1 000 and 10 000 other items in the pgstac collection.
9. Product encoding (``benchmarks/encoding.py --only candidates``, in its own process):
   the products' storage of the six product layers against the former one (the whole
   grid of options: ``python -m benchmarks.encoding``).
10. End to end (``benchmarks/e2e.py``, in its own process): one (date, AOI) partition of 4
   full-size scenes over 20 km through every asset, against its lower bound and the
   odc-stac script a team would write; 1, 2, 4 and 8 scenes; a 60 km AOI's peak RSS.
11. Backfills through the local daemon (``benchmarks/backfill.py``, in its own process): 50
   AOI-day partitions (``backfill_overhead_share``) and a year of one 20 km AOI
   (``year_backfill_min``), on the realistic data.
12. Print the tables and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.context import ForkServerContext
from typing import Any

import numpy as np

from benchmarks import dagster_overhead as overhead_bench
from benchmarks import data
from benchmarks import metadata_weight as metadata_bench
from benchmarks import publish_cost as publish_bench
from benchmarks import request_sensor as request_sensor_bench
from benchmarks import transform as transform_bench
from benchmarks.proxy import ByteCountingProxy, PathStats
from benchmarks.workers import Job, child_main

THREADS = 4
REPETITIONS = 7
TARGET_BYTES_RATIO = 1.05
TARGET_TIME_RATIO = 0.6
TARGET_RAW_RATIO = 2.0
CHILD_TIMEOUT_S = 300  # the first child also waits for the fork server's imports
METHODS = ("pipeline", "odc-stac", "raw-gets")


@dataclass
class AoiResult:
    dataset: data.Dataset
    aoi: data.Aoi
    ideal: list[data.IdealWindow]
    bytes_stats: dict[str, dict[str, PathStats]]  # method -> object path -> stats
    ms: dict[str, list[float]]
    shape: tuple[int, int]

    def fetched(self, method: str, asset: str | None = None) -> int:
        assets = self.dataset.bands if asset is None else (asset,)
        stats = self.bytes_stats[method]
        paths = [self.dataset.object_path(a) for a in assets]
        return sum(stats[p].body_bytes for p in paths if p in stats)

    def requests(self, method: str, asset: str | None = None) -> int:
        stats = self.bytes_stats[method]
        if asset is None:
            return sum(s.requests for s in stats.values())
        return stats.get(self.dataset.object_path(asset), PathStats()).requests

    def ranges(self, method: str, asset: str) -> list[str]:
        return self.bytes_stats[method].get(self.dataset.object_path(asset), PathStats()).ranges

    @property
    def ideal_bytes(self) -> int:
        return sum(w.ideal_bytes for w in self.ideal)

    def median_ms(self, method: str) -> float:
        return statistics.median(self.ms[method])


def run_fresh(ctx: ForkServerContext, job: Job) -> dict[str, Any]:
    """Run ``job`` in a new process forked from the pre-imported fork server."""
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_main, args=(job, sender), daemon=True)
    proc.start()
    sender.close()
    try:
        if not receiver.poll(CHILD_TIMEOUT_S):
            raise TimeoutError(f"{job.method} child gave no result in {CHILD_TIMEOUT_S}s")
        status, payload = receiver.recv()
    finally:
        receiver.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if status != "ok":
        raise RuntimeError(f"{job.method} child failed:\n{payload}")
    return dict(payload)


def check_same_work(
    aoi: data.Aoi, results: dict[str, dict[str, Any]], bands: tuple[str, ...]
) -> tuple[int, int]:
    """Both readers must return the same windows: same shapes and values for the finer
    bands; odc-stac's SCL (on the finer grid) must be the pipeline's SCL window upsampled
    (nearest)."""
    pipe, odc = results["pipeline"], results["odc-stac"]
    shape = None
    for band in bands:
        a_pipe, a_odc = pipe["arrays"][band], odc["arrays"][band]
        if band == "scl":
            continue
        if a_pipe.shape != a_odc.shape:
            raise AssertionError(f"{aoi.name}/{band}: shapes {a_pipe.shape} vs {a_odc.shape}")
        if not np.array_equal(a_pipe, a_odc):
            raise AssertionError(f"{aoi.name}/{band}: values differ")
        shape = a_pipe.shape
    assert shape is not None
    # SCL: 100 m pixel i of the odc grid lies in 200 m pixel (off100 + i) // 2 of the file
    # (both grids start at the same corner of the scene).
    col100, row100 = pipe["windows"]["red"]
    col200, row200 = pipe["windows"]["scl"]
    rows = (row100 + np.arange(shape[0])) // 2 - row200
    cols = (col100 + np.arange(shape[1])) // 2 - col200
    expected = pipe["arrays"]["scl"][np.ix_(rows, cols)]
    if odc["arrays"]["scl"].shape != expected.shape or not np.array_equal(
        odc["arrays"]["scl"], expected
    ):
        raise AssertionError(f"{aoi.name}/scl: odc-stac's SCL is not the upsampled window")
    return int(shape[0]), int(shape[1])


def kb(n: float) -> str:
    return f"{n / 1000:,.1f}"


def print_report(
    results: list[AoiResult],
    conditions: dict[str, Any],
    summary: dict[str, Any],
) -> None:
    print()
    print(
        "COG window reads from S3 (SeaweedFS on 127.0.0.1): pipeline vs odc-stac vs raw "
        "range GETs of the ideal bytes"
    )
    print("=" * 78)
    for key, value in conditions.items():
        print(f"{key:<22} {value}")
    print()
    print("Per band window (bytes pass, through the counting proxy; KB = 1000 bytes)")
    head = (
        f"{'AOI':<6} {'band':<5} {'window px':>11} {'tiles':>5} {'header':>6} "
        f"{'ideal KB':>9} {'pipeline KB':>11} {'req':>3} {'ratio':>6} {'odc KB':>9} "
        f"{'req':>3} {'ratio':>6} {'raw req':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for w in r.ideal:
            fp, fo = r.fetched("pipeline", w.asset), r.fetched("odc-stac", w.asset)
            print(
                f"{r.aoi.name:<6} {w.asset:<5} {f'{w.window.width}x{w.window.height}':>11} "
                f"{w.tiles:>5} {w.header_bytes:>6} {kb(w.ideal_bytes):>9} {kb(fp):>11} "
                f"{r.requests('pipeline', w.asset):>3} {fp / w.ideal_bytes:>6.3f} "
                f"{kb(fo):>9} {r.requests('odc-stac', w.asset):>3} {fo / w.ideal_bytes:>6.3f} "
                f"{r.requests('raw-gets', w.asset):>7}"
            )
    print()
    print(
        f"Per AOI (all bands; bytes from the proxy pass; times = median of "
        f"{conditions['repetitions']} cold runs, direct to the server)"
    )
    head = (
        f"{'AOI':<6} {'tiles/band':>10} {'ideal MB':>9} {'pipe MB':>8} {'req':>4} "
        f"{'bytes_ratio':>11} {'odc MB':>8} {'req':>4} {'odc ratio':>9} "
        f"{'pipe ms':>8} {'odc ms':>8} {'raw ms':>7} {'vs odc':>7} {'vs raw':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        fp, fo = r.fetched("pipeline"), r.fetched("odc-stac")
        mp, mo, mr = r.median_ms("pipeline"), r.median_ms("odc-stac"), r.median_ms("raw-gets")
        print(
            f"{r.aoi.name:<6} {r.ideal[0].tiles:>10} {r.ideal_bytes / 1e6:>9.2f} "
            f"{fp / 1e6:>8.2f} {r.requests('pipeline'):>4} {fp / r.ideal_bytes:>11.3f} "
            f"{fo / 1e6:>8.2f} {r.requests('odc-stac'):>4} {fo / r.ideal_bytes:>9.3f} "
            f"{mp:>8.1f} {mo:>8.1f} {mr:>7.1f} {mp / mo:>7.3f} {mp / mr:>7.3f}"
        )
    print("-" * len(head))
    print(
        f"{'all':<6} {'':>10} {summary['ideal_bytes'] / 1e6:>9.2f} "
        f"{summary['pipeline_bytes'] / 1e6:>8.2f} {summary['pipeline_requests']:>4} "
        f"{summary['bytes_ratio']:>11.3f} {summary['odc_stac_bytes'] / 1e6:>8.2f} "
        f"{summary['odc_stac_requests']:>4} {summary['odc_stac_bytes_ratio']:>9.3f} "
        f"{summary['pipeline_ms_median']:>8.1f} {summary['odc_stac_ms_median']:>8.1f} "
        f"{summary['raw_gets_ms_median']:>7.1f} {summary['time_vs_odc_stac']:>7.3f} "
        f"{summary['time_vs_raw_gets']:>7.3f}"
    )
    print()
    print("Timed runs (ms, in run order):")
    for r in results:
        for method in METHODS:
            runs = " ".join(f"{v:.0f}" for v in r.ms[method])
            print(f"  {r.aoi.name:<6} {method:<9} {runs}")
    print()
    checks = (
        ("bytes_ratio", TARGET_BYTES_RATIO),
        ("time_vs_odc_stac", TARGET_TIME_RATIO),
        ("time_vs_raw_gets", TARGET_RAW_RATIO),
    )
    print(
        "targets: "
        + "; ".join(
            f"{k} {summary[k]:.3f} <= {t} {'MET' if summary[k] <= t else 'NOT MET'}"
            for k, t in checks
        )
    )


def stop_fork_server() -> None:
    """Stop the fork server now, so nothing it prints at exit lands after the JSON line."""
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # private; there since 3.8
    if stop is not None:
        stop()


@contextlib.contextmanager
def serve_dataset(dataset: data.Dataset) -> Iterator[Any]:
    """SeaweedFS with the dataset's COGs uploaded (the realistic scene through
    ``realistic.serve``, which puts them under its Earth-Search-like keys)."""
    if dataset.name == "realistic":
        from benchmarks import realistic

        with realistic.serve(item_ids=[dataset.item["id"]], stac=False) as served:
            yield served.s3
        return
    from geospatial_pipeline.local.seaweed import SeaweedS3Server

    with SeaweedS3Server() as s3:
        s3.create_bucket(dataset.bucket)
        client = s3.boto3_client()
        for asset, path in dataset.files.items():
            client.upload_file(str(path), dataset.bucket, dataset.keys[asset])
        yield s3


def measure(
    ctx: ForkServerContext,
    dataset: data.Dataset,
    aois: list[tuple[data.Aoi, list[data.IdealWindow]]],
    anchor: tuple[float, float],
    res: float,
    args: argparse.Namespace,
) -> tuple[list[AoiResult], dict[str, dict[str, str]], list[float]]:
    """Start the server; run the bytes pass, then the timing pass."""
    results: list[AoiResult] = []
    gdal_options: dict[str, dict[str, str]] = {}
    raw_setup_ms: list[float] = []
    with serve_dataset(dataset) as s3:
        upstream = ("127.0.0.1", s3.s3_port)
        ideal_by_aoi = {aoi.name: ideal for aoi, ideal in aois}

        def job(method: str, aoi: data.Aoi, endpoint: str, arrays: bool = False) -> Job:
            raw = tuple((dataset.keys[w.asset], w.ranges) for w in ideal_by_aoi[aoi.name])
            return Job.for_aoi(
                method,
                aoi,
                endpoint,
                s3,
                dataset.item,
                bucket=dataset.bucket,
                paths=tuple(dataset.gdal_paths()),
                bands=dataset.bands,
                epsg=dataset.epsg,
                resolution=res,
                anchor=anchor,
                threads=args.threads,
                return_arrays=arrays,
                raw_ranges=raw if method == "raw-gets" else (),
            )

        # Bytes pass, through the proxy; also checks that the readers do the same work.
        with ByteCountingProxy(upstream, max_lifetime_s=1800) as proxy:
            for aoi, ideal in aois:
                stats: dict[str, dict[str, PathStats]] = {}
                outputs: dict[str, dict[str, Any]] = {}
                for method in METHODS:
                    proxy.reset()
                    outputs[method] = run_fresh(ctx, job(method, aoi, proxy.endpoint_url, True))
                    proxy.wait_idle()
                    stats[method] = proxy.snapshot()
                    gdal_options[method] = outputs[method]["gdal_options"]
                if proxy.unparsed_bytes:
                    raise RuntimeError("proxy met HTTP framing it cannot count")
                shape = check_same_work(aoi, outputs, dataset.bands)
                ideal_total = sum(w.ideal_bytes for w in ideal)
                raw_total = sum(p.body_bytes for p in stats["raw-gets"].values())
                if raw_total != ideal_total:
                    raise AssertionError(
                        f"{aoi.name}: raw GETs fetched {raw_total} bytes, ideal is {ideal_total}"
                    )
                del outputs
                results.append(
                    AoiResult(dataset, aoi, ideal, stats, {m: [] for m in METHODS}, shape)
                )

        # Timing pass: direct to the server, one fresh process per run, readers rotating.
        for method in METHODS:  # discarded warm-up: server-side caches, page cache
            run_fresh(ctx, job(method, aois[0][0], s3.endpoint_url))
        for rep in range(args.repetitions):
            for i, r in enumerate(results):
                k = (rep + i) % len(METHODS)
                for method in METHODS[k:] + METHODS[:k]:
                    out = run_fresh(ctx, job(method, r.aoi, s3.endpoint_url))
                    if method == "raw-gets":
                        if out["bytes"] != r.ideal_bytes:
                            raise AssertionError("raw GETs fetched other bytes in a timed run")
                        raw_setup_ms.append(float(out["setup_ms"]))
                    elif tuple(out["shapes"][dataset.bands[0]]) != r.shape:
                        raise AssertionError(f"{method} read a different window in a timed run")
                    r.ms[method].append(float(out["ms"]))
    return results, gdal_options, raw_setup_ms


def _load() -> tuple[float, float]:
    one, five, _ = os.getloadavg()
    return one, five


def window_reads(args: argparse.Namespace) -> dict[str, Any]:
    """The window-read benchmark; returns its JSON figures (and prints its report)."""
    t_start = time.monotonic()
    load_before = _load()
    if args.data == "realistic":
        from benchmarks import realistic

        manifest = realistic.prepare()
        data_desc = realistic.print_conditions(manifest)
        dataset = data.realistic(manifest)
    else:
        data_desc = {}
        dataset = data.decimated()
    aois = list(dataset.aois)
    ideals = {a.name: data.ideal_windows(a.geometry(), dataset.files) for a in aois}
    x0, y0, res, _ = dataset.file_grid()
    anchor = ((x0 / res) % 1.0, (y0 / res) % 1.0)  # the files' pixel grid, in pixels

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmarks._preload"])

    try:
        results, gdal_options, raw_setup_ms = measure(
            ctx, dataset, [(a, ideals[a.name]) for a in aois], anchor, res, args
        )
    finally:
        stop_fork_server()
    load_after = _load()

    import boto3
    import odc.stac
    import rasterio

    ideal_total = sum(r.ideal_bytes for r in results)
    pipe_total = sum(r.fetched("pipeline") for r in results)
    odc_total = sum(r.fetched("odc-stac") for r in results)
    pipe_ms = sum(r.median_ms("pipeline") for r in results)
    odc_ms = sum(r.median_ms("odc-stac") for r in results)
    raw_ms = sum(r.median_ms("raw-gets") for r in results)
    ratios = {
        "bytes_ratio": pipe_total / ideal_total,
        "time_vs_odc_stac": pipe_ms / odc_ms,
        "time_vs_raw_gets": pipe_ms / raw_ms,
    }
    targets = {
        "bytes_ratio": TARGET_BYTES_RATIO,
        "time_vs_odc_stac": TARGET_TIME_RATIO,
        "time_vs_raw_gets": TARGET_RAW_RATIO,
    }
    summary: dict[str, Any] = {
        **{k: round(v, 4) for k, v in ratios.items()},
        "pipeline_ms_median": round(pipe_ms, 1),
        "odc_stac_ms_median": round(odc_ms, 1),
        "raw_gets_ms_median": round(raw_ms, 1),
        "repetitions": args.repetitions,
        "threads": args.threads,
        "odc_stac_bytes_ratio": round(odc_total / ideal_total, 4),
        "ideal_bytes": ideal_total,
        "pipeline_bytes": pipe_total,
        "odc_stac_bytes": odc_total,
        "pipeline_requests": sum(r.requests("pipeline") for r in results),
        "odc_stac_requests": sum(r.requests("odc-stac") for r in results),
        "raw_gets_requests": sum(r.requests("raw-gets") for r in results),
        "targets": targets,
        "targets_met": all(ratios[k] <= t for k, t in targets.items()),
        "per_aoi": [
            {
                "aoi": r.aoi.name,
                "window_px": list(r.shape),
                "tiles_per_band": r.ideal[0].tiles,
                "ideal_bytes": r.ideal_bytes,
                "pipeline_bytes": r.fetched("pipeline"),
                "pipeline_requests": r.requests("pipeline"),
                "odc_stac_bytes": r.fetched("odc-stac"),
                "odc_stac_requests": r.requests("odc-stac"),
                "raw_gets_requests": r.requests("raw-gets"),
                "bytes_ratio": round(r.fetched("pipeline") / r.ideal_bytes, 4),
                "pipeline_ms_median": round(r.median_ms("pipeline"), 1),
                "odc_stac_ms_median": round(r.median_ms("odc-stac"), 1),
                "raw_gets_ms_median": round(r.median_ms("raw-gets"), 1),
                "time_vs_odc_stac": round(r.median_ms("pipeline") / r.median_ms("odc-stac"), 4),
                "time_vs_raw_gets": round(r.median_ms("pipeline") / r.median_ms("raw-gets"), 4),
            }
            for r in results
        ],
        "cold": "fresh process per run",
        "data": dataset.name,
        "load_avg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
    }
    if data_desc:
        summary["data_tile_median_bytes"] = data_desc["tile_median_bytes"]
    conditions = {
        "data": dataset.description,
        "bands": ", ".join(f"{a}={p.name.removesuffix('.tif')}" for a, p in dataset.files.items()),
        "AOIs": "; ".join(
            f"{r.aoi.name} {r.aoi.note}: {r.shape[1]}x{r.shape[0]} px, "
            f"{r.ideal[0].tiles} tiles per {dataset.bands[0]}-like band, "
            f"{r.ideal[-1].tiles} per {r.ideal[-1].asset}"
            for r in results
        ),
        "server": "SeaweedFS S3 (weed mini) on 127.0.0.1, plain HTTP, path-style",
        "threads": (
            f"{args.threads} for all (pipeline read_windows max_workers={args.threads}, "
            f"odc-stac pool={args.threads}, raw GETs {args.threads} threads)"
        ),
        "repetitions": args.repetitions,
        "cold": (
            "every run in a fresh process, forked from a server that only imported the "
            "libraries (no GDAL I/O, heap gc-frozen): empty GDAL block/VSI/curl caches, "
            "new connections, first GDAL/PROJ use in the run; the readers rotate; "
            "1 discarded warm-up each"
        ),
        "timed section": (
            "pipeline: ObjectStoreResource + gdal_options() + gdal_session() + "
            "read_windows(); odc-stac: configure_rio() + load() (pystac.Item built before); "
            "raw GETs: the header range then the tile ranges of "
            "each object, boto3 get_object + read (a GDAL COG stores a 4-byte leader and trailer "
            "around each tile, so no two tiles are adjacent: one GET per tile), on one client "
            "built before the clock "
            f"(median {statistics.median(raw_setup_ms):.0f} ms to build, not counted)"
        ),
        "odc-stac grid": (
            f"crs=EPSG:{dataset.epsg}, resolution={res:g}, anchor=the files' pixel grid, "
            "geopolygon=the AOI box densified as the pipeline does (0.001 deg); "
            "SCL upsampled to the finer grid by odc-stac (nearest), same SCL tiles read"
        ),
        "same work": (
            "checked: equal shapes and values (finer bands), SCL = upsampled window; "
            "raw GETs fetched exactly the ideal bytes"
        ),
        "ideal bytes": (
            "per band: header (min TileOffsets over all IFDs incl. overviews) + "
            "TileByteCounts of the full-res tiles the window intersects"
        ),
        "bytes": "response body bytes from the server, counted by a TCP proxy (bytes pass)",
        "pipeline GDAL": _fmt_options(gdal_options.get("pipeline", {})),
        "odc-stac GDAL": _fmt_options(gdal_options.get("odc-stac", {}))
        + " (configure_rio cloud_defaults=True, AWSSession endpoint)",
        "machine": (
            f"nproc={os.cpu_count()}, {platform.machine()}, Python {platform.python_version()}, "
            f"GDAL {rasterio.__gdal_version__}, rasterio {rasterio.__version__}, "
            f"odc-stac {odc.stac.__version__}, boto3 {boto3.__version__}"
        ),
        "load average (1 min)": f"{load_before[0]:.2f} before, {load_after[0]:.2f} after",
        "benchmark wall time": f"{time.monotonic() - t_start:.0f} s",
    }
    print_report(results, conditions, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--transform-repetitions", type=int, default=transform_bench.REPETITIONS)
    parser.add_argument(
        "--overhead-days",
        type=int,
        default=0,
        help=f"days in the sample-data Dagster overhead backfill (0, the default, skips it; "
        f"it used to run {overhead_bench.DAYS}: the realistic backfill part supersedes it)",
    )
    parser.add_argument(
        "--e2e-repetitions",
        type=int,
        default=5,
        help="cold repetitions of the end-to-end partition (0 skips the end-to-end part)",
    )
    parser.add_argument(
        "--e2e-scaling",
        default="1,2,4,8",
        help="scene counts of the scaling runs (comma separated; empty skips them)",
    )
    parser.add_argument("--no-60km", action="store_true", help="skip the 60 km AOI run")
    parser.add_argument("--no-backfill", action="store_true", help="skip the 50 AOI-day backfill")
    parser.add_argument(
        "--year-days",
        type=int,
        default=365,
        help="days of the one-AOI year backfill (0 skips it)",
    )
    parser.add_argument(
        "--request-sensor-aois",
        type=int,
        default=request_sensor_bench.AOIS,
        help="registered AOIs in the request sensor benchmark (0 skips that part)",
    )
    parser.add_argument(
        "--no-metadata-weight", action="store_true", help="skip the metadata weight part"
    )
    parser.add_argument(
        "--publish-repetitions",
        type=int,
        default=publish_bench.REPETITIONS,
        help="repetitions of the pgstac publication benchmark (0 skips that part)",
    )
    parser.add_argument(
        "--data",
        choices=("realistic", "decimated"),
        default="realistic",
        help="window reads on the full-size realistic scene (default) or the decimated "
        "shared files",
    )
    parser.add_argument(
        "--window-reads-only", action="store_true", help="only the window-read benchmark"
    )
    parser.add_argument(
        "--no-encoding", action="store_true", help="skip the product encoding benchmark"
    )
    args = parser.parse_args(argv)
    if args.repetitions < 1 or args.transform_repetitions < 1:
        parser.error("--repetitions and --transform-repetitions must be >= 1")
    counts = ("overhead_days", "request_sensor_aois", "publish_repetitions", "e2e_repetitions")
    negative = [f"--{n.replace('_', '-')}" for n in (*counts, "year_days") if getattr(args, n) < 0]
    if negative:
        parser.error(f"{', '.join(negative)} must be >= 0")

    if not data.COG_DIR.is_dir() or not data.ITEM_PATH.is_file():
        print(f"shared data not found under {data.SHARED_DATA}", file=sys.stderr)
        return 2

    summary = window_reads(args)
    if args.window_reads_only:
        print(json.dumps(summary, separators=(",", ":")))
        return 0
    # transform_mpix_per_s, transform_vs_memory_bound, transform_peak_rss_mb
    summary.update(transform_bench.run(args.transform_repetitions))
    if args.overhead_days:
        # dagster_overhead_share(_after_first_run), dagster_backfill_wall_s(_one_per_run),
        # dagster_overhead_share_one_per_run, backfill_daemon_latency_s,
        # dagster_single_run_overhead_share, dagster_code_location_import_s
        summary.update(overhead_bench.run(args.overhead_days))
    if args.request_sensor_aois:
        # request_sensor_tick_s, request_sensor_idle_tick_s, request_sensor_status_tick_s, ...
        summary.update(request_sensor_bench.run_in_subprocess(args.request_sensor_aois))
    if not args.no_metadata_weight:
        # metadata_weight_partition_bytes, metadata_weight_image_bytes, ..._largest_entry_bytes
        summary.update(metadata_bench.run_in_subprocess())
    if args.publish_repetitions:
        # publish_partition_s, publish_vs_transform, publish_refresh_*_s, ... per size
        summary.update(publish_bench.run_in_subprocess(args.publish_repetitions))
    if not args.no_encoding:
        # encode_mb_per_s (the products' storage), encode_former_*, encode_default_*, ...
        summary.update(encoding_in_subprocess())
        # raw_windows_bytes_vs_deflate, raw_windows_encode_speedup, ..._decode_speedup
        summary.update(data.run_json_module("benchmarks.raw_windows"))
    if args.e2e_repetitions:
        # e2e_s, e2e_steps_s, e2e_vs_lower_bound, e2e_vs_peer, scaling_exponent,
        # peak_rss_mb, peak_rss_60km_mb, ...
        e2e_args = ["--repetitions", str(args.e2e_repetitions), "--scaling", args.e2e_scaling]
        summary.update(
            data.run_json_module("benchmarks.e2e", *e2e_args, *(["--no-60km"] * args.no_60km))
        )
    if not args.no_backfill or args.year_days:
        # backfill_overhead_share, backfill_wall_s, ..., year_backfill_min, year_*
        backfill_args = ["--year-days", str(args.year_days)] if args.year_days else ["--no-year"]
        summary.update(
            data.run_json_module(
                "benchmarks.backfill", *backfill_args, *(["--no-backfill"] * args.no_backfill)
            )
        )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def encoding_in_subprocess() -> dict[str, Any]:
    """``benchmarks.encoding`` on the products' storage and the former one, in a fresh
    interpreter, as the other benchmarks that import the pipeline."""
    return data.run_json_module("benchmarks.encoding", "--only", "candidates", "--no-wait")


def _fmt_options(options: dict[str, str]) -> str:
    skip = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    return " ".join(f"{k}={v}" for k, v in options.items() if k not in skip)


if __name__ == "__main__":
    raise SystemExit(main())
