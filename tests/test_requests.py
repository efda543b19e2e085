"""Imagery requests: validation naming every bad field, stable ids, status documents and
their state, and the `request` / `request-status` commands end to end on a local store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from geospatial_pipeline.cli import main
from geospatial_pipeline.config import RequestsConfig, default_of
from geospatial_pipeline.ondemand import requests as rq
from geospatial_pipeline.storage.object_store import LocalObjectStore

NOW = dt.datetime(2024, 2, 1, 12, 0, tzinfo=dt.UTC)
TODAY = dt.datetime.now(dt.UTC).date()
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[9.0, 47.0], [9.1, 47.0], [9.1, 47.1], [9.0, 47.1], [9.0, 47.0]]],
}


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "aoi": {"name": "lake", "bbox": [9.0, 47.0, 9.1, 47.1]},
        "start_date": "2024-01-01",
        "end_date": "2024-01-03",
        "notes": "for the survey",
    }
    base.update(changes)
    return base


def errors_of(
    document: object, max_days: int = default_of(RequestsConfig, "max_days")
) -> list[str]:
    with pytest.raises(rq.RequestRejected) as info:
        rq.validate_request(document, max_days=max_days)
    assert str(info.value).startswith("invalid imagery request:")
    return info.value.errors


def test_default_id_is_stable_and_follows_the_content() -> None:
    first = rq.validate_request(doc(), max_days=10)
    # Other key order, number forms and bbox as ints: the same request.
    again = rq.validate_request(
        {
            "notes": "for the survey",
            "end_date": "2024-01-03",
            "start_date": dt.date(2024, 1, 1),
            "aoi": {"bbox": [9, 47, 9.1, 47.1], "name": "lake"},
        },
        max_days=10,
    )
    assert first.request_id == again.request_id == first.canonical_id()
    assert first.request_id.startswith("r-") and len(first.request_id) == 18
    others = {
        rq.validate_request(d, max_days=10).request_id
        for d in (
            doc(end_date="2024-01-04"),
            doc(notes="another reason"),
            doc(aoi={"name": "lake2", "bbox": [9.0, 47.0, 9.1, 47.1]}),
            doc(aoi={"name": "lake", "bbox": [9.0, 47.0, 9.2, 47.1]}),
        )
    }
    assert first.request_id not in others and len(others) == 4
    explicit = rq.validate_request(doc(request_id="survey-2024"), max_days=10)
    assert explicit.request_id == "survey-2024"
    assert explicit.canonical_id() == first.request_id


def test_days_are_inclusive() -> None:
    request = rq.validate_request(doc(), max_days=10)
    assert request.days() == [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)]


def test_name_only_request_is_valid_and_has_no_shape() -> None:
    request = rq.validate_request(doc(aoi={"name": "lake"}), max_days=10)
    assert request.aoi.named_only
    assert request.aoi.as_aoi_config() is None
    shaped = rq.validate_request(doc(aoi={"name": "lake", "geometry": SQUARE}), max_days=10)
    config = shaped.aoi.as_aoi_config()
    assert config is not None and config.shape.bounds == (9.0, 47.0, 9.1, 47.1)


def test_antimeridian_bbox_becomes_a_multipolygon_as_in_the_config() -> None:
    request = rq.validate_request(
        doc(aoi={"name": "fiji", "bbox": [179.5, -17.2, -179.5, -17.0]}), max_days=10
    )
    assert request.aoi.bbox is None
    assert request.aoi.geometry is not None and request.aoi.geometry["type"] == "MultiPolygon"


FUTURE = (TODAY + dt.timedelta(days=2)).isoformat()
BAD_REQUESTS: list[tuple[object, str, str]] = [
    (doc(aoi={"name": "Lake"}), "aoi.name: ", "should match pattern"),
    (doc(aoi={"name": "lake", "bbox": [9.1, 47.0, 9.0, 47.1]}), "aoi.bbox: ", "inverted"),
    (doc(aoi={"name": "lake", "bbox": [9.0, 47.0, 9.1]}), "aoi.bbox.3: ", "required"),
    (doc(aoi={"name": "lake", "bbox": [9.0, 95.0, 9.1, 96.0]}), "aoi.bbox: ", "latitude"),
    (
        doc(aoi={"name": "lake", "geometry": {"type": "Point", "coordinates": [9.0, 47.0]}}),
        "aoi.geometry: ",
        "must be Polygon or MultiPolygon, got 'Point'",
    ),
    (
        doc(aoi={"name": "lake", "bbox": [9.0, 47.0, 9.1, 47.1], "geometry": SQUARE}),
        "aoi: ",
        "exactly one of 'geometry' or 'bbox'",
    ),
    (doc(aoi={"name": "lake", "colour": "blue"}), "aoi.colour: ", "Extra inputs"),
    (doc(end_date="2023-12-31"), "end_date: ", "before start_date 2024-01-01"),
    (doc(start_date=FUTURE, end_date=FUTURE), "start_date: ", "in the future"),
    (doc(end_date=FUTURE), "end_date: ", "in the future"),
    (doc(start_date="2024-01-01T00:00:00+05:00"), "start_date: ", "UTC day 2023-12-31"),
    (doc(priority="high"), "priority: ", "Extra inputs are not permitted"),
    (doc(request_id="Not An Id"), "request_id: ", "should match pattern"),
    (doc(notes="x" * 2001), "notes: ", "at most 2000 characters"),
    (doc(aoi="lake"), "aoi: ", "valid dictionary"),
    ([doc()], "request: ", "expected a JSON object, got list"),
]


@pytest.mark.parametrize(("document", "prefix", "words"), BAD_REQUESTS)
def test_every_bad_field_is_named(document: object, prefix: str, words: str) -> None:
    errors = errors_of(document)
    assert any(e.startswith(prefix) and words in e for e in errors), errors


def test_all_errors_are_reported_at_once() -> None:
    errors = errors_of(
        doc(aoi={"name": "Lake", "bbox": [9.0, 47.0, 9.1, 47.1]}, end_date="2023-01-01", x=1)
    )
    assert [e.split(":")[0] for e in errors] == ["aoi.name", "end_date", "x"]


def test_too_many_days() -> None:
    errors = errors_of(doc(start_date="2024-01-01", end_date="2024-01-31"), max_days=30)
    assert errors == ["end_date: the request spans 31 days; requests.max_days is 30"]
    assert len(rq.validate_request(doc(end_date="2024-01-30"), max_days=30).days()) == 30


def test_parse_request_refuses_what_is_not_json() -> None:
    with pytest.raises(rq.RequestRejected) as info:
        rq.parse_request(b"{not json", max_days=10)
    assert info.value.errors[0].startswith("request: not valid JSON")
    parsed = rq.parse_request(json.dumps(doc()).encode(), max_days=10)
    assert parsed == rq.validate_request(doc(), max_days=10)


def test_submit_writes_one_document_and_refuses_another_under_the_same_id(
    tmp_path: Path,
) -> None:
    store = LocalObjectStore(tmp_path)
    request = rq.validate_request(doc(), max_days=10)
    key = rq.submit(store, request)
    assert key == f"requests/incoming/{request.request_id}.json"
    assert rq.submit(store, request) == key  # the same request again: nothing new
    assert [i.key for i in rq.list_incoming(store)] == [key]
    stored = rq.parse_request(store.get_bytes(key), max_days=10)
    assert stored == request
    clash = rq.validate_request(
        doc(end_date="2024-01-05", request_id=request.request_id), max_days=10
    )
    with pytest.raises(rq.RequestRejected, match=r"request_id: .* submitted already"):
        rq.submit(store, clash)
    assert rq.parse_request(store.get_bytes(key), max_days=10) == request  # left as it was


def test_keys_refuse_what_is_not_an_id() -> None:
    assert rq.status_key("r-1") == "requests/status/r-1.json"
    with pytest.raises(ValueError, match="request_id"):
        rq.status_key("../escape")


def test_status_of_a_request_through_to_complete(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    request = rq.validate_request(doc(), max_days=10)
    status = rq.accepted(request, NOW, submitted_key=rq.incoming_key(request.request_id))
    assert status.state == "accepted" and status.aoi == "lake"
    assert [(d.date.day, d.state) for d in status.partitions] == [
        (1, "queued"),
        (2, "queued"),
        (3, "queued"),
    ]
    days = request.days()
    later = NOW + dt.timedelta(minutes=5)
    status = rq.with_day(status, days[0], "running", run_id="run-1", now=later)
    assert status.state == "running" and status.updated == later
    status = rq.with_day(status, days[0], "succeeded", stac_items=["s3://b/i1.json"], now=later)
    # The run id given when the day started is kept.
    assert (status.partitions[0].run_id, status.partitions[0].stac_items) == (
        "run-1",
        ["s3://b/i1.json"],
    )
    assert status.state == "running"  # one day ended, two still queued
    status = rq.with_day(status, days[1], "succeeded", run_id="run-2", now=later)
    assert status.state == "running"
    status = rq.with_day(status, days[2], "succeeded", run_id="run-3", now=later)
    assert status.state == "complete"

    rq.write_status(store, status)
    assert rq.read_status(store, request.request_id) == status
    assert rq.read_status(store, "r-nothing") is None


def test_one_failed_day_fails_the_request_once_every_day_ended() -> None:
    request = rq.validate_request(doc(), max_days=10)
    first, second, third = request.days()
    status = rq.accepted(request, NOW)
    assert rq.with_day(status, second, "running", now=NOW).state == "running"
    status = rq.with_day(status, first, "failed", run_id="run-1", now=NOW)
    assert status.state == "running"
    status = rq.with_day(status, second, "succeeded", now=NOW)
    assert status.state == "running"
    status = rq.with_day(status, third, "succeeded", now=NOW)
    assert status.state == "failed"
    with pytest.raises(KeyError):
        rq.with_day(status, dt.date(2024, 1, 9), "running", now=NOW)
    with pytest.raises(ValueError, match="time zone"):
        rq.with_day(status, first, "running", now=dt.datetime(2024, 2, 1))


def test_rejected_status_takes_an_id_or_derives_one_from_the_key() -> None:
    by_id = rq.rejected("survey-2024", ["end_date: bad"], NOW)
    assert (by_id.request_id, by_id.state, by_id.submitted_key) == ("survey-2024", "rejected", None)
    key = "requests/incoming/my file.json"
    by_key = rq.rejected(key, ["request: not valid JSON"], NOW)
    assert by_key.request_id == rq.key_status_id(key)
    assert by_key.request_id.startswith("bad-") and by_key.submitted_key == key
    assert rq.key_status_id("requests/incoming/other.json") != by_key.request_id
    assert rq.declared_request_id({"request_id": "survey-2024", "aoi": 3}) == "survey-2024"
    assert rq.declared_request_id({"request_id": "../x"}) is None
    assert rq.declared_request_id([1]) is None
    with pytest.raises(ValueError, match="rejected"):
        rq.with_day(by_id, dt.date(2024, 1, 1), "running", now=NOW)


# --- the commands ---------------------------------------------------------------------


@pytest.fixture
def cli_config(tmp_path: Path) -> tuple[Path, LocalObjectStore]:
    store_dir = tmp_path / "store"
    config = {
        "aois": [{"name": "lake", "geometry": SQUARE}],
        "partitions": {"start_date": "2020-03-01"},
        "storage": {"url": str(store_dir)},
        "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, LocalObjectStore(store_dir)


def test_request_command_round_trip(
    cli_config: tuple[Path, LocalObjectStore], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = cli_config
    argv = ["request", "--name", "pond", "--bbox", "9.0", "47.0", "9.1", "47.1"]
    argv += ["--start", "2024-01-01", "--end", "2024-01-02", "--notes", "hi"]
    assert main([*argv, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    incoming = rq.list_incoming(store)
    assert len(incoming) == 1
    request = rq.parse_request(store.get_bytes(incoming[0].key), max_days=10)
    assert out.splitlines()[0] == request.request_id
    assert request.aoi.bbox == (9.0, 47.0, 9.1, 47.1) and request.notes == "hi"
    assert store.url(incoming[0].key) in out
    assert store.url(rq.status_key(request.request_id)) in out
    assert f"request-status {request.request_id}" in out

    # No status yet: exit 1 and say why.
    assert main(["request-status", request.request_id, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"no status yet for request {request.request_id}" in err
    assert "imagery_requests_sensor" in err

    status = rq.with_day(
        rq.accepted(request, NOW),
        dt.date(2024, 1, 1),
        "succeeded",
        run_id="run-abc",
        stac_items=["s3://bucket/items/x.json"],
        now=NOW,
    )
    rq.write_status(store, status)
    assert main(["request-status", request.request_id, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"request {request.request_id}: running" in out
    assert "2024-01-01  pond  succeeded  run-abc" in out
    assert "2024-01-02  pond  queued     -" in out
    assert "s3://bucket/items/x.json" in out
    assert main(["request-status", request.request_id, "--json", "--config", str(config)]) == 0
    assert rq.RequestStatus.model_validate_json(capsys.readouterr().out) == status


def test_request_command_with_geometry_file_and_registered_name(
    cli_config: tuple[Path, LocalObjectStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = cli_config
    feature = tmp_path / "field.geojson"
    feature.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "geometry": SQUARE, "properties": {}}],
            }
        ),
        encoding="utf-8",
    )
    common = ["--start", "2024-01-01", "--end", "2024-01-01", "--config", str(config)]
    assert main(["request", "--name", "field", "--geometry", str(feature), *common]) == 0
    field_id = capsys.readouterr().out.splitlines()[0]
    assert main(["request", "--name", "lake", *common]) == 0
    lake_id = capsys.readouterr().out.splitlines()[0]
    requests = [
        rq.parse_request(store.get_bytes(i.key), max_days=10) for i in rq.list_incoming(store)
    ]
    assert sorted(r.request_id for r in requests) == sorted([field_id, lake_id])
    by_name = {r.aoi.name: r for r in requests}
    assert by_name["field"].aoi.geometry == SQUARE
    assert by_name["lake"].aoi.named_only


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--name", "pond", "--bbox", "9.1", "47.0", "9.0", "47.1"], "aoi.bbox: bbox is inverted"),
        (["--name", "Pond"], "aoi.name: "),
        (["--name", "pond", "--end", "2023-12-01"], "end_date: end date 2023-12-01 is before"),
        (["--name", "pond", "--id", "Bad Id"], "request_id: "),
        (["--name", "pond", "--geometry", "/nonexistent.geojson"], "aoi.geometry: cannot read"),
    ],
)
def test_invalid_request_exits_2_and_writes_nothing(
    cli_config: tuple[Path, LocalObjectStore],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    words: str,
) -> None:
    config, store = cli_config
    defaults = {"--start": "2024-01-01", "--end": "2024-01-02"}
    for flag, value in defaults.items():
        if flag not in argv:
            argv = [*argv, flag, value]
    assert main(["request", *argv, "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert words in captured.err and captured.out == ""
    assert rq.list_incoming(store) == []
    assert not store.root.exists() or not any(store.root.rglob("*"))


def test_usage_errors_exit_2(
    cli_config: tuple[Path, LocalObjectStore], capsys: pytest.CaptureFixture[str]
) -> None:
    config, store = cli_config
    both = ["--bbox", "9", "47", "9.1", "47.1", "--geometry", "x.geojson"]
    argv = ["request", "--name", "p", *both, "--start", "2024-01-01", "--end", "2024-01-01"]
    assert main([*argv, "--config", str(config)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["request", "--name", "p", "--start", "2024-01-01"]) == 2
    assert "--end" in capsys.readouterr().err
    assert rq.list_incoming(store) == []
