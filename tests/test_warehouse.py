"""Warehouse resources against a real DuckDB file and against Snowflake faked by fakesnow.

fakesnow runs in patch mode: ``snowflake.connector.connect`` (which
``SnowflakeResource.get_connection`` looks up at call time) and
``snowflake.connector.pandas_tools.write_pandas`` (which the resource also looks up at call
time) are its standard targets, so no ``extra_targets`` are needed. ``db_path`` keeps each
fake database in a DuckDB file under tmp_path, so data written through one connection is read
back through another, as with a real warehouse.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb
import fakesnow
import pytest
from dagster_duckdb import DuckDBResource
from dagster_snowflake import SnowflakeResource

from geospatial_pipeline.errors import PipelineError, WarehouseError
from geospatial_pipeline.resources.snowflake import SnowflakeWarehouse
from geospatial_pipeline.resources.warehouse import DuckDBWarehouse, WarehouseResource
from geospatial_pipeline.warehouse import sql
from geospatial_pipeline.warehouse.tables import (
    AOIS,
    CATALOG_RECONCILIATION,
    DAILY_AOI_STATS,
    PRODUCT_CATALOG,
    SCENE_METADATA,
    SCENE_QUALITY,
    Column,
    ColumnType,
    Table,
    dump_json,
    encode_rows,
)

pytestmark = [
    # fakesnow fetches DuckDB results as arrow through the DB-API; DuckDB 2 warns about the copy.
    pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning"),
    pytest.mark.timeout(120),
]

BACKENDS = ["duckdb", "snowflake"]
DAY_1 = datetime.date(2024, 5, 1)
DAY_2 = datetime.date(2024, 5, 2)
# Partitions of SCENE_METADATA: (partition_date, aoi).
BERLIN_1 = (DAY_1, "berlin")
BERLIN_2 = (DAY_2, "berlin")
PARIS_1 = (DAY_1, "paris")
# Not a credential: fakesnow accepts anything. Passed through EnvVar like production does.
FAKE_PASSWORD = "fakesnow-accepts-anything"


def _snowflake_resource() -> SnowflakeResource:
    return SnowflakeResource(
        account="test_account",
        user="pipeline",
        password=dg.EnvVar("SNOWFLAKE_PASSWORD"),
        database="GEO",
        schema="PIPELINE",
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def warehouse(
    backend: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WarehouseResource]:
    if backend == "duckdb":
        yield DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "warehouse.duckdb")))
        return
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", FAKE_PASSWORD)
    db_dir = tmp_path / "fakesnow"
    db_dir.mkdir()
    with fakesnow.patch(db_path=db_dir):
        yield SnowflakeWarehouse(snowflake=_snowflake_resource())


def scene_row(item_id: str, aoi: str, day: datetime.date, **overrides: Any) -> dict[str, Any]:
    acquired = datetime.datetime.combine(day, datetime.time(10, 20, 31, 24000), datetime.UTC)
    row: dict[str, Any] = {
        "item_id": item_id,
        "aoi": aoi,
        "collection": "sentinel-2-l2a",
        "acquired_at": acquired,
        "partition_date": day,
        "mgrs_tile": "33UUP",
        "platform": "sentinel-2a",
        "cloud_cover": 12.5,
        "processing_baseline": "05.10",
        "boa_offset_applied": True,
        "created": acquired + datetime.timedelta(hours=3),
        "updated": acquired + datetime.timedelta(hours=4, microseconds=1),
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[13.0, 52.0], [14.0, 52.0], [14.0, 53.0], [13.0, 52.0]]],
        },
        "bbox": [13.0, 52.0, 14.0, 53.0],
        "band_objects": [
            {
                "band": "B04",
                "key": f"raw/{item_id}/{aoi}/B04.tif",
                "url": f"s3://bucket/raw/{item_id}/{aoi}/B04.tif",
                "bytes": 1234567,
                "sha256": "ab" * 32,
            }
        ],
        "properties": {"datetime": acquired.isoformat(), "eo:cloud_cover": 12.5},
        "object_count": 1,
        "object_bytes": 1234567,
    }
    row.update(overrides)
    return row


def sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["item_id"], r["aoi"]))


# --- behaviour shared by both backends ---------------------------------------------------


def test_tables_created_on_first_use(warehouse: WarehouseResource) -> None:
    assert warehouse.count_rows(SCENE_METADATA) == 0
    assert warehouse.count_rows(SCENE_METADATA, BERLIN_1) == 0
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == []


def test_replace_partition_round_trip(warehouse: WarehouseResource) -> None:
    rows = [scene_row("S2B_2", "berlin", DAY_1), scene_row("S2A_1", "berlin", DAY_1)]

    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows) == 2

    fetched = warehouse.fetch_partition(SCENE_METADATA, BERLIN_1)
    # Ordered by the natural key (item_id), every column back in its Python type.
    assert fetched == sorted_rows(rows)
    assert list(fetched[0]) == list(SCENE_METADATA.column_names)
    assert warehouse.count_rows(SCENE_METADATA, BERLIN_1) == 2


def test_rows_may_omit_the_partition_columns(warehouse: WarehouseResource) -> None:
    full = scene_row("S2A_1", "berlin", DAY_1)
    bare = {k: v for k, v in full.items() if k not in ("partition_date", "aoi")}

    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [bare]) == 1

    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == [full]


def test_rerun_same_partition_has_no_duplicates(warehouse: WarehouseResource) -> None:
    rows = [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_2", "berlin", DAY_1)]

    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows)
    first = warehouse.fetch_partition(SCENE_METADATA, BERLIN_1)
    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows) == 2

    assert warehouse.count_rows(SCENE_METADATA) == 2
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == first

    # A re-run with fewer rows replaces, it does not merge.
    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows[:1]) == 1
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == sorted_rows(rows[:1])


def test_partitions_are_independent(warehouse: WarehouseResource) -> None:
    day_1 = [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_2", "berlin", DAY_1)]
    day_2 = [scene_row("S2B_9", "berlin", DAY_2, cloud_cover=None, bbox=None)]
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, day_1)
    warehouse.replace_partition(SCENE_METADATA, BERLIN_2, day_2)

    replacement = [scene_row("S2A_3", "berlin", DAY_1)]
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, replacement)

    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == replacement
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_2) == day_2
    assert warehouse.count_rows(SCENE_METADATA) == 2
    assert warehouse.count_rows(SCENE_METADATA, BERLIN_2) == 1


def test_replacing_one_aoi_leaves_other_aois_and_days_byte_identical(
    warehouse: WarehouseResource,
) -> None:
    """(day 1, berlin) is replaced; (day 1, paris) and (day 2, berlin) must not change at all.

    The same item id in every partition (one scene covers both AOIs) makes a DELETE that
    matched on only one of the two columns visible in the others' rows.
    """
    warehouse.replace_partition(
        SCENE_METADATA,
        BERLIN_1,
        [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_2", "berlin", DAY_1)],
    )
    warehouse.replace_partition(
        SCENE_METADATA,
        PARIS_1,
        [scene_row("S2A_1", "paris", DAY_1, cloud_cover=None, properties={"é": [1, None]})],
    )
    warehouse.replace_partition(SCENE_METADATA, BERLIN_2, [scene_row("S2A_1", "berlin", DAY_2)])
    paris_before = warehouse.fetch_partition(SCENE_METADATA, PARIS_1)
    day_2_before = warehouse.fetch_partition(SCENE_METADATA, BERLIN_2)
    assert len(paris_before) == 1 and len(day_2_before) == 1

    replacement = [scene_row("S2A_1", "berlin", DAY_1, cloud_cover=99.0)]
    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, replacement) == 1

    paris_after = warehouse.fetch_partition(SCENE_METADATA, PARIS_1)
    day_2_after = warehouse.fetch_partition(SCENE_METADATA, BERLIN_2)
    assert paris_after == paris_before
    assert day_2_after == day_2_before
    # Byte for byte: the stored text of every column, JSON included, is unchanged.
    assert repr(paris_after) == repr(paris_before)
    assert repr(day_2_after) == repr(day_2_before)
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == replacement
    assert warehouse.count_rows(SCENE_METADATA) == 3

    # Emptying one AOI's day leaves the other AOI's day alone too.
    assert warehouse.replace_partition(SCENE_METADATA, PARIS_1, []) == 0
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == replacement
    assert warehouse.count_rows(SCENE_METADATA, PARIS_1) == 0
    assert warehouse.count_rows(SCENE_METADATA) == 2


def test_empty_rows_clear_only_that_partition(warehouse: WarehouseResource) -> None:
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [scene_row("S2A_1", "berlin", DAY_1)])
    warehouse.replace_partition(SCENE_METADATA, BERLIN_2, [scene_row("S2A_2", "berlin", DAY_2)])

    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, []) == 0

    assert warehouse.count_rows(SCENE_METADATA, BERLIN_1) == 0
    assert warehouse.count_rows(SCENE_METADATA, BERLIN_2) == 1


def test_json_round_trip_nested_unicode(warehouse: WarehouseResource) -> None:
    properties = {
        "title": "Zürich \u2013 東京 ✓ 🛰️",
        'quote"and\\backslash': "line\nbreak\ttab",
        "nested": {"z": [1, 2.5, None, True, {"deep": ["ä", "ß", {"ø": -1}]}], "a": {}},
        "empty_list": [],
        "big": 2**53,
        "negative_exp": 1.5e-12,
    }
    row = scene_row(
        "S2A_json",
        "zürich",
        DAY_1,
        properties=properties,
        geometry=None,
        band_objects=[],
        bbox=[-180.0, -90.0, 180.0, 90.0],
    )

    warehouse.replace_partition(SCENE_METADATA, (DAY_1, "zürich"), [row])
    (fetched,) = warehouse.fetch_partition(SCENE_METADATA, (DAY_1, "zürich"))

    assert fetched["properties"] == properties
    assert fetched["geometry"] is None  # SQL NULL, not JSON null
    assert fetched["band_objects"] == []
    assert fetched["bbox"] == [-180.0, -90.0, 180.0, 90.0]
    assert fetched["aoi"] == "zürich"


def test_timestamps_round_trip_in_utc(warehouse: WarehouseResource) -> None:
    cest = datetime.timezone(datetime.timedelta(hours=2), "CEST")
    ist = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    acquired = datetime.datetime(2024, 5, 1, 12, 20, 31, 999999, tzinfo=cest)
    created = datetime.datetime(2024, 5, 1, 5, 30, 0, tzinfo=ist)  # midnight UTC, no microseconds
    row = scene_row("S2A_tz", "berlin", DAY_1, acquired_at=acquired, created=created, updated=None)

    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [row])
    (fetched,) = warehouse.fetch_partition(SCENE_METADATA, BERLIN_1)

    assert fetched["acquired_at"] == acquired
    assert fetched["acquired_at"].utcoffset() == datetime.timedelta(0)
    assert fetched["acquired_at"].replace(tzinfo=None) == datetime.datetime(
        2024, 5, 1, 10, 20, 31, 999999
    )
    assert fetched["created"] == datetime.datetime(2024, 5, 1, 0, 0, tzinfo=datetime.UTC)
    assert fetched["created"].utcoffset() == datetime.timedelta(0)
    assert fetched["updated"] is None
    assert fetched["partition_date"] == DAY_1
    assert type(fetched["partition_date"]) is datetime.date


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        pytest.param({"properties": {"when": object()}}, "not JSON-serializable", id="json"),
        pytest.param({"properties": {"x": float("nan")}}, "not JSON-serializable", id="json-nan"),
        pytest.param({"cloud_cover": "12.5"}, "expects float, got str", id="wrong-type"),
        pytest.param({"object_count": True}, "expects int, got bool", id="bool-as-int"),
        pytest.param({"object_bytes": 2**63}, "out of BIGINT range", id="bigint-range"),
        pytest.param(
            {"acquired_at": datetime.datetime(2024, 5, 1, 10)}, "timezone-aware", id="naive"
        ),
        pytest.param({"item_id": None}, "not nullable", id="null"),
        pytest.param({"cloudcover": 1.0}, "unknown columns", id="unknown-column"),
        pytest.param(
            {"partition_date": DAY_2},
            "partition_date=2024-05-02 does not match the partition being replaced "
            "(partition_date=2024-05-01)",
            id="other-day",
        ),
        pytest.param(
            {"partition_date": datetime.datetime(2024, 5, 1)},
            "partition_date=datetime.datetime(2024, 5, 1, 0, 0) does not match",
            id="datetime-day",
        ),
        pytest.param(
            {"aoi": "paris"},
            "aoi=paris does not match the partition being replaced (aoi=berlin)",
            id="other-aoi",
        ),
    ],
)
def test_invalid_row_leaves_previous_partition_intact(
    warehouse: WarehouseResource, bad_row: dict[str, Any], message: str
) -> None:
    good = [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_2", "berlin", DAY_1)]
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, good)
    before = warehouse.fetch_partition(SCENE_METADATA, BERLIN_1)

    bad = scene_row("S2A_3", "berlin", DAY_1)
    bad.update(bad_row)
    rows = [scene_row("S2A_1", "berlin", DAY_1), bad]
    with pytest.raises(WarehouseError) as excinfo:
        warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows)

    text = str(excinfo.value)
    assert message in text
    assert "'scene_metadata'" in text and "row 1" in text
    assert "partition partition_date=2024-05-01, aoi=berlin of table" in text
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == before


def test_duplicate_natural_key_is_refused(warehouse: WarehouseResource) -> None:
    rows = [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_1", "berlin", DAY_1)]
    with pytest.raises(WarehouseError, match="duplicate natural key"):
        warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows)
    assert warehouse.count_rows(SCENE_METADATA) == 0


@pytest.mark.parametrize("failure", ["database-rejects-insert", "crash-after-delete"])
def test_failure_inside_transaction_rolls_back(
    warehouse: WarehouseResource, backend: str, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """The DELETE has run when the write fails: the rollback must bring the old rows back.

    "crash-after-delete" raises in Python between the DELETE and the INSERT, so only an
    explicit ROLLBACK saves the partition (a failed statement would already have doomed the
    transaction in DuckDB, making a COMMIT harmless and the test toothless).
    """
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [scene_row("S2A_1", "berlin", DAY_1)])
    warehouse.replace_partition(SCENE_METADATA, BERLIN_2, [scene_row("S2A_2", "berlin", DAY_2)])
    before = warehouse.fetch_partition(SCENE_METADATA, BERLIN_1)

    deletes: list[str] = []
    real_delete = sql.delete_partition_sql

    def spy_delete(*args: Any, **kwargs: Any) -> str:
        statement = real_delete(*args, **kwargs)
        deletes.append(statement)
        return statement

    def broken_insert(*args: Any, **kwargs: Any) -> str:
        if failure == "crash-after-delete":
            raise RuntimeError("injected crash between DELETE and INSERT")
        return 'INSERT INTO "SCENE_METADATA" ("NO_SUCH_COLUMN") VALUES (1)'

    insert_builder = (
        "insert_values_sql" if backend == "duckdb" else "snowflake_insert_from_staging_sql"
    )
    rows = [scene_row("S2A_9", "berlin", DAY_1), scene_row("S2A_8", "berlin", DAY_1)]
    with monkeypatch.context() as patched:
        patched.setattr(sql, "delete_partition_sql", spy_delete)
        patched.setattr(sql, insert_builder, broken_insert)
        with pytest.raises(
            WarehouseError,
            match=(
                r"replacing partition partition_date=2024-05-01, aoi=berlin "
                r"of table 'scene_metadata'"
            ),
        ):
            warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows)

    assert deletes, "the failure must happen after the DELETE for this test to mean anything"
    assert warehouse.fetch_partition(SCENE_METADATA, BERLIN_1) == before
    assert warehouse.count_rows(SCENE_METADATA) == 2
    # The connection was released: the next write goes through normally.
    assert warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows) == 2


def test_warehouse_error_is_a_pipeline_error(warehouse: WarehouseResource) -> None:
    with pytest.raises(PipelineError):
        warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [{"item_id": 1}])


MOMENT = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("partition", "message"),
    [
        pytest.param(
            (MOMENT, "berlin"),
            "partition column 'partition_date' expects datetime.date, got datetime " + repr(MOMENT),
            id="datetime-for-date",
        ),
        pytest.param(
            ("2024-05-01", "berlin"),
            "partition column 'partition_date' expects datetime.date, got str '2024-05-01'",
            id="text-for-date",
        ),
        pytest.param(
            (DAY_1, ""),
            "partition column 'aoi' expects a non-empty str, got str ''",
            id="empty-aoi",
        ),
        pytest.param(
            (DAY_1, 7),
            "partition column 'aoi' expects a non-empty str, got int 7",
            id="int-aoi",
        ),
        pytest.param(
            (DAY_1,),
            "partition (datetime.date(2024, 5, 1),) has 1 values, expected 2 for "
            "('partition_date', 'aoi')",
            id="date-only",
        ),
        pytest.param((DAY_1, "berlin", "paris"), "has 3 values, expected 2", id="one-too-many"),
        pytest.param(DAY_1, "must be a sequence of values", id="bare-date"),
        pytest.param("berlin", "must be a sequence of values", id="bare-string"),
    ],
)
def test_partition_is_checked(warehouse: WarehouseResource, partition: Any, message: str) -> None:
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [scene_row("S2A_1", "berlin", DAY_1)])
    calls = [
        lambda: warehouse.replace_partition(SCENE_METADATA, partition, []),
        lambda: warehouse.fetch_partition(SCENE_METADATA, partition),
        lambda: warehouse.count_rows(SCENE_METADATA, partition),
    ]
    for call in calls:
        with pytest.raises(WarehouseError) as excinfo:
            call()
        text = str(excinfo.value)
        assert message in text
        assert "table 'scene_metadata'" in text
    # Nothing was deleted by the refused replace.
    assert warehouse.count_rows(SCENE_METADATA, BERLIN_1) == 1


def test_aois_table_round_trip(warehouse: WarehouseResource) -> None:
    created = datetime.datetime(2020, 2, 18, 9, 30, 0, 123456, tzinfo=datetime.UTC)
    active = {
        "name": "aoi_a",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[1.4, 43.56], [1.43, 43.56], [1.43, 43.58], [1.4, 43.58], [1.4, 43.56]]
            ],
        },
        "bbox": [1.4, 43.56, 1.43, 43.58],
        "west": 1.4,
        "south": 43.56,
        "east": 1.43,
        "north": 43.58,
        "first_day": datetime.date(2020, 2, 19),
        "created": created,
        "origin": "config",
        "retired_on": None,
    }
    retired = active | {
        "name": "aoi_b",
        "geometry": {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0], [1, 1], [0, 0]]]]},
        "bbox": [0.0, 0.0, 1.0, 1.0],
        "west": 0.0,
        "south": 0.0,
        "east": 1.0,
        "north": 1.0,
        "origin": "request:42",
        "retired_on": datetime.date(2020, 3, 1),
    }

    # The name may be left out of the row: the partition names the AOI.
    bare = {k: v for k, v in active.items() if k != "name"}
    assert warehouse.replace_partition(AOIS, ("aoi_a",), [bare]) == 1
    assert warehouse.replace_partition(AOIS, ["aoi_b"], [retired]) == 1

    assert warehouse.fetch_partition(AOIS, ("aoi_a",)) == [active]
    (fetched,) = warehouse.fetch_partition(AOIS, ("aoi_b",))
    assert fetched == retired
    assert type(fetched["retired_on"]) is datetime.date
    assert fetched["geometry"]["type"] == "MultiPolygon"
    assert warehouse.count_rows(AOIS) == 2

    # Retiring aoi_b later replaces only its own row.
    assert warehouse.replace_partition(AOIS, ("aoi_b",), [retired | {"retired_on": None}]) == 1
    assert warehouse.fetch_partition(AOIS, ("aoi_a",)) == [active]
    assert warehouse.fetch_partition(AOIS, ("aoi_b",))[0]["retired_on"] is None

    with pytest.raises(WarehouseError, match="column 'geometry' is not nullable"):
        warehouse.replace_partition(AOIS, ("aoi_a",), [active | {"geometry": None}])
    with pytest.raises(WarehouseError, match=r"name=aoi_b does not match .*\(name=aoi_a\)"):
        warehouse.replace_partition(AOIS, ("aoi_a",), [retired])
    assert warehouse.fetch_partition(AOIS, ("aoi_a",)) == [active]


def test_kind_and_describe_never_leak_the_password(
    warehouse: WarehouseResource, backend: str
) -> None:
    assert warehouse.kind == backend
    description = warehouse.describe()
    assert description.startswith(f"{backend}:")
    assert FAKE_PASSWORD not in description
    if backend == "snowflake":
        assert description == "snowflake:test_account/GEO.PIPELINE"


# --- the abstract resource inside a Dagster asset ------------------------------------------


@dg.asset
def scene_metadata_probe(warehouse: WarehouseResource) -> dg.MaterializeResult:
    rows = [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_2", "berlin", DAY_1)]
    written = warehouse.replace_partition(SCENE_METADATA, BERLIN_1, rows)
    return dg.MaterializeResult(
        metadata={
            "rows": written,
            "warehouse": warehouse.describe(),
            "kind": warehouse.kind,
        }
    )


def test_asset_takes_either_implementation_through_the_abstract_base(
    warehouse: WarehouseResource, backend: str
) -> None:
    result = dg.materialize([scene_metadata_probe], resources={"warehouse": warehouse})

    assert result.success
    (materialization,) = result.asset_materializations_for_node("scene_metadata_probe")
    assert materialization.metadata["rows"] == dg.IntMetadataValue(2)
    assert materialization.metadata["kind"] == dg.TextMetadataValue(backend)
    assert warehouse.count_rows(SCENE_METADATA, BERLIN_1) == 2


def test_definitions_accept_nested_resources(tmp_path: Any) -> None:
    for resource in (
        DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb"))),
        SnowflakeWarehouse(snowflake=_snowflake_resource()),
    ):
        defs = dg.Definitions(assets=[scene_metadata_probe], resources={"warehouse": resource})
        dg.Definitions.validate_loadable(defs)


def test_abstract_base_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError, match="abstract"):
        WarehouseResource()  # type: ignore[abstract]


# --- backend specifics ---------------------------------------------------------------------


def test_duckdb_column_types(tmp_path: Any) -> None:
    path = tmp_path / "types.duckdb"
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(path)))
    warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [scene_row("S2A_1", "berlin", DAY_1)])

    with duckdb.connect(str(path), read_only=True) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'scene_metadata'"
            ).fetchall()
        )
        stored = conn.execute("SELECT properties FROM scene_metadata").fetchone()
    assert types["properties"] == "JSON"
    assert types["acquired_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["partition_date"] == "DATE"
    assert types["object_bytes"] == "BIGINT"
    # Deterministic text: sorted keys, no whitespace, unicode kept as is.
    assert stored is not None
    assert stored[0] == dump_json(scene_row("S2A_1", "berlin", DAY_1)["properties"])


def test_duckdb_creates_the_parent_directory(tmp_path: Any) -> None:
    path = tmp_path / "not" / "yet" / "there" / "w.duckdb"
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(path)))
    assert warehouse.count_rows(SCENE_METADATA) == 0
    assert path.exists()


def test_duckdb_failure_to_open_is_a_warehouse_error(tmp_path: Any) -> None:
    # An unknown setting fails at once (a locked or unreadable file would be retried ~100 s).
    resource = DuckDBResource(
        database=str(tmp_path / "w.duckdb"), connection_config={"no_such_setting": 1}
    )
    with pytest.raises(WarehouseError, match="counting rows of table 'scene_metadata'"):
        DuckDBWarehouse(duckdb=resource).count_rows(SCENE_METADATA)


def test_snowflake_stores_variant_and_timestamp_tz(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", FAKE_PASSWORD)
    (tmp_path / "fs").mkdir()
    with fakesnow.patch(db_path=tmp_path / "fs"):
        resource = _snowflake_resource()
        warehouse = SnowflakeWarehouse(snowflake=resource)
        row = scene_row("S2A_1", "berlin", DAY_1)
        warehouse.replace_partition(SCENE_METADATA, BERLIN_1, [row])

        with resource.get_connection() as conn:
            cur = conn.cursor()
            # Unquoted identifiers work because the DDL uses Snowflake's upper-cased names.
            cur.execute('SELECT properties:"eo:cloud_cover", acquired_at FROM scene_metadata')
            fetched = cur.fetchone()
            assert fetched is not None
            cloud, acquired = fetched
            # fakesnow's TYPEOF() says JSON where Snowflake says OBJECT, so check the column.
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'SCENE_METADATA'"
            )
            types = dict(cur.fetchall())
            cur.execute("SHOW TABLES")
            tables = [r[1] for r in cur.fetchall()]
    assert float(cloud) == 12.5
    assert types["PROPERTIES"] == "VARIANT"
    assert types["ACQUIRED_AT"] == "TIMESTAMP_TZ"
    assert acquired == row["acquired_at"]
    # The staging table was dropped after the commit.
    assert tables == ["SCENE_METADATA"]


@pytest.mark.parametrize("paramstyle", ["pyformat", "qmark", "numeric"])
def test_snowflake_paramstyles_bind_every_partition_column(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, paramstyle: str
) -> None:
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", FAKE_PASSWORD)
    (tmp_path / "fs").mkdir()
    with fakesnow.patch(db_path=tmp_path / "fs"):
        resource = SnowflakeResource(
            account="test_account",
            user="pipeline",
            password=dg.EnvVar("SNOWFLAKE_PASSWORD"),
            database="GEO",
            schema="PIPELINE",
            paramstyle=paramstyle,
        )
        warehouse = SnowflakeWarehouse(snowflake=resource)
        warehouse.replace_partition(DAILY_AOI_STATS, BERLIN_1, [{"scenes_used": 1}])
        warehouse.replace_partition(DAILY_AOI_STATS, PARIS_1, [{"scenes_used": 2}])
        warehouse.replace_partition(DAILY_AOI_STATS, BERLIN_1, [{"scenes_used": 3}])

        assert warehouse.count_rows(DAILY_AOI_STATS) == 2
        (paris,) = warehouse.fetch_partition(DAILY_AOI_STATS, PARIS_1)
        assert paris["scenes_used"] == 2
        (berlin,) = warehouse.fetch_partition(DAILY_AOI_STATS, BERLIN_1)
        assert (berlin["partition_date"], berlin["aoi"], berlin["scenes_used"]) == (
            DAY_1,
            "berlin",
            3,
        )


def test_snowflake_requires_default_connector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", FAKE_PASSWORD)
    resource = SnowflakeResource(
        account="a",
        user="u",
        password=dg.EnvVar("SNOWFLAKE_PASSWORD"),
        connector="sqlalchemy",
    )
    with pytest.raises(WarehouseError, match=r"default snowflake\.connector"):
        SnowflakeWarehouse(snowflake=resource).count_rows(SCENE_METADATA)


# --- pure schema and SQL builders -----------------------------------------------------------


def test_create_table_sql_per_dialect() -> None:
    duck = sql.create_table_sql(SCENE_METADATA, "duckdb")
    snow = sql.create_table_sql(SCENE_METADATA, "snowflake")

    assert duck.startswith('CREATE TABLE IF NOT EXISTS "scene_metadata" (')
    assert '"properties" JSON' in duck and '"acquired_at" TIMESTAMPTZ' in duck
    assert '"item_id" VARCHAR NOT NULL' in duck and '"partition_date" DATE NOT NULL' in duck
    assert snow.startswith('CREATE TABLE IF NOT EXISTS "SCENE_METADATA" (')
    assert '"PROPERTIES" VARIANT' in snow and '"ACQUIRED_AT" TIMESTAMP_TZ' in snow
    assert '"OBJECT_BYTES" BIGINT' in snow and '"CLOUD_COVER" DOUBLE' in snow
    with pytest.raises(ValueError, match="dialect"):
        sql.create_table_sql(SCENE_METADATA, "postgres")  # type: ignore[arg-type]


def test_statements_bind_values() -> None:
    assert sql.delete_partition_sql(SCENE_METADATA, "duckdb") == (
        'DELETE FROM "scene_metadata" WHERE "partition_date" = ? AND "aoi" = ?'
    )
    assert sql.delete_partition_sql(SCENE_METADATA, "snowflake", "%s").endswith(
        'WHERE "PARTITION_DATE" = %s AND "AOI" = %s'
    )
    # Numeric paramstyle numbers each partition value.
    assert sql.count_rows_sql(CATALOG_RECONCILIATION, "snowflake", ":1").endswith(
        'WHERE "DAY" = :1 AND "AOI" = :2'
    )
    assert sql.select_partition_sql(AOIS, "duckdb").endswith(
        'FROM "aois" WHERE "name" = ? ORDER BY "name"'
    )
    assert sql.select_partition_sql(SCENE_METADATA, "duckdb").endswith(
        'WHERE "partition_date" = ? AND "aoi" = ? ORDER BY "item_id"'
    )
    insert = sql.snowflake_insert_from_staging_sql(SCENE_METADATA, "stage_x")
    assert 'PARSE_JSON("PROPERTIES")' in insert and 'TO_TIMESTAMP_TZ("ACQUIRED_AT"' in insert
    with pytest.raises(ValueError, match="placeholder"):
        sql.count_rows_sql(SCENE_METADATA, "duckdb", "'2024-05-01'")  # type: ignore[arg-type]


def test_schema_validation() -> None:
    day = Column("d", ColumnType.DATE, nullable=False)
    with pytest.raises(ValueError, match="invalid identifier"):
        Column("drop table;", ColumnType.STRING)
    with pytest.raises(
        ValueError, match="partition column 'a' must be a non-nullable DATE or STRING"
    ):
        Table("t", (Column("a", ColumnType.STRING),), partition_columns=("a",))
    with pytest.raises(ValueError, match=r"partition column 'n' must be .*not BIGINT"):
        Table("t", (Column("n", ColumnType.BIGINT, nullable=False),), partition_columns=("n",))
    with pytest.raises(ValueError, match="partition column 'x' is not a column"):
        Table("t", (day,), partition_columns=("d", "x"))
    with pytest.raises(ValueError, match="has no partition columns"):
        Table("t", (day,), partition_columns=())
    with pytest.raises(ValueError, match=r"repeats partition columns \['d'\]"):
        Table("t", (day,), partition_columns=("d", "d"))
    with pytest.raises(TypeError, match="the string 'd'"):
        Table("t", (day,), partition_columns="d")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="natural key"):
        Table("t", (day,), partition_columns=("d",), natural_key=("missing",))
    assert SCENE_METADATA.name == "scene_metadata"
    assert len(SCENE_METADATA.columns) == 18
    for table in (SCENE_METADATA, DAILY_AOI_STATS, SCENE_QUALITY, PRODUCT_CATALOG):
        assert table.partition_columns == ("partition_date", "aoi")
    assert CATALOG_RECONCILIATION.partition_columns == ("day", "aoi")
    assert AOIS.partition_columns == ("name",)
    assert [c.name for c in AOIS.columns if c.nullable] == ["retired_on"]


def test_natural_key_is_unique_within_a_partition() -> None:
    # One row per scene in a (day, AOI) partition, and one stats row per partition.
    encode_rows(
        SCENE_METADATA,
        BERLIN_1,
        [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_2", "berlin", DAY_1)],
    )
    with pytest.raises(ValueError, match=r"row 1: duplicate natural key \('item_id',\)"):
        encode_rows(
            SCENE_METADATA,
            BERLIN_1,
            [scene_row("S2A_1", "berlin", DAY_1), scene_row("S2A_1", "berlin", DAY_1)],
        )
    stats = {"scenes_used": 1}
    with pytest.raises(ValueError, match="row 1: duplicate natural key"):
        encode_rows(DAILY_AOI_STATS, BERLIN_1, [stats, stats])


def test_json_serialization_is_deterministic() -> None:
    a = scene_row("S2A_1", "berlin", DAY_1, properties={"b": 1, "a": {"d": 2, "c": "é"}})
    b = scene_row("S2A_1", "berlin", DAY_1, properties={"a": {"c": "é", "d": 2}, "b": 1})
    (encoded_a,) = encode_rows(SCENE_METADATA, BERLIN_1, [a])
    (encoded_b,) = encode_rows(SCENE_METADATA, BERLIN_1, [b])
    assert encoded_a == encoded_b
    index = SCENE_METADATA.column_names.index("properties")
    assert encoded_a[index] == '{"a":{"c":"é","d":2},"b":1}'
    assert json.loads(encoded_a[index]) == a["properties"]
