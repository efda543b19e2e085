"""The Snowflake warehouse: its own module so that ``dagster_snowflake`` (about half of the
code location's import time) is imported only where the warehouse is Snowflake."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from typing import Any, ClassVar

from dagster_snowflake import SnowflakeResource

from geospatial_pipeline.errors import WarehouseError
from geospatial_pipeline.resources.warehouse import (
    WarehouseResource,
    _check_written,
    _transaction,
)
from geospatial_pipeline.warehouse import sql
from geospatial_pipeline.warehouse.tables import ColumnType, Table

# Snowflake paramstyle (as configured on SnowflakeResource; None means the connector's default,
# pyformat) -> placeholder style for the bound partition values.
# An identifier Snowflake takes without quotes (and then upper-cases).
_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

_SNOWFLAKE_PLACEHOLDERS: dict[str, sql.Placeholder] = {
    "pyformat": "%s",
    "format": "%s",
    "qmark": "?",
    "numeric": ":1",
}

# pandas dtypes for the Snowflake staging frame. Nullable extension dtypes keep NULL distinct
# from NaN/0/False in the parquet file write_pandas uploads.
_STAGING_DTYPES: dict[ColumnType, str] = {
    ColumnType.STRING: "object",
    ColumnType.BIGINT: "Int64",
    ColumnType.DOUBLE: "Float64",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: "object",
    ColumnType.TIMESTAMP: "object",
    ColumnType.JSON: "object",
}


class SnowflakeWarehouse(WarehouseResource):
    """Scene metadata in Snowflake through ``dagster_snowflake.SnowflakeResource``.

    The nested resource must use the default ``snowflake.connector`` connector (write_pandas
    needs it). Build it with the ``EnvVar`` fields of :func:`snowflake_auth` (password or
    key pair) where the definitions are assembled; nothing here reads or logs credentials.
    """

    snowflake: SnowflakeResource

    _dialect: ClassVar[sql.Dialect] = "snowflake"

    def __repr_args__(self) -> Any:
        # Once Dagster has initialised the resource, the nested SnowflakeResource holds the
        # resolved password or private key: the default repr (and str) would print it.
        yield "snowflake", self.describe()

    def describe(self) -> str:
        database = self.snowflake.database or "<default database>"
        schema = self.snowflake.schema_ or "<default schema>"
        return f"snowflake:{self.snowflake.account}/{database}.{schema}"

    def table_name(self, table: Table) -> str:
        # Unquoted identifiers resolve upper-cased, as the tables are created
        # (sql.quote_identifier); the parts left to the user's defaults are left out.
        parts = [self.snowflake.database, self.snowflake.schema_, table.name]
        return ".".join(_as_resolved(part) for part in parts if part)

    def _placeholder(self) -> sql.Placeholder:
        style = (self.snowflake.paramstyle or "pyformat").lower()
        return _SNOWFLAKE_PLACEHOLDERS[style]

    def _connection(self) -> AbstractContextManager[Any]:
        if self.snowflake.connector is not None:
            raise WarehouseError(
                f"SnowflakeWarehouse needs the default snowflake.connector connector, "
                f"got connector={self.snowflake.connector!r}"
            )
        return self.snowflake.get_connection()

    def _cursor(self, conn: Any) -> AbstractContextManager[Any]:
        return closing(conn.cursor())

    def _replace_work(
        self, table: Table, partition: tuple[Any, ...], encoded: Sequence[tuple[Any, ...]]
    ) -> Callable[[Any], int]:
        frame = _staging_frame(table, encoded) if encoded else None
        placeholder = self._placeholder()
        # Unique per call: temporary tables are session-scoped, but a pooled or reused session
        # must never see another write's staging rows.
        staging = f"{table.name}_staging_{uuid.uuid4().hex}"

        def work(conn: Any) -> int:
            # Called as a module attribute (never bound by name at import time) so that
            # fakesnow's patch of snowflake.connector.pandas_tools.write_pandas applies without
            # extra_targets; imported lazily because it pulls in pyarrow.
            from snowflake.connector import pandas_tools

            with self._cursor(conn) as cur:
                # Snowflake commits any open transaction before every DDL statement (CREATE
                # TABLE, CREATE TEMPORARY TABLE, and the temporary stage write_pandas creates),
                # so all of those run before BEGIN; the transaction holds only DELETE + INSERT.
                cur.execute(sql.create_table_sql(table, "snowflake"))
                if frame is not None:
                    cur.execute(sql.snowflake_staging_table_sql(table, staging))
                    success, _chunks, loaded, _output = pandas_tools.write_pandas(
                        conn, frame, staging.upper(), quote_identifiers=False
                    )
                    if not success or loaded != len(frame):
                        raise WarehouseError(
                            f"staging load wrote {loaded} of {len(frame)} rows (success={success})"
                        )
                # With autocommit disabled the COPY above opened a transaction; close it so
                # BEGIN starts a transaction that holds only this partition's DELETE + INSERT.
                conn.commit()
                with _transaction(cur.execute):
                    cur.execute(
                        sql.delete_partition_sql(table, "snowflake", placeholder), partition
                    )
                    if frame is not None:
                        cur.execute(sql.snowflake_insert_from_staging_sql(table, staging))
                    cur.execute(sql.count_rows_sql(table, "snowflake", placeholder), partition)
                    (found,) = cur.fetchone()
                    _check_written(table, partition, int(found), len(encoded))
                if frame is not None:
                    # Outside the transaction (DDL); the session's end would drop it anyway.
                    cur.execute(sql.drop_table_sql(staging, "snowflake"))
                return len(encoded)

        return work


def _staging_frame(table: Table, encoded: Sequence[tuple[Any, ...]]) -> Any:
    """DataFrame for write_pandas: lower-case column names, values in staging form."""
    import pandas as pd

    data = {}
    for index, column in enumerate(table.columns):
        values = [sql.snowflake_stage_text(column.type, row[index]) for row in encoded]
        data[column.name] = pd.Series(values, dtype=_STAGING_DTYPES[column.type])
    return pd.DataFrame(data)


def _as_resolved(identifier: str) -> str:
    """How Snowflake resolves a database or schema name given without quotes."""
    return identifier.upper() if _UNQUOTED.fullmatch(identifier) else identifier
