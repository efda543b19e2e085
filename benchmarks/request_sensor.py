"""Benchmark: the request sensor's tick with many registered AOIs.

``.venv/bin/python -m benchmarks.request_sensor [--aois 500] [--days 30] [--repetitions 5]``
(``make bench`` runs it too, in its own process). See benchmarks/README.md ("Request sensor
tick").

Setup, in a temporary directory: a code location configuration (its ``partitions`` section
is the tests' ``start_date: 2020-01-01``, with ``max_partitions`` raised to hold the AOIs;
GEOSPATIAL_PIPELINE_CONFIG points at it before the package is imported, since the assets'
partitions are defined at import), a ``LocalObjectStore``, a DuckDB warehouse and a
``DagsterInstance.local_temp`` without telemetry; ``--aois`` small AOIs registered as the
request sensor registers them (registry document, the instance's ``aois`` partition, the
warehouse mirror row). The configuration's own AOI is one of them.

Per repetition: one request document of ``--days`` days for a NEW AOI, then the ticks the
daemon would evaluate (``demo.evaluate_sensor``, the sensor function with its resources
and the dynamic partitions applied, in this process):

(a) the tick that accepts it: registers the AOI, writes the status, ``--days`` run
    requests (under ``max_run_requests_per_tick``);
    the next tick, which archives the document (printed, not a headline figure);
(b) an idle tick: nothing new;
(c) the status sensor's tick over the request's ``--days`` runs, recorded as finished.

The new AOI and its partition are removed after each repetition, so every one starts from
the same ``--aois`` registered AOIs and an empty ``requests/incoming/``. One discarded
repetition first (first use of the models, imports); figures are medians. Not timed: what
the daemon does with the result (creating and queueing the runs).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from benchmarks import data

AOIS = 500
DAYS = 30
REPETITIONS = 5
START_DATE = dt.date(2020, 1, 1)  # tests/location_config.yaml
FIRST_REQUESTED_DAY = dt.date(2024, 6, 1)
# A grid of 0.01-degree boxes over southern France: small fields, all distinct.
GRID_ORIGIN = (0.0, 43.0)
GRID_COLUMNS = 50
BOX_DEG = 0.01
PROFILE_LINES = 15
RUN_STORAGE_RESOLUTION_S = 1.1


def aoi_name(i: int) -> str:
    return f"field_{i:04d}"


def aoi_bbox(i: int) -> list[float]:
    row, col = divmod(i, GRID_COLUMNS)
    west = GRID_ORIGIN[0] + col * 2 * BOX_DEG
    south = GRID_ORIGIN[1] + row * 2 * BOX_DEG
    return [round(west, 6), round(south, 6), round(west + BOX_DEG, 6), round(south + BOX_DEG, 6)]


def write_config(out: Path, aois: int) -> Path:
    """The code location's configuration: the tests' partitions, a budget for ``aois``
    AOIs (plus the requested one) over every day since ``START_DATE``."""
    days = (dt.datetime.now(dt.UTC).date() - START_DATE).days + 1
    doc: dict[str, Any] = {
        "aois": [{"name": aoi_name(0), "bbox": aoi_bbox(0)}],
        "partitions": {"start_date": START_DATE.isoformat(), "max_partitions": (aois + 2) * days},
        "storage": {"url": str(out / "objects")},
        "warehouse": {"kind": "duckdb", "path": str(out / "warehouse.duckdb")},
    }
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _set_location_config(path: Path) -> None:
    from geospatial_pipeline.config import CONFIG_ENV_VAR

    if "geospatial_pipeline.location" in sys.modules:
        # The assets' partitions were defined from another configuration at import; the
        # sensor and build_defs would disagree with this one.
        raise RuntimeError(
            "geospatial_pipeline.location was imported before the benchmark set "
            f"{CONFIG_ENV_VAR}; run this benchmark in its own process"
        )
    os.environ[CONFIG_ENV_VAR] = str(path)


def seed_aois(config: Any, instance: Any, resources: dict[str, Any], count: int) -> list[str]:
    """``count`` registered AOIs, as the request sensor leaves them: registry document,
    dynamic partition, warehouse mirror row."""
    from geospatial_pipeline.config import AoiConfig
    from geospatial_pipeline.on_demand import mirror_aois
    from geospatial_pipeline.ondemand import registry
    from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME

    store = resources["object_store"].store()
    now = dt.datetime.now(dt.UTC)
    records = [
        registry.register(
            store,
            registry.new_record(
                AoiConfig(name=aoi_name(i), bbox=aoi_bbox(i)),
                first_day=config.partitions.start_date,
                origin=registry.CONFIG_ORIGIN if i == 0 else f"request:seed-{i:04d}",
                now=now,
            ),
        ).record
        for i in range(count)
    ]
    names = [r.name for r in records]
    instance.add_dynamic_partitions(AOI_PARTITIONS_NAME, names)
    mirror_aois(resources["warehouse"], records)
    return names


def submit_request(store: Any, rep: int, days: int, max_days: int) -> tuple[str, str]:
    """A request document for a new AOI (``bench_new_{rep}``); returns (request id, AOI)."""
    from geospatial_pipeline.ondemand import requests

    name = f"bench_new_{rep:03d}"
    west, south = 3.0 + rep * 0.02, 44.5
    doc = {
        "request_id": f"bench-{rep:03d}-{uuid.uuid4().hex[:8]}",
        "aoi": {"name": name, "bbox": [west, south, west + BOX_DEG, south + BOX_DEG]},
        "start_date": FIRST_REQUESTED_DAY.isoformat(),
        "end_date": (FIRST_REQUESTED_DAY + dt.timedelta(days=days - 1)).isoformat(),
    }
    request = requests.validate_request(doc, max_days=max_days)
    requests.submit(store, request)
    return request.request_id, name


def record_finished_runs(instance: Any, run_requests: list[Any], job_name: str) -> None:
    """The request's runs as the status sensor finds them once they have succeeded."""
    from dagster import DagsterRun, DagsterRunStatus

    for request in run_requests:
        key = str(request.partition_key)
        instance.add_run(
            DagsterRun(
                job_name=job_name,
                status=DagsterRunStatus.SUCCESS,
                tags={**request.tags, "dagster/partition": key},
            )
        )


def forget_aoi(store: Any, instance: Any, name: str) -> None:
    """Undo the accepting tick's registration, so the next repetition meets the same
    registry (its status and archived document stay: other ids, never read again)."""
    from geospatial_pipeline.ondemand import registry
    from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME

    store.delete(registry.aoi_key(name))
    instance.delete_dynamic_partition(AOI_PARTITIONS_NAME, name)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def profile_top(fn: Callable[[], Any]) -> tuple[str, Any]:
    """The functions with the most cumulative and own time in ``fn()``, and its result."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = fn()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(PROFILE_LINES)
    # The project's own functions, wherever they rank.
    stats.sort_stats("cumulative").print_stats("geospatial_pipeline", PROFILE_LINES)
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    return text.getvalue(), result


def run(aois: int = AOIS, days: int = DAYS, repetitions: int = REPETITIONS) -> dict[str, Any]:
    """Measure; print a report; return the ``request_sensor_*`` figures for the JSON line."""
    t_start = time.monotonic()
    load_before = os.getloadavg()
    out = Path(tempfile.mkdtemp(prefix="request-sensor-"))
    try:
        config_path = write_config(out, aois)
        _set_location_config(config_path)
        import dagster
        from dagster import DagsterInstance

        from geospatial_pipeline.config import load_config
        from geospatial_pipeline.definitions import INGEST_JOB, build_defs
        from geospatial_pipeline.demo import evaluate_sensor
        from geospatial_pipeline.on_demand import REQUESTS_SENSOR, STATUS_SENSOR
        from geospatial_pipeline.ondemand import requests
        from geospatial_pipeline.resources import build_resources

        config = load_config(config_path)
        defs = build_defs(config)
        resources = build_resources(config)
        store = resources["object_store"].store()
        max_days = config.requests.max_days
        cap = config.requests.max_run_requests_per_tick
        if days > cap:
            raise ValueError(f"--days {days}: more than one tick's {cap} run requests")
        home = out / "dagster_home"
        home.mkdir()
        with DagsterInstance.local_temp(
            tempdir=str(home), overrides={"telemetry": {"enabled": False}}
        ) as instance:
            t = time.monotonic()
            seed_aois(config, instance, resources, aois)
            seed_s = time.monotonic() - t

            def tick(name: str, cursor: str | None) -> Any:
                return evaluate_sensor(defs, name, instance, cursor, resources)

            cursor: str | None = None
            status_cursor: str | None = None
            figures: dict[str, list[float]] = {
                "accept": [],
                "archive": [],
                "idle": [],
                "status": [],
            }
            for rep in range(repetitions + 1):  # repetition 0 is the discarded warm-up
                request_id, name = submit_request(store, rep, days, max_days)
                accept_s, accepted = timed(partial(tick, REQUESTS_SENSOR, cursor))
                check_accepted(accepted, name, days)
                archive_s, archived = timed(partial(tick, REQUESTS_SENSOR, accepted.cursor))
                idle_s, idle = timed(partial(tick, REQUESTS_SENSOR, archived.cursor))
                if idle.run_requests or not idle.skip_reason:
                    raise AssertionError(f"the idle tick did something: {idle}")
                cursor = idle.cursor
                # SQLite run storage keeps update times to the second and the status
                # sensor's cursor reads strictly after the newest one it saw: runs updated
                # in that same second would never be read (reported; not this benchmark's
                # subject), so this repetition's runs land in a later second.
                time.sleep(RUN_STORAGE_RESOLUTION_S)
                record_finished_runs(instance, accepted.run_requests, INGEST_JOB)
                status_s, status_tick = timed(partial(tick, STATUS_SENSOR, status_cursor))
                status_cursor = status_tick.cursor
                status = requests.read_status(store, request_id)
                if status is None or status.state != "complete":
                    raise AssertionError(f"request {request_id} not complete: {status}")
                forget_aoi(store, instance, name)
                if rep == 0:
                    warm_up = {"accept": accept_s, "idle": idle_s, "status": status_s}
                    continue
                for key, value in (
                    ("accept", accept_s),
                    ("archive", archive_s),
                    ("idle", idle_s),
                    ("status", status_s),
                ):
                    figures[key].append(value)

            # Where the time goes: one more accepting tick and an idle tick, not in the
            # figures.
            _, name = submit_request(store, repetitions + 1, days, max_days)
            profiles: dict[str, str] = {}
            profiles["accepting"], accepted = profile_top(partial(tick, REQUESTS_SENSOR, cursor))
            check_accepted(accepted, name, days)
            archived = tick(REQUESTS_SENSOR, accepted.cursor)
            profiles["idle"], idle = profile_top(partial(tick, REQUESTS_SENSOR, archived.cursor))
            if idle.run_requests or not idle.skip_reason:
                raise AssertionError(f"the profiled idle tick did something: {idle}")
            forget_aoi(store, instance, name)
    finally:
        shutil.rmtree(out, ignore_errors=True)

    def med(key: str) -> float:
        return round(statistics.median(figures[key]), 4)

    summary: dict[str, Any] = {
        "request_sensor_tick_s": med("accept"),
        "request_sensor_idle_tick_s": med("idle"),
        "request_sensor_archive_tick_s": med("archive"),
        "request_sensor_status_tick_s": med("status"),
        "request_sensor_first_tick_s": round(warm_up["accept"], 4),
        "request_sensor_aois": aois,
        "request_sensor_days": days,
        "request_sensor_repetitions": repetitions,
    }
    conditions = {
        "machine": f"nproc={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, dagster {dagster.__version__}",
        "load average (1/5/15 min)": f"before {_load(load_before)}; after {_load(os.getloadavg())}",
        "registered AOIs": f"{aois} (0.01 deg boxes; registry + instance partition + "
        f"warehouse row; seeded in {seed_s:.1f} s)",
        "request": f"1 new AOI x {days} days ({FIRST_REQUESTED_DAY} on); "
        f"max_run_requests_per_tick {cap}",
        "storage": "LocalObjectStore (temp dir), DuckDB warehouse, "
        "DagsterInstance.local_temp (SQLite, telemetry off)",
        "evaluation": "demo.evaluate_sensor in this process (build_sensor_context with the "
        "resources, the sensor, dynamic partitions applied); run creation not timed",
        "repetitions": f"{repetitions} (+1 discarded warm-up), median",
        "benchmark wall time": f"{time.monotonic() - t_start:.0f} s",
    }
    print_report(conditions, figures, summary, profiles)
    return summary


def check_accepted(result: Any, name: str, days: int) -> None:
    if len(result.run_requests) != days:
        raise AssertionError(f"accepting tick: {len(result.run_requests)} run requests, not {days}")
    added = [k for r in result.dynamic_partitions_requests for k in r.partition_keys]
    if added != [name]:
        raise AssertionError(f"accepting tick registered {added}, not [{name!r}]")


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def print_report(
    conditions: dict[str, Any],
    figures: dict[str, list[float]],
    summary: dict[str, Any],
    profiles: dict[str, str],
) -> None:
    print()
    print("Request sensor tick: 1 new request among many registered AOIs")
    print("=" * 78)
    for key, value in conditions.items():
        print(f"{key:<26} {value}")
    print()
    labels = {
        "accept": f"(a) accepting tick ({summary['request_sensor_days']} run requests)",
        "archive": "    next tick (archives the document)",
        "idle": "(b) idle tick",
        "status": f"(c) status tick ({summary['request_sensor_days']} finished runs)",
    }
    for key, label in labels.items():
        runs = " ".join(f"{v * 1000:.0f}" for v in figures[key])
        print(f"{label:<48} median {statistics.median(figures[key]) * 1000:7.1f} ms  ({runs})")
    print(
        f"{'first accepting tick (warm-up, not in the median)':<48} "
        f"{summary['request_sensor_first_tick_s'] * 1000:7.1f} ms"
    )
    print()
    for name, text in profiles.items():
        print(f"Profile of one {name} tick (cProfile):")
        print(text)


def run_in_subprocess(
    aois: int = AOIS, days: int = DAYS, repetitions: int = REPETITIONS
) -> dict[str, Any]:
    """``run`` in a new interpreter (the caller may have imported the package with another
    code location configuration)."""
    return data.run_json_module(
        "benchmarks.request_sensor",
        *("--aois", str(aois), "--days", str(days), "--repetitions", str(repetitions)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aois", type=int, default=AOIS)
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    args = parser.parse_args(argv)
    if args.aois < 1 or args.days < 1 or args.repetitions < 5:
        parser.error("--aois and --days must be >= 1, --repetitions >= 5")
    summary = run(args.aois, args.days, args.repetitions)
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
