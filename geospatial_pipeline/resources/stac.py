"""STAC API resource and the scope (AOIs, bands) the pipeline fetches."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from dagster import Config, ConfigurableResource
from pydantic import BaseModel, Field, ValidationError, field_validator

from geospatial_pipeline.config import (
    AoiConfig,
    PipelineConfig,
    check_unique_aoi_names,
    format_errors,
)
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.stac.hrefs import check_allowed_hosts
from geospatial_pipeline.stac.search import (
    AoiQuery,
    DayItems,
    SearchSettings,
    open_client,
    search_day,
)


class StacSearchResource(ConfigurableResource):
    """A STAC API (Earth Search v1 by default) searched one UTC day at a time."""

    api_url: str
    collection: str = "sentinel-2-l2a"
    max_cloud_cover: float = 100.0
    max_items_per_day: int = 200
    page_size: int = 100
    timeout_s: float = 30.0
    max_retries: int = 5
    # None: the catalog's default data hosts (see stac.hrefs).
    allowed_asset_hosts: list[str] | None = None

    def settings(self) -> SearchSettings:
        try:
            # Re-checked here: a value edited in the launchpad skips the YAML validation.
            hosts = check_allowed_hosts(self.allowed_asset_hosts, self.api_url)
        except ValueError as exc:
            raise ConfigError(f"resource 'stac': allowed_asset_hosts: {exc}") from None
        return SearchSettings(
            api_url=self.api_url,
            collection=self.collection,
            max_cloud_cover=self.max_cloud_cover,
            max_items_per_day=self.max_items_per_day,
            page_size=self.page_size,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            allowed_asset_hosts=None if hosts is None else tuple(hosts),
        )

    def search_day(self, day: dt.date, aois: Sequence[AoiConfig], bands: Sequence[str]) -> DayItems:
        settings = self.settings()
        client = open_client(settings)
        queries = [AoiQuery(a.name, a.geojson, a.bbox) for a in aois]
        return search_day(client, settings, day, queries, bands)


class _ScopeCheck(BaseModel):
    aois: list[AoiConfig] = Field(min_length=1)
    bands: list[str] = Field(min_length=1)

    @field_validator("aois")
    @classmethod
    def _unique_names(cls, aois: list[AoiConfig]) -> list[AoiConfig]:
        return check_unique_aoi_names(aois)


class AoiSpec(Config):
    name: str
    geometry_json: str | None = None  # GeoJSON Polygon/MultiPolygon in EPSG:4326
    bbox: list[float] | None = None


class ScopeResource(ConfigurableResource):
    """The named AOIs and band asset keys every partition fetches."""

    aois: list[AoiSpec]
    bands: list[str]

    def aoi_configs(self) -> list[AoiConfig]:
        """The AOIs, re-validated: a value edited in the launchpad gets the same clear
        errors as the YAML file, before any asset writes anything."""
        try:
            doc = {
                "aois": [
                    {
                        "name": a.name,
                        **({"geometry": json.loads(a.geometry_json)} if a.geometry_json else {}),
                        **({"bbox": a.bbox} if a.bbox else {}),
                    }
                    for a in self.aois
                ],
                "bands": self.bands,
            }
            validated = _ScopeCheck.model_validate(doc)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "resource 'scope'")) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"resource 'scope': geometry_json is not JSON: {exc}") from None
        return validated.aois

    @classmethod
    def from_config(cls, config: PipelineConfig) -> ScopeResource:
        return cls(
            aois=[
                AoiSpec(
                    name=a.name,
                    geometry_json=json.dumps(a.geometry) if a.geometry else None,
                    bbox=list(a.bbox) if a.bbox else None,
                )
                for a in config.aois
            ],
            bands=list(config.bands),
        )
