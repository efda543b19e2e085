"""`make demo` / `make dev` on the embedded defaults: no credentials, no server to install.

demo: generate a sample Sentinel-2 L2A catalog, serve it from a local STAC API (rustac) on
127.0.0.1, register the configured AOI (`aois sync`), materialize every asset of its
(date, aoi) partition into a local object store and a DuckDB warehouse (SQLite Dagster
instance), then request imagery of a second, new AOI as a user would (a request document
through the CLI door), let the request sensor register it and launch its run, run it, let
the status sensor mark the request complete; stop the server, print and save a summary.

dev: the same setup, then the Dagster UI on 127.0.0.1 while the STAC API runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from geospatial_pipeline.config import CONFIG_ENV_VAR, PipelineConfig, load_config
from geospatial_pipeline.deployment import local_instance_concurrency
from geospatial_pipeline.local.products_api import DEFAULT_PRODUCTS_PORT, ProductsApi
from geospatial_pipeline.local.sample_catalog import generate_sample_catalog
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.local.titiler import TiTilerServer

DEMO_DAY = dt.date(2024, 6, 15)
# The configured AOI, and the one the demo requests on demand (not in the file).
DEMO_AOIS = {
    "toulouse-centre": (1.40, 43.56, 1.46, 43.62),
    "blagnac": (1.36, 43.62, 1.40, 43.65),
}
CONFIGURED_AOI = "toulouse-centre"
REQUESTED_AOI = "blagnac"
REPO = Path(__file__).resolve().parents[1]


def write_config(out: Path, api_url: str, titiler_url: str | None = None) -> Path:
    doc: dict[str, Any] = {
        "stac": {"api_url": api_url, "collection": "sentinel-2-l2a", "max_cloud_cover": 90},
        "aois": [{"name": CONFIGURED_AOI, "bbox": list(DEMO_AOIS[CONFIGURED_AOI])}],
        "bands": ["red", "green", "blue", "nir", "scl"],
        # The sample catalog holds one day: the UI lists exactly the days with data.
        "partitions": {"start_date": DEMO_DAY.isoformat(), "end_date": DEMO_DAY.isoformat()},
        "storage": {"url": str(out / "objects")},
        "warehouse": {"kind": "duckdb", "path": str(out / "warehouse.duckdb")},
        **({"maps": {"titiler_url": titiler_url}} if titiler_url else {}),
    }
    path = out / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _catalog_bbox() -> tuple[float, float, float, float]:
    boxes = list(DEMO_AOIS.values())
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def write_instance_config(home: Path) -> Path:
    """The local instance's dagster.yaml (``make demo``, ``make dev``): one run per
    partition at once and the raster pool's limit, as the deployed instances have them,
    and no telemetry."""
    path = home / "dagster.yaml"
    # Telemetry off: the demo and the benchmarks run offline and report to nobody.
    doc = {
        "concurrency": local_instance_concurrency(),
        # A run killed while holding the raster pool's one slot would otherwise keep it
        # and every later raster step would wait forever.
        "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": 30},
        "telemetry": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _prepare(out: Path) -> Any:
    out.mkdir(parents=True, exist_ok=True)
    (out / "dagster_home").mkdir(exist_ok=True)
    write_instance_config(out / "dagster_home")
    return generate_sample_catalog(out / "catalog", DEMO_DAY, _catalog_bbox())


def summarize(
    config: PipelineConfig, out: Path, day: str, results: Any, request: dict[str, Any]
) -> dict[str, Any]:
    import duckdb

    meta = {name: dict(mats[-1].metadata) for name, mats in results.items() if mats}

    def value(asset: str, name: str) -> Any:
        entry = meta.get(asset, {}).get(name)
        return getattr(entry, "value", entry)

    objects_dir = out / "objects"
    raw = [p for p in (objects_dir / "raw").rglob("*.tif") if p.is_file()]
    products = [p for p in (objects_dir / "processed").rglob("*.tif") if p.is_file()]
    rows: dict[str, dict[str, int]] = {}
    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
        for table in ("scene_metadata", "daily_aoi_stats", "scene_quality", "product_catalog"):
            found = con.execute(
                f"SELECT aoi, count(*) FROM {table} WHERE partition_date = ? GROUP BY aoi "
                "ORDER BY aoi",
                [day],
            ).fetchall()
            rows[table] = {str(aoi): int(n) for aoi, n in found}
    collection = config.stac.collection
    return {
        "day": day,
        "partitions": [f"{aoi}|{day}" for aoi in (CONFIGURED_AOI, REQUESTED_AOI)],
        "stac_api": "local rustac server (stopped)",
        "configured_aoi": CONFIGURED_AOI,
        "request": request,
        "bands": config.bands,
        "items_found": value("stac_items", "items"),
        "items_superseded": len(value("stac_items", "superseded_items") or []),
        "band_objects": len(raw),
        "band_bytes": sum(p.stat().st_size for p in raw),
        "product_objects": len(products),
        "product_bytes": sum(p.stat().st_size for p in products),
        "warehouse_rows": rows,
        "object_store": str(objects_dir),
        "warehouse": str(out / "warehouse.duckdb"),
        "config": str(out / "pipeline.yaml"),
        "dagster_home": str(out / "dagster_home"),
        "look_at": {
            "band_rasters": str(objects_dir / "raw" / collection / day),
            "products": str(objects_dir / "processed" / collection / day),
            "stac_catalog": str(objects_dir / "processed" / "catalog.json"),
            "items": str(objects_dir / "stac" / collection / day / CONFIGURED_AOI / "items.json"),
            "aois": str(objects_dir / "aois"),
            "request_status": request["status_url"],
            "query": _query_hint(out / "warehouse.duckdb"),
            "ui": "make dev",
        },
    }


def _query_hint(db: Path) -> str:
    sql = "SELECT * FROM daily_aoi_stats"
    return (
        f'.venv/bin/python -c "import duckdb; '
        f"print(duckdb.connect('{db}', read_only=True).sql('{sql}'))\""
    )


def evaluate_sensor(
    defs: Any, name: str, instance: Any, cursor: str | None, resources: dict[str, Any]
) -> Any:
    """One tick of a sensor of ``defs``, in this process, against ``instance`` (what the
    daemon does on its schedule): the SensorResult, its dynamic partitions applied."""
    from dagster import build_sensor_context

    sensor = defs.resolve_sensor_def(name)
    with build_sensor_context(
        instance=instance, cursor=cursor, sensor_name=name, resources=resources
    ) as context:
        result = sensor(context)
    for request in getattr(result, "dynamic_partitions_requests", None) or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def run_request_end_to_end(
    defs: Any, instance: Any, store: Any, resources: dict[str, Any]
) -> dict[str, Any]:
    """A request for a new AOI through the CLI door, then what the daemon would do: the
    request sensor's tick, the runs it asks for, the status sensor's tick."""
    from geospatial_pipeline.cli import main as cli
    from geospatial_pipeline.on_demand import REQUESTS_SENSOR, STATUS_SENSOR
    from geospatial_pipeline.ondemand import requests

    w, s, e, n = DEMO_AOIS[REQUESTED_AOI]
    code = cli(
        [
            "request",
            "--name",
            REQUESTED_AOI,
            "--bbox",
            *map(str, (w, s, e, n)),
            "--start",
            DEMO_DAY.isoformat(),
            "--end",
            DEMO_DAY.isoformat(),
            "--notes",
            "make demo: imagery on demand for an AOI the configuration does not list",
        ]
    )
    if code != 0:
        raise SystemExit("demo request was refused; see above")
    tick = evaluate_sensor(defs, REQUESTS_SENSOR, instance, None, resources)
    job = defs.resolve_job_def("ingest_daily")
    for run in tick.run_requests:
        result = job.execute_in_process(
            partition_key=run.partition_key, tags=run.tags, instance=instance, raise_on_error=False
        )
        if not result.success:
            raise SystemExit(f"demo request run {run.partition_key} failed; see the log above")
    evaluate_sensor(defs, STATUS_SENSOR, instance, None, resources)
    request_id = next(iter(tick.run_requests)).tags["geospatial_pipeline/request"]
    status = requests.read_status(store, request_id)
    assert status is not None
    return {
        "request_id": request_id,
        "state": status.state,
        "aoi": status.aoi,
        "days": [
            {"date": d.date.isoformat(), "state": d.state, "stac_items": len(d.stac_items)}
            for d in status.partitions
        ],
        "status_url": store.url(requests.status_key(request_id)),
    }


def run_demo(out: Path) -> dict[str, Any]:
    catalog = _prepare(out)
    with RustacStacServer(catalog.items, [catalog.collection]) as server:
        config_path = write_config(out, server.url)
        # The code location's configuration: the assets' partitions come from it.
        os.environ[CONFIG_ENV_VAR] = str(config_path)
        os.environ["DAGSTER_HOME"] = str(out / "dagster_home")
        from dagster import DagsterInstance

        from geospatial_pipeline.assets.catalog import STAC_CATALOG_ROOT
        from geospatial_pipeline.cli import main as cli
        from geospatial_pipeline.definitions import build_defs
        from geospatial_pipeline.resources import build_resources
        from geospatial_pipeline.resources.storage import ObjectStoreResource

        config = load_config(config_path)
        defs = build_defs(config)
        store = ObjectStoreResource.from_config(config.storage).store()
        if cli(["aois", "sync"]) != 0:
            raise SystemExit("demo: aois sync failed; see above")
        key = f"{CONFIGURED_AOI}|{DEMO_DAY.isoformat()}"
        with DagsterInstance.get() as instance:
            # The code location's own job, so the run shows up as such in `make dev`.
            job = defs.resolve_job_def("ingest_daily")
            result = job.execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False
            )
            if not result.success:
                raise SystemExit("demo run failed; see the log above")
            request = run_request_end_to_end(defs, instance, store, build_resources(config))
            # The root catalog is no part of a partition's job (one writer across
            # partitions); in a deployment its automation sensor runs it, here it runs last.
            root = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[STAC_CATALOG_ROOT], raise_on_error=False
            )
            if not root.success:
                raise SystemExit("demo root catalog failed; see the log above")
        mats = {
            name: result.asset_materializations_for_node(name)
            for name in ("stac_items", "band_rasters", "scene_metadata")
        }
    summary = summarize(config, out, DEMO_DAY.isoformat(), mats, request)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict[str, Any], out: Path) -> None:
    print(f"\nDemo day {summary['day']}: partitions {', '.join(summary['partitions'])}.")
    print(
        f"  items found        {summary['items_found']} over {summary['configured_aoi']} "
        f"({summary['items_superseded']} superseded by a newer processing)"
    )
    print(
        f"  band rasters       {summary['band_objects']} COGs, "
        f"{summary['band_bytes'] / 1e6:.2f} MB in {summary['look_at']['band_rasters']}"
    )
    print(
        f"  products           {summary['product_objects']} COGs, "
        f"{summary['product_bytes'] / 1e6:.2f} MB, STAC catalog "
        f"{summary['look_at']['stac_catalog']}"
    )
    for table, per_aoi in summary["warehouse_rows"].items():
        counts = ", ".join(f"{aoi} {n}" for aoi, n in per_aoi.items())
        print(f"  {table:<18} {counts}")
    req = summary["request"]
    days = ", ".join(
        f"{d['date']} {d['state']} ({d['stac_items']} STAC items)" for d in req["days"]
    )
    print(
        f"  request            {req['request_id']} for new AOI {req['aoi']}: {req['state']}; {days}"
    )
    print(f"  request status     {req['status_url']}")
    print(f"  warehouse          {summary['warehouse']}")
    print(f"  query              {summary['look_at']['query']}")
    print(f"  summary            {out / 'summary.json'}")
    print("  UI                 make dev  (then open http://127.0.0.1:3000)")


def _products_api(config: PipelineConfig, port: int) -> ProductsApi:
    """The static product catalog as a STAC API (pystac-client without PostgreSQL),
    reloaded as the session materializes products."""
    from geospatial_pipeline.resources.storage import ObjectStoreResource

    store = ObjectStoreResource.from_config(config.storage).store()
    return ProductsApi(store, config.stac.collection, port=port)


def run_dev(out: Path, port: int, stac_port: int, titiler_port: int, products_port: int) -> int:
    catalog = _prepare(out)
    with (
        RustacStacServer(catalog.items, [catalog.collection], port=stac_port) as server,
        # A fixed port: the map links written into product items stay valid across sessions.
        TiTilerServer(port=titiler_port, workdir=out / "titiler") as titiler,
        contextlib.ExitStack() as stack,
    ):
        config_path = write_config(out, server.url, titiler.url)
        config = load_config(config_path)
        products = stack.enter_context(_products_api(config, products_port))
        env = {
            **os.environ,
            CONFIG_ENV_VAR: str(config_path),
            "DAGSTER_HOME": str(out / "dagster_home"),
        }
        # The configured AOIs as partitions before the UI opens (the request sensor would
        # register them on its first tick too).
        sync = [sys.executable, "-m", "geospatial_pipeline", "aois", "sync"]
        subprocess.run(sync, env=env, cwd=REPO, check=True)
        print(
            f"STAC API on {server.url}; TiTiler (product maps) on {titiler.url}; "
            f"products STAC API on {products.url}; Dagster UI on http://127.0.0.1:{port}"
        )
        cmd = [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            # Never leave the UI running without its STAC API (or the reverse).
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["demo", "dev"], nargs="?", default="demo")
    parser.add_argument("--out", type=Path, default=REPO / ".demo")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--stac-port", type=int, default=7822)
    parser.add_argument("--titiler-port", type=int, default=8010)
    parser.add_argument("--products-port", type=int, default=DEFAULT_PRODUCTS_PORT)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.command == "dev":
        # SIGTERM (e.g. from `timeout` or a container stop) unwinds like Ctrl-C, so the
        # local STAC API and the UI are stopped too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return run_dev(out, args.port, args.stac_port, args.titiler_port, args.products_port)
    summary = run_demo(out)
    print_summary(summary, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
