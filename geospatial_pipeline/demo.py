"""`make demo` / `make dev` on the embedded defaults: no credentials, no server to install.

demo: generate a sample Sentinel-2 L2A catalog, serve it from a local STAC API (rustac) on
127.0.0.1, materialize every asset of one partition into a local object store and a DuckDB
warehouse (SQLite Dagster instance), stop the server, print and save a summary.

dev: the same setup, then the Dagster UI on 127.0.0.1 while the STAC API runs.
"""

from __future__ import annotations

import argparse
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
from geospatial_pipeline.local.sample_catalog import generate_sample_catalog
from geospatial_pipeline.local.stac_server import RustacStacServer

DEMO_DAY = dt.date(2024, 6, 15)
DEMO_AOIS = {
    "toulouse-centre": (1.40, 43.56, 1.46, 43.62),
    "blagnac": (1.36, 43.62, 1.40, 43.65),
}
REPO = Path(__file__).resolve().parents[1]


def write_config(out: Path, api_url: str) -> Path:
    doc: dict[str, Any] = {
        "stac": {"api_url": api_url, "collection": "sentinel-2-l2a", "max_cloud_cover": 90},
        "aois": [{"name": name, "bbox": list(bbox)} for name, bbox in DEMO_AOIS.items()],
        "bands": ["red", "green", "blue", "nir", "scl"],
        # The sample catalog holds one day: the UI lists exactly the days with data.
        "partitions": {"start_date": DEMO_DAY.isoformat(), "end_date": DEMO_DAY.isoformat()},
        "storage": {"url": str(out / "objects")},
        "warehouse": {"kind": "duckdb", "path": str(out / "warehouse.duckdb")},
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
    doc = {"concurrency": local_instance_concurrency(), "telemetry": {"enabled": False}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _prepare(out: Path) -> Any:
    out.mkdir(parents=True, exist_ok=True)
    (out / "dagster_home").mkdir(exist_ok=True)
    write_instance_config(out / "dagster_home")
    return generate_sample_catalog(out / "catalog", DEMO_DAY, _catalog_bbox())


def summarize(config: PipelineConfig, out: Path, partition: str, results: Any) -> dict[str, Any]:
    import duckdb

    meta = {name: dict(mats[-1].metadata) for name, mats in results.items() if mats}

    def value(asset: str, name: str) -> Any:
        entry = meta.get(asset, {}).get(name)
        return getattr(entry, "value", entry)

    objects_dir = out / "objects"
    raw = [p for p in (objects_dir / "raw").rglob("*.tif") if p.is_file()]
    products = [p for p in (objects_dir / "processed").rglob("*.tif") if p.is_file()]
    rows: dict[str, int] = {}
    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
        for table in ("scene_metadata", "daily_aoi_stats", "scene_quality", "product_catalog"):
            found = con.execute(
                f"SELECT count(*) FROM {table} WHERE partition_date = ?", [partition]
            ).fetchone()
            rows[table] = int(found[0]) if found else 0
    return {
        "partition": partition,
        "stac_api": "local rustac server (stopped)",
        "aois": [a.name for a in config.aois],
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
            "band_rasters": str(objects_dir / "raw" / config.stac.collection / partition),
            "products": str(objects_dir / "processed" / config.stac.collection / partition),
            "stac_catalog": str(objects_dir / "processed" / "catalog.json"),
            "items": str(objects_dir / "stac" / config.stac.collection / partition / "items.json"),
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


def run_demo(out: Path) -> dict[str, Any]:
    from dagster import DagsterInstance

    from geospatial_pipeline.assets.catalog import STAC_CATALOG_ROOT
    from geospatial_pipeline.definitions import build_defs

    catalog = _prepare(out)
    with RustacStacServer(catalog.items, [catalog.collection]) as server:
        config_path = write_config(out, server.url)
        config = load_config(config_path)
        defs = build_defs(config)
        os.environ["DAGSTER_HOME"] = str(out / "dagster_home")
        partition = DEMO_DAY.isoformat()
        with DagsterInstance.get() as instance:
            # The code location's own job, so the run shows up as such in `make dev`.
            job = defs.resolve_job_def("ingest_daily")
            result = job.execute_in_process(
                partition_key=partition, instance=instance, raise_on_error=False
            )
            if not result.success:
                raise SystemExit("demo run failed; see the log above")
            # The root catalog is no part of the day's job (one writer across days); in a
            # deployment its automation sensor runs it, here it runs right after the day.
            root = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[STAC_CATALOG_ROOT], raise_on_error=False
            )
            if not root.success:
                raise SystemExit("demo root catalog failed; see the log above")
        mats = {
            name: result.asset_materializations_for_node(name)
            for name in ("stac_items", "band_rasters", "scene_metadata")
        }
    summary = summarize(config, out, partition, mats)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def print_summary(summary: dict[str, Any], out: Path) -> None:
    print(f"\nDemo partition {summary['partition']} done.")
    print(
        f"  items found        {summary['items_found']} "
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
    rows = ", ".join(f"{t} {n}" for t, n in summary["warehouse_rows"].items())
    print(f"  warehouse rows     {rows}")
    print(f"  warehouse          {summary['warehouse']}")
    print(f"  query              {summary['look_at']['query']}")
    print(f"  summary            {out / 'summary.json'}")
    print("  UI                 make dev  (then open http://127.0.0.1:3000)")


def run_dev(out: Path, port: int, stac_port: int) -> int:
    catalog = _prepare(out)
    with RustacStacServer(catalog.items, [catalog.collection], port=stac_port) as server:
        config_path = write_config(out, server.url)
        env = {
            **os.environ,
            CONFIG_ENV_VAR: str(config_path),
            "DAGSTER_HOME": str(out / "dagster_home"),
        }
        print(f"STAC API on {server.url}; Dagster UI on http://127.0.0.1:{port}")
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
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.command == "dev":
        # SIGTERM (e.g. from `timeout` or a container stop) unwinds like Ctrl-C, so the
        # local STAC API and the UI are stopped too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return run_dev(out, args.port, args.stac_port)
    summary = run_demo(out)
    print_summary(summary, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
