"""Imagery on demand through the three doors, against real local services: a request
document in the object store (SeaweedFS S3), the CLI, and the `request_imagery` job; the
request sensor registering the AOI and asking for one run per (date, aoi); rejections
writing only their status; exactly-once run keys across a lost cursor; the status sensor
following the runs to `complete` and `failed`; config AOIs synced; an AOI retired; the
partition budget."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, RunRequest, materialize

from geospatial_pipeline.cli import main as cli
from geospatial_pipeline.config import PipelineConfig, load_config
from geospatial_pipeline.definitions import build_assets, build_defs
from geospatial_pipeline.demo import evaluate_sensor
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.on_demand import REQUEST_JOB, REQUEST_TAG, REQUESTS_SENSOR, STATUS_SENSOR
from geospatial_pipeline.ondemand import registry, requests
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.warehouse.tables import AOIS
from tests.conftest import dagster_home
from tests.partitioning import PARTITIONS

DAY = dt.date(2020, 2, 19)
CONFIGURED = {"name": "dunes", "bbox": [-11.60, 24.60, -11.52, 24.66]}
NEW_BBOX = [-11.08, 25.08, -10.98, 25.16]  # inside tile 29RKH, not configured


@pytest.fixture(scope="module")
def stac_api(rkh_item: dict[str, Any], real_collection: dict[str, Any]) -> Iterator[str]:
    with RustacStacServer([rkh_item], [real_collection]) as server:
        yield server.url


@contextlib.contextmanager
def s3_credentials(s3: Any) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    mp.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)
    try:
        yield
    finally:
        mp.undo()


class Site:
    """One pipeline deployment for a test: its config file, a fresh bucket, a DuckDB
    warehouse and a Dagster instance; sensors ticked in-process as the daemon ticks them."""

    def __init__(self, tmp: Path, stac_url: str, s3: Any, **extra: Any) -> None:
        bucket = f"od-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(bucket)
        doc = {
            "stac": {"api_url": stac_url},
            "aois": [CONFIGURED],
            "bands": ["red", "green", "blue", "nir", "scl"],
            "partitions": PARTITIONS,
            "storage": {"url": f"s3://{bucket}/pipeline", "endpoint_url": s3.endpoint_url},
            "warehouse": {"kind": "duckdb", "path": str(tmp / "wh.duckdb")},
            "transform": {"enabled": False},
            **extra,
        }
        tmp.mkdir(parents=True, exist_ok=True)
        self.config_path = tmp / "pipeline.yaml"
        self.config_path.write_text(yaml.safe_dump(doc))
        self.config: PipelineConfig = load_config(self.config_path)
        self.defs = build_defs(self.config)
        self.resources = build_resources(self.config)
        self.store = self.resources["object_store"].store()
        self.home = dagster_home(tmp / "home")
        self.instance = DagsterInstance.local_temp(str(self.home))

    def tick(self, name: str = REQUESTS_SENSOR, cursor: str | None = None) -> Any:
        return evaluate_sensor(self.defs, name, self.instance, cursor, self.resources)

    def run(self, request: RunRequest, **overrides: Any) -> Any:
        """The run the daemon would launch for ``request`` (its partition and tags), with
        resources replaced by ``overrides`` where given."""
        return materialize(
            build_assets(self.config),
            partition_key=request.partition_key,
            tags=dict(request.tags),
            resources={**self.resources, **overrides},
            instance=self.instance,
            raise_on_error=False,
        )

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(o.key for o in self.store.list(prefix.rstrip("/")))


@pytest.fixture
def site(tmp_path: Path, stac_api: str, s3_server: Any) -> Iterator[Site]:
    with s3_credentials(s3_server):
        s = Site(tmp_path, stac_api, s3_server)
        yield s
        s.instance.dispose()


def request_doc(name: str = "wadi", **over: Any) -> dict[str, Any]:
    return {
        "aoi": {"name": name, "bbox": NEW_BBOX},
        "start_date": DAY.isoformat(),
        "end_date": DAY.isoformat(),
        **over,
    }


def accepted_request(site: Site, tick: Any) -> tuple[str, list[RunRequest]]:
    runs = list(tick.run_requests)
    ids = {r.tags[REQUEST_TAG] for r in runs}
    assert len(ids) == 1, runs
    return ids.pop(), runs


def assert_registered_and_launched(site: Site, tick: Any, name: str = "wadi") -> str:
    request_id, runs = accepted_request(site, tick)
    assert [r.partition_key for r in runs] == [f"{name}|{DAY.isoformat()}"]
    assert [r.run_key for r in runs] == [f"request:{request_id}:{DAY.isoformat()}"]
    # The AOI is a partition, in the registry (origin the request) and in the warehouse.
    assert name in site.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME)
    record = registry.load(site.store, name)
    assert record.origin == f"request:{request_id}"
    assert list(record.bbox) == pytest.approx(NEW_BBOX)
    rows = site.resources["warehouse"].fetch_partition(AOIS, (name,))
    assert [r["name"] for r in rows] == [name] and rows[0]["origin"] == record.origin
    status = requests.read_status(site.store, request_id)
    assert status is not None and status.state == "accepted"
    assert [(d.date, d.aoi, d.state) for d in status.partitions] == [(DAY, name, "queued")]
    return request_id


def test_object_store_door(site: Site) -> None:
    # Any system with write access: an S3 PutObject under requests/incoming/.
    site.store.put_bytes(
        "requests/incoming/from-another-system.json",
        json.dumps(request_doc()).encode(),
        "application/json",
    )
    tick = site.tick()
    request_id = assert_registered_and_launched(site, tick)
    # The configured AOI was registered by the same first tick.
    assert set(site.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME)) == {"dunes", "wadi"}
    # The run of the request materializes the new AOI's partition.
    result = site.run(tick.run_requests[0])
    assert result.success
    assert site.keys(f"raw/sentinel-2-l2a/{DAY}/wadi/")
    assert request_id.startswith("r-")


def test_cli_door(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    w, s, e, n = NEW_BBOX
    args = ["request", "--name", "wadi", "--bbox", str(w), str(s), str(e), str(n)]
    code = cli(
        [
            *args,
            "--start",
            DAY.isoformat(),
            "--end",
            DAY.isoformat(),
            "--config",
            str(site.config_path),
        ]
    )
    assert code == 0
    printed_id = capsys.readouterr().out.splitlines()[0]
    request_id = assert_registered_and_launched(site, site.tick())
    assert printed_id == request_id


def test_ui_door(site: Site) -> None:
    job = site.defs.resolve_job_def(REQUEST_JOB)
    result = job.execute_in_process(
        run_config={
            "ops": {
                "write_request_document": {
                    "config": {
                        "name": "wadi",
                        "bbox": NEW_BBOX,
                        "start_date": DAY.isoformat(),
                        "end_date": DAY.isoformat(),
                    }
                }
            }
        },
        resources={"object_store": site.resources["object_store"]},
        instance=site.instance,
    )
    assert result.success
    assert_registered_and_launched(site, site.tick())


def test_ui_door_refuses_bad_input_and_writes_nothing(site: Site) -> None:
    job = site.defs.resolve_job_def(REQUEST_JOB)
    result = job.execute_in_process(
        run_config={
            "ops": {
                "write_request_document": {
                    "config": {
                        "name": "Bad Name",
                        "bbox": [1.0, 2.0, 0.5, 3.0],
                        "start_date": DAY.isoformat(),
                        "end_date": "2020-02-18",
                    }
                }
            }
        },
        resources={"object_store": site.resources["object_store"]},
        instance=site.instance,
        raise_on_error=False,
    )
    assert not result.success
    message = str(result.failure_data_for_node("write_request_document").error)
    for field in ("aoi.name", "end_date"):
        assert field in message
    assert site.keys() == []


def test_rejected_request_writes_only_its_status(site: Site) -> None:
    site.tick()  # the configured AOI registered first
    before = site.keys()
    partitions = set(site.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME))
    bad = {
        "request_id": "bad-dates",
        "aoi": {"name": "Wadi!", "bbox": [-10.9, 25.0, -11.0, 25.1]},
        "start_date": "2020-02-20",
        "end_date": "2020-02-19",
        "colour": "blue",
    }
    site.store.put_bytes("requests/incoming/bad.json", json.dumps(bad).encode(), "application/json")
    tick = site.tick()
    assert not tick.run_requests
    status = requests.read_status(site.store, "bad-dates")
    assert status is not None and status.state == "rejected"
    fields = {e.split(":", 1)[0] for e in status.errors}
    assert {"aoi.name", "end_date", "colour"} <= fields, status.errors
    # Nothing else: no AOI, no partition; the document left incoming/.
    assert site.keys() == sorted([*before, "requests/status/bad-dates.json"])
    assert set(site.instance.get_dynamic_partitions(AOI_PARTITIONS_NAME)) == partitions


def test_a_name_reused_with_another_geometry_is_rejected(site: Site) -> None:
    site.tick()
    moved = {**request_doc("dunes"), "request_id": "redraw"}
    site.store.put_bytes("requests/incoming/r.json", json.dumps(moved).encode())
    tick = site.tick()
    assert not tick.run_requests
    status = requests.read_status(site.store, "redraw")
    assert status is not None and status.state == "rejected"
    assert status.errors[0].startswith("aoi.geometry: AOI 'dunes' is registered")
    # The registered geometry is unchanged.
    assert list(registry.load(site.store, "dunes").bbox) == pytest.approx(CONFIGURED["bbox"])


def test_run_requests_are_capped_and_never_launched_twice(
    tmp_path: Path, stac_api: str, s3_server: Any
) -> None:
    with s3_credentials(s3_server):
        site = Site(tmp_path, stac_api, s3_server, requests={"max_run_requests_per_tick": 2})
        doc = request_doc(end_date=(DAY + dt.timedelta(days=4)).isoformat())
        site.store.put_bytes("requests/incoming/five.json", json.dumps(doc).encode())
        first = site.tick()
        keys = [r.run_key for r in first.run_requests]
        assert len(keys) == 2
        # The daemon lost the tick's cursor (a crash before it was stored): the repeated
        # tick asks for the same runs under the same run keys, which Dagster launches once.
        again = site.tick(cursor=None)
        assert [r.run_key for r in again.run_requests] == keys
        seen, cursor = list(keys), first.cursor
        while True:
            nxt = site.tick(cursor=cursor)
            cursor = nxt.cursor
            if not nxt.run_requests:
                break
            assert len(nxt.run_requests) <= 2
            seen += [r.run_key for r in nxt.run_requests]
        request_id = first.run_requests[0].tags[REQUEST_TAG]
        days = [(DAY + dt.timedelta(days=i)).isoformat() for i in range(5)]
        assert seen == [f"request:{request_id}:{d}" for d in days]
        # Fully launched: the document moved out of incoming/ once its runs were committed.
        assert site.keys("requests/incoming/") == []
        assert site.keys("requests/accepted/") == [f"requests/accepted/{request_id}.json"]
        site.instance.dispose()


def test_status_follows_the_runs_to_complete_and_failed(site: Site) -> None:
    from geospatial_pipeline.resources.stac import StacSearchResource

    ok = {**request_doc(), "request_id": "ok"}
    two = {**request_doc(), "request_id": "two", "end_date": "2020-02-20"}
    for doc in (ok, two):
        site.store.put_bytes(
            f"requests/incoming/{doc['request_id']}.json", json.dumps(doc).encode()
        )
    tick = site.tick()
    runs = {(r.tags[REQUEST_TAG], r.partition_key): r for r in tick.run_requests}
    assert set(runs) == {
        ("ok", "wadi|2020-02-19"),
        ("two", "wadi|2020-02-19"),
        ("two", "wadi|2020-02-20"),
    }
    assert site.run(runs[("ok", "wadi|2020-02-19")]).success
    assert site.run(runs[("two", "wadi|2020-02-19")]).success
    # The second day's run fails: its STAC API is unreachable.
    dead = StacSearchResource(api_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=2)
    assert not site.run(runs[("two", "wadi|2020-02-20")], stac=dead).success
    site.tick(STATUS_SENSOR)
    done = requests.read_status(site.store, "ok")
    assert done is not None and done.state == "complete"
    assert [d.state for d in done.partitions] == ["succeeded"]
    assert done.partitions[0].run_id
    failed = requests.read_status(site.store, "two")
    assert failed is not None and failed.state == "failed"
    assert [d.state for d in failed.partitions] == ["succeeded", "failed"]
    assert all(d.run_id for d in failed.partitions)


def test_config_aois_sync_registers_once(site: Site) -> None:
    first = site.tick()
    assert [r.partitions_def_name for r in first.dynamic_partitions_requests] == [
        AOI_PARTITIONS_NAME
    ]
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["dunes"]
    record = registry.load(site.store, "dunes")
    assert record.origin == "config" and record.first_day == site.config.partitions.start_date
    body = site.store.get_bytes(registry.aoi_key("dunes"))
    second = site.tick(cursor=first.cursor)
    assert not second.dynamic_partitions_requests and not second.run_requests
    assert site.store.get_bytes(registry.aoi_key("dunes")) == body
    rows = site.resources["warehouse"].fetch_partition(AOIS, ("dunes",))
    assert rows[0]["origin"] == "config"


def test_retired_aoi_gets_no_runs_and_keeps_its_data(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.tick()
    first = site.run(RunRequest(partition_key=f"dunes|{DAY}"))
    assert first.success
    raw = site.keys(f"raw/sentinel-2-l2a/{DAY}/dunes/")
    assert raw
    monkeypatch.setenv("DAGSTER_HOME", str(site.home))
    assert (
        cli(["aois", "retire", "dunes", "--on", DAY.isoformat(), "--config", str(site.config_path)])
        == 0
    )
    # A run launched by hand for a day from the retirement on is refused; data stays.
    again = site.run(RunRequest(partition_key=f"dunes|{DAY}"))
    assert not again.success
    assert "retired on 2020-02-19" in str(again.failure_data_for_node("stac_items").error)
    assert site.keys(f"raw/sentinel-2-l2a/{DAY}/dunes/") == raw
    # A request naming it is rejected, naming the field.
    doc = {
        "request_id": "old",
        "aoi": {"name": "dunes"},
        "start_date": str(DAY),
        "end_date": str(DAY),
    }
    site.store.put_bytes("requests/incoming/old.json", json.dumps(doc).encode())
    assert not site.tick().run_requests
    status = requests.read_status(site.store, "old")
    assert status is not None and status.errors[0].startswith("aoi.name: AOI 'dunes' was retired")


def test_a_request_over_the_partition_budget_is_refused(
    tmp_path: Path, stac_api: str, s3_server: Any
) -> None:
    with s3_credentials(s3_server):
        site = Site(tmp_path, stac_api, s3_server)
        limit_days = site.config.partitions.day_count()
        # One AOI fits exactly; a second would exceed a limit of one AOI's days.
        site.config = site.config.model_copy(
            update={
                "partitions": site.config.partitions.model_copy(
                    update={"max_partitions": limit_days}
                )
            }
        )
        from geospatial_pipeline.ondemand import service

        site.tick()
        request = requests.validate_request(request_doc(), max_days=366)
        with pytest.raises(requests.RequestRejected) as caught:
            service.accept(
                site.store,
                request,
                partitions=site.config.partitions,
                registered={"dunes"},
                now=dt.datetime.now(dt.UTC),
            )
        message = caught.value.errors[0]
        assert message.startswith("aoi.name: partitions.max_partitions")
        assert f"{2 * limit_days:,} partitions per asset, {limit_days:,} over" in message
        assert "MultiPolygon" in message
        with pytest.raises(registry.UnknownAoi):
            registry.load(site.store, "wadi")
        site.instance.dispose()


def test_cli_materialize_runs_every_active_aoi_and_names_a_failing_partition(
    tmp_path: Path,
    stac_api: str,
    s3_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from geospatial_pipeline.config import CONFIG_ENV_VAR

    # The command points the code location's configuration at --config; undone after.
    monkeypatch.setenv(CONFIG_ENV_VAR, os.environ[CONFIG_ENV_VAR])
    with s3_credentials(s3_server):
        site = Site(tmp_path / "ok", stac_api, s3_server)
        monkeypatch.setenv("DAGSTER_HOME", str(site.home))
        args = ["materialize", "--date", DAY.isoformat(), "--config", str(site.config_path)]
        assert cli(args) == 0
        assert f"dunes|{DAY}: ok" in capsys.readouterr().out
        assert site.keys(f"raw/sentinel-2-l2a/{DAY}/dunes")
        assert cli([*args, "--aoi", "nowhere"]) == 2
        assert "--aoi: not registered: ['nowhere']" in capsys.readouterr().err

        dead = "http://127.0.0.1:9/v1"
        broken = Site(
            tmp_path / "broken",
            dead,
            s3_server,
            stac={"api_url": dead, "max_retries": 0, "timeout_s": 2},
        )
        monkeypatch.setenv("DAGSTER_HOME", str(broken.home))
        args = ["materialize", "--date", DAY.isoformat(), "--config", str(broken.config_path)]
        assert cli(args) == 1
        assert f"failed partition(s): dunes|{DAY}" in capsys.readouterr().err
        site.instance.dispose()
        broken.instance.dispose()


def test_status_sensor_reads_runs_updated_in_the_cursors_second(site: Site) -> None:
    """Run storage may keep update times to the second: a run that ended in the same
    second as the cursor must still be read (the old "strictly after the cursor" missed it
    and left the day queued forever)."""
    site.store.put_bytes(
        "requests/incoming/same-second.json",
        json.dumps({**request_doc(), "request_id": "same-second"}).encode(),
    )
    tick = site.tick()
    assert site.run(tick.run_requests[0]).success
    newest = max(r.update_timestamp.timestamp() for r in site.instance.get_run_records(limit=50))
    # The cursor a tick would have stored had it run within that second, just after it.
    site.tick(STATUS_SENSOR, cursor=repr(newest + 0.5))
    status = requests.read_status(site.store, "same-second")
    assert status is not None and status.state == "complete", status
    # Re-reading the overlap does not rewrite a status whose days did not change.
    body = site.store.get_bytes(requests.status_key("same-second"))
    site.tick(STATUS_SENSOR, cursor=repr(newest + 0.5))
    assert site.store.get_bytes(requests.status_key("same-second")) == body


def test_a_name_only_request_needs_a_registered_aoi(site: Site) -> None:
    site.tick()
    doc = {
        "request_id": "who",
        "aoi": {"name": "nowhere"},
        "start_date": str(DAY),
        "end_date": str(DAY),
    }
    site.store.put_bytes("requests/incoming/who.json", json.dumps(doc).encode())
    assert not site.tick().run_requests
    status = requests.read_status(site.store, "who")
    assert status is not None and status.state == "rejected"
    assert (
        status.errors[0].startswith("aoi.name: ") and "give a geometry or bbox" in status.errors[0]
    )
    assert "dunes" in status.errors[0]  # the registered names are listed
    # By name, a registered AOI is accepted.
    doc = {
        "request_id": "known",
        "aoi": {"name": "dunes"},
        "start_date": str(DAY),
        "end_date": str(DAY),
    }
    site.store.put_bytes("requests/incoming/known.json", json.dumps(doc).encode())
    assert [r.partition_key for r in site.tick().run_requests] == [f"dunes|{DAY}"]
