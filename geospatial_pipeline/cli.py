"""Command line: ``python -m geospatial_pipeline <command>``.

A command is one function decorated with ``@command(name, help, *arguments)``: the
decorator registers it, ``main`` builds the parser from the registry. A command returns
the exit code: 0 done, 1 nothing to show or a storage failure, 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geospatial_pipeline.config import CONFIG_ENV_VAR, PipelineConfig, load_config
from geospatial_pipeline.errors import ConfigError, PipelineError
from geospatial_pipeline.ondemand import requests
from geospatial_pipeline.storage.object_store import ObjectStore

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OneOf:
    """Arguments of which at most one may be given (``required=True``: exactly one)."""

    args: tuple[Arg, ...]
    required: bool = False


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    arguments: tuple[Arg | OneOf, ...]
    run: Handler


_COMMANDS: list[_Command] = []

CONFIG = arg(
    "--config",
    metavar="PATH",
    help=f"pipeline configuration (default: ${CONFIG_ENV_VAR}, else the packaged default)",
)


def command(name: str, help: str, *arguments: Arg | OneOf) -> Callable[[Handler], Handler]:
    def register(run: Handler) -> Handler:
        _COMMANDS.append(_Command(name, help, arguments, run))
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m geospatial_pipeline", description="geospatial_pipeline commands"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in _COMMANDS:
        cmd_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for spec in cmd.arguments:
            if isinstance(spec, OneOf):
                group = cmd_parser.add_mutually_exclusive_group(required=spec.required)
                for one in spec.args:
                    group.add_argument(*one.flags, **one.options)
            else:
                cmd_parser.add_argument(*spec.flags, **spec.options)
        cmd_parser.set_defaults(run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already explained
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    except PipelineError as exc:
        _err(f"error: {exc}")
        return 1
    return code


def _out(*lines: str) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))


def _err(*lines: str) -> None:
    sys.stderr.write("".join(f"{line}\n" for line in lines))


def _config(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config)


def _store(config: PipelineConfig) -> ObjectStore:
    # Imported here: the resource pulls in Dagster and rasterio, which `--help` and
    # argument errors need not wait for.
    from geospatial_pipeline.resources.storage import ObjectStoreResource

    return ObjectStoreResource.from_config(config.storage).store()


def _geometry_file(path: str) -> dict[str, Any]:
    """The geometry of a GeoJSON file: a geometry, a Feature, or a FeatureCollection of
    one Feature."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise requests.RequestRejected([f"aoi.geometry: cannot read {path}: {exc}"]) from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list) or len(features) != 1:
            count = len(features) if isinstance(features, list) else 0
            raise requests.RequestRejected(
                [
                    f"aoi.geometry: {path} is a FeatureCollection of {count} features; give "
                    "one Feature (a MultiPolygon for several parts)"
                ]
            )
        doc = features[0]
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        doc = doc.get("geometry")
    if not isinstance(doc, dict):
        raise requests.RequestRejected([f"aoi.geometry: {path} holds no GeoJSON geometry"])
    return doc


@command(
    "request",
    "ask for imagery of an AOI over a range of UTC days",
    arg("--name", required=True, help="AOI name: a registered AOI, or a new one with its shape"),
    OneOf(
        (
            arg("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), help="a new AOI"),
            arg("--geometry", metavar="FILE.geojson", help="a new AOI (Polygon/MultiPolygon)"),
        )
    ),
    arg("--start", required=True, metavar="YYYY-MM-DD", help="first UTC day"),
    arg("--end", required=True, metavar="YYYY-MM-DD", help="last UTC day (included)"),
    arg("--notes", metavar="TEXT"),
    arg("--id", dest="request_id", metavar="ID", help="default: derived from the request"),
    CONFIG,
)
def request_command(args: argparse.Namespace) -> int:
    aoi: dict[str, Any] = {"name": args.name}
    if args.bbox is not None:
        aoi["bbox"] = args.bbox
    elif args.geometry is not None:
        aoi["geometry"] = _geometry_file(args.geometry)
    doc: dict[str, Any] = {"aoi": aoi, "start_date": args.start, "end_date": args.end}
    if args.notes is not None:
        doc["notes"] = args.notes
    if args.request_id is not None:
        doc["request_id"] = args.request_id
    config = _config(args)
    request = requests.validate_request(doc, max_days=config.requests.max_days)
    store = _store(config)
    key = requests.submit(store, request)
    rid = request.request_id
    days = len(request.days())
    _out(
        rid,
        f"  request:  {store.url(key)}",
        f"  AOI {request.aoi.name}, {days} day{'s' if days != 1 else ''} "
        f"{request.start_date} to {request.end_date}",
        f"  status:   {store.url(requests.status_key(rid))} (written by the "
        "imagery_requests_sensor)",
        f"  follow:   python -m geospatial_pipeline request-status {rid}",
    )
    return 0


def _status_text(status: requests.RequestStatus) -> list[str]:
    lines = [
        f"request {status.request_id}: {status.state}"
        + (f" (AOI {status.aoi})" if status.aoi else ""),
        f"  updated {status.updated.isoformat()}",
    ]
    if status.submitted_key:
        lines.append(f"  submitted as {status.submitted_key}")
    if status.notes:
        lines.append(f"  notes: {status.notes}")
    lines += [f"  error: {e}" for e in status.errors]
    if status.partitions:
        counts: dict[str, int] = {}
        for day in status.partitions:
            counts[day.state] = counts.get(day.state, 0) + 1
        lines.append("  days: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        width = max(len(d.aoi) for d in status.partitions)
        lines.append(f"  {'date':<10}  {'aoi':<{width}}  {'state':<9}  run")
        for day in status.partitions:
            lines.append(
                f"  {day.date.isoformat():<10}  {day.aoi:<{width}}  {day.state:<9}  "
                f"{day.run_id or '-'}"
            )
            lines += [f"      {item}" for item in day.stac_items]
    return lines


@command(
    "request-status",
    "show what became of an imagery request",
    arg("request_id", metavar="ID", help="the request id, or the key of an incoming document"),
    arg("--json", action="store_true", help="the status document itself"),
    CONFIG,
)
def request_status_command(args: argparse.Namespace) -> int:
    given: str = args.request_id
    # An incoming document that never had a usable id is filed under its key's id.
    rid = requests.key_status_id(given) if "/" in given else given
    store = _store(_config(args))
    try:
        status = requests.read_status(store, rid)
    except ValueError as exc:  # not an id at all: nothing can be stored under it
        _err(str(exc))
        return 2
    if status is None:
        _err(f"no status yet for request {given} (is the imagery_requests_sensor running?)")
        if "/" not in given and store.head(requests.incoming_key(rid)) is not None:
            _err(f"  its request is waiting at {store.url(requests.incoming_key(rid))}")
        return 1
    if args.json:
        _out(status.model_dump_json(indent=2))
    else:
        _out(*_status_text(status))
    return 0


# ---------------------------------------------------------------- AOIs and local runs


def _instance() -> Any:
    """The Dagster instance of $DAGSTER_HOME (the one the UI and the daemon use)."""
    import os

    from dagster import DagsterInstance

    if not os.environ.get("DAGSTER_HOME"):
        raise ConfigError(
            "DAGSTER_HOME is not set: the AOI partitions live in the Dagster instance the UI "
            "uses; set DAGSTER_HOME to its directory (make demo/make dev set it)"
        )
    return DagsterInstance.get()


def _sync(config: PipelineConfig) -> list[str]:
    """Register the configuration's AOIs in the registry, the instance's `aois`
    partitions and the warehouse mirror; return the names that were new anywhere."""
    import datetime as dt

    from geospatial_pipeline.on_demand import mirror_aois
    from geospatial_pipeline.ondemand import registry, service
    from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME
    from geospatial_pipeline.resources import build_warehouse

    store = _store(config)
    now = dt.datetime.now(dt.UTC)
    service.sync_config_aois(store, config.aois, config.partitions, now=now)
    records = registry.load_all(store)
    instance = _instance()
    known = set(instance.get_dynamic_partitions(AOI_PARTITIONS_NAME))
    missing = sorted(r.name for r in records if r.name not in known)
    if missing:
        instance.add_dynamic_partitions(AOI_PARTITIONS_NAME, missing)
    mirror_aois(build_warehouse(config), records)
    return missing


@command(
    "aois",
    "list the registered AOIs, register the configuration's (sync), retire or un-retire one",
    arg("action", choices=["list", "sync", "retire", "unretire"]),
    arg("name", nargs="?", help="the AOI to retire or un-retire"),
    arg("--on", metavar="YYYY-MM-DD", help="retire: first day without runs (default today)"),
    CONFIG,
)
def aois_command(args: argparse.Namespace) -> int:
    import datetime as dt

    from geospatial_pipeline.ondemand import registry

    config = _config(args)
    if args.action == "sync":
        added = _sync(config)
        _out(f"{len(config.aois)} configured AOI(s) registered; new partitions: {added or 'none'}")
        return 0
    store = _store(config)
    if args.action == "list":
        for r in registry.load_all(store):
            retired = f", retired on {r.retired_on}" if r.retired_on else ""
            _out(f"{r.name}: bbox {list(r.bbox)}, first day {r.first_day}, {r.origin}{retired}")
        return 0
    if not args.name:
        raise ConfigError(f"aois {args.action}: name the AOI")
    if args.action == "retire":
        on = dt.date.fromisoformat(args.on) if args.on else dt.datetime.now(dt.UTC).date()
        record = registry.retire(store, args.name, on)
        _out(
            f"{record.name} retired on {on}: no schedule, late-data or request runs from that "
            "day; its objects, rows and materializations stay"
        )
    else:
        record = registry.unretire(store, args.name)
        _out(f"{record.name} is active again")
    from geospatial_pipeline.on_demand import mirror_aois
    from geospatial_pipeline.resources import build_warehouse

    mirror_aois(build_warehouse(config), [record])
    return 0


@command(
    "materialize",
    "materialize every asset for one UTC day and each registered AOI (or the named ones), "
    "in this process",
    arg("--date", required=True, metavar="YYYY-MM-DD"),
    arg("--aoi", action="append", metavar="NAME", help="repeatable; default every active AOI"),
    CONFIG,
)
def materialize_command(args: argparse.Namespace) -> int:
    import datetime as dt
    import os

    if args.config:
        # The assets' partitions come from the code location's configuration at import.
        os.environ[CONFIG_ENV_VAR] = str(Path(args.config).resolve())
    config = _config(args)
    day = dt.date.fromisoformat(args.date)
    _sync(config)

    from geospatial_pipeline.definitions import INGEST_JOB, build_defs
    from geospatial_pipeline.layout import Partition
    from geospatial_pipeline.ondemand import registry
    from geospatial_pipeline.partitions import day_in_range, partition_key

    if not day_in_range(day):
        raise ConfigError(f"--date: {day} is outside partitions.start_date/end_date")
    records = {r.name: r for r in registry.load_all(_store(config))}
    names = args.aoi or sorted(n for n, r in records.items() if r.active_on(day))
    unknown = sorted(set(names) - set(records))
    if unknown:
        raise ConfigError(f"--aoi: not registered: {unknown}; known: {sorted(records)}")
    job_def = build_defs(config).resolve_job_def(INGEST_JOB)
    instance = _instance()
    failed = []
    for name in names:
        key = partition_key(Partition(day, name))
        result = job_def.execute_in_process(
            instance=instance, partition_key=key, raise_on_error=False
        )
        _out(f"{key}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
        if not result.success:
            failed.append(key)
    if failed:
        _err(f"failed partition(s): {', '.join(failed)}")
        return 1
    return 0
