"""Shared fixtures: paths to the real recordings in ../shared/data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Before anything imports the package: the module-level assets take their partitions from
# the code location's configuration at import (geospatial_pipeline/location.py).
os.environ["GEOSPATIAL_PIPELINE_CONFIG"] = str(REPO / "tests" / "location_config.yaml")
# Overridable so a checkout can keep ../shared elsewhere (and so the CI rule is testable).
SHARED_DATA = Path(os.environ.get("GEOSPATIAL_SHARED_DATA") or REPO.parent / "shared" / "data")
EARTH_SEARCH = SHARED_DATA / "earth-search-v1"
S2_COGS = SHARED_DATA / "sentinel-2-cogs" / "S2A_29RKH_20200219_0_L2A"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing_shared_data() -> str | None:
    """Why the real recordings are unusable, or None when they are all there."""
    missing = [str(p) for p in (EARTH_SEARCH, S2_COGS) if not p.is_dir()]
    if missing:
        return f"shared recordings not found ({', '.join(missing)})"
    return None


def require_shared_data() -> None:
    problem = missing_shared_data()
    if problem is None:
        return
    if in_ci():
        # In CI a skip would let the run pass without testing anything on real data.
        pytest.fail(f"{problem}; CI=true forbids skipping tests that need it", pytrace=False)
    pytest.skip(problem)


def pytest_sessionstart(session: pytest.Session) -> None:
    """With CI=true a missing ../shared fails the whole run at once, also for the tests
    that check for it on their own, before anything is skipped."""
    problem = missing_shared_data()
    if problem is not None and in_ci():
        pytest.exit(
            f"{problem}. CI=true: the tests that need ../shared/data would be skipped and the "
            "run would pass without them. Check ../shared out beside the repository "
            "(or point GEOSPATIAL_SHARED_DATA at its data directory).",
            returncode=1,
        )


@pytest.fixture(scope="session")
def real_items() -> dict[str, dict[str, Any]]:
    require_shared_data()
    return {
        p.stem: json.loads(p.read_text()) for p in sorted((EARTH_SEARCH / "items").glob("*.json"))
    }


@pytest.fixture(scope="session")
def real_collection() -> dict[str, Any]:
    require_shared_data()
    return json.loads((EARTH_SEARCH / "collection_sentinel-2-l2a.json").read_text())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One real S3 server (SeaweedFS on 127.0.0.1) for the whole test session."""
    from geospatial_pipeline.local.seaweed import SeaweedS3Server

    with SeaweedS3Server(data_dir=tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="session")
def titiler() -> Any:
    """One local TiTiler (the product maps' server) for the whole test session."""
    from geospatial_pipeline.local.titiler import TiTilerServer

    with TiTilerServer() as server:
        yield server


@pytest.fixture(scope="session")
def http() -> Any:
    import requests

    with requests.Session() as session:
        session.trust_env = False  # loopback servers: no HTTP(S)_PROXY in between
        yield session


SOURCE_BUCKET = "sentinel-cogs"
SOURCE_PREFIX = "sentinel-s2-l2a-cogs/29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A"


@pytest.fixture(scope="session")
def source_bucket(s3_server: Any) -> str:
    """The real Sentinel-2 COGs of ../shared/data in a source bucket, laid out like Earth
    Search's; returns the s3:// prefix of the scene."""
    require_shared_data()
    client = s3_server.boto3_client()
    s3_server.create_bucket(SOURCE_BUCKET)
    for path in sorted(S2_COGS.glob("*.tif")):
        client.upload_file(str(path), SOURCE_BUCKET, f"{SOURCE_PREFIX}/{path.name}")
    return f"s3://{SOURCE_BUCKET}/{SOURCE_PREFIX}"


@pytest.fixture(scope="session")
def rkh_item(real_items: dict[str, dict[str, Any]], source_bucket: str) -> dict[str, Any]:
    """The real 29RKH item with its asset hrefs pointing at the source bucket."""
    item = json.loads(json.dumps(real_items["S2A_29RKH_20200219_0_L2A"]))
    for asset in item["assets"].values():
        name = asset["href"].rsplit("/", 1)[-1]
        if asset["href"].startswith("https://sentinel-cogs.") and name.endswith(".tif"):
            asset["href"] = f"{source_bucket}/{name}"
    return item


def dagster_home(path: Path) -> Path:
    """A Dagster instance directory for a test: created, with telemetry off."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return path
