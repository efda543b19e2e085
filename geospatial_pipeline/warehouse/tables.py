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


# The value kinds a partition key holds: a day, and a name (an AOI).
_PARTITION_TYPES = frozenset({ColumnType.DATE, ColumnType.STRING})


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
    """A warehouse table whose rows are replaced one partition at a time.

    A partition is one combination of values of ``partition_columns`` (e.g. a day and an
    AOI); those columns must be non-nullable DATE or STRING columns, the two kinds of value a
    partition key can carry. ``natural_key`` orders rows returned by ``fetch_partition`` and
    must be unique within a partition, so it need not repeat a partition column; when empty,
    rows are ordered by every non-JSON column in declaration order and uniqueness is not
    checked.
    """

    name: str
    columns: tuple[Column, ...]
    partition_columns: tuple[str, ...]
    natural_key: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_identifier(self.name)
        object.__setattr__(self, "columns", tuple(self.columns))
        # A bare string would otherwise be taken as one partition column per character.
        if isinstance(self.partition_columns, str):
            raise TypeError(
                f"table {self.name!r}: partition_columns must be a tuple of column names, "
                f"got the string {self.partition_columns!r}"
            )
        object.__setattr__(self, "partition_columns", tuple(self.partition_columns))
        object.__setattr__(self, "natural_key", tuple(self.natural_key))
        if not self.columns:
            raise ValueError(f"table {self.name!r} has no columns")
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table {self.name!r} repeats columns {duplicates}")
        if not self.partition_columns:
            raise ValueError(f"table {self.name!r} has no partition columns")
        repeated = sorted(
            {n for n in self.partition_columns if self.partition_columns.count(n) > 1}
        )
        if repeated:
            raise ValueError(f"table {self.name!r} repeats partition columns {repeated}")
        by_name = {c.name: c for c in self.columns}
        for name in self.partition_columns:
            partition = by_name.get(name)
            if partition is None:
                raise ValueError(f"table {self.name!r}: partition column {name!r} is not a column")
            if partition.type not in _PARTITION_TYPES or partition.nullable:
                raise ValueError(
                    f"table {self.name!r}: partition column {name!r} must be a non-nullable "
                    f"DATE or STRING, not {'nullable ' if partition.nullable else ''}"
                    f"{partition.type.value.upper()}"
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
    partition_columns=("partition_date", "aoi"),
    # One row per STAC item x AOI (the AOI is fixed within a partition).
    natural_key=("item_id",),
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
    partition_columns=("partition_date", "aoi"),
    # One row per day x AOI, i.e. per partition: the key keeps that checked.
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
    partition_columns=("partition_date", "aoi"),
    natural_key=("item_id",),
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
    partition_columns=("partition_date", "aoi"),
    natural_key=("item_id", "product"),
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
    partition_columns=("day", "aoi"),
    # One row per partition.
    natural_key=("aoi",),
)


# Mirror of the AOI registry: one partition, and one row, per AOI name.
AOIS = Table(
    name="aois",
    columns=(
        Column("name", ColumnType.STRING, nullable=False),
        Column("geometry", ColumnType.JSON, nullable=False),  # GeoJSON geometry
        Column("bbox", ColumnType.JSON, nullable=False),  # [west, south, east, north]
        Column("west", ColumnType.DOUBLE, nullable=False),
        Column("south", ColumnType.DOUBLE, nullable=False),
        Column("east", ColumnType.DOUBLE, nullable=False),
        Column("north", ColumnType.DOUBLE, nullable=False),
        Column("first_day", ColumnType.DATE, nullable=False),
        Column("created", ColumnType.TIMESTAMP, nullable=False),
        Column("origin", ColumnType.STRING, nullable=False),
        Column("retired_on", ColumnType.DATE),
    ),
    partition_columns=("name",),
    natural_key=("name",),
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


def _partition_value_text(value: Any) -> str:
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value
    return repr(value)


def format_partition(table: Table, partition: Sequence[Any]) -> str:
    """``partition_date=2020-02-19, aoi=aoi_a``: a partition as messages and logs name it."""
    if isinstance(partition, str | bytes) or not isinstance(partition, Sequence):
        return repr(partition)
    if len(partition) != len(table.partition_columns):
        return repr(tuple(partition))
    return ", ".join(
        f"{name}={_partition_value_text(value)}"
        for name, value in zip(table.partition_columns, partition, strict=True)
    )


def check_partition(table: Table, partition: Sequence[Any]) -> tuple[Any, ...]:
    """Return ``partition`` as a tuple if it holds one valid value per partition column.

    Raises TypeError or ValueError naming the table, the column and the value: a DATE column
    takes a ``datetime.date`` (not a ``datetime``), a STRING column a non-empty str.
    """
    columns = table.partition_columns
    # A str is a Sequence too: "2020-02-19" would otherwise be ten one-character values.
    if isinstance(partition, str | bytes) or not isinstance(partition, Sequence):
        raise TypeError(
            f"table {table.name!r}: partition must be a sequence of values for {columns}, "
            f"got {_type_name(partition)} {partition!r}"
        )
    values = tuple(partition)
    if len(values) != len(columns):
        raise ValueError(
            f"table {table.name!r}: partition {values!r} has {len(values)} values, "
            f"expected {len(columns)} for {columns}"
        )
    for name, value in zip(columns, values, strict=True):
        kind = table.column(name).type
        if kind is ColumnType.DATE:
            # datetime is a subclass of date; silently truncating a timestamp would hide a bug.
            if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
                raise TypeError(
                    f"table {table.name!r}: partition column {name!r} expects datetime.date, "
                    f"got {_type_name(value)} {value!r}"
                )
        elif not isinstance(value, str) or not value:
            raise TypeError(
                f"table {table.name!r}: partition column {name!r} expects a non-empty str, "
                f"got {_type_name(value)} {value!r}"
            )
    return values


def _same_partition_value(raw: Any, expected: Any) -> bool:
    if isinstance(expected, datetime.date):
        # datetime is a date subclass; it is refused here as encode_value refuses it.
        return (
            isinstance(raw, datetime.date)
            and not isinstance(raw, datetime.datetime)
            and raw == expected
        )
    return isinstance(raw, str) and raw == expected


def encode_rows(
    table: Table, partition: Sequence[Any], rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """Validate rows for ``replace_partition`` and return them as tuples in column order.

    ``partition`` holds one value per ``table.partition_columns``, in order (see
    ``check_partition``). Every row must belong to it (a missing partition column is filled
    in), may only use the table's columns, and must have a unique natural key.
    """
    values_of_partition = dict(
        zip(table.partition_columns, check_partition(table, partition), strict=True)
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
            if column.name in values_of_partition:
                expected = values_of_partition[column.name]
                if raw is None:
                    raw = expected
                elif not _same_partition_value(raw, expected):
                    # A row of another partition would survive the next replace of its own
                    # partition and be deleted by this one: refuse rather than corrupt both.
                    raise ValueError(
                        f"row {index}: {column.name}={_partition_value_text(raw)} does not "
                        f"match the partition being replaced ({column.name}="
                        f"{_partition_value_text(expected)})"
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
