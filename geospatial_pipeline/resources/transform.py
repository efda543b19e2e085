"""Settings of the analysis-ready transform, as a resource (editable per run in the UI)."""

from __future__ import annotations

from dagster import ConfigurableResource

from geospatial_pipeline.config import TransformConfig
from geospatial_pipeline.raster.scene import TransformSettings


class TransformResource(ConfigurableResource):
    resolution: float = 10.0
    crs: str | None = None
    grid_anchor: list[float] = [0.0, 0.0]
    invalid_scl_classes: list[int] = [0, 1, 3, 8, 9, 10]
    resampling: str = "bilinear"
    min_valid_fraction: float = 0.0
    max_negative_reflectance_share: float = 0.01
    block_pixels: int = 8_000_000

    def settings(self) -> TransformSettings:
        checked = TransformConfig(
            resolution=self.resolution,
            crs=self.crs,
            grid_anchor=(self.grid_anchor[0], self.grid_anchor[1]),
            invalid_scl_classes=self.invalid_scl_classes,
            resampling=self.resampling,
            min_valid_fraction=self.min_valid_fraction,
            max_negative_reflectance_share=self.max_negative_reflectance_share,
        )
        return TransformSettings(
            resolution=checked.resolution,
            crs=checked.crs,
            anchor=checked.grid_anchor,
            invalid_scl=tuple(checked.invalid_scl_classes),
            resampling=checked.resampling,
        )

    @classmethod
    def from_config(cls, config: TransformConfig) -> TransformResource:
        return cls(
            resolution=config.resolution,
            crs=config.crs,
            grid_anchor=list(config.grid_anchor),
            invalid_scl_classes=list(config.invalid_scl_classes),
            resampling=config.resampling,
            min_valid_fraction=config.min_valid_fraction,
            max_negative_reflectance_share=config.max_negative_reflectance_share,
            block_pixels=config.block_pixels,
        )
