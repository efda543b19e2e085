"""Bad input reaching an asset (e.g. edited in the launchpad) fails before any write."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize
from pydantic import ValidationError

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.definitions import build_assets
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.resources.stac import AoiSpec, ScopeResource
from geospatial_pipeline.resources.storage import ObjectStoreResource


@pytest.mark.parametrize(
    ("aois", "message"),
    [
        ([AoiSpec(name="a", bbox=[1.0, 2.0, 0.0, 3.0])], "aois.0: bbox is inverted"),
        (
            [AoiSpec(name="a", bbox=[0, 0, 1, 1]), AoiSpec(name="a", bbox=[2, 2, 3, 3])],
            "duplicate AOI name 'a'",
        ),
        ([AoiSpec(name="a", geometry_json="{not json")], "geometry_json is not JSON"),
    ],
)
def test_invalid_scope_fails_before_writing(
    tmp_path: Path, aois: list[AoiSpec], message: str
) -> None:
    config = parse_config(
        {
            # Nothing listens on port 9: the search must never be reached.
            "stac": {"api_url": "http://127.0.0.1:9", "max_retries": 0, "timeout_s": 1},
            "aois": [{"name": "ok", "bbox": [0, 0, 1, 1]}],
            "partitions": {"start_date": "2020-01-01"},
            "storage": {"url": str(tmp_path / "objects")},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        }
    )
    resources = {**build_resources(config), "scope": ScopeResource(aois=aois, bands=["red"])}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            build_assets(config),
            partition_key="2020-03-02",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error is not None
    text = error.to_string()
    assert ConfigError.__name__ in text and message in text
    assert not (tmp_path / "objects").exists()
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.parametrize("url", ["", "  ", "file://", "gs://bucket"])
def test_store_url_edited_to_nonsense_is_refused_by_the_resource(url: str) -> None:
    """The resource applies the config's rule itself: an empty URL would otherwise make the
    working directory the store."""
    with pytest.raises(ValidationError) as err:
        ObjectStoreResource(url=url)
    assert err.value.errors()[0]["loc"] == ("url",)
    assert "use s3://bucket/prefix" in str(err.value)
