"""Imagery on demand, the Dagster side: the request sensor, the status sensor and the UI
job that writes a request document.

Three doors, one path: a document under ``requests/incoming/`` (written by any system with
write access, by ``python -m geospatial_pipeline request`` or by the ``request_imagery``
job) is read by ``imagery_requests_sensor``, validated by the same models as the
configuration (ondemand/requests.py) and checked against the AOI registry
(ondemand/service.py). A rejected request gets ``requests/status/{id}.json`` with the
errors and nothing else; an accepted one registers its AOI (a dynamic partition) and
requests one run per (date, aoi) with the run key ``request:{id}:{date}``, in the same
SensorResult, so a tick repeated after a crash never launches a run twice.
"""

import datetime as dt
import json
from typing import Any

from dagster import (
    AddDynamicPartitionsRequest,
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    job,
    op,
    sensor,
)

from geospatial_pipeline.alerts import send_request_ended
from geospatial_pipeline.config import PipelineConfig, RequestsConfig
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.location import LOCATION_CONFIG
from geospatial_pipeline.ondemand import registry, requests, service
from geospatial_pipeline.partitions import (
    AOI_PARTITIONS_NAME,
    PARTITIONS_SETTINGS,
    partition_key,
    partition_of,
)
from geospatial_pipeline.resources.notify import NotifierResource
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.stac import publish
from geospatial_pipeline.storage.object_store import ObjectStore
from geospatial_pipeline.warehouse.tables import AOIS

REQUESTS_SENSOR = "imagery_requests_sensor"
STATUS_SENSOR = "request_status_sensor"
REQUEST_JOB = "request_imagery"
REQUEST_TAG = "geospatial_pipeline/request"
ACCEPTED_PREFIX = "requests/accepted"
# How far behind its cursor the status sensor reads runs again (run update times may be
# stored to the second).
CURSOR_OVERLAP_S = 2.0

_RUN_STATES: dict[DagsterRunStatus, requests.DayState] = {
    DagsterRunStatus.QUEUED: "queued",
    DagsterRunStatus.NOT_STARTED: "queued",
    DagsterRunStatus.STARTING: "running",
    DagsterRunStatus.STARTED: "running",
    DagsterRunStatus.CANCELING: "running",
    DagsterRunStatus.SUCCESS: "succeeded",
    DagsterRunStatus.FAILURE: "failed",
    DagsterRunStatus.CANCELED: "failed",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def mirror_aois(warehouse: WarehouseResource, records: list[registry.AoiRecord]) -> None:
    """The registry's warehouse mirror (table ``aois``), one row per AOI, replaced."""
    for record in records:
        warehouse.replace_partition(AOIS, (record.name,), [record.row()])


def _read_cursor(cursor: str | None) -> dict[str, Any]:
    doc = json.loads(cursor) if cursor else {}
    return {"queue": list(doc.get("queue", [])), "done": list(doc.get("done", []))}


def _archive(store: ObjectStore, key: str, request_id: str) -> None:
    """Move a fully launched request's document out of incoming/ (its runs are committed:
    the tick that launched them has ended)."""
    if store.head(key) is None:
        return
    store.put_bytes(
        f"{ACCEPTED_PREFIX}/{request_id}.json", store.get_bytes(key), "application/json"
    )
    store.delete(key)


def build_requests_sensor(job_name: str, settings: RequestsConfig) -> SensorDefinition:
    # A function of the settings: the polling interval is configuration.
    @sensor(
        name=REQUESTS_SENSOR,
        job_name=job_name,
        minimum_interval_seconds=settings.minimum_interval_seconds,
        # Running from the first deploy: it registers the configuration's AOIs, and a
        # stopped one would leave every request unanswered.
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Registers the configuration's AOIs (first tick), then reads request documents "
            "under requests/incoming/: rejects invalid ones (status with the errors), "
            "registers new AOIs and requests one run per (date, aoi), at most "
            f"{settings.max_run_requests_per_tick} per tick."
        ),
    )
    def imagery_requests_sensor(
        context: SensorEvaluationContext,
        scope: ScopeResource,
        object_store: ObjectStoreResource,
        warehouse: WarehouseResource,
    ) -> SensorResult | SkipReason:
        store = object_store.store()
        now = _now()
        cursor = _read_cursor(context.cursor)
        for key, request_id in cursor["done"]:
            _archive(store, key, request_id)
        registered = set(context.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME))
        new_aois: list[registry.AoiRecord] = []
        # The configuration's AOIs: registered whenever one is missing (a first tick, or an
        # AOI added to the file), so existing configurations keep working unchanged.
        config_aois = scope.aoi_configs()
        if any(a.name not in registered for a in config_aois):
            synced = service.sync_config_aois(store, config_aois, PARTITIONS_SETTINGS, now=now)
            new_aois += [r.record for r in synced if r.record.name not in registered]
        queued = {entry[0] for entry in cursor["queue"]}
        rejected = 0
        for info in requests.list_incoming(store):
            if info.key in queued:
                continue
            data = store.get_bytes(info.key)
            try:
                request = requests.parse_request(data, max_days=settings.max_days)
                previous = requests.read_status(store, request.request_id)
                acceptance = service.accept(
                    store,
                    request,
                    partitions=PARTITIONS_SETTINGS,
                    registered=registered | {r.name for r in new_aois},
                    now=now,
                )
            except requests.RequestRejected as exc:
                doc_id = _declared_id(data)
                status = requests.rejected(doc_id or info.key, exc.errors, now)
                requests.write_status(store, status)
                # The status holds everything the document said that matters; a rejected
                # document leaves incoming/ so the next tick does not read it again.
                store.delete(info.key)
                context.log.warning("rejected %s: %s", info.key, "; ".join(exc.errors))
                rejected += 1
                continue
            if acceptance.record.name not in registered:
                new_aois.append(acceptance.record)
            # A repeated tick (after a crash) finds the status written: keep its progress.
            if previous is None or previous.state == "rejected":
                requests.write_status(
                    store, requests.accepted(request, now, submitted_key=info.key)
                )
            cursor["queue"].append([info.key, request.request_id, 0])
            context.log.info(
                "accepted %s: %s, %d day(s)",
                request.request_id,
                request.aoi.name,
                len(acceptance.days),
            )
        run_requests, cursor = _launch(store, cursor, settings.max_run_requests_per_tick)
        if new_aois:
            mirror_aois(warehouse, new_aois)
        result = SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[
                AddDynamicPartitionsRequest(AOI_PARTITIONS_NAME, sorted({r.name for r in new_aois}))
            ]
            if new_aois
            else [],
            cursor=json.dumps(cursor),
        )
        if not run_requests and not new_aois:
            return SensorResult(
                skip_reason=f"no new request ({rejected} rejected)"
                if rejected
                else "no new request",
                cursor=json.dumps(cursor),
            )
        return result

    return imagery_requests_sensor


def _declared_id(data: bytes) -> str | None:
    try:
        return requests.declared_request_id(json.loads(data))
    except ValueError:
        return None


def _launch(
    store: ObjectStore, cursor: dict[str, Any], cap: int
) -> tuple[list[RunRequest], dict[str, Any]]:
    """Run requests of the queued requests, oldest first, at most ``cap``; the cursor
    remembers where each request stopped and which ones are fully launched (their
    documents are archived on the next tick, once this tick's runs are committed)."""
    run_requests: list[RunRequest] = []
    queue: list[list[Any]] = []
    done: list[list[str]] = []
    for key, request_id, offset in cursor["queue"]:
        status = requests.read_status(store, request_id)
        days = [] if status is None else [(d.date, d.aoi) for d in status.partitions]
        take = days[offset : offset + max(0, cap - len(run_requests))]
        for day, aoi in take:
            run_requests.append(
                RunRequest(
                    partition_key=partition_key(Partition(day, aoi)),
                    run_key=f"request:{request_id}:{day.isoformat()}",
                    tags={REQUEST_TAG: request_id},
                )
            )
        offset += len(take)
        if offset < len(days):
            queue.append([key, request_id, offset])
        else:
            done.append([key, request_id])
    return run_requests, {"queue": queue, "done": done}


def build_status_sensor(settings: RequestsConfig) -> SensorDefinition:
    decorate = sensor(
        name=STATUS_SENSOR,
        minimum_interval_seconds=settings.minimum_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Keeps requests/status/{request_id}.json current from the runs the request "
            "sensor launched: per day queued/running/succeeded/failed, the request "
            "complete or failed once every day has ended, with the product STAC items."
        ),
    )

    @decorate
    def request_status_sensor(
        context: SensorEvaluationContext,
        stac: StacSearchResource,
        object_store: ObjectStoreResource,
        notifier: NotifierResource,
    ) -> SensorResult | SkipReason:
        since = float(context.cursor) if context.cursor else 0.0
        # Run storage may keep update times to the second (SQLite): a run updated later in
        # the same second as the cursor would be missed by "after the cursor", so every
        # tick reads a little behind it again; unchanged days are not rewritten.
        after = since - CURSOR_OVERLAP_S if since else None
        records = context.instance.get_run_records(
            filters=RunsFilter(
                updated_after=dt.datetime.fromtimestamp(after, dt.UTC) if after else None
            ),
            order_by="update_timestamp",
            ascending=True,
            limit=500,
        )
        store = object_store.store()
        updated: dict[str, requests.RequestStatus] = {}
        # Each request's state before this tick: an alert goes out when it changes to an end.
        before: dict[str, requests.RequestState] = {}
        newest = since
        for record in records:
            newest = max(newest, record.update_timestamp.timestamp())
            run = record.dagster_run
            request_id = run.tags.get(REQUEST_TAG)
            state = _RUN_STATES.get(run.status)
            if not request_id or state is None or run.tags.get("dagster/partition") is None:
                continue
            status = updated.get(request_id) or requests.read_status(store, request_id)
            if status is None or status.state == "rejected":
                continue
            before.setdefault(request_id, status.state)
            part = partition_of(run.tags["dagster/partition"])
            items = _stac_items(store, stac.collection, part) if state == "succeeded" else None
            try:
                changed = requests.with_day(
                    status, part.day, state, run_id=run.run_id, stac_items=items, now=_now()
                )
            except KeyError:
                continue
            if _days(changed) != _days(status):
                updated[request_id] = changed
        for status in updated.values():
            requests.write_status(store, status)
            context.log.info("request %s: %s", status.request_id, status.state)
            # After the write: a tick repeated after a crash finds the end recorded and
            # does not send the alert twice.
            if before.get(status.request_id) != status.state:
                send_request_ended(notifier, status, request_tag=REQUEST_TAG, log=context.log)
        cursor = repr(newest)
        if not updated:
            return SensorResult(skip_reason="no request run changed", cursor=cursor)
        return SensorResult(cursor=cursor)

    return request_status_sensor


def _days(status: requests.RequestStatus) -> list[tuple[Any, ...]]:
    return [(d.date, d.state, d.run_id, tuple(d.stac_items)) for d in status.partitions]


def _stac_items(store: ObjectStore, collection: str, part: Partition) -> list[str]:
    try:
        products = publish.partition_products(store, collection, part)
    except Exception:
        # Transform disabled (or its manifests gone): the day still succeeded.
        return []
    return sorted(str(p["stac_item_url"]) for p in products)


class RequestImageryConfig(Config):
    """The request document's fields, typed for the launchpad."""

    name: str
    bbox: list[float] | None = None
    geometry_json: str | None = None  # GeoJSON Polygon/MultiPolygon in EPSG:4326
    start_date: str
    end_date: str
    notes: str | None = None
    request_id: str | None = None


@op(
    description="Validate the request and write it under requests/incoming/; the "
    "imagery_requests_sensor launches its runs. Invalid input fails naming the field and "
    "writes nothing."
)
def write_request_document(
    context: OpExecutionContext, config: RequestImageryConfig, object_store: ObjectStoreResource
) -> str:
    aoi: dict[str, Any] = {"name": config.name}
    if config.bbox is not None:
        aoi["bbox"] = config.bbox
    if config.geometry_json:
        try:
            aoi["geometry"] = json.loads(config.geometry_json)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"aoi.geometry: geometry_json is not JSON: {exc}") from None
    doc: dict[str, Any] = {
        "aoi": aoi,
        "start_date": config.start_date,
        "end_date": config.end_date,
        **({"notes": config.notes} if config.notes else {}),
        **({"request_id": config.request_id} if config.request_id else {}),
    }
    request = requests.validate_request(doc, max_days=_max_days())
    store = object_store.store()
    key = requests.submit(store, request)
    context.log.info(
        "request %s written to %s; status at %s",
        request.request_id,
        store.url(key),
        store.url(requests.status_key(request.request_id)),
    )
    context.add_output_metadata(
        {
            "request_id": request.request_id,
            "document": store.url(key),
            "status": store.url(requests.status_key(request.request_id)),
            "days": len(request.days()),
        }
    )
    return request.request_id


def _max_days() -> int:
    return LOCATION_CONFIG.requests.max_days


@job(
    name=REQUEST_JOB,
    description="Request imagery for an AOI and a date range from the launchpad: writes the "
    "request document that imagery_requests_sensor turns into runs.",
)
def request_imagery() -> None:
    write_request_document()


def on_demand_sensors(job_name: str, config: PipelineConfig) -> list[SensorDefinition]:
    return [
        build_requests_sensor(job_name, config.requests),
        build_status_sensor(config.requests),
    ]
