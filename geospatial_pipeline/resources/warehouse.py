"""Warehouse resources: one abstract interface, a DuckDB file and Snowflake behind it.

Assets annotate their parameter with ``WarehouseResource`` and never learn which backend they
got, so the same asset code writes to a local DuckDB file in development and to Snowflake in
production.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, TypedDict, TypeVar

from dagster import ConfigurableResource, EnvVar, get_dagster_logger
from dagster_duckdb import DuckDBResource

from geospatial_pipeline.config import (
    SNOWFLAKE_PRIVATE_KEY_ENV_VAR,
    SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR,
)
from geospatial_pipeline.errors import WarehouseError
from geospatial_pipeline.warehouse import sql
from geospatial_pipeline.warehouse.tables import (
    Table,
    check_partition,
    decode_row,
    encode_rows,
    format_partition,
)

_T = TypeVar("_T")


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
    """Abstract warehouse: tables replaced one partition at a time.

    A partition is one value per ``Table.partition_columns``, in that order, e.g.
    ``(datetime.date(2020, 2, 19), "aoi_a")`` for a table partitioned by
    ``("partition_date", "aoi")``; replacing it touches no row of any other partition.

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
        partition: Sequence[Any],
        rows: Sequence[Mapping[str, Any]],
    ) -> int:
        """In one transaction, delete the partition's rows and insert ``rows``; return the count.

        Rows may omit the partition columns (they are filled in) but must not name another
        partition's value. On failure nothing is changed and ``WarehouseError`` names the
        table and partition.
        """
        key = _check_partition(table, partition)
        encoded = self._encode(table, key, rows)
        written = self._run(
            f"replacing partition {format_partition(table, key)} of table {table.name!r}",
            self._replace_work(table, key, encoded),
        )
        get_dagster_logger().info(
            f"Replaced {table.name} partition {format_partition(table, key)} with {written} rows "
            f"on {self.describe()}"
        )
        return written

    def fetch_partition(self, table: Table, partition: Sequence[Any]) -> list[dict[str, Any]]:
        """Rows of one partition, ordered by the table's natural key, JSON columns parsed."""
        key = _check_partition(table, partition)
        dialect, placeholder = self._dialect, self._placeholder()

        def work(conn: Any) -> list[dict[str, Any]]:
            with self._cursor(conn) as cur:
                cur.execute(sql.create_table_sql(table, dialect))
                cur.execute(sql.select_partition_sql(table, dialect, placeholder), key)
                return [decode_row(table, row) for row in cur.fetchall()]

        return self._run(
            f"reading partition {format_partition(table, key)} of table {table.name!r}", work
        )

    def fetch_range(
        self, table: Table, aoi: str, first_day: dt.date, last_day: dt.date
    ) -> list[dict[str, Any]]:
        """One AOI's rows of the days ``first_day`` to ``last_day`` (both included), in one
        query, ordered by day then the table's natural key; JSON columns parsed. For tables
        partitioned by ``("partition_date", "aoi")``."""
        if table.partition_columns != ("partition_date", "aoi"):
            raise WarehouseError(
                f"fetch_range reads tables partitioned by (partition_date, aoi); table "
                f"{table.name!r} is partitioned by {table.partition_columns}"
            )
        _check_partition(table, (first_day, aoi))
        _check_partition(table, (last_day, aoi))
        if last_day < first_day:
            raise WarehouseError(
                f"fetch_range of table {table.name!r}: last_day {last_day.isoformat()} is "
                f"before first_day {first_day.isoformat()}"
            )
        dialect, statement = self._dialect, _range_sql(table, self._dialect, self._placeholder())

        def work(conn: Any) -> list[dict[str, Any]]:
            with self._cursor(conn) as cur:
                cur.execute(sql.create_table_sql(table, dialect))
                cur.execute(statement, (aoi, first_day, last_day))
                return [decode_row(table, row) for row in cur.fetchall()]

        return self._run(
            f"reading {aoi!r} from {first_day.isoformat()} to {last_day.isoformat()} of "
            f"table {table.name!r}",
            work,
        )

    @abstractmethod
    def table_name(self, table: Table) -> str:
        """``table``'s fully qualified name as the warehouse itself spells it (what
        ``dagster/table_name`` expects, and what a person pastes into a query)."""

    def count_rows(self, table: Table, partition: Sequence[Any] | None = None) -> int:
        """Rows in the table, or in one partition."""
        key = None if partition is None else _check_partition(table, partition)
        dialect, placeholder = self._dialect, self._placeholder()

        def work(conn: Any) -> int:
            with self._cursor(conn) as cur:
                cur.execute(sql.create_table_sql(table, dialect))
                if key is None:
                    cur.execute(sql.count_rows_sql(table, dialect))
                else:
                    cur.execute(sql.count_rows_sql(table, dialect, placeholder), key)
                (count,) = cur.fetchone()
                return int(count)

        where = "" if key is None else f" in partition {format_partition(table, key)}"
        return self._run(f"counting rows of table {table.name!r}{where}", work)

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
        """The placeholder style for bound parameters in this backend's paramstyle."""

    @abstractmethod
    def _replace_work(
        self, table: Table, partition: tuple[Any, ...], encoded: Sequence[tuple[Any, ...]]
    ) -> Callable[[Any], int]:
        """The work of :meth:`replace_partition` on one connection, returning the row count.

        ``partition`` is already checked. Whatever needs no connection is prepared before
        this returns, outside ``_run``.
        """

    def _encode(
        self, table: Table, partition: tuple[Any, ...], rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        try:
            return encode_rows(table, partition, rows)
        except (TypeError, ValueError) as exc:
            raise WarehouseError(
                f"refusing to replace partition {format_partition(table, partition)} of table "
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


def _check_partition(table: Table, partition: Sequence[Any]) -> tuple[Any, ...]:
    try:
        return check_partition(table, partition)
    except (TypeError, ValueError) as exc:
        raise WarehouseError(str(exc)) from exc


def _range_sql(table: Table, dialect: sql.Dialect, placeholder: sql.Placeholder) -> str:
    """SELECT of one AOI's days between two dates; binds (aoi, first day, last day)."""
    binds = [":1", ":2", ":3"] if placeholder == ":1" else [placeholder] * 3
    q = functools.partial(sql.quote_identifier, dialect=dialect)
    columns = ", ".join(q(c.name) for c in table.columns)
    order = ", ".join(q(name) for name in ("partition_date", *table.order_by))
    return (
        f"SELECT {columns} FROM {q(table.name)} WHERE {q('aoi')} = {binds[0]} AND "
        f"{q('partition_date')} BETWEEN {binds[1]} AND {binds[2]} ORDER BY {order}"
    )


def _check_written(table: Table, partition: tuple[Any, ...], found: int, expected: int) -> None:
    if found != expected:
        raise WarehouseError(
            f"table {table.name!r} partition {format_partition(table, partition)} holds {found} "
            f"rows after the write, expected {expected}"
        )


class DuckDBWarehouse(WarehouseResource):
    """Scene metadata in a local DuckDB file (the default for development and the demo)."""

    duckdb: DuckDBResource

    _dialect: ClassVar[sql.Dialect] = "duckdb"

    def describe(self) -> str:
        return f"duckdb:{self.duckdb.database}"

    def table_name(self, table: Table) -> str:
        # DuckDB names an attached file's catalog after its stem; in-memory is "memory".
        database = self.duckdb.database
        catalog = Path(database).stem if database and database != ":memory:" else "memory"
        return f"{catalog}.main.{table.name}"

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
        self, table: Table, partition: tuple[Any, ...], encoded: Sequence[tuple[Any, ...]]
    ) -> Callable[[Any], int]:
        def work(conn: Any) -> int:
            conn.execute(sql.create_table_sql(table, "duckdb"))
            with _transaction(conn.execute):
                conn.execute(sql.delete_partition_sql(table, "duckdb", "?"), list(partition))
                if encoded:
                    conn.executemany(sql.insert_values_sql(table, "duckdb"), encoded)
                # Cheap guard, inside the transaction, against a partial executemany.
                (found,) = conn.execute(
                    sql.count_rows_sql(table, "duckdb", "?"), list(partition)
                ).fetchone()
                _check_written(table, partition, int(found), len(encoded))
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
