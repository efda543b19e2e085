"""STAC API resource and the scope (AOIs, bands) the pipeline fetches."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from dagster import Config, ConfigurableResource
from pydantic import ValidationError

from geospatial_pipeline.config import (
    AoiConfig,
    ScopeConfig,
    StacConfig,
    default_of,
    format_errors,
)
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.stac.search import (
    AoiQuery,
    DayItems,
    SearchSettings,
    open_client,
    search_day,
)


class StacSearchResource(ConfigurableResource):
    """A STAC API (Earth Search v1 by default) searched one UTC day at a time. The fields
    of config.StacConfig in types the launchpad edits; their defaults and checks are the
    config's."""

    api_url: str = default_of(StacConfig, "api_url")
    collection: str = default_of(StacConfig, "collection")
    max_cloud_cover: float = default_of(StacConfig, "max_cloud_cover")
    max_items_per_day: int = default_of(StacConfig, "max_items_per_day")
    page_size: int = default_of(StacConfig, "page_size")
    timeout_s: float = default_of(StacConfig, "timeout_s")
    max_retries: int = default_of(StacConfig, "max_retries")
    # None: the catalog's default data hosts (see stac.hrefs).
    allowed_asset_hosts: list[str] | None = default_of(StacConfig, "allowed_asset_hosts")

    def settings(self) -> SearchSettings:
        # Re-checked here: a value edited in the launchpad skips the YAML validation.
        values = {f: getattr(self, f) for f in StacConfig.model_fields}
        try:
            return SearchSettings.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "resource 'stac'")) from None

    @classmethod
    def from_config(cls, config: StacConfig) -> StacSearchResource:
        return cls(**config.model_dump())

    def search_day(self, day: dt.date, aois: Sequence[AoiConfig], bands: Sequence[str]) -> DayItems:
        settings = self.settings()
        client = open_client(settings)
        queries = [AoiQuery(a.name, a.geojson, a.bbox) for a in aois]
        return search_day(client, settings, day, queries, bands)


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
            validated = ScopeConfig.model_validate(doc)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "resource 'scope'")) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"resource 'scope': geometry_json is not JSON: {exc}") from None
        return validated.aois

    @classmethod
    def from_config(cls, config: ScopeConfig) -> ScopeResource:
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
