"""Bad input reaching an asset (e.g. edited in the launchpad) fails before any write."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from geospatial_pipeline.config import parse_config
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.resources.stac import AoiSpec, ScopeResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from tests.partitioning import PARTITIONS, materialize_partition

OK_AOI = AoiSpec(name="ok", bbox=[0, 0, 1, 1])


@pytest.mark.parametrize(
    ("aois", "bands", "message"),
    [
        ([AoiSpec(name="a", bbox=[1.0, 2.0, 0.0, 3.0])], ["red"], "aois.0: bbox is inverted"),
        (
            [AoiSpec(name="a", bbox=[0, 0, 1, 1]), AoiSpec(name="a", bbox=[2, 2, 3, 3])],
            ["red"],
            "duplicate AOI name 'a'",
        ),
        ([AoiSpec(name="a", geometry_json="{not json")], ["red"], "geometry_json is not JSON"),
        # The run's own AOI is fine; its bands were emptied.
        ([OK_AOI], [], "bands: List should have at least 1 item"),
    ],
)
def test_invalid_scope_fails_before_writing(
    tmp_path: Path, aois: list[AoiSpec], bands: list[str], message: str
) -> None:
    """The run is for the registered AOI 'ok' (its geometry comes from the registry); the
    scope resource edited in the launchpad is still checked as the YAML file would be."""
    config = parse_config(
        {
            # Nothing listens on port 9: the search must never be reached.
            "stac": {"api_url": "http://127.0.0.1:9", "max_retries": 0, "timeout_s": 1},
            "aois": [{"name": "ok", "bbox": [0, 0, 1, 1]}],
            "partitions": PARTITIONS,
            "storage": {"url": str(tmp_path / "objects")},
            "warehouse": {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")},
        }
    )
    resources = {**build_resources(config), "scope": ScopeResource(aois=aois, bands=bands)}
    result = materialize_partition(config, "2020-03-02", "ok", resources=resources)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error is not None
    text = error.to_string()
    assert ConfigError.__name__ in text and message in text
    # Only the registry, written when 'ok' was registered before the run.
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["objects/aois/ok.geojson"]
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.parametrize("url", ["", "  ", "file://", "gs://bucket"])
def test_store_url_edited_to_nonsense_is_refused_by_the_resource(url: str) -> None:
    """The resource applies the config's rule itself: an empty URL would otherwise make the
    working directory the store."""
    with pytest.raises(ValidationError) as err:
        ObjectStoreResource(url=url)
    assert err.value.errors()[0]["loc"] == ("url",)
    assert "use s3://bucket/prefix" in str(err.value)
