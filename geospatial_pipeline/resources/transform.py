"""Settings of the analysis-ready transform, as a resource (editable per run in the UI)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import ValidationError

from geospatial_pipeline.config import TransformConfig, default_of, format_errors
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.raster.scene import TransformSettings

# Chosen when the code location loads (it decides which assets exist), not per run.
NOT_PER_RUN = frozenset({"enabled"})


class TransformResource(ConfigurableResource):
    """The fields of config.TransformConfig (minus ``enabled``) in types the launchpad edits;
    their defaults and checks are the config's."""

    resolution: float = default_of(TransformConfig, "resolution")
    crs: str | None = default_of(TransformConfig, "crs")
    grid_anchor: list[float] = list(default_of(TransformConfig, "grid_anchor"))
    invalid_scl_classes: list[int] = default_of(TransformConfig, "invalid_scl_classes")
    resampling: str = default_of(TransformConfig, "resampling")
    min_valid_fraction: float = default_of(TransformConfig, "min_valid_fraction")
    max_negative_reflectance_share: float = default_of(
        TransformConfig, "max_negative_reflectance_share"
    )
    block_pixels: int = default_of(TransformConfig, "block_pixels")
    max_days_without_usable_scene: int = default_of(
        TransformConfig, "max_days_without_usable_scene"
    )

    def settings(self) -> TransformSettings:
        """The values checked by the config's rules: a value edited in the launchpad skips
        the YAML validation."""
        values = {f: getattr(self, f) for f in TransformConfig.model_fields if f not in NOT_PER_RUN}
        try:
            return TransformSettings.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "resource 'transform'")) from None

    @classmethod
    def from_config(cls, config: TransformConfig) -> TransformResource:
        return cls(**config.model_dump(exclude=set(NOT_PER_RUN)))
