"""TiTiler (``titiler.application``: its ``/cog`` and ``/stac`` endpoints) under uvicorn on
127.0.0.1, for ``make dev`` and the tests: the map behind the product items' tile links.
It serves :mod:`geospatial_pipeline.local.titiler_app`, TiTiler's application with a map
page that needs no internet access.

It reads what its process can read: local paths directly, ``s3://`` through the AWS and
GDAL variables of its environment: the one it inherits, plus ``env`` (for an
S3-compatible store, e.g. ``SeaweedS3Server.gdal_env_options()``).

``python -m geospatial_pipeline.local.titiler`` is the server process itself (uvicorn on
the app, after merging an ``--env-file`` into its environment).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.ports import LOOPBACK, free_port, wait_for_http
from geospatial_pipeline.local.process import (
    LocalServer,
    ServerProcess,
    check_loopback_only,
    make_workdir,
)

logger = logging.getLogger(__name__)

APP = "geospatial_pipeline.local.titiler_app:app"
SERVER_MODULE = "geospatial_pipeline.local.titiler"  # this module, run by main()
# Written (mode 0600) in the server's workdir for its process to read: the variables
# usually include credentials, which on the command line anyone could read with ps.
ENV_FILE = "titiler-env.json"
_START_ATTEMPTS = 3


class _PortInUseError(LocalServerError):
    """The chosen port was taken before uvicorn could bind it."""


class TiTilerServer(LocalServer):
    """``with TiTilerServer() as titiler:`` serves ``titiler.url`` until the block ends."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        *,
        startup_timeout_s: float = 60,
        inherit_output: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Nothing runs until :meth:`start`. ``port`` None picks a free one; ``workdir``
        (for the log) None is a temp dir removed on stop; ``inherit_output`` sends the
        server's output to this process's instead of ``titiler.log``; ``env`` is merged
        over the inherited environment of the server (its values win)."""
        bad = sorted(str(k) for k, v in (env or {}).items() if not isinstance(v, str))
        if bad:
            raise LocalServerError(f"TiTilerServer env values must be strings: {bad}")
        self._env = dict(env or {})
        self._requested_port = port
        self._port = port
        self._requested_workdir = workdir
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._startup_timeout_s = startup_timeout_s
        self._inherit_output = inherit_output
        self._proc: ServerProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalServerError("TiTilerServer has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash): the ``maps.titiler_url``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise LocalServerError("TiTilerServer has not been started")
        return self._workdir / "titiler.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LocalServerError("TiTilerServer is not running")
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self._proc is not None:
            raise LocalServerError("TiTilerServer is already started")
        self._workdir, self._owns_workdir = make_workdir(self._requested_workdir, "titiler-")
        for attempt in range(1, _START_ATTEMPTS + 1):
            if self._requested_port is None:
                self._port = free_port()
            try:
                self._launch()
                self._wait_until_ready()
            except _PortInUseError as exc:
                self._terminate()
                if attempt < _START_ATTEMPTS and self._requested_port is None:
                    # A probed free port can be taken before uvicorn binds it.
                    logger.warning("TiTiler port busy (attempt %d): %s", attempt, exc)
                    time.sleep(0.2)
                    continue
                self.stop()
                raise
            except BaseException:
                self.stop()
                raise
            logger.info("TiTiler ready at %s (pid %d)", self.url, self.pid)
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout_s: float = 10) -> None:
        self._terminate(timeout_s)
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._owns_workdir = False

    def _launch(self) -> None:
        args = [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        if self._env:
            args += ["--env-file", str(self._write_env_file())]
        self._proc = ServerProcess(
            "titiler",
            args,
            cwd=self.log_path.parent,
            log_path=None if self._inherit_output else self.log_path,
        )

    def _wait_until_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        try:
            wait_for_http(
                f"{self.url}/healthz",
                self._startup_timeout_s,
                is_alive=lambda: proc.poll() is None,
            )
        except LocalServerError:
            if proc.poll() is None:
                raise
            tail = proc.log_tail()
            error = (
                _PortInUseError if "address already in use" in tail.lower() else LocalServerError
            )
            raise error(f"TiTiler exited with code {proc.returncode}; log tail:\n{tail}") from None
        check_loopback_only("titiler", self.pid, self.port, lost_race=_PortInUseError)

    def _write_env_file(self) -> Path:
        path = self.log_path.parent / ENV_FILE
        path.unlink(missing_ok=True)
        # Created owner-only, never widened afterwards.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._env, fh)
        return path

    def _terminate(self, timeout_s: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop(timeout_s)
        # The server deletes it once read; not if it died before reading it.
        if self._workdir is not None:
            (self._workdir / ENV_FILE).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The server process: merge ``--env-file`` (a JSON object of strings, deleted once
    read) into the environment, then serve :data:`APP` with uvicorn."""
    parser = argparse.ArgumentParser(description="TiTiler (the local map server) under uvicorn")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--env-file", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.env_file is not None:
        values = json.loads(args.env_file.read_text())
        args.env_file.unlink(missing_ok=True)
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise SystemExit(f"{args.env_file}: expected a JSON object of strings")
        # Before uvicorn imports the app: GDAL, boto3 and TiTiler read these from here.
        os.environ.update(values)
    import uvicorn

    uvicorn.run(APP, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
