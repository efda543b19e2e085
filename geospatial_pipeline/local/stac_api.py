"""stac-fastapi-pgstac (uvicorn) on 127.0.0.1 over a pgstac database, for tests and dev.

The API reads its connection from PG* environment variables; the server gets them in its
own environment (never on its command line, where ``ps`` would show the password).

    python -m geospatial_pipeline.local.stac_api --dsn postgresql://postgres@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Self

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from geospatial_pipeline.config import PGSTAC_PASSWORD_ENV_VAR
from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.ports import LOOPBACK, free_port, wait_for_http
from geospatial_pipeline.local.process import LocalServer, check_loopback_only, make_workdir

logger = logging.getLogger(__name__)

APP = "stac_fastapi.pgstac.app:create_app"
_START_ATTEMPTS = 3


class _PortTaken(LocalServerError):
    pass


def api_environment(conninfo: str) -> dict[str, str]:
    """The PG* variables stac-fastapi-pgstac connects with, from a libpq DSN."""
    parts = conninfo_to_dict(conninfo)
    missing = [k for k in ("host", "dbname") if not parts.get(k)]
    if missing:
        raise LocalServerError(f"pgstac DSN has no {', '.join(missing)}")
    return {
        "PGHOST": str(parts["host"]),
        "PGPORT": str(parts.get("port") or 5432),
        "PGUSER": str(parts.get("user") or "postgres"),
        "PGPASSWORD": str(parts.get("password") or ""),
        "PGDATABASE": str(parts["dbname"]),
    }


class PgstacApiServer(LocalServer):
    """stac-fastapi-pgstac with every extension it ships (query, filter, sort, fields,
    transactions...) on a free loopback port::

        with PgstacApiServer(conninfo) as api:
            pystac_client.Client.open(api.url)
    """

    def __init__(
        self,
        conninfo: str,
        port: int | None = None,
        workdir: Path | None = None,
        *,
        startup_timeout_s: float = 60,
    ) -> None:
        self._env = api_environment(conninfo)
        self._requested_port = port
        self._port: int | None = port
        self._requested_workdir = workdir
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise LocalServerError("PgstacApiServer has not been started")
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise LocalServerError("PgstacApiServer has not been started")
        return self._workdir / "stac-fastapi.log"

    def start(self) -> Self:
        if self._proc is not None:
            raise LocalServerError("PgstacApiServer is already started")
        self._workdir, self._owns_workdir = make_workdir(self._requested_workdir, "stac-api-")
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._port = self._requested_port or free_port()
            try:
                self._launch()
                wait_for_http(
                    f"{self.url}/_mgmt/ping",
                    self._startup_timeout_s,
                    is_alive=lambda: self._proc is not None and self._proc.poll() is None,
                )
                assert self._proc is not None
                check_loopback_only(
                    "stac-fastapi", self._proc.pid, self._port, lost_race=_PortTaken
                )
            except _PortTaken:
                self._terminate()
                if attempt < _START_ATTEMPTS and self._requested_port is None:
                    continue
                self.stop()
                raise
            except BaseException as exc:
                tail = self._log_tail()
                self.stop()
                if isinstance(exc, LocalServerError):
                    raise LocalServerError(f"{exc}; stac-fastapi log:\n{tail}") from None
                raise
            logger.info("stac-fastapi-pgstac ready at %s (pid %d)", self.url, self._proc.pid)
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout_s: float = 10) -> None:
        self._terminate(timeout_s)
        if self._owns_workdir and self._workdir is not None:
            import shutil

            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def wait(self) -> int:
        if self._proc is None:
            raise LocalServerError("PgstacApiServer is not running")
        return self._proc.wait()

    def _launch(self) -> None:
        assert self._workdir is not None and self._port is not None
        self._log = self.log_path.open("ab")
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            APP,
            "--factory",
            "--host",
            LOOPBACK,
            "--port",
            str(self._port),
            "--log-level",
            "warning",
        ]
        # Only what the API needs on top of a clean environment: a PG* variable of the
        # caller's shell must not redirect it to another database.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | self._env
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
            env=env,
            start_new_session=True,
        )

    def _terminate(self, timeout_s: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except (OSError, LocalServerError):
            return "<no log>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="pgstac database, without the password")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument(
        "--migrate", action="store_true", help="pypgstac migrate the database first"
    )
    args = parser.parse_args(argv)
    password = os.environ.get(PGSTAC_PASSWORD_ENV_VAR, "")
    conninfo = make_conninfo(args.dsn, password=password) if password else args.dsn
    if args.migrate:
        from geospatial_pipeline.stac.pgstac import migrate

        print(f"pgstac {migrate(conninfo)}")  # noqa: T201 - CLI output
    with PgstacApiServer(conninfo, port=args.port) as api:
        print(f"STAC API: {api.url}", flush=True)  # noqa: T201 - CLI output
        try:
            return api.wait()
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
