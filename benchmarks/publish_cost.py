"""Benchmark: the cost of publishing one partition's product items to pgstac, as the
collection grows.

``.venv/bin/python -m benchmarks.publish_cost [--repetitions 7] [--sizes 0,1000,10000]
[--runs 4]`` (``make bench`` runs it too, in its own process). See benchmarks/README.md
("Publication to pgstac").

1. A throwaway pgstac database (``CREATE DATABASE`` on the local PostgreSQL 127.0.0.1:5432,
   trust authentication, ``pypgstac migrate``), dropped at the end.
2. The real partition of ``benchmarks/metadata_weight.py`` (the real 29RKH item from rustac,
   the real decimated COGs, transform at 100 m, LocalObjectStore, DuckDB, pgstac
   configured) run ``--runs`` times by the code location's job ``ingest_daily``: the step
   times of ``scene_products`` (the transform asset) and ``pgstac_items`` come from the
   runs' event logs (STEP_START..STEP_SUCCESS), the first run apart (imports, first use
   of the kernels), the median of the others.
3. The partition's product items as ``pgstac_items`` builds them (``partition_products``
   + ``api_item``: one scene product and the composite), then
   ``geospatial_pipeline.stac.pgstac.publish_partition`` timed directly, with
   ``--sizes`` other items already in the collection: copies of the two real product
   items under new ids, days and AOIs (10 AOIs, 2 items a day, on the days before the
   partition's), loaded once per size with pypgstac's Loader, then ``ANALYZE``.
   Per repetition, two publications: "first" (the partition's rows deleted beforehand,
   outside the clock) and "again" (its rows there: the re-run case).
4. Phases, timed by wrapping the functions ``publish_partition`` calls (its code and
   behaviour unchanged): reading the stored extent, ``Loader.load_items`` (the item
   upsert), ``partition_rows`` (the partition's rows before the load, the stale rows and
   the row count) and ``refresh_collection`` (the collection's extent and summaries:
   incremental after a first publication, from every row after a re-run); the rest is
   opening the connection, the collection upsert and closing. Both kinds of refresh and a
   bare connect + close are also timed alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks import metadata_weight as mw

REPETITIONS = 7
SIZES = (0, 1000, 10_000)
RUNS = 4
OTHER_AOIS = 10
PHASES = ("extent", "item_upsert", "partition_rows", "refresh", "rest")
_TIME_KEYS = ("datetime", "start_datetime", "end_datetime")


# ---------------------------------------------------------------- inputs
def partition_items(loc: mw.PartitionRuns) -> list[dict[str, Any]]:
    """The partition's items exactly as ``pgstac_items`` publishes them."""
    from geospatial_pipeline.layout import Partition
    from geospatial_pipeline.resources.storage import ObjectStoreResource
    from geospatial_pipeline.stac import pgstac, publish

    store = ObjectStoreResource.from_config(loc.config.storage).store()
    part = Partition(mw.DAY, mw.AOI_NAME)
    collection = loc.config.stac.collection
    return [
        pgstac.api_item(
            json.loads(store.get_bytes(p["stac_item_key"])),
            item_key=p["stac_item_key"],
            store=store,
            collection=collection,
        )
        for p in publish.partition_products(store, collection, part)
    ]


def _shift(value: str, days: int) -> str:
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) - dt.timedelta(days=days)
    return when.isoformat().replace("+00:00", "Z")


def other_items(templates: list[dict[str, Any]], start: int, stop: int) -> list[dict[str, Any]]:
    """Items ``start``..``stop`` of the other partitions: copies of the real product items,
    ``OTHER_AOIS`` AOIs with both products a day, on the days before the partition's."""
    from geospatial_pipeline.stac.pgstac import AOI_PROPERTY

    out = []
    for k in range(start, stop):
        item = copy.deepcopy(templates[k % len(templates)])
        slot = k // len(templates)
        days_back = 1 + slot // OTHER_AOIS
        aoi = f"bench-aoi-{slot % OTHER_AOIS:02d}"
        item["id"] = f"{item['id']}__bench{k:06d}"
        props = item["properties"]
        for key in _TIME_KEYS:
            if isinstance(props.get(key), str):
                props[key] = _shift(props[key], days_back)
        props[AOI_PROPERTY] = aoi
        out.append(item)
    return out


def load_others(dsn: str, items: list[dict[str, Any]]) -> float:
    """Insert ``items`` with pypgstac's Loader, then ANALYZE; seconds."""
    from pypgstac.load import Loader, Methods

    from geospatial_pipeline.stac import pgstac

    start = time.perf_counter()
    with pgstac.pgstac_db(dsn) as db:
        if items:
            Loader(db=db).load_items(iter(items), insert_mode=Methods.insert)
        # A database that has been in use has had autovacuum analyze its tables.
        db.connect().execute("ANALYZE items")
    return time.perf_counter() - start


def delete_partition_rows(dsn: str, collection: str) -> None:
    from geospatial_pipeline.stac import pgstac

    with pgstac.pgstac_db(dsn) as db:
        for item_id in pgstac.partition_rows(db, collection, mw.DAY, mw.AOI_NAME):
            db.query_one("SELECT delete_item(%s, %s)", (item_id, pgstac.collection_id(collection)))


def collection_rows(dsn: str, collection: str) -> int:
    from geospatial_pipeline.stac import pgstac

    with pgstac.pgstac_db(dsn) as db:
        count = db.query_one(
            "SELECT count(*) FROM items WHERE collection = %s",
            (pgstac.collection_id(collection),),
        )
    return int(count)


# ---------------------------------------------------------------- timing
@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Wraps what ``publish_partition`` calls so each call adds its seconds to a phase;
    the calls themselves are unchanged. The dict is reset by the caller per publication."""
    from pypgstac.load import Loader

    from geospatial_pipeline.stac import pgstac

    spent: dict[str, float] = {}
    originals: dict[tuple[Any, str], Callable[..., Any]] = {
        (pgstac, "_existing_extent"): pgstac._existing_extent,
        (pgstac, "partition_rows"): pgstac.partition_rows,
        (pgstac, "refresh_collection"): pgstac.refresh_collection,
        (Loader, "load_items"): Loader.load_items,
    }

    def timed(fn: Callable[..., Any], phase: Callable[[], str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = phase()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    phases: dict[tuple[Any, str], Callable[[], str]] = {
        (pgstac, "_existing_extent"): lambda: "extent",
        (pgstac, "partition_rows"): lambda: "partition_rows",
        (pgstac, "refresh_collection"): lambda: "refresh",
        (Loader, "load_items"): lambda: "item_upsert",
    }
    for (owner, name), phase in phases.items():
        setattr(owner, name, timed(originals[(owner, name)], phase))
    try:
        yield spent
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)


def publish_once(
    dsn: str, collection: str, items: list[dict[str, Any]], spent: dict[str, float]
) -> dict[str, float]:
    from geospatial_pipeline.stac import pgstac

    spent.clear()
    start = time.perf_counter()
    done = pgstac.publish_partition(dsn, collection, mw.DAY, mw.AOI_NAME, items)
    total = time.perf_counter() - start
    if done.rows != len(items):
        raise AssertionError(f"published {len(items)} items, counted {done.rows} rows")
    out = {p: spent.get(p, 0.0) for p in PHASES[:-1]}
    out["rest"] = total - sum(out.values())
    out["total"] = total
    return out


def refresh_alone(dsn: str, collection: str) -> dict[str, float]:
    """``refresh_collection`` alone, median of 5 each: from every row (a re-run's) and
    incremental (a first publication's, with the partition's rows there; idempotent)."""
    from geospatial_pipeline.stac import pgstac

    cid = pgstac.collection_id(collection)
    out: dict[str, float] = {}
    with pgstac.pgstac_db(dsn) as db:
        for name, partition in (("full", None), ("incremental", (mw.DAY, mw.AOI_NAME))):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                pgstac.refresh_collection(db, cid, partition)
                times.append(time.perf_counter() - start)
            out[name] = statistics.median(times)
    return out


def connect_alone(dsn: str) -> float:
    from geospatial_pipeline.stac import pgstac

    start = time.perf_counter()
    with pgstac.pgstac_db(dsn) as db:
        db.query_one("SELECT 1")
    return time.perf_counter() - start


# ---------------------------------------------------------------- run
def med(values: list[float]) -> float:
    return statistics.median(values)


def run(
    repetitions: int = REPETITIONS, sizes: tuple[int, ...] = SIZES, runs: int = RUNS
) -> dict[str, Any]:
    """Measure; print a report; return the ``publish_*`` figures for the JSON line."""
    t_start = time.monotonic()
    load_before = os.getloadavg()
    out = Path(tempfile.mkdtemp(prefix="publish-cost-"))
    results: dict[int, dict[str, dict[str, list[float]]]] = {}
    alone: dict[int, dict[str, float]] = {}
    loads: dict[int, float] = {}
    try:
        with mw.throwaway_pgstac() as dsn:
            if dsn is None:
                raise SystemExit("publish_cost needs PostgreSQL (with PostGIS) on 127.0.0.1:5432")
            with mw.partition_location(out, dsn) as loc:
                steps = [mw.step_seconds(loc.instance, loc.run()) for _ in range(max(runs, 2))]
                items = partition_items(loc)
                collection = loc.config.stac.collection
                import psycopg
                import pypgstac

                with psycopg.connect(mw.ADMIN_DSN) as admin:
                    server = admin.execute("SHOW server_version").fetchone()
                    pg_version = str(server[0]) if server else "?"
                from geospatial_pipeline.stac import pgstac

                with pgstac.pgstac_db(dsn) as db:
                    pgstac_version = db.query_one("SELECT get_version()")
            loaded = 0
            item_bytes = [len(json.dumps(i)) for i in items]
            with phase_timer() as spent:
                for size in sorted(sizes):
                    loads[size] = load_others(dsn, other_items(items, loaded, size))
                    loaded = size
                    rows = collection_rows(dsn, collection)
                    if rows != size + len(items):
                        raise AssertionError(f"collection holds {rows} rows, not {size}+2")
                    per: dict[str, dict[str, list[float]]] = {"first": {}, "again": {}}
                    publish_once(dsn, collection, items, spent)  # discarded: warms the plans
                    for _ in range(repetitions):
                        delete_partition_rows(dsn, collection)
                        for mode in ("first", "again"):
                            for key, value in publish_once(dsn, collection, items, spent).items():
                                per[mode].setdefault(key, []).append(value)
                    results[size] = per
                    alone[size] = {
                        **refresh_alone(dsn, collection),
                        "connect": med([connect_alone(dsn) for _ in range(5)]),
                    }
    finally:
        shutil.rmtree(out, ignore_errors=True)

    later = steps[1:]
    transform_s = med([s["scene_products"] for s in later])
    publish_step_s = med([s["pgstac_items"] for s in later])
    summary: dict[str, Any] = {
        "publish_partition_s": {
            str(size): round(med(r["again"]["total"]), 4) for size, r in results.items()
        },
        "publish_partition_first_s": {
            str(size): round(med(r["first"]["total"]), 4) for size, r in results.items()
        },
        "publish_item_upsert_s": {
            str(size): round(med(r["first"]["item_upsert"]), 4) for size, r in results.items()
        },
        "publish_refresh_first_s": {
            str(size): round(med(r["first"]["refresh"]), 4) for size, r in results.items()
        },
        "publish_refresh_again_s": {
            str(size): round(med(r["again"]["refresh"]), 4) for size, r in results.items()
        },
        "publish_refresh_full_alone_s": {str(s): round(a["full"], 4) for s, a in alone.items()},
        "publish_refresh_incremental_alone_s": {
            str(s): round(a["incremental"], 4) for s, a in alone.items()
        },
        "publish_transform_step_s": round(transform_s, 4),
        "publish_pgstac_items_step_s": round(publish_step_s, 4),
        "publish_vs_transform": {
            str(size): round(med(r["first"]["total"]) / transform_s, 3)
            for size, r in results.items()
        },
        "publish_again_vs_transform": {
            str(size): round(med(r["again"]["total"]) / transform_s, 3)
            for size, r in results.items()
        },
        "publish_repetitions": repetitions,
        "publish_items_per_partition": len(items),
    }
    import dagster

    conditions = {
        "machine": f"nproc={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, dagster {dagster.__version__}",
        "database": f"PostgreSQL {pg_version} on 127.0.0.1 (throwaway database), pgstac "
        f"{pgstac_version}, pypgstac {pypgstac.__version__}",
        "load average (1/5/15)": f"before {_load(load_before)}; after {_load(os.getloadavg())}",
        "partition": f"{mw.AOI_NAME}|{mw.DAY}: {len(items)} product items "
        f"({', '.join(str(b) for b in item_bytes)} bytes of JSON)",
        "other items": f"{', '.join(str(s) for s in sorted(sizes))}: copies of those two "
        f"under new ids, {OTHER_AOIS} AOIs, earlier days; loaded with Loader (insert) + "
        "ANALYZE in " + ", ".join(f"{loads[s]:.1f} s" for s in sorted(sizes)),
        "publication": "publish_partition() called directly (the asset's own call), "
        f"{repetitions} repetitions x (first: rows deleted before; again: rows there), "
        "1 discarded; median",
        "runs": f"{len(steps)} x ingest_daily (execute_in_process; first run apart)",
        "benchmark wall time": f"{time.monotonic() - t_start:.0f} s",
    }
    print_report(conditions, results, alone, steps, summary)
    return summary


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def print_report(
    conditions: dict[str, Any],
    results: dict[int, dict[str, dict[str, list[float]]]],
    alone: dict[int, dict[str, float]],
    steps: list[dict[str, float]],
    summary: dict[str, Any],
) -> None:
    def ms(v: float) -> str:
        return f"{v * 1000:.1f}"

    print()
    print("Publication of one partition to pgstac (publish_partition), as the collection grows")
    print("=" * 86)
    for key, value in conditions.items():
        print(f"{key:<22} {value}")
    print()
    head = f"{'other items':>11} {'mode':<6} {'total ms':>9} " + " ".join(
        f"{p:>17}" for p in PHASES
    )
    print("Median ms per publication, and per phase:")
    print(head)
    print("-" * len(head))
    for size, per in sorted(results.items()):
        for mode in ("first", "again"):
            r = per[mode]
            print(
                f"{size:>11} {mode:<6} {ms(med(r['total'])):>9} "
                + " ".join(f"{ms(med(r[p])):>17}" for p in PHASES)
            )
        print(
            f"{'':>11} {'alone':<6} refresh from every row {ms(alone[size]['full'])} ms, "
            f"incremental {ms(alone[size]['incremental'])} ms, "
            f"connect + close {ms(alone[size]['connect'])} ms"
        )
    print()
    print("All publications (ms, in run order, 'again'):")
    for size, per in sorted(results.items()):
        print(f"  {size:>6}: " + " ".join(ms(v) for v in per["again"]["total"]))
    print()
    print("Step times of the runs (s): scene_products (transform) / pgstac_items")
    for i, s in enumerate(steps):
        label = "first" if i == 0 else f"run {i + 1}"
        print(f"  {label:<6} {s['scene_products']:.3f} / {s['pgstac_items']:.3f}")
    print(
        f"median after the first: scene_products {summary['publish_transform_step_s']:.3f} s, "
        f"pgstac_items {summary['publish_pgstac_items_step_s']:.3f} s"
    )
    print(
        "publication / transform step, first: "
        + ", ".join(f"{k} others {v}" for k, v in summary["publish_vs_transform"].items())
        + "; re-run: "
        + ", ".join(f"{k} others {v}" for k, v in summary["publish_again_vs_transform"].items())
    )
    print()


def run_in_subprocess(repetitions: int = REPETITIONS) -> dict[str, Any]:
    """:func:`run` in a fresh interpreter (the code location's configuration must be set
    before the package is imported)."""
    return data.run_json_module("benchmarks.publish_cost", "--repetitions", str(repetitions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--runs", type=int, default=RUNS, help="partition runs (>= 2)")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.repetitions < 1 or args.runs < 2 or any(s < 0 for s in sizes):
        parser.error("--repetitions >= 1, --runs >= 2, --sizes >= 0")
    if not data.COG_DIR.is_dir() or not data.ITEM_PATH.is_file():
        print(f"shared data not found under {data.SHARED_DATA}", file=sys.stderr)
        return 2
    summary = run(args.repetitions, sizes, args.runs)
    sys.stdout.flush()
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
