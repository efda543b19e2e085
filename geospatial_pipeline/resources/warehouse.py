"""Warehouse resources: one abstract interface, a DuckDB file and Snowflake behind it.

Assets annotate their parameter with ``WarehouseResource`` and never learn which backend they
got, so the same asset code writes to a local DuckDB file in development and to Snowflake in
production.
"""

from __future__ import annotations

import datetime
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, TypedDict, TypeVar

from dagster import ConfigurableResource, EnvVar, get_dagster_logger
from dagster_duckdb import DuckDBResource
from dagster_snowflake import SnowflakeResource

from geospatial_pipeline.config import (
    SNOWFLAKE_PRIVATE_KEY_ENV_VAR,
    SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR,
)
from geospatial_pipeline.errors import WarehouseError
from geospatial_pipeline.warehouse import sql
from geospatial_pipeline.warehouse.tables import ColumnType, Table, decode_row, encode_rows

_T = TypeVar("_T")

# Snowflake paramstyle (as configured on SnowflakeResource; None means the connector's default,
# pyformat) -> placeholder for the one bound partition value.
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


@contextmanager
def _transaction(execute: Callable[[str], object]) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK and re-raise; the caller's failure is the one reported."""

    def rollback(exc: BaseException) -> None:
        try:
            execute("ROLLBACK")
        except Exception as rollback_exc:
            exc.add_note(f"ROLLBACK also failed: {rollback_exc}")

    execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException as exc:
        rollback(exc)
        raise
    try:
        execute("COMMIT")
    except BaseException as exc:
        # Both engines abort a transaction whose COMMIT fails; the explicit ROLLBACK makes sure
        # the session is not left inside it for the connection's own commit-on-exit.
        rollback(exc)
        raise


class WarehouseResource(ConfigurableResource, ABC):
    """Abstract warehouse: tables replaced one partition (date) at a time.

    Row values are str, int, float, bool, None, ``datetime.date``, timezone-aware
    ``datetime.datetime`` (stored and returned in UTC) and, for JSON columns, any
    JSON-serializable value (written with sorted keys, so re-runs write identical text).
    Every failure is raised as ``WarehouseError``.

    The flows (validation, error wrapping, reads and counts) live here; a backend supplies
    its SQL dialect, connections, cursors, bind placeholder and the write itself.
    """

    _dialect: ClassVar[sql.Dialect]

    def replace_partition(
        self,
        table: Table,
        partition_value: datetime.date,
        rows: Sequence[Mapping[str, Any]],
    ) -> int:
        """In one transaction, delete the partition's rows and insert ``rows``; return the count.

        Rows may omit the partition column (it is filled in) but must not name another date.
        On failure nothing is changed and ``WarehouseError`` names the table and partition.
        """
        encoded = self._encode(table, partition_value, rows)
        written = self._run(
            f"replacing partition {partition_value.isoformat()} of table {table.name!r}",
            self._replace_work(table, partition_value, encoded),
        )
        get_dagster_logger().info(
            f"Replaced {table.name} partition {partition_value.isoformat()} with {written} rows "
            f"on {self.describe()}"
        )
        return written

    def fetch_partition(self, table: Table, partition_value: datetime.date) -> list[dict[str, Any]]:
        """Rows of one partition, ordered by the table's natural key, JSON columns parsed."""
        partition_value = _check_partition_value(partition_value)
        dialect, placeholder = self._dialect, self._placeholder()

        def work(conn: Any) -> list[dict[str, Any]]:
            with self._cursor(conn) as cur:
                cur.execute(sql.create_table_sql(table, dialect))
                cur.execute(
                    sql.select_partition_sql(table, dialect, placeholder), (partition_value,)
                )
                return [decode_row(table, row) for row in cur.fetchall()]

        return self._run(
            f"reading partition {partition_value.isoformat()} of table {table.name!r}", work
        )

    def count_rows(self, table: Table, partition_value: datetime.date | None = None) -> int:
        """Rows in the table, or in one partition."""
        if partition_value is not None:
            partition_value = _check_partition_value(partition_value)
        dialect, placeholder = self._dialect, self._placeholder()

        def work(conn: Any) -> int:
            with self._cursor(conn) as cur:
                cur.execute(sql.create_table_sql(table, dialect))
                if partition_value is None:
                    cur.execute(sql.count_rows_sql(table, dialect))
                else:
                    cur.execute(sql.count_rows_sql(table, dialect, placeholder), (partition_value,))
                (count,) = cur.fetchone()
                return int(count)

        return self._run(f"counting rows of table {table.name!r}", work)

    @property
    def kind(self) -> str:
        """Backend name, suitable for an asset's ``kinds`` (also its SQL dialect)."""
        return self._dialect

    @abstractmethod
    def describe(self) -> str:
        """Human-readable location of the warehouse; never contains credentials."""

    # ---------------------------------------------------------------- backend specifics
    @abstractmethod
    def _connection(self) -> AbstractContextManager[Any]:
        """A new connection, committed and closed when the ``with`` block ends."""

    @abstractmethod
    def _cursor(self, conn: Any) -> AbstractContextManager[Any]:
        """Something on ``conn`` with DB-API ``execute``/``fetchone``/``fetchall``."""

    @abstractmethod
    def _placeholder(self) -> sql.Placeholder:
        """The placeholder for one bound parameter in this backend's paramstyle."""

    @abstractmethod
    def _replace_work(
        self, table: Table, partition_value: datetime.date, encoded: Sequence[tuple[Any, ...]]
    ) -> Callable[[Any], int]:
        """The work of :meth:`replace_partition` on one connection, returning the row count.

        Whatever needs no connection is prepared before this returns, outside ``_run``.
        """

    def _encode(
        self, table: Table, partition_value: datetime.date, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        try:
            return encode_rows(table, partition_value, rows)
        except (TypeError, ValueError) as exc:
            raise WarehouseError(
                f"refusing to replace partition {_partition_text(partition_value)} of table "
                f"{table.name!r} on {self.describe()}: {exc}"
            ) from exc

    def _run(self, action: str, work: Callable[[Any], _T]) -> _T:
        """Run ``work`` on a fresh connection, turning any failure into ``WarehouseError``.

        The failure is caught inside the ``with`` so that the Dagster resources' connection
        context managers (which do not use try/finally) still close the connection; it is
        re-raised once the connection is gone.
        """
        failure: Exception | None = None
        results: list[_T] = []
        try:
            with self._connection() as conn:
                try:
                    results.append(work(conn))
                except Exception as exc:
                    failure = exc
        except Exception as exc:
            # Opening, committing or closing the connection failed; a failure of the work
            # itself (already rolled back) is the more useful one to report.
            failure = failure or exc
        if failure is not None:
            raise WarehouseError(f"{action} failed on {self.describe()}: {failure}") from failure
        return results[0]


def _partition_text(partition_value: object) -> str:
    if isinstance(partition_value, datetime.date):
        return partition_value.isoformat()
    return repr(partition_value)


def _check_partition_value(partition_value: object) -> datetime.date:
    if isinstance(partition_value, datetime.datetime) or not isinstance(
        partition_value, datetime.date
    ):
        raise WarehouseError(
            f"partition value must be a datetime.date, got {type(partition_value).__name__}"
        )
    return partition_value


def _check_written(table: Table, partition_value: datetime.date, found: int, expected: int) -> None:
    if found != expected:
        raise WarehouseError(
            f"table {table.name!r} partition {partition_value.isoformat()} holds {found} rows "
            f"after the write, expected {expected}"
        )


class DuckDBWarehouse(WarehouseResource):
    """Scene metadata in a local DuckDB file (the default for development and the demo)."""

    duckdb: DuckDBResource

    _dialect: ClassVar[sql.Dialect] = "duckdb"

    def describe(self) -> str:
        return f"duckdb:{self.duckdb.database}"

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        database = self.duckdb.database
        # DuckDBResource retries a failed open ten times with backoff (about 100 s), which is
        # what a missing parent directory would cost before failing; a local file's directory
        # is simply created. In-memory and URL-like databases (md:, s3://) are left alone.
        if database and not database.startswith(":") and ":" not in database.split("/", 1)[0]:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        with self.duckdb.get_connection() as conn:
            yield conn

    def _cursor(self, conn: Any) -> AbstractContextManager[Any]:
        # A DuckDB connection executes and fetches itself (``execute`` returns it).
        return nullcontext(conn)

    def _placeholder(self) -> sql.Placeholder:
        return "?"

    def _replace_work(
        self, table: Table, partition_value: datetime.date, encoded: Sequence[tuple[Any, ...]]
    ) -> Callable[[Any], int]:
        def work(conn: Any) -> int:
            conn.execute(sql.create_table_sql(table, "duckdb"))
            with _transaction(conn.execute):
                conn.execute(sql.delete_partition_sql(table, "duckdb", "?"), [partition_value])
                if encoded:
                    conn.executemany(sql.insert_values_sql(table, "duckdb"), encoded)
                # Cheap guard, inside the transaction, against a partial executemany.
                (found,) = conn.execute(
                    sql.count_rows_sql(table, "duckdb", "?"), [partition_value]
                ).fetchone()
                _check_written(table, partition_value, int(found), len(encoded))
            return len(encoded)

        return work


class SnowflakeAuth(TypedDict, total=False):
    """``SnowflakeResource`` authentication fields (each an ``EnvVar``, a ``str``)."""

    password: str
    private_key: str
    private_key_password: str


def snowflake_auth(
    password_env_var: str, environ: Mapping[str, str] | None = None
) -> SnowflakeAuth:
    """The authentication fields of a ``SnowflakeResource``, as ``EnvVar`` references.

    Key-pair authentication when ``SNOWFLAKE_PRIVATE_KEY`` is set (with
    ``SNOWFLAKE_PRIVATE_KEY_PASSWORD`` when that is set too, for an encrypted key), the
    password in ``password_env_var`` otherwise. Only the variables' names are decided here:
    Dagster reads the values when it initialises the resource in the process that connects,
    so no credential is part of the definitions, the run config or the resource's repr.
    """
    env = os.environ if environ is None else environ
    if env.get(SNOWFLAKE_PRIVATE_KEY_ENV_VAR):
        auth: SnowflakeAuth = {"private_key": EnvVar(SNOWFLAKE_PRIVATE_KEY_ENV_VAR)}
        if env.get(SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR):
            auth["private_key_password"] = EnvVar(SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR)
        return auth
    return {"password": EnvVar(password_env_var)}


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
        self, table: Table, partition_value: datetime.date, encoded: Sequence[tuple[Any, ...]]
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
                        sql.delete_partition_sql(table, "snowflake", placeholder),
                        (partition_value,),
                    )
                    if frame is not None:
                        cur.execute(sql.snowflake_insert_from_staging_sql(table, staging))
                    cur.execute(
                        sql.count_rows_sql(table, "snowflake", placeholder), (partition_value,)
                    )
                    (found,) = cur.fetchone()
                    _check_written(table, partition_value, int(found), len(encoded))
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
