"""TiTiler (``titiler.application``: its ``/cog`` and ``/stac`` endpoints) under uvicorn on
127.0.0.1, for ``make dev`` and the tests: the map behind the product items' tile links.
It serves :mod:`geospatial_pipeline.local.titiler_app`, TiTiler's application with a map
page that needs no internet access.

It reads what its process can read: local paths directly, ``s3://`` through the AWS and
GDAL variables of its environment: the one it inherits, plus ``env`` (for an
S3-compatible store, e.g. ``SeaweedS3Server.gdal_env_options()``).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.ports import LOOPBACK, free_port, wait_for_http
from geospatial_pipeline.local.process import (
    ProcessServer,
    ServerProcess,
    check_loopback_only,
    make_workdir,
)

logger = logging.getLogger(__name__)

APP = "geospatial_pipeline.local.titiler_app:app"
_START_ATTEMPTS = 3


class _PortInUseError(LocalServerError):
    """The chosen port was taken before uvicorn could bind it."""


class TiTilerServer(ProcessServer):
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
    def log_path(self) -> Path:
        if self._workdir is None:
            raise LocalServerError("TiTilerServer has not been started")
        return self._workdir / "titiler.log"

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
            "uvicorn",
            APP,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self._proc = ServerProcess(
            "titiler",
            args,
            cwd=self.log_path.parent,
            log_path=None if self._inherit_output else self.log_path,
            env=self._env,
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

    def _terminate(self, timeout_s: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop(timeout_s)
