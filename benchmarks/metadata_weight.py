"""Benchmark: the weight of the Dagster metadata one (date, AOI) partition writes.

``.venv/bin/python -m benchmarks.metadata_weight [--no-browser] [--no-pgstac]``
(``make bench`` runs it too, in its own process). See benchmarks/README.md ("Metadata
weight").

Setup, in a temporary directory, as ``make demo`` sets up its run: the real Earth Search
item ``S2A_29RKH_20200219_0_L2A`` served by rustac on 127.0.0.1 (its five band hrefs
pointing at the real, 10x decimated COGs of ../shared/data, read in place: local files are
allowed for a catalog on loopback), a code location configuration (AOI ``dunes`` of the
tests, transform at 100 m, LocalObjectStore, DuckDB; and pgstac in a throwaway database
when PostgreSQL answers on 127.0.0.1:5432) set before the package is imported, a SQLite
``DAGSTER_HOME``, the AOI registered with ``aois sync``, and the warehouse holding an NDVI
history of the AOI's previous 90 days (one row every 5 days, synthetic values) so that
``daily_aoi_stats`` draws a chart of a steady-state AOI rather than a single point.

Then the code location's own job ``ingest_daily`` runs the partition
(``execute_in_process``, as ``make demo`` does) and the run's events are read back from
the instance: per asset materialization and per asset check evaluation, the size of the
event as the event log stores it (``serialize_value`` of the ``EventLogEntry``, checked
against the bytes in the run's SQLite event log), of its metadata dict, how much of that
is inline images (``data:`` URIs in markdown entries), the number of entries and the
largest one. Sizes are deterministic for given inputs: one run, no repetition.

Optionally (Chromium present, ``--no-browser`` not given): the Dagster webserver on that
instance and headless Chromium (Playwright, the system browser as tests/test_browser.py
drives it) loading the partition's page of each asset with pictures; bytes transferred
over the network, all and GraphQL only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from benchmarks import data

DAY = dt.date(2020, 2, 19)
AOI_NAME = "dunes"
AOI_BBOX = [-11.60, 24.60, -11.52, 24.66]  # tests/test_e2e.py: inside tile 29RKH
PARTITIONS_START = "2020-01-01"
TRANSFORM = {"resolution": 100, "crs": "EPSG:32629", "grid_anchor": [80, 20]}
HISTORY_EVERY_DAYS = 5
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
JOB = "ingest_daily"
DATA_URI = re.compile(r"data:[a-z]+/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+")
HEAVY_ENTRY_BYTES = 100_000
# Assets whose partition page shows pictures (markdown entries with data URIs).
PAGES = ("scene_products", "ndvi_composite", "daily_aoi_stats")
CHROMIUM = Path(os.environ.get("GEOSPATIAL_PIPELINE_CHROMIUM") or "/usr/bin/chromium")
UI_TIMEOUT_S = 90
WAIT_MS = 45_000


# ---------------------------------------------------------------- the partition's run
def local_item() -> dict[str, Any]:
    """The real item with its band hrefs pointing at the local COGs (in memory)."""
    item: dict[str, Any] = json.loads(data.ITEM_PATH.read_text())
    for asset, name in data.BANDS.items():
        item["assets"][asset]["href"] = str((data.COG_DIR / name).resolve())
    return item


def real_collection() -> dict[str, Any]:
    path = data.SHARED_DATA / "earth-search-v1" / "collection_sentinel-2-l2a.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def write_config(out: Path, api_url: str, pgstac_dsn: str | None) -> Path:
    doc: dict[str, Any] = {
        "stac": {"api_url": api_url, "collection": "sentinel-2-l2a"},
        "aois": [{"name": AOI_NAME, "bbox": AOI_BBOX}],
        "bands": list(data.BANDS),
        "partitions": {"start_date": PARTITIONS_START},
        "storage": {"url": str(out / "objects")},
        "warehouse": {"kind": "duckdb", "path": str(out / "warehouse.duckdb")},
        "transform": dict(TRANSFORM),
    }
    if pgstac_dsn:
        doc["publish"] = {"pgstac": pgstac_dsn}
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def history_rows(day: dt.date) -> list[tuple[dt.date, dict[str, Any]]]:
    """The AOI's previous 90 days, a row every 5 days (Sentinel-2's revisit)."""
    from geospatial_pipeline.raster.chart import HISTORY_DAYS

    rows = []
    for back in range(HISTORY_EVERY_DAYS, HISTORY_DAYS, HISTORY_EVERY_DAYS):
        d = day - dt.timedelta(days=back)
        wave = (back % 17) / 17
        rows.append(
            (
                d,
                {
                    "partition_date": d,
                    "aoi": AOI_NAME,
                    "scenes_used": 1,
                    "pixels_in_aoi": 56_000,
                    "valid_pixel_fraction": round(0.6 + 0.4 * wave, 3),
                    "cloud_fraction": round(0.4 * (1 - wave), 3),
                    "shadow_fraction": 0.01,
                    "ndvi_mean": round(0.05 + 0.04 * wave, 4),
                    "ndvi_median": round(0.05 + 0.03 * wave, 4),
                    "ndvi_p10": 0.02,
                    "ndvi_p90": round(0.09 + 0.04 * wave, 4),
                    "ndwi_mean": round(-0.08 - 0.02 * wave, 4),
                    "offset_decisions": [{"item_id": f"synthetic-{d.isoformat()}"}],
                },
            )
        )
    return rows


def _set_location_env(config_path: Path, home: Path) -> None:
    from geospatial_pipeline.config import CONFIG_ENV_VAR, PGSTAC_PASSWORD_ENV_VAR

    if "geospatial_pipeline.location" in sys.modules:
        # The assets' partitions were defined from another configuration at import.
        raise RuntimeError(
            "geospatial_pipeline.location was imported before the benchmark set "
            f"{CONFIG_ENV_VAR}; run this benchmark in its own process"
        )
    os.environ[CONFIG_ENV_VAR] = str(config_path)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault(PGSTAC_PASSWORD_ENV_VAR, "")  # trust authentication on 127.0.0.1


@dataclass
class PartitionRuns:
    """A prepared code location for the partition; :meth:`run` executes it once more."""

    out: Path
    config_path: Path
    config: Any
    defs: Any
    instance: Any
    run_ids: list[str] = field(default_factory=list)

    @property
    def partition_key(self) -> str:
        return f"{AOI_NAME}|{DAY.isoformat()}"

    def run(self) -> str:
        job = self.defs.resolve_job_def(JOB)
        result = job.execute_in_process(
            partition_key=self.partition_key, instance=self.instance, raise_on_error=True
        )
        if not result.success:
            raise RuntimeError(f"run of {self.partition_key} failed")
        self.run_ids.append(result.run_id)
        return str(result.run_id)


@contextlib.contextmanager
def partition_location(out: Path, pgstac_dsn: str | None) -> Iterator[PartitionRuns]:
    """The code location of one real partition, prepared as ``make demo`` prepares its own
    (nothing run yet); the STAC API stops on exit."""
    from geospatial_pipeline.local.stac_server import RustacStacServer

    home = out / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    with RustacStacServer([local_item()], [real_collection()]) as server:
        config_path = write_config(out, server.url, pgstac_dsn)
        _set_location_env(config_path, home)
        from dagster import DagsterInstance

        from geospatial_pipeline.cli import main as cli
        from geospatial_pipeline.config import load_config
        from geospatial_pipeline.definitions import build_defs
        from geospatial_pipeline.demo import write_instance_config
        from geospatial_pipeline.resources import build_warehouse
        from geospatial_pipeline.warehouse.tables import DAILY_AOI_STATS

        write_instance_config(home)
        config = load_config(config_path)
        defs = build_defs(config)
        if cli(["aois", "sync"]) != 0:
            raise RuntimeError("aois sync failed; see above")
        warehouse = build_warehouse(config)
        for day, row in history_rows(DAY):
            warehouse.replace_partition(DAILY_AOI_STATS, (day, AOI_NAME), [row])
        with DagsterInstance.get() as instance:
            yield PartitionRuns(out, config_path, config, defs, instance)


@contextlib.contextmanager
def throwaway_pgstac() -> Iterator[str | None]:
    """A pgstac database (``pypgstac migrate``) created for the benchmark and dropped on
    exit; None when no PostgreSQL answers on 127.0.0.1:5432."""
    import psycopg

    from geospatial_pipeline.stac import pgstac

    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"no PostgreSQL on 127.0.0.1:5432 ({exc}); pgstac left out", file=sys.stderr)
        yield None
        return
    name = f"gp_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
        pgstac.migrate(dsn)
        yield dsn
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """STEP_START .. STEP_SUCCESS of each step of the run, from its event log."""
    from dagster import DagsterEventType

    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            out[event.step_key] = entry.timestamp - starts[event.step_key]
    return out


# ---------------------------------------------------------------- weighing the events
@dataclass
class Weight:
    """One materialization or check evaluation of the partition."""

    name: str
    kind: str  # "asset" or "check"
    event_bytes: int  # serialize_value(EventLogEntry): what the event log stores
    metadata_bytes: int  # serialize_value(metadata dict)
    image_bytes: int  # data: URIs inside markdown entries
    entries: int
    largest: tuple[str, int]  # (entry, serialize_value(value) bytes)


def weigh(metadata: dict[str, Any]) -> tuple[int, int, tuple[str, int]]:
    from dagster import MarkdownMetadataValue
    from dagster._serdes import serialize_value

    sizes = {k: len(serialize_value(v).encode()) for k, v in metadata.items()}
    images = sum(
        len(m)
        for v in metadata.values()
        if isinstance(v, MarkdownMetadataValue)
        for m in DATA_URI.findall(v.md_str or "")
    )
    largest = max(sizes.items(), key=lambda kv: kv[1]) if sizes else ("", 0)
    return len(serialize_value(metadata).encode()), images, largest


def run_weights(instance: Any, run_id: str) -> tuple[list[Weight], int, dict[str, int]]:
    """The run's materializations and check evaluations, weighed; the bytes of all the
    run's events; events per type."""
    from dagster import DagsterEventType
    from dagster._serdes import serialize_value

    weights: list[Weight] = []
    all_bytes = 0
    kinds: dict[str, int] = {}
    for entry in instance.all_logs(run_id):
        size = len(serialize_value(entry).encode())
        all_bytes += size
        event = entry.dagster_event
        kind = event.event_type_value if event is not None else "log message"
        kinds[kind] = kinds.get(kind, 0) + 1
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.event_specific_data.materialization
            name, label, metadata = mat.asset_key.to_user_string(), "asset", dict(mat.metadata)
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            ev = event.event_specific_data
            name = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
            label, metadata = "check", dict(ev.metadata)
        else:
            continue
        meta_bytes, images, largest = weigh(metadata)
        weights.append(Weight(name, label, size, meta_bytes, images, len(metadata), largest))
    return weights, all_bytes, kinds


def stored_event_bytes(home: Path, run_id: str) -> dict[str, int]:
    """Bytes of the stored events per type in the run's SQLite event log (the local
    instance keeps one database per run under history/runs/)."""
    path = home / "history" / "runs" / f"{run_id}.db"
    if not path.is_file():
        return {}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT dagster_event_type, sum(length(CAST(event AS BLOB))) FROM event_logs "
            "GROUP BY dagster_event_type"
        ).fetchall()
    return {str(k): int(v) for k, v in rows}


def index_copies(home: Path) -> dict[str, int]:
    """Further copies of the latest events the local instance keeps in its index
    database (the asset's cached last materialization, the check executions)."""
    path = home / "history" / "runs" / "index.db"
    out: dict[str, int] = {}
    if not path.is_file():
        return out
    queries = {
        "asset_keys.last_materialization": "SELECT sum(length(CAST(last_materialization AS "
        "BLOB))) FROM asset_keys",
        "asset_check_executions.evaluation_event": "SELECT sum(length(CAST(evaluation_event "
        "AS BLOB))) FROM asset_check_executions",
        "event_logs (index copy)": "SELECT sum(length(CAST(event AS BLOB))) FROM event_logs",
    }
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for label, query in queries.items():
            try:
                (value,) = conn.execute(query).fetchone()
            except sqlite3.Error:
                continue
            out[label] = int(value or 0)
    return out


# ---------------------------------------------------------------- the UI page
def page_bytes(runs: PartitionRuns) -> dict[str, Any]:
    """The Dagster webserver on the instance; Chromium loads each picture asset's
    partition page; bytes transferred (encoded, headers included) per page."""
    from geospatial_pipeline.local.ports import LOOPBACK, free_port, wait_for_http

    port = free_port()
    env = {**os.environ}
    log_path = runs.out / "webserver.log"
    webserver = Path(sys.executable).parent / "dagster-webserver"
    cmd = [str(webserver), "-w", str(data.REPO / "workspace.yaml"), "-h", LOOPBACK]
    cmd += ["-p", str(port)]
    results: dict[str, Any] = {}
    with log_path.open("wb") as log:
        # Its own process group: the webserver starts a code server of its own.
        proc = subprocess.Popen(
            cmd,
            cwd=data.REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://{LOOPBACK}:{port}"
            wait_for_http(f"{url}/server_info", UI_TIMEOUT_S, is_alive=lambda: proc.poll() is None)
            _graphql(url, "mutation { setNuxSeen }")
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                try:
                    for asset in PAGES:
                        results[asset] = _load_page(browser, url, asset, runs.partition_key)
                finally:
                    browser.close()
        finally:
            _stop(proc)
    return results


def _load_page(browser: Any, url: str, asset: str, partition: str) -> dict[str, Any]:
    """One cold page load (new context: empty cache) until the network is idle and the
    partition's materialization is on the page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    urls: dict[str, str] = {}
    sizes: dict[str, int] = {}

    def sent(event: dict[str, Any]) -> None:
        urls[event["requestId"]] = event["request"]["url"]

    def finished(event: dict[str, Any]) -> None:
        sizes[event["requestId"]] = int(event["encodedDataLength"])

    cdp.on("Network.requestWillBeSent", sent)
    cdp.on("Network.loadingFinished", finished)
    try:
        start = time.perf_counter()
        page.goto(
            f"{url}/assets/{asset}?view=partitions&partition={quote(partition, safe='')}",
            wait_until="networkidle",
            timeout=WAIT_MS,
        )
        page.get_by_text("Show Markdown").first.wait_for(timeout=WAIT_MS)
        page.wait_for_load_state("networkidle", timeout=WAIT_MS)
        seconds = time.perf_counter() - start
    finally:
        context.close()
    graphql = [s for rid, s in sizes.items() if "/graphql" in urls.get(rid, "")]
    return {
        "bytes": sum(sizes.values()),
        "requests": len(sizes),
        "graphql_bytes": sum(graphql),
        "graphql_requests": len(graphql),
        "largest_graphql_bytes": max(graphql, default=0),
        "seconds": round(seconds, 2),
    }


def _graphql(url: str, query: str) -> dict[str, Any]:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    # Loopback only; never through an HTTP(S)_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    if "errors" in body:
        raise RuntimeError(f"GraphQL {query!r}: {body['errors']}")
    return body


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)


# ---------------------------------------------------------------- report
def kb(n: int) -> str:
    return f"{n / 1000:.1f}"


def print_report(
    conditions: dict[str, Any],
    weights: list[Weight],
    summary: dict[str, Any],
    pages: dict[str, Any],
) -> None:
    print()
    print("Metadata weight: the Dagster events of one (date, AOI) partition")
    print("=" * 78)
    for key, value in conditions.items():
        print(f"{key:<24} {value}")
    print()
    head = (
        f"{'asset / check':<42} {'event KB':>8} {'meta KB':>8} {'img KB':>7} {'rest KB':>7} "
        f"{'n':>3}  largest entry (KB)"
    )
    print(head)
    print("-" * len(head))
    for w in sorted(weights, key=lambda w: (w.kind, -w.event_bytes)):
        print(
            f"{w.name[:42]:<42} {kb(w.event_bytes):>8} {kb(w.metadata_bytes):>8} "
            f"{kb(w.image_bytes):>7} {kb(w.metadata_bytes - w.image_bytes):>7} {w.entries:>3}  "
            f"{w.largest[0]} ({kb(w.largest[1])})"
        )
    print("-" * len(head))
    for kind, label in (("asset", "all materializations"), ("check", "all check evaluations")):
        part = [w for w in weights if w.kind == kind]
        print(
            f"{label:<42} {kb(sum(w.event_bytes for w in part)):>8} "
            f"{kb(sum(w.metadata_bytes for w in part)):>8} "
            f"{kb(sum(w.image_bytes for w in part)):>7} "
            f"{kb(sum(w.metadata_bytes - w.image_bytes for w in part)):>7} "
            f"{sum(w.entries for w in part):>3}"
        )
    rest = summary["metadata_weight_metadata_bytes"] - summary["metadata_weight_image_bytes"]
    print(
        f"{'partition (materializations + checks)':<42} "
        f"{kb(summary['metadata_weight_partition_bytes']):>8} "
        f"{kb(summary['metadata_weight_metadata_bytes']):>8} "
        f"{kb(summary['metadata_weight_image_bytes']):>7} "
        f"{kb(rest):>7}"
        f" {summary['metadata_weight_entries']:>3}"
    )
    print()
    print(
        f"whole run, every event: {kb(summary['metadata_weight_run_bytes'])} KB in "
        f"{summary['metadata_weight_run_events']} events"
    )
    heavy = [w for w in weights if w.largest[1] > HEAVY_ENTRY_BYTES]
    print(
        f"entries over {HEAVY_ENTRY_BYTES // 1000} KB: "
        + (", ".join(f"{w.name}.{w.largest[0]} {kb(w.largest[1])} KB" for w in heavy) or "none")
    )
    if pages:
        print()
        print("Dagster UI, partition page of each asset (cold: new browser context, empty cache)")
        print(f"{'asset':<18} {'KB':>8} {'requests':>8} {'GraphQL KB':>10} {'GraphQL req':>11}")
        for asset, p in pages.items():
            print(
                f"{asset:<18} {kb(p['bytes']):>8} {p['requests']:>8} "
                f"{kb(p['graphql_bytes']):>10} {p['graphql_requests']:>11}"
                f"   (largest GraphQL answer {kb(p['largest_graphql_bytes'])} KB, "
                f"{p['seconds']} s)"
            )
    print()


def run(browser: bool = True, use_pgstac: bool = True) -> dict[str, Any]:
    """Measure; print a report; return the ``metadata_weight_*`` figures for the JSON line."""
    t_start = time.monotonic()
    out = Path(tempfile.mkdtemp(prefix="metadata-weight-"))
    pages: dict[str, Any] = {}
    page_error = ""
    try:
        with contextlib.ExitStack() as stack:
            dsn = stack.enter_context(throwaway_pgstac()) if use_pgstac else None
            runs = stack.enter_context(partition_location(out, dsn))
            t_run = time.monotonic()
            run_id = runs.run()
            run_s = time.monotonic() - t_run
            weights, run_bytes, kinds = run_weights(runs.instance, run_id)
            stored = stored_event_bytes(out / "dagster_home", run_id)
            copies = index_copies(out / "dagster_home")
            if browser and CHROMIUM.is_file():
                try:
                    pages = page_bytes(runs)
                except Exception as exc:  # optional part: report, do not fail the figures
                    page_error = f"{type(exc).__name__}: {exc}"
            elif browser:
                page_error = f"{CHROMIUM} not found"
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)

    import dagster

    assets = [w for w in weights if w.kind == "asset"]
    checks = [w for w in weights if w.kind == "check"]
    if not assets or not checks:
        raise AssertionError(
            f"the run recorded {len(assets)} materializations, {len(checks)} checks"
        )
    largest = max(weights, key=lambda w: w.largest[1])
    computed = {
        "ASSET_MATERIALIZATION": sum(w.event_bytes for w in assets),
        "ASSET_CHECK_EVALUATION": sum(w.event_bytes for w in checks),
    }
    summary: dict[str, Any] = {
        "metadata_weight_partition_bytes": sum(w.event_bytes for w in weights),
        "metadata_weight_materialization_bytes": computed["ASSET_MATERIALIZATION"],
        "metadata_weight_check_bytes": computed["ASSET_CHECK_EVALUATION"],
        "metadata_weight_metadata_bytes": sum(w.metadata_bytes for w in weights),
        "metadata_weight_image_bytes": sum(w.image_bytes for w in weights),
        "metadata_weight_entries": sum(w.entries for w in weights),
        "metadata_weight_largest_entry": f"{largest.name}.{largest.largest[0]}",
        "metadata_weight_largest_entry_bytes": largest.largest[1],
        "metadata_weight_run_bytes": run_bytes,
        "metadata_weight_run_events": sum(kinds.values()),
        "metadata_weight_materializations": len(assets),
        "metadata_weight_checks": len(checks),
        "metadata_weight_per_asset": [
            {
                "name": w.name,
                "kind": w.kind,
                "event_bytes": w.event_bytes,
                "metadata_bytes": w.metadata_bytes,
                "image_bytes": w.image_bytes,
                "entries": w.entries,
                "largest_entry": w.largest[0],
                "largest_entry_bytes": w.largest[1],
            }
            for w in weights
        ],
        "metadata_weight_pgstac": dsn is not None,
    }
    if pages:
        summary["metadata_weight_ui_page_bytes"] = {a: p["bytes"] for a, p in pages.items()}
        summary["metadata_weight_ui_graphql_bytes"] = {
            a: p["graphql_bytes"] for a, p in pages.items()
        }
    same = all(stored.get(k) == v for k, v in computed.items())
    from geospatial_pipeline.raster.quicklook import INLINE_LONG_SIDE

    conditions = {
        "machine": f"nproc={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, dagster {dagster.__version__}",
        "scene": f"{data.SCENE} (real item, real pixels decimated 10x: 100 m bands)",
        "partition": f"{AOI_NAME}|{DAY} (AOI {AOI_BBOX}), transform {TRANSFORM}",
        "graph": f"job {JOB}, execute_in_process; pgstac "
        + ("published (throwaway database)" if dsn else "not configured (no PostgreSQL)"),
        "history": f"{len(history_rows(DAY))} synthetic daily_aoi_stats rows in the previous "
        "90 days (the chart's other points)",
        "inline pictures": f"long side <= {INLINE_LONG_SIDE} px, 256 colours",
        "sizes": "serialize_value of each EventLogEntry (event) and of its metadata dict; "
        "deterministic, 1 run",
        "stored = computed": f"{same} (run's SQLite event_logs: "
        + ", ".join(f"{k} {v}" for k, v in sorted(stored.items()) if k in computed)
        + ")",
        "index copies": ", ".join(f"{k} {kb(v)} KB" for k, v in copies.items()) or "n/a",
        "run wall time": f"{run_s:.1f} s",
        "UI pages": "measured" if pages else f"skipped ({page_error or '--no-browser'})",
        "benchmark wall time": f"{time.monotonic() - t_start:.0f} s",
    }
    print_report(conditions, weights, summary, pages)
    return summary


def run_in_subprocess(browser: bool = True) -> dict[str, Any]:
    """:func:`run` in a fresh interpreter (the code location's configuration must be set
    before the package is imported)."""
    return data.run_json_module(
        "benchmarks.metadata_weight", *([] if browser else ["--no-browser"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-browser", action="store_true", help="skip the UI page loads")
    parser.add_argument("--no-pgstac", action="store_true", help="leave pgstac_items out")
    args = parser.parse_args(argv)
    if not data.COG_DIR.is_dir() or not data.ITEM_PATH.is_file():
        print(f"shared data not found under {data.SHARED_DATA}", file=sys.stderr)
        return 2
    summary = run(browser=not args.no_browser, use_pgstac=not args.no_pgstac)
    sys.stdout.flush()
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
