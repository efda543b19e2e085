"""Logical warehouse tables, shared by every backend, and the Python value rules for their rows.

Backends (DuckDB, Snowflake) translate these schemas into their own DDL in
``geospatial_pipeline.warehouse.sql``; nothing here knows about a database or about Dagster.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Identifiers are spliced into SQL (they cannot be bind parameters), so they are restricted to a
# shape that needs no escaping in any dialect and that Snowflake upper-cases predictably.
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,127}$")

_BIGINT_MIN = -(2**63)
_BIGINT_MAX = 2**63 - 1


class ColumnType(StrEnum):
    STRING = "string"
    BIGINT = "bigint"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"  # always timezone-aware; stored and returned in UTC
    JSON = "json"


def validate_identifier(name: str) -> str:
    """Return ``name`` if it is a safe lower-case SQL identifier, else raise ValueError."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid identifier {name!r}: use lower-case letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return name


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True

    def __post_init__(self) -> None:
        validate_identifier(self.name)
        # Accept the plain string form too, so schemas can be built from configuration.
        object.__setattr__(self, "type", ColumnType(self.type))


@dataclass(frozen=True)
class Table:
    """A warehouse table whose rows are replaced one ``partition_column`` value at a time.

    ``natural_key`` orders rows returned by ``fetch_partition`` and must be unique within a
    partition; when empty, rows are ordered by every non-JSON column in declaration order and
    uniqueness is not checked.
    """

    name: str
    columns: tuple[Column, ...]
    partition_column: str
    natural_key: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_identifier(self.name)
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "natural_key", tuple(self.natural_key))
        if not self.columns:
            raise ValueError(f"table {self.name!r} has no columns")
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table {self.name!r} repeats columns {duplicates}")
        by_name = {c.name: c for c in self.columns}
        partition = by_name.get(self.partition_column)
        if partition is None:
            raise ValueError(
                f"table {self.name!r}: partition column {self.partition_column!r} is not a column"
            )
        # replace_partition takes a datetime.date, so the partition column must hold dates.
        if partition.type is not ColumnType.DATE or partition.nullable:
            raise ValueError(
                f"table {self.name!r}: partition column {self.partition_column!r} "
                "must be a non-nullable DATE"
            )
        for key in self.natural_key:
            column = by_name.get(key)
            if column is None:
                raise ValueError(f"table {self.name!r}: natural key {key!r} is not a column")
            if column.type is ColumnType.JSON:
                raise ValueError(f"table {self.name!r}: natural key {key!r} cannot be JSON")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def order_by(self) -> tuple[str, ...]:
        if self.natural_key:
            return self.natural_key
        return tuple(c.name for c in self.columns if c.type is not ColumnType.JSON)


SCENE_METADATA = Table(
    name="scene_metadata",
    columns=(
        Column("item_id", ColumnType.STRING, nullable=False),
        Column("aoi", ColumnType.STRING, nullable=False),
        Column("collection", ColumnType.STRING),
        Column("acquired_at", ColumnType.TIMESTAMP),
        Column("partition_date", ColumnType.DATE, nullable=False),
        Column("mgrs_tile", ColumnType.STRING),
        Column("platform", ColumnType.STRING),
        Column("cloud_cover", ColumnType.DOUBLE),
        Column("processing_baseline", ColumnType.STRING),
        Column("boa_offset_applied", ColumnType.BOOLEAN),
        Column("created", ColumnType.TIMESTAMP),
        Column("updated", ColumnType.TIMESTAMP),
        Column("geometry", ColumnType.JSON),  # GeoJSON geometry
        Column("bbox", ColumnType.JSON),  # [minx, miny, maxx, maxy]
        Column("band_objects", ColumnType.JSON),  # [{band, key, url, bytes, sha256}, ...]
        Column("properties", ColumnType.JSON),  # the STAC item's full properties
        Column("object_count", ColumnType.BIGINT),
        Column("object_bytes", ColumnType.BIGINT),
    ),
    partition_column="partition_date",
    # One row per STAC item x AOI.
    natural_key=("item_id", "aoi"),
)


DAILY_AOI_STATS = Table(
    name="daily_aoi_stats",
    columns=(
        Column("partition_date", ColumnType.DATE, nullable=False),
        Column("aoi", ColumnType.STRING, nullable=False),
        Column("scenes_used", ColumnType.BIGINT, nullable=False),
        Column("pixels_in_aoi", ColumnType.BIGINT),
        Column("valid_pixel_fraction", ColumnType.DOUBLE),
        Column("cloud_fraction", ColumnType.DOUBLE),
        Column("shadow_fraction", ColumnType.DOUBLE),
        Column("ndvi_mean", ColumnType.DOUBLE),
        Column("ndvi_median", ColumnType.DOUBLE),
        Column("ndvi_p10", ColumnType.DOUBLE),
        Column("ndvi_p90", ColumnType.DOUBLE),
        Column("ndwi_mean", ColumnType.DOUBLE),
        Column("offset_decisions", ColumnType.JSON),  # per scene: metadata vs pixels
    ),
    partition_column="partition_date",
    natural_key=("aoi",),
)

# One row per scene x AOI: the offset decision (metadata and pixels) and pixel shares.
SCENE_QUALITY = Table(
    name="scene_quality",
    columns=(
        Column("partition_date", ColumnType.DATE, nullable=False),
        Column("item_id", ColumnType.STRING, nullable=False),
        Column("aoi", ColumnType.STRING, nullable=False),
        Column("processing_baseline", ColumnType.STRING),
        Column("boa_offset_applied_flag", ColumnType.BOOLEAN),
        Column("metadata_offset_present", ColumnType.BOOLEAN),
        Column("pixel_verdict", ColumnType.STRING),
        Column("offset_dn", ColumnType.BIGINT),
        Column("decided_by", ColumnType.STRING),
        Column("disagreement", ColumnType.BOOLEAN),
        Column("valid_pixel_fraction", ColumnType.DOUBLE),
        Column("cloud_fraction", ColumnType.DOUBLE),
        Column("shadow_fraction", ColumnType.DOUBLE),
        Column("decision", ColumnType.JSON),
    ),
    partition_column="partition_date",
    natural_key=("item_id", "aoi"),
)

PRODUCT_CATALOG = Table(
    name="product_catalog",
    columns=(
        Column("partition_date", ColumnType.DATE, nullable=False),
        Column("item_id", ColumnType.STRING, nullable=False),  # source scene, or "composite"
        Column("aoi", ColumnType.STRING, nullable=False),
        Column("product", ColumnType.STRING, nullable=False),
        Column("object_url", ColumnType.STRING, nullable=False),
        Column("object_key", ColumnType.STRING, nullable=False),
        Column("bytes", ColumnType.BIGINT),
        Column("sha256", ColumnType.STRING),
        Column("stac_item_url", ColumnType.STRING),
        Column("created", ColumnType.TIMESTAMP),
    ),
    partition_column="partition_date",
    natural_key=("item_id", "aoi", "product"),
)


# What the catalog holds versus what the pipeline stored, per day and AOI.
CATALOG_RECONCILIATION = Table(
    name="catalog_reconciliation",
    columns=(
        Column("day", ColumnType.DATE, nullable=False),
        Column("aoi", ColumnType.STRING, nullable=False),
        Column("catalog_items", ColumnType.BIGINT, nullable=False),
        Column("stored_items", ColumnType.BIGINT, nullable=False),
        Column("missing", ColumnType.JSON),  # in the catalog, not stored
        Column("extra", ColumnType.JSON),  # stored, no longer in the catalog
        Column("checked_at", ColumnType.TIMESTAMP, nullable=False),
    ),
    partition_column="day",
    natural_key=("aoi",),
)


def dump_json(value: Any) -> str:
    """Serialize deterministically so that re-running a partition writes identical text."""
    return json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )


def _type_name(value: Any) -> str:
    return type(value).__name__


def encode_value(column: Column, value: Any) -> Any:
    """Check one Python value against its column and return its canonical form.

    Canonical forms: str, int, float, bool, ``datetime.date``, ``datetime.datetime`` in UTC,
    and JSON text for JSON columns; None for SQL NULL. Raises TypeError or ValueError naming
    the problem but never echoing the value, which may be large or sensitive.
    """
    if value is None:
        if not column.nullable:
            raise ValueError(f"column {column.name!r} is not nullable but got None")
        return None
    kind = column.type
    if kind is ColumnType.STRING:
        if not isinstance(value, str):
            raise TypeError(f"column {column.name!r} expects str, got {_type_name(value)}")
        return value
    if kind is ColumnType.BIGINT:
        # bool is an Integral, but a flag in a count column is a bug, not a number.
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"column {column.name!r} expects int, got {_type_name(value)}")
        number = int(value)
        if not _BIGINT_MIN <= number <= _BIGINT_MAX:
            raise ValueError(f"column {column.name!r}: integer out of BIGINT range")
        return number
    if kind is ColumnType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"column {column.name!r} expects float, got {_type_name(value)}")
        real = float(value)
        # The backends disagree on NaN (pandas turns it into NULL on the Snowflake path), so it
        # is refused instead of being stored differently per backend.
        if not math.isfinite(real):
            raise ValueError(f"column {column.name!r}: non-finite float")
        return real
    if kind is ColumnType.BOOLEAN:
        if not isinstance(value, bool):
            raise TypeError(f"column {column.name!r} expects bool, got {_type_name(value)}")
        return value
    if kind is ColumnType.DATE:
        # datetime is a subclass of date; silently truncating a timestamp would hide a bug.
        if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
            raise TypeError(
                f"column {column.name!r} expects datetime.date, got {_type_name(value)}"
            )
        return value
    if kind is ColumnType.TIMESTAMP:
        if not isinstance(value, datetime.datetime):
            raise TypeError(
                f"column {column.name!r} expects datetime.datetime, got {_type_name(value)}"
            )
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"column {column.name!r} expects a timezone-aware datetime")
        return value.astimezone(datetime.UTC)
    if kind is ColumnType.JSON:
        try:
            return dump_json(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"column {column.name!r}: value is not JSON-serializable: {exc}"
            ) from exc
    raise AssertionError(f"unhandled column type {kind}")  # pragma: no cover


def encode_rows(
    table: Table, partition_value: datetime.date, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """Validate rows for ``replace_partition`` and return them as tuples in column order.

    Every row must belong to ``partition_value`` (a missing partition column is filled in),
    may only use the table's columns, and must have a unique natural key.
    """
    if isinstance(partition_value, datetime.datetime) or not isinstance(
        partition_value, datetime.date
    ):
        raise TypeError(
            f"partition value must be a datetime.date, got {_type_name(partition_value)}"
        )
    known = set(table.column_names)
    seen_keys: set[tuple[Any, ...]] = set()
    encoded: list[tuple[Any, ...]] = []
    for index, row in enumerate(rows):
        unknown = sorted(set(row) - known)
        if unknown:
            raise ValueError(f"row {index}: unknown columns {unknown}")
        values: list[Any] = []
        for column in table.columns:
            raw = row.get(column.name)
            if column.name == table.partition_column:
                if raw is None:
                    raw = partition_value
                elif raw != partition_value or isinstance(raw, datetime.datetime):
                    # A row for another date would survive the next replace of its own date
                    # and be deleted by this one: refuse rather than corrupt both partitions.
                    raise ValueError(
                        f"row {index}: {column.name}={raw!r} does not match the partition "
                        f"being replaced ({partition_value.isoformat()})"
                    )
            try:
                values.append(encode_value(column, raw))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"row {index}: {exc}") from exc
        if table.natural_key:
            key = tuple(values[table.column_names.index(k)] for k in table.natural_key)
            if key in seen_keys:
                raise ValueError(f"row {index}: duplicate natural key {table.natural_key}={key!r}")
            seen_keys.add(key)
        encoded.append(tuple(values))
    return encoded


def decode_value(column: Column, value: Any) -> Any:
    """Turn a value read back from a backend into the Python form ``encode_value`` accepts."""
    if value is None:
        return None
    kind = column.type
    if kind is ColumnType.JSON:
        # DuckDB returns JSON as text and Snowflake returns VARIANT as (pretty-printed) text.
        return json.loads(value) if isinstance(value, str | bytes | bytearray) else value
    if kind is ColumnType.TIMESTAMP:
        if not isinstance(value, datetime.datetime):
            raise TypeError(f"column {column.name!r}: backend returned {_type_name(value)}")
        if value.tzinfo is None:
            # Only reachable if the column was created outside this module without a zone;
            # the writer stores UTC, so that is what a naive value means.
            return value.replace(tzinfo=datetime.UTC)
        return value.astimezone(datetime.UTC)
    if kind is ColumnType.DATE:
        if isinstance(value, datetime.datetime):
            return value.date()
        return value
    if kind is ColumnType.BIGINT:
        # Snowflake's NUMBER(38,0) may come back as Decimal depending on connector options.
        return int(value)
    if kind is ColumnType.DOUBLE:
        return float(value)
    if kind is ColumnType.BOOLEAN:
        return bool(value)
    return value


def decode_row(table: Table, values: Sequence[Any]) -> dict[str, Any]:
    return {
        column.name: decode_value(column, value)
        for column, value in zip(table.columns, values, strict=True)
    }
