"""The AOI registry on a local directory and on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from geospatial_pipeline.config import AoiConfig, PartitionsConfig
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.ondemand.registry import (
    AoiConflict,
    AoiRecord,
    UnknownAoi,
    aoi_key,
    check_partition_budget,
    encode,
    load,
    load_all,
    new_record,
    register,
    retire,
    same_geometry,
    unretire,
)
from geospatial_pipeline.storage.object_store import LocalObjectStore, ObjectStore, S3ObjectStore

NOW = dt.datetime(2024, 5, 2, 8, 30, tzinfo=dt.UTC)
DAY = dt.date(2024, 5, 1)
SQUARE = [[[10.0, 45.0], [10.1, 45.0], [10.1, 45.1], [10.0, 45.1], [10.0, 45.0]]]


def polygon(rings: list[list[list[float]]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": rings}


def record(name: str = "field-a", rings: Any = SQUARE, origin: str = "config") -> AoiRecord:
    aoi = AoiConfig(name=name, geometry=polygon(rings))
    return new_record(aoi, first_day=DAY, origin=origin, now=NOW)


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return LocalObjectStore(tmp_path / "store")


def test_register_new_writes_geojson_and_same_geometry_is_a_noop(store: ObjectStore) -> None:
    first = register(store, record())
    assert first.created and first.record == record()
    key = aoi_key("field-a")
    assert key == "aois/field-a.geojson"
    written = store.get_bytes(key)
    doc = json.loads(written)
    assert doc["type"] == "Feature" and doc["id"] == "field-a"
    assert doc["bbox"] == [10.0, 45.0, 10.1, 45.1]
    assert doc["properties"] == {
        "name": "field-a",
        "first_day": "2024-05-01",
        "created": "2024-05-02T08:30:00+00:00",
        "origin": "config",
        "retired_on": None,
    }
    assert written == encode(first.record)  # deterministic bytes: re-syncing rewrites nothing

    later = new_record(
        AoiConfig(name="field-a", geometry=polygon(SQUARE)),
        first_day=dt.date(2024, 6, 1),
        origin="request:r-17",
        now=NOW + dt.timedelta(days=30),
    )
    again = register(store, later)
    assert not again.created
    assert again.record.first_day == DAY and again.record.origin == "config"
    assert again.record.created == NOW
    assert store.get_bytes(key) == written


def test_ring_rotation_and_orientation_are_the_same_geometry(store: ObjectStore) -> None:
    ring = SQUARE[0][:-1]
    rotated = [*ring[2:], *ring[:2]]
    rotated.append(rotated[0])
    reversed_ring = list(reversed(SQUARE[0]))
    assert same_geometry(polygon(SQUARE), polygon([rotated]))
    assert same_geometry(polygon(SQUARE), polygon([reversed_ring]))
    moved = [[x + 1e-6, y] for x, y in SQUARE[0]]
    assert not same_geometry(polygon(SQUARE), polygon([moved]))

    register(store, record())
    assert not register(store, record(rings=[rotated])).created


def test_another_geometry_under_a_registered_name_is_refused(store: ObjectStore) -> None:
    register(store, record(origin="request:req-1"))
    other = [[[11.0, 45.0], [11.1, 45.0], [11.1, 45.1], [11.0, 45.1], [11.0, 45.0]]]
    with pytest.raises(AoiConflict) as err:
        register(store, record(rings=other, origin="request:req-2"))
    message = str(err.value)
    assert "'field-a'" in message and "request:req-1" in message and "2024-05-01" in message
    assert "new name" in message
    assert isinstance(err.value, ConfigError)
    assert load(store, "field-a").geometry == polygon(SQUARE)  # the stored one is untouched


def test_retire_then_active_on_and_unretire(store: ObjectStore) -> None:
    register(store, record())
    assert record().active_on(DAY) and not record().active_on(DAY - dt.timedelta(days=1))

    retired = retire(store, "field-a", dt.date(2024, 5, 10))
    assert retired.retired_on == dt.date(2024, 5, 10)
    assert retired.active_on(dt.date(2024, 5, 9)) and not retired.active_on(dt.date(2024, 5, 10))
    assert load(store, "field-a") == retired
    assert retire(store, "field-a", dt.date(2024, 5, 10)) == retired  # idempotent
    with pytest.raises(AoiConflict, match="retired already on 2024-05-10"):
        retire(store, "field-a", dt.date(2024, 5, 20))

    with pytest.raises(AoiConflict, match=r"retired.*unretire"):
        register(store, record())

    back = unretire(store, "field-a")
    assert back.retired_on is None and back.active_on(dt.date(2024, 5, 20))
    assert load(store, "field-a") == back == record()
    assert not register(store, record()).created


def test_load_unknown_names_the_aoi_and_lists_registered_ones(store: ObjectStore) -> None:
    with pytest.raises(UnknownAoi, match="unknown AOI 'nope'; no AOI is registered"):
        load(store, "nope")
    for i in range(25):
        register(store, record(name=f"f{i:02d}"))
    with pytest.raises(UnknownAoi) as err:
        load(store, "nope")
    message = str(err.value)
    assert "'nope'" in message and "f00, f01" in message and "f19" in message
    assert "f20" not in message and "and 5 more" in message
    with pytest.raises(ConfigError, match="name: 'Bad Name'"):
        load(store, "Bad Name")


def test_load_all_sorted_by_name(store: ObjectStore) -> None:
    assert load_all(store) == []
    for name in ("zeta", "alpha", "mid"):
        register(store, record(name=name))
    retire(store, "mid", dt.date(2024, 5, 3))
    records = load_all(store)
    assert [r.name for r in records] == ["alpha", "mid", "zeta"]
    assert records[1].retired_on == dt.date(2024, 5, 3)


def test_partition_budget_arithmetic() -> None:
    partitions = PartitionsConfig(start_date=dt.date(2023, 1, 1), max_partitions=100_000)
    today = dt.date(2024, 1, 1)  # 365 complete days
    check_partition_budget(aoi_count=273, partitions=partitions, adding="x", today=today)
    with pytest.raises(ConfigError) as err:
        check_partition_budget(aoi_count=274, partitions=partitions, adding="x", today=today)
    message = str(err.value)
    assert "registering AOI 'x'" in message
    assert "365 days x 274 AOIs = 100,010 partitions per asset" in message
    assert "10 over the limit of 100,000" in message
    assert "partitions.max_partitions" in message and "MultiPolygon" in message
    exact = PartitionsConfig(start_date=dt.date(2023, 1, 1), max_partitions=273 * 365)
    check_partition_budget(aoi_count=273, partitions=exact, adding="x", today=today)

    bounded = PartitionsConfig(
        start_date=dt.date(2024, 1, 1), end_date=dt.date(2024, 1, 10), max_partitions=20
    )
    check_partition_budget(aoi_count=2, partitions=bounded, adding="y")
    with pytest.raises(ConfigError, match="10 days x 3 AOIs = 30 partitions per asset, 10 over"):
        check_partition_budget(aoi_count=3, partitions=bounded, adding="y")


def test_antimeridian_bbox_aoi_round_trip(store: ObjectStore) -> None:
    aoi = AoiConfig(name="fiji", bbox=(179.5, -17.0, -179.5, -16.0))
    rec = new_record(aoi, first_day=DAY, origin="request:abc", now=NOW)
    assert rec.geometry["type"] == "MultiPolygon"
    assert rec.bbox == [179.5, -17.0, -179.5, -16.0]
    register(store, rec)
    back = load(store, "fiji")
    assert back == rec
    assert json.loads(store.get_bytes("aois/fiji.geojson"))["bbox"] == [179.5, -17.0, -179.5, -16.0]
    assert back.config().shape.equals(aoi.shape)
    row = back.row()
    assert (row["west"], row["south"], row["east"], row["north"]) == (179.5, -17.0, -179.5, -16.0)
    assert row["first_day"] == DAY and row["created"] == NOW and row["retired_on"] is None
    assert row["origin"] == "request:abc" and row["geometry"] == rec.geometry


def test_a_feature_with_a_bad_geometry_is_refused_naming_the_field(store: ObjectStore) -> None:
    doc = record().to_feature()
    bowtie = [[[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]
    with pytest.raises(ConfigError, match=r"aois/x.geojson: AOI 'field-a': geometry: .*invalid"):
        AoiRecord.from_feature({**doc, "geometry": polygon(bowtie)}, source="aois/x.geojson")
    with pytest.raises(ConfigError, match="geometry: geometry type must be Polygon"):
        AoiRecord.from_feature({**doc, "geometry": {"type": "Point", "coordinates": [0, 0]}})
    jump = [[[179.0, 0.0], [-179.0, 0.0], [-179.0, 1.0], [179.0, 1.0], [179.0, 0.0]]]
    with pytest.raises(ConfigError, match=r"geometry: .*long way round"):
        AoiRecord.from_feature({**doc, "geometry": polygon(jump)})
    with pytest.raises(ConfigError, match=r"properties.first_day"):
        AoiRecord.from_feature({**doc, "properties": {**doc["properties"], "first_day": "May"}})
    with pytest.raises(ConfigError, match=r"properties.created"):
        naive = {**doc["properties"], "created": "2024-05-02T08:30:00"}
        AoiRecord.from_feature({**doc, "properties": naive})
    with pytest.raises(ConfigError, match=r"properties.origin"):
        AoiRecord.from_feature({**doc, "properties": {**doc["properties"], "origin": "cli"}})

    # A bad file in the store: load() names the file and the field.
    store.put_bytes(
        "aois/field-a.geojson", json.dumps({**doc, "geometry": polygon(bowtie)}).encode()
    )
    with pytest.raises(ConfigError, match=r"field-a\.geojson: AOI 'field-a': geometry"):
        load(store, "field-a")
    with pytest.raises(ConfigError, match="geometry"):
        load_all(store)


def test_a_file_under_another_name_is_refused(store: ObjectStore) -> None:
    store.put_bytes("aois/other.geojson", encode(record()))
    with pytest.raises(ConfigError, match=r"properties.name: 'field-a', expected 'other'"):
        load(store, "other")


def test_registry_on_real_s3(s3_server: Any) -> None:
    bucket = "aoi-registry"
    s3_server.create_bucket(bucket)
    store = S3ObjectStore(
        f"s3://{bucket}/{uuid.uuid4().hex}",
        client=s3_server.boto3_client(),
        endpoint_url=s3_server.endpoint_url,
    )
    assert register(store, record(name="b")).created
    assert register(store, record(name="a", origin="request:r1")).created
    assert not register(store, record(name="b")).created
    head = store.client.head_object(Bucket=bucket, Key=f"{store.prefix}/aois/b.geojson")
    assert head["ContentType"] == "application/geo+json"
    with pytest.raises(AoiConflict, match=r"'a'.*request:r1"):
        register(store, record(name="a", rings=[[[1, 1], [2, 1], [2, 2], [1, 1]]]))
    retire(store, "a", dt.date(2024, 6, 1))
    assert [(r.name, r.retired_on) for r in load_all(store)] == [
        ("a", dt.date(2024, 6, 1)),
        ("b", None),
    ]
    with pytest.raises(UnknownAoi, match="registered: a, b"):
        load(store, "c")
