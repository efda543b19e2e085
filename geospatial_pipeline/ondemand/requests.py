"""Imagery requests: the JSON document a person writes to ask for imagery of an area over
some days, and the status document the pipeline writes back.

Both live in the object store: requests under ``requests/incoming/`` (any file name; the
CLI writes ``{request_id}.json``), one status per request at
``requests/status/{request_id}.json``. The sensor that reads the one and writes the other
lives with the Dagster definitions; this module is plain functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from geospatial_pipeline.config import AoiConfig, PartitionsConfig
from geospatial_pipeline.errors import ConfigError, StorageError
from geospatial_pipeline.storage.object_store import ObjectInfo, ObjectStore, PutResult

INCOMING_PREFIX = "requests/incoming"
STATUS_PREFIX = "requests/status"
REQUEST_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Until the configuration has a `requests.max_days` setting.

MAX_NOTES_CHARS = 2000
_ID_HEX = 16
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)

RequestState = Literal["rejected", "accepted", "running", "complete", "failed"]
DayState = Literal["queued", "running", "succeeded", "failed"]
_ENDED: frozenset[str] = frozenset({"succeeded", "failed"})


class RequestRejected(ConfigError):
    """A request document is invalid; ``errors`` has one line per problem, each starting
    with the field path (``aoi.bbox: ...``)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid imagery request:\n" + "\n".join(f"  {e}" for e in errors))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class RequestAoi(_Strict):
    """The area of a request: ``{name, geometry}`` or ``{name, bbox}`` describes a new AOI,
    checked exactly as the configuration's AOIs are; ``{name}`` alone names a registered
    one (whether it exists is for the registry to say, not this model)."""

    # AoiConfig's own field, so a name valid in the configuration is valid here.
    name: Annotated[str, AoiConfig.model_fields["name"]]
    geometry: dict[str, Any] | None = None
    bbox: tuple[float, float, float, float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _as_configured_aoi(cls, data: Any) -> Any:
        if not isinstance(data, dict) or (
            data.get("geometry") is None and data.get("bbox") is None
        ):
            return data
        # AoiConfig's errors surface under this field's path, word for word; a bbox across
        # the antimeridian comes back as the equivalent MultiPolygon, as in the config.
        return AoiConfig.model_validate(data).model_dump(exclude_none=True)

    @property
    def named_only(self) -> bool:
        return self.geometry is None and self.bbox is None

    def as_aoi_config(self) -> AoiConfig | None:
        """The AOI to register, or None for a request naming a registered AOI."""
        if self.named_only:
            return None
        return AoiConfig(name=self.name, geometry=self.geometry, bbox=self.bbox)


class RequestBody(_Strict):
    """What a request asks for: imagery of ``aoi`` for every UTC day from ``start_date``
    to ``end_date``, both included."""

    aoi: RequestAoi
    start_date: dt.date
    end_date: dt.date
    notes: str | None = Field(default=None, max_length=MAX_NOTES_CHARS)

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _calendar_day(cls, value: Any) -> Any:
        return PartitionsConfig._calendar_day(value)

    @field_validator("start_date")
    @classmethod
    def _start_not_future(cls, value: dt.date) -> dt.date:
        return PartitionsConfig._not_future(value)

    @field_validator("end_date")
    @classmethod
    def _end_in_range(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        today = dt.datetime.now(dt.UTC).date()
        if value > today:
            raise ValueError(f"end date {value} is in the future (today is {today} UTC)")
        start = info.data.get("start_date")
        if start is not None and value < start:
            raise ValueError(f"end date {value} is before start_date {start}")
        return value

    def canonical_id(self) -> str:
        """``r-`` and the first 16 hex digits of the SHA-256 of every field but the id
        (notes included), as canonical JSON of the validated values: the same request
        written with other key order, spacing or number forms gets the same id."""
        body = self.model_dump(mode="json", exclude={"request_id"})
        return "r-" + hashlib.sha256(_canonical_json(body)).hexdigest()[:_ID_HEX]

    def days(self) -> list[dt.date]:
        count = (self.end_date - self.start_date).days + 1
        return [self.start_date + dt.timedelta(days=i) for i in range(count)]


class ImageryRequest(RequestBody):
    """A request and its id; the id defaults to ``canonical_id()``, so submitting the same
    request twice names the same request."""

    request_id: str = Field(pattern=REQUEST_ID_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("request_id") is not None:
            return data
        # The id hashes the validated body, so validate that first (its errors are the
        # request's errors, under the same field paths).
        body = RequestBody.model_validate({k: v for k, v in data.items() if k != "request_id"})
        return {**data, "request_id": body.canonical_id()}


def _error_path(loc: tuple[int | str, ...], given: Any) -> str:
    path = ".".join(str(part) for part in loc)
    # AoiConfig's whole-shape checks report at the AOI: name the one shape that was given.
    if path == "aoi" and isinstance(given, dict):
        shapes = [k for k in ("bbox", "geometry") if given.get(k) is not None]
        if len(shapes) == 1:
            return f"aoi.{shapes[0]}"
    return path


def validate_request(doc: object, *, max_days: int) -> ImageryRequest:
    """The request in ``doc`` (a parsed JSON document), or RequestRejected naming every bad
    field; a request over more than ``max_days`` days is refused too."""
    if not isinstance(doc, dict):
        raise RequestRejected([f"request: expected a JSON object, got {type(doc).__name__}"])
    try:
        request = ImageryRequest.model_validate(doc)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            path = _error_path(err["loc"], err["input"])
            errors.append(f"{path}: {msg}" if path else msg)
        raise RequestRejected(errors) from None
    days = len(request.days())
    if days > max_days:
        raise RequestRejected(
            [f"end_date: the request spans {days} days; requests.max_days is {max_days}"]
        )
    return request


def parse_request(data: bytes, *, max_days: int) -> ImageryRequest:
    """``validate_request`` of a stored document's bytes; not JSON is a rejection too."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestRejected([f"request: not valid JSON ({exc})"]) from None
    return validate_request(doc, max_days=max_days)


def declared_request_id(doc: object) -> str | None:
    """The ``request_id`` a document gives, when it gives a valid one (even if the rest of
    the document is invalid): the id its rejection is filed under."""
    if isinstance(doc, dict):
        value = doc.get("request_id")
        if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return None


def _check_id(request_id: str) -> str:
    if not _REQUEST_ID.fullmatch(request_id):
        raise ValueError(f"request_id: {request_id!r} does not match {REQUEST_ID_PATTERN}")
    return request_id


def incoming_key(request_id: str) -> str:
    return f"{INCOMING_PREFIX}/{_check_id(request_id)}.json"


def status_key(request_id: str) -> str:
    return f"{STATUS_PREFIX}/{_check_id(request_id)}.json"


def key_status_id(key: str) -> str:
    """The status id of an incoming document whose own id cannot be derived (not JSON, not
    an object, invalid without a ``request_id``): ``bad-`` and 16 hex digits of the
    SHA-256 of its key, stable for as long as the document keeps its name."""
    return "bad-" + hashlib.sha256(key.encode()).hexdigest()[:_ID_HEX]


def submit(store: ObjectStore, request: ImageryRequest) -> str:
    """Write ``request`` to ``requests/incoming/{request_id}.json``; return the key.

    Submitting the same request again rewrites nothing. Another request under an id in
    use is refused: the sensor may have read the first one already, and would never see
    the second."""
    key = incoming_key(request.request_id)
    data = _canonical_json(request.model_dump(mode="json"))
    existing = store.head(key)
    if existing is not None and store.get_bytes(key) != data:
        raise RequestRejected(
            [
                f"request_id: {request.request_id!r} was submitted already with other "
                f"content ({store.url(key)}); choose another id"
            ]
        )
    store.put_bytes(key, data, content_type="application/json")
    return key


def list_incoming(store: ObjectStore) -> list[ObjectInfo]:
    return sorted(store.list(INCOMING_PREFIX), key=lambda info: info.key)


class DayStatus(_Strict):
    """One (day, AOI) partition of a request."""

    date: dt.date
    aoi: str
    state: DayState = "queued"
    run_id: str | None = None
    stac_items: list[str] = Field(default_factory=list)


class RequestStatus(_Strict):
    request_id: str = Field(pattern=REQUEST_ID_PATTERN)
    state: RequestState
    errors: list[str] = Field(default_factory=list)
    aoi: str | None = None
    partitions: list[DayStatus] = Field(default_factory=list)
    submitted_key: str | None = None
    updated: dt.datetime
    notes: str | None = None

    @field_validator("updated")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no time zone; give a UTC time")
        return value.astimezone(dt.UTC)


def write_status(store: ObjectStore, status: RequestStatus) -> PutResult:
    data = status.model_dump_json(indent=2).encode()
    return store.put_bytes(status_key(status.request_id), data, content_type="application/json")


def read_status(store: ObjectStore, request_id: str) -> RequestStatus | None:
    key = status_key(request_id)
    if store.head(key) is None:
        return None
    try:
        return RequestStatus.model_validate_json(store.get_bytes(key))
    except ValidationError as exc:
        raise StorageError(f"status document {store.url(key)} is invalid: {exc}") from None


def rejected(request_id_or_key: str, errors: list[str], now: dt.datetime) -> RequestStatus:
    """The status of a refused request. Given an incoming key instead of a request id (a
    key has a '/', an id never does), the status is filed under ``key_status_id(key)``
    and records the key."""
    if _REQUEST_ID.fullmatch(request_id_or_key):
        request_id, key = request_id_or_key, None
    else:
        request_id, key = key_status_id(request_id_or_key), request_id_or_key
    return RequestStatus(
        request_id=request_id, state="rejected", errors=errors, submitted_key=key, updated=now
    )


def accepted(
    request: ImageryRequest, now: dt.datetime, *, submitted_key: str | None = None
) -> RequestStatus:
    """Every day of ``request`` queued."""
    return RequestStatus(
        request_id=request.request_id,
        state="accepted",
        aoi=request.aoi.name,
        partitions=[DayStatus(date=day, aoi=request.aoi.name) for day in request.days()],
        submitted_key=submitted_key,
        updated=now,
        notes=request.notes,
    )


def overall_state(days: list[DayStatus]) -> RequestState:
    states = [d.state for d in days]
    if states and all(s == "succeeded" for s in states):
        return "complete"
    if states and all(s in _ENDED for s in states):
        return "failed"
    if any(s == "running" or s in _ENDED for s in states):
        return "running"
    return "accepted"


def with_day(
    status: RequestStatus,
    date: dt.date,
    state: DayState,
    *,
    run_id: str | None = None,
    stac_items: list[str] | None = None,
    now: dt.datetime,
) -> RequestStatus:
    """``status`` with the day ``date`` in ``state``; a run id or STAC items not given keep
    their previous values. The request's state follows from its days."""
    if status.state == "rejected":
        raise ValueError(f"request {status.request_id} was rejected; it has no days to update")
    if not any(d.date == date for d in status.partitions):
        raise KeyError(f"request {status.request_id} has no day {date}")
    days = [
        d.model_copy(
            update={
                "state": state,
                "run_id": d.run_id if run_id is None else run_id,
                "stac_items": d.stac_items if stac_items is None else list(stac_items),
            }
        )
        if d.date == date
        else d
        for d in status.partitions
    ]
    # Validated again, so a naive `now` is refused as it is when the status is built.
    return RequestStatus.model_validate(
        {**dict(status), "partitions": days, "state": overall_state(days), "updated": now}
    )
