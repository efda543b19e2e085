"""SQL text for each warehouse dialect.

Only identifiers from ``Table`` schemas (validated by ``tables.validate_identifier``) are spliced
into statements; every value travels as a bind parameter or through ``write_pandas``.

Snowflake identifiers are emitted quoted *and upper-cased*, which is exactly what an unquoted
identifier folds to: users can query ``scene_metadata.item_id`` without quotes, and reserved
words can never break a statement.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from geospatial_pipeline.warehouse.tables import ColumnType, Table, validate_identifier

Dialect = Literal["duckdb", "snowflake"]
DIALECTS: tuple[Dialect, ...] = ("duckdb", "snowflake")

# Placeholder style for the partition values a statement binds, one per partition column in
# ``Table.partition_columns`` order. DuckDB uses qmark; the Snowflake connector's default
# paramstyle is pyformat ("%s"), but a SnowflakeResource may configure another one, so the
# caller picks the matching style. ":1" stands for numeric style: ":1", ":2", ...
Placeholder = Literal["?", "%s", ":1"]

_TYPES: dict[Dialect, dict[ColumnType, str]] = {
    "duckdb": {
        ColumnType.STRING: "VARCHAR",
        ColumnType.BIGINT: "BIGINT",
        ColumnType.DOUBLE: "DOUBLE",
        ColumnType.BOOLEAN: "BOOLEAN",
        ColumnType.DATE: "DATE",
        ColumnType.TIMESTAMP: "TIMESTAMPTZ",
        ColumnType.JSON: "JSON",
    },
    "snowflake": {
        ColumnType.STRING: "VARCHAR",
        ColumnType.BIGINT: "BIGINT",
        ColumnType.DOUBLE: "DOUBLE",
        ColumnType.BOOLEAN: "BOOLEAN",
        ColumnType.DATE: "DATE",
        ColumnType.TIMESTAMP: "TIMESTAMP_TZ",
        ColumnType.JSON: "VARIANT",
    },
}

# Snowflake staging columns. Dates, timestamps and JSON are staged as text: parquet timestamps
# written by write_pandas are only read correctly with USE_LOGICAL_TYPE (connector issue 1687),
# and VARIANT cannot be loaded from a plain string column without PARSE_JSON anyway.
_SNOWFLAKE_STAGING_TYPES: dict[ColumnType, str] = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.BIGINT: "BIGINT",
    ColumnType.DOUBLE: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "VARCHAR",
    ColumnType.TIMESTAMP: "VARCHAR",
    ColumnType.JSON: "VARCHAR",
}

# Text formats of staged values; the Python side must produce exactly these
# (see ``snowflake_stage_text``). An explicit format avoids depending on the account's
# TIMESTAMP_INPUT_FORMAT / DATE_INPUT_FORMAT parameters.
SNOWFLAKE_DATE_FORMAT = "YYYY-MM-DD"
SNOWFLAKE_TIMESTAMP_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.FF6TZH:TZM'


def snowflake_stage_text(column_type: ColumnType, value: Any) -> Any:
    """Staged form of a canonical value (see ``tables.encode_value``) for its staging column.

    Timestamps are already UTC, so the offset is written literally: ``%z`` would give
    ``+0000``, which TZH:TZM does not accept. Microseconds are always written because FF6
    expects exactly six digits (``isoformat`` drops them when zero).
    """
    if value is None:
        return None
    # Formatted by hand because strftime("%Y") does not zero-pad years before 1000 on glibc.
    if column_type is ColumnType.TIMESTAMP:
        if not isinstance(value, datetime.datetime) or value.utcoffset() != datetime.timedelta(0):
            raise ValueError("timestamps must be normalized to UTC before staging")
        return (
            f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}+00:00"
        )
    if column_type is ColumnType.DATE:
        if not isinstance(value, datetime.date):
            raise ValueError("dates must be datetime.date before staging")
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    return value


def _check_dialect(dialect: str) -> Dialect:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {DIALECTS}")
    return dialect


def _check_placeholder(placeholder: str) -> str:
    if placeholder not in ("?", "%s", ":1"):
        raise ValueError(f"unsupported placeholder {placeholder!r}")
    return placeholder


def quote_identifier(name: str, dialect: Dialect) -> str:
    validate_identifier(name)
    if _check_dialect(dialect) == "snowflake":
        return f'"{name.upper()}"'
    return f'"{name}"'


def column_type_sql(column_type: ColumnType, dialect: Dialect) -> str:
    return _TYPES[_check_dialect(dialect)][ColumnType(column_type)]


def _column_list(table: Table, dialect: Dialect) -> str:
    return ", ".join(quote_identifier(c.name, dialect) for c in table.columns)


def _partition_predicate(table: Table, dialect: Dialect, placeholder: str) -> str:
    """``"c1" = ? AND "c2" = ?``: binds the partition's values in partition-column order."""
    style = _check_placeholder(placeholder)
    return " AND ".join(
        f"{quote_identifier(name, dialect)} = {f':{position}' if style == ':1' else style}"
        for position, name in enumerate(table.partition_columns, start=1)
    )


def create_table_sql(table: Table, dialect: Dialect) -> str:
    columns = ", ".join(
        f"{quote_identifier(c.name, dialect)} {column_type_sql(c.type, dialect)}"
        + ("" if c.nullable else " NOT NULL")
        for c in table.columns
    )
    return f"CREATE TABLE IF NOT EXISTS {quote_identifier(table.name, dialect)} ({columns})"


def delete_partition_sql(table: Table, dialect: Dialect, placeholder: Placeholder = "?") -> str:
    return (
        f"DELETE FROM {quote_identifier(table.name, dialect)} "
        f"WHERE {_partition_predicate(table, dialect, placeholder)}"
    )


def insert_values_sql(table: Table, dialect: Dialect) -> str:
    """Row-at-a-time INSERT with qmark parameters in column order (DuckDB executemany)."""
    if _check_dialect(dialect) != "duckdb":
        # Snowflake loads go through write_pandas + insert_from_staging_sql: executemany there
        # is one round trip per row, or client-side literal rewriting.
        raise ValueError("insert_values_sql is for duckdb; use the staging path for snowflake")
    placeholders = ", ".join("?" for _ in table.columns)
    return (
        f"INSERT INTO {quote_identifier(table.name, dialect)} ({_column_list(table, dialect)}) "
        f"VALUES ({placeholders})"
    )


def select_partition_sql(table: Table, dialect: Dialect, placeholder: Placeholder = "?") -> str:
    order = ", ".join(quote_identifier(name, dialect) for name in table.order_by)
    return (
        f"SELECT {_column_list(table, dialect)} FROM {quote_identifier(table.name, dialect)} "
        f"WHERE {_partition_predicate(table, dialect, placeholder)} ORDER BY {order}"
    )


def count_rows_sql(table: Table, dialect: Dialect, placeholder: Placeholder | None = None) -> str:
    """COUNT(*) of the whole table, or of one partition when a placeholder style is given."""
    sql = f"SELECT COUNT(*) FROM {quote_identifier(table.name, dialect)}"
    if placeholder is not None:
        sql += f" WHERE {_partition_predicate(table, dialect, placeholder)}"
    return sql


def drop_table_sql(name: str, dialect: Dialect) -> str:
    return f"DROP TABLE IF EXISTS {quote_identifier(name, dialect)}"


def snowflake_staging_table_sql(table: Table, staging_name: str) -> str:
    """Session-scoped staging table that write_pandas loads, typed for ``snowflake_stage_text``.

    No NOT NULL constraints: nullability is enforced by the target table on INSERT ... SELECT.
    """
    columns = ", ".join(
        f"{quote_identifier(c.name, 'snowflake')} {_SNOWFLAKE_STAGING_TYPES[c.type]}"
        for c in table.columns
    )
    return f"CREATE TEMPORARY TABLE {quote_identifier(staging_name, 'snowflake')} ({columns})"


def _snowflake_from_staging(column_type: ColumnType, quoted: str) -> str:
    if column_type is ColumnType.DATE:
        return f"TO_DATE({quoted}, '{SNOWFLAKE_DATE_FORMAT}')"
    if column_type is ColumnType.TIMESTAMP:
        return f"TO_TIMESTAMP_TZ({quoted}, '{SNOWFLAKE_TIMESTAMP_FORMAT}')"
    if column_type is ColumnType.JSON:
        return f"PARSE_JSON({quoted})"
    return quoted


def snowflake_insert_from_staging_sql(table: Table, staging_name: str) -> str:
    expressions = ", ".join(
        _snowflake_from_staging(c.type, quote_identifier(c.name, "snowflake"))
        for c in table.columns
    )
    return (
        f"INSERT INTO {quote_identifier(table.name, 'snowflake')} "
        f"({_column_list(table, 'snowflake')}) "
        f"SELECT {expressions} FROM {quote_identifier(staging_name, 'snowflake')}"
    )
