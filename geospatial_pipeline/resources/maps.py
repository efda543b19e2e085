"""Where product maps are served: the TiTiler that product items link to (config ``maps``)."""

from __future__ import annotations

from dagster import ConfigurableResource

from geospatial_pipeline.config import MapsConfig, default_of


class MapsResource(ConfigurableResource):
    """The fields of config.MapsConfig; their defaults are the config's. No URL: product
    items carry their render settings but no map links."""

    titiler_url: str | None = default_of(MapsConfig, "titiler_url")

    @classmethod
    def from_config(cls, config: MapsConfig) -> MapsResource:
        return cls(**config.model_dump())
