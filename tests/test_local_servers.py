"""The local helper servers, as real processes: SeaweedFS S3 and the rustac STAC API.

Each server starts once for this module. The last test of each group stops the shared
server on purpose (to check the shutdown), so keep those tests last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import rasterio
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from rasterio.transform import Affine
from rasterio.windows import Window

from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.local.ports import process_group_pids
from geospatial_pipeline.local.seaweed import SeaweedS3Server
from geospatial_pipeline.local.stac_server import RustacStacServer
from tests.geotiff import geotiff_bytes

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EARTH_SEARCH = SHARED_DATA / "earth-search-v1"
SCL_COG = SHARED_DATA / "sentinel-2-cogs" / "S2A_29RKH_20200219_0_L2A" / "SCL.tif"
COLLECTION_ID = "sentinel-2-l2a"
BUCKET = "local-servers-test"


def require_shared_data() -> None:
    if not EARTH_SEARCH.is_dir():
        pytest.skip(f"real Earth Search recordings not found at {SHARED_DATA}")


# ---------------------------------------------------------------- /proc/net/tcp reader
# Deliberately independent of geospatial_pipeline.local.ports: the tests should not
# trust the code that the servers use to check themselves.
def _proc_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    import ipaddress

    return str(ipaddress.IPv6Address(words))


def tcp_listeners() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this host (Linux)."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp")
    assert sys.byteorder == "little", "the address decoding below assumes little-endian"
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A":  # LISTEN
                continue
            addr, port = cols[1].split(":")
            found.append((_proc_address(addr), int(port, 16)))
    return found


def assert_loopback_only(ports: set[int]) -> None:
    listeners = [(a, p) for a, p in tcp_listeners() if p in ports]
    assert {p for _, p in listeners} == ports, f"not all ports listen: {listeners}"
    exposed = [(a, p) for a, p in listeners if a not in ("127.0.0.1", "::1")]
    assert not exposed, f"listening beyond loopback: {exposed}"


def listening_of(pids: list[int]) -> list[tuple[str, int]]:
    """Listening TCP sockets owned by ``pids``: their socket inodes matched in /proc."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                addr, port = cols[1].split(":")
                found.append((_proc_address(addr), int(port, 16)))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module", autouse=True)
def no_proxy_env() -> Iterator[None]:
    """Clients in these tests talk to 127.0.0.1; a CI proxy must not intercept them."""
    mp = pytest.MonkeyPatch()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        mp.delenv(name, raising=False)
        mp.delenv(name.lower(), raising=False)
    try:
        yield
    finally:
        mp.undo()


# ======================================================================== SeaweedFS S3
@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3Server]:
    server = SeaweedS3Server()
    try:
        server.start()
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def small_geotiff() -> tuple[bytes, np.ndarray]:
    """A tiled 256x256 uint16 GeoTIFF whose pixel values encode their row and column."""
    rows, cols = np.mgrid[0:256, 0:256]
    data = (rows * 256 + cols).astype("uint16")
    body = geotiff_bytes(
        data,
        crs="EPSG:32632",
        transform=Affine(10, 0, 500_000, 0, -10, 5_300_000),
        nodata=None,
        blocksize=64,
    )
    return body, data


def upload_small_geotiff(s3: SeaweedS3Server) -> tuple[str, np.ndarray]:
    """Put a :func:`small_geotiff` under a fresh key; return the key and its pixels."""
    body, data = small_geotiff()
    key = f"gdal/{uuid.uuid4().hex}/small.tif"
    s3.boto3_client().put_object(Bucket=BUCKET, Key=key, Body=body)
    return key, data


def test_s3_round_trip(s3: SeaweedS3Server) -> None:
    client = s3.boto3_client()
    prefix = f"round-trip-{uuid.uuid4().hex}/"
    payloads = {f"{prefix}a.bin": os.urandom(1024), f"{prefix}sub/b.txt": b"hello"}
    for key, body in payloads.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)

    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(payloads)
    for key, body in payloads.items():
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    # Range reads are what GDAL relies on.
    ranged = client.get_object(Bucket=BUCKET, Key=f"{prefix}a.bin", Range="bytes=10-19")
    assert ranged["Body"].read() == payloads[f"{prefix}a.bin"][10:20]

    client.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in payloads]})
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount") == 0
    with pytest.raises(ClientError):
        client.head_object(Bucket=BUCKET, Key=f"{prefix}a.bin")


def test_s3_create_bucket_is_idempotent(s3: SeaweedS3Server) -> None:
    s3.create_bucket(BUCKET)
    names = [b["Name"] for b in s3.boto3_client().list_buckets()["Buckets"]]
    assert names.count(BUCKET) == 1


def test_s3_rejects_wrong_credentials(s3: SeaweedS3Server) -> None:
    intruder = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id="not-" + s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError) as excinfo:
        intruder.list_objects_v2(Bucket=BUCKET)
    assert excinfo.value.response["Error"]["Code"] in ("InvalidAccessKeyId", "AccessDenied")


def test_s3_env_configures_plain_boto3(
    s3: SeaweedS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token left over from a real AWS login must not leak into requests here.
    monkeypatch.setenv("AWS_SESSION_TOKEN", "ambient-token")
    env = s3.env()
    assert env["AWS_ENDPOINT_URL"] == s3.endpoint_url
    assert env["AWS_REGION"] == "us-east-1"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")  # everything from the environment
    key = f"env/{uuid.uuid4().hex}.txt"
    client.put_object(Bucket=BUCKET, Key=key, Body=b"via env")
    assert s3.boto3_client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"via env"


def test_gdal_reads_window_with_env_options(
    s3: SeaweedS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, data = upload_small_geotiff(s3)

    options = s3.gdal_env_options()
    assert options["AWS_S3_ENDPOINT"] == f"127.0.0.1:{s3.s3_port}"
    assert options["AWS_HTTPS"] == "NO"
    assert options["AWS_VIRTUAL_HOSTING"] == "FALSE"
    # As environment variables, the way a child process (or the pipeline) gets them.
    monkeypatch.setenv("AWS_SESSION_TOKEN", "ambient-token")
    for name, value in options.items():
        monkeypatch.setenv(name, value)
    with rasterio.Env(), rasterio.open(f"/vsis3/{BUCKET}/{key}") as dataset:
        assert dataset.crs.to_epsg() == 32632
        assert dataset.block_shapes == [(64, 64)]
        window = dataset.read(1, window=Window(col_off=70, row_off=130, width=5, height=3))
    np.testing.assert_array_equal(window, data[130:133, 70:75])


@pytest.fixture
def forget_gdal_config(s3: SeaweedS3Server) -> Iterator[None]:
    """Drop GDAL config options that rasterio.Env leaves behind.

    On leaving the outermost ``rasterio.Env(KEY=...)``, rasterio writes back the value
    KEY had on entry as a *global* GDAL option, and GDAL reports environment variables
    as option values. So an ambient variable set by monkeypatch outlives the test inside
    GDAL (``AWS_NO_SIGN_REQUEST=YES`` made later tests' reads "Access Denied").
    """
    yield
    from rasterio._env import del_gdal_config

    for key in [*s3.gdal_env_options(), "AWS_PROFILE"]:
        del_gdal_config(key)


@pytest.mark.usefixtures("forget_gdal_config")
def test_gdal_reads_window_with_rasterio_env(
    s3: SeaweedS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, data = upload_small_geotiff(s3)
    # Leftovers of other AWS setups that would break a naive AWSSession.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_S3_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "profile-that-does-not-exist")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "ambient-token")
    monkeypatch.setenv("AWS_NO_SIGN_REQUEST", "YES")

    with s3.rasterio_env():
        with rasterio.open(f"/vsis3/{BUCKET}/{key}") as dataset:
            window = dataset.read(1, window=Window(200, 10, 4, 4))
        with rasterio.open(f"s3://{BUCKET}/{key}") as dataset:  # rasterio's own scheme
            corner = dataset.read(1, window=Window(0, 0, 2, 2))
    np.testing.assert_array_equal(window, data[10:14, 200:204])
    np.testing.assert_array_equal(corner, data[0:2, 0:2])


def test_gdal_reads_real_sentinel2_cog(s3: SeaweedS3Server) -> None:
    if not SCL_COG.is_file():
        pytest.skip(f"real Sentinel-2 COG not found at {SCL_COG}")
    key = f"cogs/{uuid.uuid4().hex}/SCL.tif"
    s3.boto3_client().upload_file(str(SCL_COG), BUCKET, key)
    window = Window(col_off=300, row_off=200, width=32, height=16)
    with rasterio.open(SCL_COG) as local:
        expected = local.read(1, window=window)
        profile = (local.crs, local.transform, local.shape)
    with s3.rasterio_env(), rasterio.open(f"/vsis3/{BUCKET}/{key}") as remote:
        assert (remote.crs, remote.transform, remote.shape) == profile
        np.testing.assert_array_equal(remote.read(1, window=window), expected)


def test_s3_listens_on_loopback_only(s3: SeaweedS3Server) -> None:
    command = s3.command()
    for flag in (
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ):
        assert flag in command
    ports = set(s3.ports.values())
    # The admin component opens its ports a moment after S3 is ready.
    deadline = time.monotonic() + 15
    while {p for _, p in s3.listening_addresses()} != ports and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_loopback_only(ports)
    # Everything weed's process group listens on is one of the ports we chose: no
    # default port (8333, 9333, 6060, ...) slipped through.
    group = process_group_pids(s3.pid)
    assert group, "weed's process group is empty"
    owned = listening_of(group)
    assert {p for _, p in owned} == ports
    assert all(addr == "127.0.0.1" for addr, _ in owned), owned


def test_s3_startup_failure_raises_with_log_and_cleans_up() -> None:
    # Too short to ever become ready: exercises the failure path with a real process.
    server = SeaweedS3Server(startup_timeout_s=0.001)
    with pytest.raises(LocalServerError, match="not ready") as excinfo:
        server.start()
    assert "log tail" in str(excinfo.value)
    assert not server.is_running
    with pytest.raises(LocalServerError):
        server.data_dir  # noqa: B018 (the temp dir it created is gone with it)


def test_s3_restarted_after_a_crash_serves_its_objects_once_started(tmp_path: Path) -> None:
    """``start()`` returns only when stored objects can be read: after a SIGKILL, the
    restarted master must win its raft election and re-learn the volumes first, and a
    gateway that only answers bucket calls in that window failed reads (seen in CI)."""
    server = SeaweedS3Server(data_dir=tmp_path / "weed").start()
    try:
        bodies = {f"k/{i}": os.urandom(1000 * (i + 1)) for i in range(20)}
        client = server.boto3_client()
        server.create_bucket(BUCKET)
        for key, body in bodies.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        for _ in range(3):
            os.killpg(server.pid, signal.SIGKILL)
            server.stop()
            server.start()
            # No retries: the first answer after start() must be the object.
            once = boto3.client(
                "s3",
                endpoint_url=server.endpoint_url,
                aws_access_key_id=server.access_key,
                aws_secret_access_key=server.secret_key,
                region_name=server.region,
                config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
            )
            read = {key: once.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in bodies}
            assert read == bodies
    finally:
        server.stop()


def test_s3_stop_ends_process_group_and_cleans_up(s3: SeaweedS3Server) -> None:
    """Runs last among the S3 tests: it stops the module's server."""
    pid, ports, data_dir = s3.pid, set(s3.ports.values()), s3.data_dir
    grpc_sockets = [
        Path(f"/tmp/seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock")
        for flag, port in s3.ports.items()
        if flag.endswith(".grpc")
    ]
    s3.stop()
    assert wait_gone(pid), f"weed pid {pid} still alive after stop()"
    assert process_group_pids(pid) == []
    assert not [(a, p) for a, p in tcp_listeners() if p in ports]
    assert not data_dir.exists(), "the temp data dir it created should be removed"
    assert not [sock for sock in grpc_sockets if sock.exists()]
    assert not s3.is_running
    s3.stop()  # idempotent


# ======================================================================== rustac STAC
@pytest.fixture(scope="module")
def real_stac_items() -> list[dict[str, Any]]:
    require_shared_data()
    items = [json.loads(p.read_text()) for p in sorted((EARTH_SEARCH / "items").glob("*.json"))]
    assert len(items) == 17
    return items


@pytest.fixture(scope="module")
def real_stac_collection() -> dict[str, Any]:
    require_shared_data()
    collection: dict[str, Any] = json.loads(
        (EARTH_SEARCH / "collection_sentinel-2-l2a.json").read_text()
    )
    return collection


@pytest.fixture(scope="module")
def stac(
    real_stac_items: list[dict[str, Any]], real_stac_collection: dict[str, Any]
) -> Iterator[RustacStacServer]:
    server = RustacStacServer(real_stac_items, [real_stac_collection])
    try:
        server.start()
        yield server
    finally:
        server.stop()


def recorded_search_ids() -> set[str]:
    """Item ids of the real Earth Search answer to the same search (two pages)."""
    ids = set()
    for name in ("search_page.json", "search_page_2.json"):
        page = json.loads((EARTH_SEARCH / name).read_text())
        ids |= {f["id"] for f in page["features"]}
    return ids


def collection_items(url: str, limit: int) -> list[dict[str, Any]]:
    """GET /collections/{id}/items, following next links."""
    items: list[dict[str, Any]] = []
    href: str | None = f"{url}/collections/{COLLECTION_ID}/items?limit={limit}"
    while href:
        page = requests.get(href, timeout=10).json()
        items += page["features"]
        href = next((lk["href"] for lk in page["links"] if lk["rel"] == "next"), None)
        if not page["features"]:
            break
    return items


def test_stac_landing_page(stac: RustacStacServer) -> None:
    assert stac.url.startswith("http://127.0.0.1:")
    landing = requests.get(f"{stac.url}/", timeout=10).json()
    assert landing["type"] == "Catalog"
    rels = {(lk["rel"], lk.get("method")) for lk in landing["links"]}
    assert ("search", "POST") in rels
    assert ("conformance", None) in rels
    assert any(lk["href"].startswith(stac.url) for lk in landing["links"])
    assert "https://api.stacspec.org/v1.0.0/item-search" in landing["conformsTo"]
    # Canary: rustac ignores `query`/`filter` and says so by not declaring them. If this
    # starts failing, rustac gained the extensions and client-side filtering can be
    # revisited.
    conformance = requests.get(f"{stac.url}/conformance", timeout=10).json()["conformsTo"]
    assert not [c for c in conformance if "query" in c or "filter" in c]


def test_stac_serves_all_items_and_the_real_collection(
    stac: RustacStacServer,
    real_stac_items: list[dict[str, Any]],
    real_stac_collection: dict[str, Any],
) -> None:
    assert stac.count_items() == 17
    served = collection_items(stac.url, limit=4)
    assert sorted(i["id"] for i in served) == sorted(i["id"] for i in real_stac_items)
    collection = requests.get(f"{stac.url}/collections/{COLLECTION_ID}", timeout=10).json()
    assert collection["description"] == real_stac_collection["description"]


def test_stac_search_paginates_to_all_16_items(stac: RustacStacServer) -> None:
    body: dict[str, Any] = {
        "collections": [COLLECTION_ID],
        "bbox": [9, 47, 10, 48],
        "datetime": "2020-03-01T00:00:00Z/2020-03-05T23:59:59Z",
        "limit": 5,
    }
    method, href = "POST", f"{stac.url}/search"
    page_sizes, ids = [], []
    for _ in range(20):  # guard against a pagination loop
        if method == "POST":
            response = requests.post(href, json=body, timeout=10)
        else:
            response = requests.get(href, timeout=10)
        response.raise_for_status()
        page = response.json()
        page_sizes.append(len(page["features"]))
        ids += [f["id"] for f in page["features"]]
        link = next((lk for lk in page["links"] if lk["rel"] == "next"), None)
        if link is None or not page["features"]:
            break
        method, href = link.get("method", "GET").upper(), link["href"]
        if method == "POST":
            body = {**body, **link["body"]} if link.get("merge") else link["body"]
    else:
        pytest.fail("search did not stop paginating")
    assert max(page_sizes) == 5
    assert len(ids) == 16 == len(set(ids))
    assert set(ids) == recorded_search_ids()


def test_stac_listens_on_loopback_only(stac: RustacStacServer) -> None:
    assert stac.command()[2:4] == ["-a", f"127.0.0.1:{stac.port}"]
    assert_loopback_only({stac.port})
    assert stac.listening_addresses() == [("127.0.0.1", stac.port)]


def test_stac_restart_with_keeps_the_url(
    stac: RustacStacServer, real_stac_items: list[dict[str, Any]]
) -> None:
    url, first_pid = stac.url, stac.pid
    stac.restart_with(real_stac_items[:3])
    assert (stac.url, stac.count_items()) == (url, 3)
    assert stac.pid != first_pid and wait_gone(first_pid)
    # Late arrivals: the full set again, plus a duplicate that must not double-count.
    stac.restart_with([*real_stac_items, real_stac_items[0]])
    assert (stac.url, stac.count_items()) == (url, 17)


def test_stac_cli_serves_until_interrupted(
    tmp_path: Path,
    real_stac_items: list[dict[str, Any]],
    real_stac_collection: dict[str, Any],
) -> None:
    from geospatial_pipeline.local.ports import free_port, wait_for_http

    items_file = tmp_path / "items.ndjson"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in real_stac_items))
    collection_file = tmp_path / "collection.json"
    collection_file.write_text(json.dumps(real_stac_collection))
    port = free_port()
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "geospatial_pipeline.local.stac_server",
            "--port",
            str(port),
            str(items_file),
            str(collection_file),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", 30, is_alive=lambda: cli.poll() is None)
        response = requests.post(f"http://127.0.0.1:{port}/search", json={"limit": 100}, timeout=10)
        assert len(response.json()["features"]) == 17
        assert_loopback_only({port})
        cli.send_signal(signal.SIGINT)  # Ctrl-C
        output, _ = cli.communicate(timeout=20)
    finally:
        if cli.poll() is None:
            # SIGKILL would orphan rustac (it runs in its own session); SIGTERM lets the
            # CLI stop it first.
            cli.terminate()
            try:
                cli.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                cli.kill()
                cli.communicate()
    assert cli.returncode == 0, output.decode()
    # rustac ran in its own session; it must be gone with the CLI.
    assert not [(a, p) for a, p in tcp_listeners() if p == port]


def test_stac_stop_ends_the_process(stac: RustacStacServer) -> None:
    """Runs last among the STAC tests: it stops the module's server."""
    pid, port = stac.pid, stac.port
    stac.stop()
    assert wait_gone(pid), f"rustac pid {pid} still alive after stop()"
    assert process_group_pids(pid) == []
    assert not [(a, p) for a, p in tcp_listeners() if p == port]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    stac.stop()  # idempotent
