"""Benchmark: backfills through the local daemon on the realistic data (issue 12 §2).

``.venv/bin/python -m benchmarks.backfill [--aoi-days 5x10] [--year-days 365] [--no-year]
[--no-backfill]``; its last line is a JSON object. See benchmarks/README.md ("Backfills on
realistic data").

Data: the 4 full-size scenes of ``benchmarks/realistic.py`` in SeaweedFS, served by rustac
as re-dated items (new ids and times, the same files): ``realistic.serve(stac_items=...)``.
The pipeline reads the source COGs from their ``s3://sentinel-cogs/...`` hrefs on that
server: ``storage.endpoint_url`` in the configuration points boto3 and GDAL at it, and the
credentials come from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the
AWS chain, as in production), never from the file. Outputs go to a bucket of the same
SeaweedFS (``s3://bench-out/<part>``), the production path (S3 writes through boto3),
and a DuckDB file.

1. **Backfill**: A AOIs of ~10 km inside the 4 tiles x D days (default 5 x 10), each
   AOI's scenes every day, launched as the UI launches it (GraphQL
   ``launchPartitionBackfill`` against ``dagster dev``, the daemon, the configuration's
   default backfill policy). ``backfill_overhead_share`` = 1 - (time during which at least
   one step body runs) / (submission -> last run's end).
2. **A year of one AOI**: the 20 km AOI of the realistic data (the 4 tiles) over 365 days
   from 2024-01-01, the day's 4 scenes every 5th day (the days ``realistic.DAY`` + 5k), no
   scene on the others, from an empty store and warehouse: ``year_backfill_min`` =
   submission -> last run's end. Then a probe: 10 more days without any scene (before the
   year, new partitions) backfilled in the same deployment, for the cost of an empty day;
   a scene day's cost per asset is what the year's bodies leave over the empty days.

A failed run fails the benchmark. Each part gets its own deployment (``DAGSTER_HOME``,
configuration, object-store prefix, warehouse, ``dagster dev``) as
``benchmarks/dagster_overhead.py`` builds it (``make dev``'s instance yaml).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks import dagster_overhead as dov
from benchmarks import realistic
from geospatial_pipeline.config import CONFIG_ENV_VAR, PartitionsConfig, default_of

BACKFILL_FIRST_DAY = dt.date(2023, 6, 15)  # a year before the year part: no overlap
AOI_DAYS = (5, 10)
BACKFILL_AOI_KM = 10.0
# AOI centres (km east, km north of realistic.AOI_CENTRE): the two zones' tiles overlap
# over most of this area, so each AOI lies in one tile of each zone (the centre in all 4).
AOI_OFFSETS_KM = {
    "bf-c": (0, 0),
    "bf-nw": (-30, 30),
    "bf-ne": (30, 30),
    "bf-sw": (-30, -30),
    "bf-se": (30, -30),
    "bf-n": (0, 40),
    "bf-s": (0, -40),
}
YEAR_START = dt.date(2024, 1, 1)
YEAR_DAYS = 365
SCENE_EVERY = 5
PROBE_DAYS = 10
YEAR_AOI = "tarbes-20km"
OUT_BUCKET = "bench-out"
BANDS = ["red", "green", "blue", "nir", "scl"]
TARGET_SHARE = 0.20
TARGET_YEAR_MIN = 10.0
TIMEOUT_S = 3 * 3600


@dataclass(frozen=True)
class Part:
    """One deployment's backfill: AOIs (name -> lon/lat bbox), days, days with scenes."""

    name: str
    aois: dict[str, list[float]]
    days: list[dt.date]
    scene_days: set[dt.date]
    start: dt.date  # partitions.start_date (the year's starts earlier, for the probe)
    probe_days: list[dt.date]

    def keys(self, days: Sequence[dt.date]) -> list[str]:
        # Dagster orders the dimensions by name: "aoi|date".
        return [f"{aoi}|{day.isoformat()}" for aoi in self.aois for day in days]


# ---------------------------------------------------------------- inputs
def box_km(east_km: float, north_km: float, size_km: float) -> list[float]:
    """A ``size_km`` lon/lat box centred ``east_km``/``north_km`` from the AOI centre."""
    lon0, lat0 = realistic.AOI_CENTRE
    lat = lat0 + north_km * 1000 / 111_320
    half_lat = size_km * 500 / 111_320
    km_lon = 111_320 * math.cos(math.radians(lat))
    lon = lon0 + east_km * 1000 / km_lon
    half_lon = size_km * 500 / km_lon
    return [round(v, 6) for v in (lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat)]


def backfill_part(aois: int, days: int) -> Part:
    if not 1 <= aois <= len(AOI_OFFSETS_KM):
        raise ValueError(f"--aoi-days: 1 to {len(AOI_OFFSETS_KM)} AOIs, got {aois}")
    all_days = [BACKFILL_FIRST_DAY + dt.timedelta(days=d) for d in range(days)]
    return Part(
        name="backfill",
        aois={
            name: box_km(east, north, BACKFILL_AOI_KM)
            for name, (east, north) in list(AOI_OFFSETS_KM.items())[:aois]
        },
        days=all_days,
        scene_days=set(all_days),
        start=BACKFILL_FIRST_DAY,
        probe_days=[],
    )


def year_part(days: int) -> Part:
    all_days = [YEAR_START + dt.timedelta(days=d) for d in range(days)]
    return Part(
        name="year",
        aois={YEAR_AOI: [round(v, 6) for v in realistic.aoi_geometry().bounds]},
        days=all_days,
        scene_days={d for d in all_days if (d - realistic.DAY).days % SCENE_EVERY == 0},
        start=YEAR_START - dt.timedelta(days=PROBE_DAYS),
        probe_days=[YEAR_START - dt.timedelta(days=PROBE_DAYS - d) for d in range(PROBE_DAYS)],
    )


def served_items(manifest: dict[str, Any], parts: Sequence[Part]) -> list[dict[str, Any]]:
    """Every generated scene on each scene day of the parts (re-dated, same files)."""
    days = sorted({d for part in parts for d in part.scene_days})
    return [dov.item_on_day(item, realistic.DAY, day) for day in days for item in manifest["items"]]


def scenes_per_aoi(manifest: dict[str, Any], part: Part) -> dict[str, int]:
    from shapely.geometry import box, shape

    footprints = [shape(item["geometry"]) for item in manifest["items"]]
    return {
        name: sum(fp.intersects(box(*bbox)) for fp in footprints)
        for name, bbox in part.aois.items()
    }


def write_config(out: Path, part: Part, stac_url: str, s3_endpoint: str) -> Path:
    doc: dict[str, Any] = {
        "stac": {"api_url": stac_url, "collection": "sentinel-2-l2a", "max_cloud_cover": 100},
        "aois": [{"name": name, "bbox": bbox} for name, bbox in part.aois.items()],
        "bands": BANDS,
        "partitions": {"start_date": part.start.isoformat(), "end_date": part.days[-1].isoformat()},
        # Sources (s3://sentinel-cogs) and outputs on the same server: the endpoint applies
        # to both; the credentials come from the environment.
        "storage": {"url": f"s3://{OUT_BUCKET}/{part.name}", "endpoint_url": s3_endpoint},
        "warehouse": {"kind": "duckdb", "path": str(out / "warehouse.duckdb")},
    }
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def s3_credentials_env(s3: Any) -> dict[str, str]:
    """Credentials as production gets them (the AWS chain reads these variables); the
    endpoint comes from the configuration. The empty token masks one left in the caller's
    environment; no EC2 metadata lookups."""
    return {
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_SESSION_TOKEN": "",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


# ---------------------------------------------------------------- measuring
def run_phases(instance: Any, record: Any) -> dict[str, float]:
    """A run's timeline from its event log: queued (created -> dequeued), launch (dequeued
    -> RUN_START: process start, code location import), steps, in-run other (RUN_START ->
    end outside the step bodies: pool waits, run bookkeeping)."""
    from dagster import DagsterEventType as E

    at: dict[Any, float] = {}
    for entry in instance.all_logs(
        record.dagster_run.run_id, of_type={E.RUN_DEQUEUED, E.RUN_STARTING, E.RUN_START}
    ):
        at.setdefault(entry.dagster_event.event_type, entry.timestamp)
    created = record.create_timestamp.timestamp()
    dequeued = at.get(E.RUN_DEQUEUED, at.get(E.RUN_STARTING, created))
    started = at.get(E.RUN_START, record.start_time)
    steps = dov.step_intervals(instance, record.dagster_run.run_id)
    body = sum(end - begin for _, begin, end in steps)
    return {
        "queued_s": dequeued - created,
        "launch_s": started - dequeued,
        "steps_s": body,
        "in_run_other_s": record.end_time - started - body,
        "run_s": record.end_time - record.start_time,
    }


def materializations(instance: Any, run_id: str) -> list[tuple[str, str, dict[str, float]]]:
    """(asset, partition, numeric metadata) of each partition a run materialized."""
    from dagster import DagsterEventType

    out = []
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        mat = entry.dagster_event.event_specific_data.materialization
        if mat.partition:
            numbers = {
                k: float(v.value)
                for k, v in mat.metadata.items()
                if isinstance(getattr(v, "value", None), int | float)
                and not isinstance(v.value, bool)
            }
            out.append((mat.asset_key.path[-1], mat.partition, numbers))
    return out


def run_partitions(mats: list[tuple[str, str, dict[str, float]]]) -> list[tuple[str, dt.date]]:
    """The (aoi, day) partitions of a run, from what it materialized: Dagster decides how a
    backfill's keys are grouped into runs (by AOI or by day), so they are read back."""
    keys = {partition for _, partition, _ in mats}
    return sorted((k.split("|")[0], dt.date.fromisoformat(k.split("|")[1])) for k in keys)


def analyse(
    instance: Any, records: list[Any], submitted: float, part: Part, pools: set[str]
) -> dict[str, Any]:
    """``dagster_overhead.measure`` plus per-run phases, per-asset body sums, and how long
    the raster pool (limit 1 locally) was busy."""
    fig = dov.measure(instance, records, submitted)
    per_asset: dict[str, float] = defaultdict(float)
    pool_intervals: list[tuple[float, float]] = []
    # band_rasters' window reads (summed over its threads) and the bytes each asset wrote.
    written: dict[str, float] = defaultdict(float)
    runs: list[dict[str, Any]] = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        for step, begin, end in dov.step_intervals(instance, record.dagster_run.run_id):
            per_asset[step] += end - begin
            if step in pools:
                pool_intervals.append((begin, end))
        mats = materializations(instance, record.dagster_run.run_id)
        for asset, _, numbers in mats:
            for key in ("read_seconds_sum", "bytes"):
                if key in numbers:
                    written[f"{asset}.{key}"] += numbers[key]
        parts = run_partitions(mats)
        runs.append(
            {
                "first": f"{parts[0][0]}|{parts[0][1]}",
                "aois": len({aoi for aoi, _ in parts}),
                "partitions": len(parts),
                "with_scenes": sum(day in part.scene_days for _, day in parts),
                **{k: round(v, 2) for k, v in run_phases(instance, record).items()},
            }
        )
    fig["per_run"] = runs
    fig["failures"] = sum(r.dagster_run.status.value != "SUCCESS" for r in records)
    fig["partitions_per_run"] = sorted({r["partitions"] for r in runs})
    fig["per_asset_body_s"] = {
        k: round(v, 2) for k, v in sorted(per_asset.items(), key=lambda kv: -kv[1])
    }
    fig["materialized"] = {k: round(v, 2) for k, v in sorted(written.items())}
    fig["raster_pool_busy_s"] = round(dov._union_seconds(pool_intervals), 2)
    for key in ("queued_s", "launch_s", "in_run_other_s"):
        fig[f"mean_{key}"] = round(statistics.mean(float(r[key]) for r in runs), 2)
    return fig


def backfill_of(
    instance: Any, url: str, keys: list[str], part: Part, pools: set[str], timeout_s: float
) -> dict[str, Any]:
    """Launch the backfill of ``keys`` as the UI does, wait for every run, analyse."""
    from dagster import RunsFilter

    submitted = time.time()
    backfill_id = dov.launch_partitions_backfill(url, keys)

    def done(_: list[Any]) -> bool:
        found = instance.get_backfill(backfill_id)
        status = found.status.value if found is not None else "REQUESTED"
        if status in ("FAILED", "FAILING", "CANCELED", "CANCELING"):
            raise RuntimeError(f"backfill {backfill_id} is {status}: {found.error}")
        return status.startswith("COMPLETED")

    records = dov.wait_for_runs(
        instance, RunsFilter(tags={"dagster/backfill": backfill_id}), done, timeout_s
    )
    return analyse(instance, records, submitted, part, pools)


def raster_pool_steps(url: str) -> set[str]:
    """Op names of the assets in a concurrency pool (the raster steps)."""
    nodes = dov.graphql(url, "{ assetNodes { assetKey { path } pools } }")["assetNodes"]
    return {n["assetKey"]["path"][-1] for n in nodes if n["pools"]}


def run_part(out: Path, part: Part, served: Any, timeout_s: float) -> dict[str, Any]:
    """A fresh deployment of ``part``; its backfill (and the empty-day probe)."""
    from dagster import DagsterInstance

    out.mkdir()
    home = out / "dagster_home"
    home.mkdir()
    dov.local_instance(home, None)
    env = {
        CONFIG_ENV_VAR: str(write_config(out, part, served.stac.url, served.s3.endpoint_url)),
        "DAGSTER_HOME": str(home),
        **s3_credentials_env(served.s3),
    }
    dov.register_aoi({**os.environ, **env})
    t = time.monotonic()
    with dov.dagster_dev(out, env) as url, DagsterInstance.from_config(str(home)) as inst:
        startup_s = time.monotonic() - t
        pools = raster_pool_steps(url)
        fig = backfill_of(inst, url, part.keys(part.days), part, pools, timeout_s)
        print(f"{part.name}: backfill done, wall {fig['wall_s']:.1f} s", flush=True)
        if part.probe_days:
            fig["probe"] = backfill_of(inst, url, part.keys(part.probe_days), part, pools, 1800)
        backfill_runs = {
            r.dagster_run.run_id
            for r in inst.get_run_records()
            if "dagster/backfill" in r.dagster_run.tags
        }
        fig["other_runs"] = len(inst.get_run_records()) - len(backfill_runs)
    fig["dagster_dev_startup_s"] = round(startup_s, 1)
    fig["aois"] = len(part.aois)
    fig["days"] = len(part.days)
    fig["partitions"] = len(part.aois) * len(part.days)
    fig["scene_days"] = len(part.scene_days)
    return fig


def year_breakdown(fig: dict[str, Any], part: Part) -> dict[str, Any]:
    """Per asset: seconds per empty day (the probe) and per scene day (what the year's
    bodies leave over its empty days)."""
    probe = fig["probe"]
    n_empty = len(part.days) - len(part.scene_days)
    n_scene = len(part.scene_days)
    out = {}
    for asset, total in fig["per_asset_body_s"].items():
        empty = probe["per_asset_body_s"].get(asset, 0.0) / len(part.probe_days)
        scene = (total - empty * n_empty) / n_scene if n_scene else float("nan")
        out[asset] = {
            "year_s": total,
            "empty_day_s": round(empty, 3),
            "scene_day_s": round(scene, 2),
        }
    return out


# ---------------------------------------------------------------- the benchmark
def run(
    aoi_days: tuple[int, int] = AOI_DAYS,
    year_days: int = YEAR_DAYS,
    backfill: bool = True,
    year: bool = True,
) -> dict[str, Any]:
    """Measure; print a report; return the ``backfill_*`` and ``year_*`` figures."""
    if not (backfill or year):
        raise ValueError("nothing to measure: both the backfill and the year are off")
    t0 = time.monotonic()
    load_before = os.getloadavg()
    manifest = realistic.prepare()
    parts = ([backfill_part(*aoi_days)] if backfill else []) + (
        [year_part(year_days)] if year else []
    )
    items = served_items(manifest, parts)
    out = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    figs: dict[str, dict[str, Any]] = {}
    try:
        t = time.monotonic()
        with realistic.serve(manifest, stac_items=items) as served:
            serve_s = time.monotonic() - t
            served.s3.create_bucket(OUT_BUCKET)
            print(
                f"served {len(items)} items over the 4 scenes' files ({serve_s:.0f} s)", flush=True
            )
            for part in parts:
                figs[part.name] = run_part(out / part.name, part, served, TIMEOUT_S)
                figs[part.name]["scenes_per_aoi"] = scenes_per_aoi(manifest, part)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    summary: dict[str, Any] = {}
    if backfill:
        b = figs["backfill"]
        summary |= {
            "backfill_overhead_share": b["share"],
            "backfill_overhead_share_after_first_run": b["share_after_first_run"],
            "backfill_wall_s": b["wall_s"],
            "backfill_step_body_s": b["step_body_s"],
            "backfill_step_body_sum_s": b["step_body_sum_s"],
            "backfill_daemon_pickup_s": b["first_run_created_s"],
            "backfill_runs": b["runs"],
            "backfill_partitions": b["partitions"],
            "backfill_aoi_days": f"{b['aois']}x{b['days']}",
            "backfill_target": TARGET_SHARE,
            "backfill_target_met": b["share"] <= TARGET_SHARE,
            "backfill": b,
        }
    if year:
        y = figs["year"]
        part = next(p for p in parts if p.name == "year")
        y["per_asset"] = year_breakdown(y, part)
        summary |= {
            "year_backfill_min": round(y["wall_s"] / 60, 2),
            "year_days": y["days"],
            "year_scene_days": y["scene_days"],
            "year_runs": y["runs"],
            "year_partitions_per_run": y["partitions_per_run"],
            "year_failures": y["failures"],
            "year_step_body_sum_s": y["step_body_sum_s"],
            "year_raster_pool_busy_s": y["raster_pool_busy_s"],
            "year_daemon_pickup_s": y["first_run_created_s"],
            "year_empty_day_s": round(y["probe"]["step_body_sum_s"] / PROBE_DAYS, 3),
            "year_target_min": TARGET_YEAR_MIN,
            "year_target_met": y["wall_s"] / 60 <= TARGET_YEAR_MIN,
            "year": y,
        }
    conditions = {
        "machine": f"nproc={os.cpu_count()}, {platform.machine()}, "
        f"Python {platform.python_version()}",
        "load average (1/5/15 min)": f"before {dov._load(load_before)}; "
        f"after {dov._load(os.getloadavg())}",
        "data": f"{len(manifest['items'])} realistic scenes of {realistic.DAY} re-dated, "
        f"{len(items)} items served (rustac), COGs in SeaweedFS (upload {serve_s:.0f} s)",
        "outputs": f"s3://{OUT_BUCKET}/<part> on the same SeaweedFS; DuckDB file",
        "deployment": "dagster dev (webserver + daemon + gRPC code server), SQLite "
        "DAGSTER_HOME with make dev's instance yaml; one per part",
        "backfill policy": "multi_run(max_partitions_per_run="
        f"{default_of(PartitionsConfig, 'backfill_partitions_per_run')}) (the default)",
        "benchmark wall time": f"{time.monotonic() - t0:.0f} s",
    }
    print_report(conditions, summary)
    return summary


def print_report(conditions: dict[str, Any], summary: dict[str, Any]) -> None:
    print()
    print("Backfills through the local daemon on the realistic data")
    print("=" * 78)
    for key, value in conditions.items():
        print(f"{key:<26} {value}")
    for name in ("backfill", "year"):
        fig = summary.get(name)
        if fig is None:
            continue
        print()
        print(
            f"{name}: {fig['aois']} AOI(s) x {fig['days']} days ({fig['scene_days']} with scenes; "
            f"scenes per AOI {fig['scenes_per_aoi']}), {fig['runs']} runs of "
            f"{fig['partitions_per_run']} partitions, other runs {fig['other_runs']}"
        )
        print(
            f"  wall {fig['wall_s']:.1f} s = {fig['wall_s'] / 60:.2f} min (submission -> "
            f"last run end); daemon pickup {fig['first_run_created_s']:.1f} s; bodies union "
            f"{fig['step_body_s']:.1f} s, "
            f"sum {fig['step_body_sum_s']:.1f} s; share {fig['share']:.3f} "
            f"(after the first run {fig['share_after_first_run']:.3f}); raster pool busy "
            f"{fig['raster_pool_busy_s']:.1f} s"
        )
        steps_mean = statistics.mean(r["steps_s"] for r in fig["per_run"])
        print(
            f"  per run (means): queued {fig['mean_queued_s']:.1f} s, launch (process + import) "
            f"{fig['mean_launch_s']:.1f} s, steps {steps_mean:.1f} s, "
            f"in-run other (pool waits, bookkeeping) {fig['mean_in_run_other_s']:.1f} s"
        )
        print(
            "  from the materializations: "
            + ", ".join(
                f"{k} {v / 1e6:.1f} MB" if k.endswith("bytes") else f"{k} {v:.1f} s"
                for k, v in fig["materialized"].items()
            )
        )
        print(
            "  per asset, sum of bodies: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in fig["per_asset_body_s"].items())
        )
        if "per_asset" in fig:
            print(f"  {'asset':<40} {'year s':>8} {'empty day s':>11} {'scene day s':>11}")
            for asset, row in fig["per_asset"].items():
                print(
                    f"  {asset:<40} {row['year_s']:>8.1f} {row['empty_day_s']:>11.3f} "
                    f"{row['scene_day_s']:>11.2f}"
                )
            probe = fig["probe"]
            print(
                f"  empty-day probe: {PROBE_DAYS} days, {probe['runs']} run(s), wall "
                f"{probe['wall_s']:.1f} s, bodies {probe['step_body_sum_s']:.1f} s, launch "
                f"{probe['mean_launch_s']:.1f} s"
            )
        print(
            f"  {'run: first partition':<26} {'aois':>4} {'parts':>5} {'w scene':>7} {'queued':>7} "
            f"{'launch':>7} "
            f"{'steps':>7} {'other':>7}"
        )
        for r in fig["per_run"]:
            print(
                f"  {r['first']:<26} {r['aois']:>4} {r['partitions']:>5} {r['with_scenes']:>7} "
                f"{r['queued_s']:>7.1f} {r['launch_s']:>7.1f} {r['steps_s']:>7.1f} "
                f"{r['in_run_other_s']:>7.1f}"
            )
    if "backfill_overhead_share" in summary:
        met = "MET" if summary["backfill_target_met"] else "NOT MET"
        print(
            f"target: backfill_overhead_share {summary['backfill_overhead_share']:.3f} <= "
            f"{TARGET_SHARE} {met}"
        )
    if "year_backfill_min" in summary:
        met = "MET" if summary["year_target_met"] else "NOT MET"
        print(
            f"target: year_backfill_min {summary['year_backfill_min']:.2f} <= "
            f"{TARGET_YEAR_MIN} {met}"
        )


def _aoi_days(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected AOISxDAYS such as 5x10, got {text!r}")
    return int(match[1]), int(match[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aoi-days", type=_aoi_days, default=AOI_DAYS, help="AOIsxDAYS, e.g. 5x10")
    parser.add_argument("--year-days", type=int, default=YEAR_DAYS)
    parser.add_argument("--no-year", action="store_true")
    parser.add_argument("--no-backfill", action="store_true")
    args = parser.parse_args(argv)
    if args.year_days < 1:
        parser.error("--year-days must be >= 1")
    if args.no_year and args.no_backfill:
        parser.error("--no-year and --no-backfill leave nothing to measure")
    summary = run(args.aoi_days, args.year_days, not args.no_backfill, not args.no_year)
    print(json.dumps(summary, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
