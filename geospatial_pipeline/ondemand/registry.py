"""The AOI registry: one GeoJSON Feature per AOI under ``aois/`` in the object store.

A name stands for one geometry for good: partitions, products and warehouse rows are keyed
by the name, so a changed shape under an old name would mix two areas in one history.
Registering is therefore idempotent for the same geometry and refused for another one.
Retiring only marks the record (the data stays); un-retiring is explicit.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.config import AoiConfig, PartitionsConfig
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.raster.grid import stac_bbox
from geospatial_pipeline.storage.object_store import ObjectStore

AOIS_PREFIX = "aois/"
CONTENT_TYPE = "application/geo+json"
CONFIG_ORIGIN = "config"
REQUEST_ORIGIN_PREFIX = "request:"
# Degrees; far below any coordinate precision that matters (1e-9° is ~0.1 mm), above
# the rounding noise of a JSON round trip or a reprojection back and forth.
GEOMETRY_TOLERANCE = 1e-9
_LISTED_NAMES = 20


def _name_pattern() -> re.Pattern[str]:
    # The config's own pattern, so a name valid in the YAML is valid here and vice versa.
    for meta in AoiConfig.model_fields["name"].metadata:
        pattern = getattr(meta, "pattern", None)
        if isinstance(pattern, str):
            return re.compile(pattern)
    raise RuntimeError("AoiConfig.name has no pattern")


_NAME = _name_pattern()


class AoiConflict(ConfigError):
    """An AOI name is registered already with another geometry, or is retired."""


class UnknownAoi(ConfigError):
    """No AOI of that name is registered."""


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"name: {name!r} is not a valid AOI name (pattern {_NAME.pattern}: lower-case "
            "letters, digits, '_' and '-', at most 63 characters)"
        )
    return name


def aoi_key(name: str) -> str:
    return f"{AOIS_PREFIX}{check_name(name)}.geojson"


def _plain_geometry(geom: BaseGeometry) -> dict[str, Any]:
    # Lists and floats, as JSON gives them back: a record read from the store then equals
    # the record that was written.
    plain: dict[str, Any] = json.loads(json.dumps(mapping(geom)))
    return plain


def _validated_geometry(name: str, geometry: Any) -> dict[str, Any]:
    """``geometry`` checked exactly as the configuration checks an AOI's geometry."""
    if not isinstance(geometry, dict):
        raise ConfigError(
            f"AOI {name!r}: geometry: expected a GeoJSON Polygon or MultiPolygon object, "
            f"got {type(geometry).__name__}"
        )
    try:
        aoi = AoiConfig(name=name, geometry=geometry)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "geometry"
            problems.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError(f"AOI {name!r}: " + "; ".join(problems)) from None
    return _plain_geometry(aoi.shape)


def _check_origin(origin: Any) -> str:
    if origin == CONFIG_ORIGIN:
        return origin
    if (
        isinstance(origin, str)
        and origin.startswith(REQUEST_ORIGIN_PREFIX)
        and origin.removeprefix(REQUEST_ORIGIN_PREFIX).strip()
    ):
        return origin
    raise ConfigError(
        f"origin: expected {CONFIG_ORIGIN!r} or '{REQUEST_ORIGIN_PREFIX}<request id>', "
        f"got {origin!r}"
    )


def _is_day(value: Any) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


@dataclass(frozen=True)
class AoiRecord:
    """One registered AOI. Construction validates every field (ConfigError names it)."""

    name: str
    geometry: dict[str, Any]  # GeoJSON Polygon/MultiPolygon, EPSG:4326
    first_day: dt.date  # the first daily partition of this AOI
    created: dt.datetime  # UTC
    origin: str  # "config" or "request:{request_id}"
    retired_on: dt.date | None = None  # the first day it is no longer active

    def __post_init__(self) -> None:
        check_name(self.name)
        object.__setattr__(self, "geometry", _validated_geometry(self.name, self.geometry))
        if not _is_day(self.first_day):
            raise ConfigError(
                f"AOI {self.name!r}: first_day: expected a date, got {self.first_day!r}"
            )
        if not isinstance(self.created, dt.datetime) or self.created.utcoffset() is None:
            raise ConfigError(
                f"AOI {self.name!r}: created: expected a timezone-aware datetime, "
                f"got {self.created!r}"
            )
        object.__setattr__(self, "created", self.created.astimezone(dt.UTC))
        _check_origin(self.origin)
        if self.retired_on is not None and not _is_day(self.retired_on):
            raise ConfigError(
                f"AOI {self.name!r}: retired_on: expected a date or None, got {self.retired_on!r}"
            )

    @property
    def shape(self) -> BaseGeometry:
        return shape(self.geometry)

    @property
    def bbox(self) -> list[float]:
        """west, south, east, north; west > east for an AOI crossing 180° (as in STAC)."""
        return [float(v) for v in stac_bbox(self.shape)]

    def config(self) -> AoiConfig:
        return AoiConfig(name=self.name, geometry=self.geometry)

    def active_on(self, day: dt.date) -> bool:
        return self.first_day <= day and (self.retired_on is None or day < self.retired_on)

    def to_feature(self) -> dict[str, Any]:
        return {
            "type": "Feature",
            "id": self.name,
            "geometry": self.geometry,
            "bbox": self.bbox,
            "properties": {
                "name": self.name,
                "first_day": self.first_day.isoformat(),
                "created": self.created.isoformat(),
                "origin": self.origin,
                "retired_on": self.retired_on.isoformat() if self.retired_on else None,
            },
        }

    @classmethod
    def from_feature(cls, doc: Any, *, source: str = "AOI feature") -> AoiRecord:
        """Validate a Feature as written by ``to_feature``; ConfigError names ``source``
        and the field."""
        try:
            return _parse_feature(doc)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def row(self) -> dict[str, Any]:
        """The record as a row of the warehouse table ``aois``."""
        west, south, east, north = self.bbox
        return {
            "name": self.name,
            "geometry": self.geometry,
            "bbox": [west, south, east, north],
            "west": west,
            "south": south,
            "east": east,
            "north": north,
            "first_day": self.first_day,
            "created": self.created,
            "origin": self.origin,
            "retired_on": self.retired_on,
        }


def _parse_day(value: Any, field: str, *, optional: bool = False) -> dt.date | None:
    if value is None and optional:
        return None
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"{field}: expected a calendar day YYYY-MM-DD, got {value!r}")


def _parse_feature(doc: Any) -> AoiRecord:
    if not isinstance(doc, dict) or doc.get("type") != "Feature":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        raise ConfigError(f"type: expected a GeoJSON Feature, got {got!r}")
    props = doc.get("properties")
    if not isinstance(props, dict):
        raise ConfigError(f"properties: expected an object, got {props!r}")
    try:
        name = check_name(props.get("name"))
    except ConfigError as exc:
        raise ConfigError(f"properties.{exc}") from None
    if doc.get("id") != name:
        raise ConfigError(f"id: {doc.get('id')!r} differs from properties.name {name!r}")
    first_day = _parse_day(props.get("first_day"), "properties.first_day")
    retired_on = _parse_day(props.get("retired_on"), "properties.retired_on", optional=True)
    raw_created = props.get("created")
    try:
        created = dt.datetime.fromisoformat(str(raw_created))
    except ValueError:
        created = None
    if not isinstance(raw_created, str) or created is None or created.utcoffset() is None:
        raise ConfigError(
            f"properties.created: expected an ISO 8601 date-time with a UTC offset, "
            f"got {raw_created!r}"
        )
    try:
        origin = _check_origin(props.get("origin"))
    except ConfigError as exc:
        raise ConfigError(f"properties.{exc}") from None
    assert first_day is not None
    return AoiRecord(
        name=name,
        geometry=doc.get("geometry"),  # type: ignore[arg-type]  # validated by AoiRecord
        first_day=first_day,
        created=created,
        origin=origin,
        retired_on=retired_on,
    )


def encode(record: AoiRecord) -> bytes:
    """The stored bytes: sorted keys, so the same record always writes identical bytes
    (the store then skips the write)."""
    return (json.dumps(record.to_feature(), sort_keys=True, indent=2) + "\n").encode("utf-8")


def new_record(aoi: AoiConfig, *, first_day: dt.date, origin: str, now: dt.datetime) -> AoiRecord:
    return AoiRecord(
        name=aoi.name,
        geometry=_plain_geometry(aoi.shape),
        first_day=first_day,
        created=now,
        origin=origin,
    )


def same_geometry(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two GeoJSON geometries are the same area drawn alike: ring start and
    orientation (and part order) do not matter, any moved, added or removed vertex does."""
    return bool(
        shape(a).normalize().equals_exact(shape(b).normalize(), tolerance=GEOMETRY_TOLERANCE)
    )


@dataclass(frozen=True)
class Registration:
    record: AoiRecord  # as stored
    created: bool  # False: the AOI was registered already with this geometry


def _decode(store: ObjectStore, key: str, name: str) -> AoiRecord:
    source = store.url(key)
    try:
        doc = json.loads(store.get_bytes(key))
    except ValueError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from None
    record = AoiRecord.from_feature(doc, source=source)
    if record.name != name:
        # The key is what partitions and lookups go by; a file renamed by hand must not
        # pass for another AOI.
        raise ConfigError(f"{source}: properties.name: {record.name!r}, expected {name!r}")
    return record


def find(store: ObjectStore, name: str) -> AoiRecord | None:
    """The registered AOI ``name``, or None: one HEAD (and a GET when it exists), never a
    listing, so asking for a new name costs the same with 5 or 5,000 AOIs."""
    key = aoi_key(name)
    if store.head(key) is None:
        return None
    return _decode(store, key, name)


def _check_same(stored: AoiRecord, record: AoiRecord) -> None:
    if not same_geometry(stored.geometry, record.geometry):
        retired = f", retired on {stored.retired_on}" if stored.retired_on else ""
        raise AoiConflict(
            f"AOI {record.name!r} is already registered with another geometry (origin "
            f"{stored.origin}, first day {stored.first_day}{retired}); a name keeps its "
            "geometry for good: a new geometry needs a new name"
        )
    if stored.retired_on is not None:
        raise AoiConflict(
            f"AOI {record.name!r} is retired (since {stored.retired_on}; origin "
            f"{stored.origin}, first day {stored.first_day}); registering it again does not "
            "bring it back: un-retire it explicitly (unretire)"
        )


def register(store: ObjectStore, record: AoiRecord) -> Registration:
    key = aoi_key(record.name)
    stored = find(store, record.name)
    if stored is not None:
        _check_same(stored, record)
        return Registration(stored, created=False)
    store.put_bytes(key, encode(record), content_type=CONTENT_TYPE)
    # The store has no conditional write: a concurrent registration of the same name may
    # have landed in between. Reading back catches the window that is left after the
    # head() above (last writer wins, and the loser learns about it here).
    stored = find(store, record.name)
    if stored is not None and stored != record:
        _check_same(stored, record)
        return Registration(stored, created=False)
    return Registration(record, created=True)


def _registered_names(store: ObjectStore) -> list[str]:
    names = []
    for info in store.list(AOIS_PREFIX.rstrip("/")):
        rest = info.key.removeprefix(AOIS_PREFIX)
        if rest != info.key and "/" not in rest and rest.endswith(".geojson"):
            names.append(rest.removesuffix(".geojson"))
    return sorted(names)


def load(store: ObjectStore, name: str) -> AoiRecord:
    record = find(store, name)
    if record is None:
        names = _registered_names(store)
        if not names:
            known = f"no AOI is registered (nothing under {store.url(AOIS_PREFIX.rstrip('/'))})"
        else:
            more = f" and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else ""
            known = f"registered: {', '.join(names[:_LISTED_NAMES])}{more}"
        raise UnknownAoi(f"unknown AOI {name!r}; {known}")
    return record


def load_all(store: ObjectStore) -> list[AoiRecord]:
    """Every registered AOI (retired ones included), sorted by name."""
    return [_decode(store, aoi_key(name), name) for name in _registered_names(store)]


def retire(store: ObjectStore, name: str, on: dt.date) -> AoiRecord:
    """Mark ``name`` inactive from ``on`` (its data stays). The same date again is a
    no-op; another date is refused, so a retirement is never moved by accident."""
    record = load(store, name)
    if record.retired_on == on:
        return record
    if record.retired_on is not None:
        raise AoiConflict(
            f"AOI {name!r} is retired already on {record.retired_on}, not {on}; "
            "unretire it first to retire it on another day"
        )
    retired = replace(record, retired_on=on)
    store.put_bytes(aoi_key(name), encode(retired), content_type=CONTENT_TYPE)
    return retired


def unretire(store: ObjectStore, name: str) -> AoiRecord:
    record = load(store, name)
    if record.retired_on is None:
        return record
    active = replace(record, retired_on=None)
    store.put_bytes(aoi_key(name), encode(active), content_type=CONTENT_TYPE)
    return active


def check_partition_budget(
    *,
    aoi_count: int,
    partitions: PartitionsConfig,
    adding: str,
    today: dt.date | None = None,
) -> None:
    """Refuse registering ``adding`` when the AOIs, ``aoi_count`` of them with it, times
    the days would exceed ``partitions.max_partitions`` (the config's own check, for AOIs
    that arrive after the config was loaded)."""
    days = partitions.day_count(today)
    count = aoi_count * days
    limit = partitions.max_partitions
    if count > limit:
        raise ConfigError(
            f"partitions.max_partitions: registering AOI {adding!r} would make {days:,} days "
            f"x {aoi_count:,} AOIs = {count:,} partitions per asset, {count - limit:,} over "
            f"the limit of {limit:,}; group many small fields into one MultiPolygon AOI (or "
            "raise partitions.max_partitions knowingly)"
        )
