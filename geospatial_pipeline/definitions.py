"""Assemble the code location: ``defs`` is what Dagster loads."""

from __future__ import annotations

from dagster import AssetsDefinition, Definitions, define_asset_job

from geospatial_pipeline.assets.catalog import (
    STAC_CATALOG_ROOT,
    build_catalog_assets,
    catalog_root_sensor,
)
from geospatial_pipeline.assets.datamart import build_datamart_assets
from geospatial_pipeline.assets.ingest import build_ingest_assets
from geospatial_pipeline.assets.transform import build_transform_assets
from geospatial_pipeline.assets.warehouse import build_warehouse_assets
from geospatial_pipeline.config import PipelineConfig, load_config, require_secrets
from geospatial_pipeline.deployment import executor_for, heavy_run_tags
from geospatial_pipeline.partitions import daily_partitions
from geospatial_pipeline.reconciliation import reconcile_catalog_job
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.schedules import build_daily_schedule
from geospatial_pipeline.sensors import build_late_scenes_sensor

INGEST_JOB = "ingest_daily"


def build_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    partitions = daily_partitions(config.partitions.start_date, config.partitions.end_date)
    assets = [
        *build_ingest_assets(partitions, "s3" if config.storage.is_s3 else "filesystem"),
        *build_warehouse_assets(partitions, config.warehouse.kind),
    ]
    if config.transform.enabled:
        assets += [
            *build_transform_assets(partitions),
            *build_catalog_assets(partitions),
            *build_datamart_assets(partitions, config.warehouse.kind),
        ]
    return assets


def build_defs(config: PipelineConfig) -> Definitions:
    # Fail while loading the code location, naming the variable, rather than mid-run.
    require_secrets(config)
    assets = build_assets(config)
    partitions = daily_partitions(config.partitions.start_date, config.partitions.end_date)
    ingest_job = define_asset_job(
        INGEST_JOB,
        # Without the root catalog: concurrent day runs would race on it (list-then-write);
        # its automation condition runs it once the days' sub-catalogs have changed. (Left
        # out by definition, not by key: with transform.enabled false it does not exist.)
        selection=[a for a in assets if STAC_CATALOG_ROOT not in a.keys],
        # A label for the UI and the k8s run pod; the limits are the raster pool on the assets
        # and the one-run-per-partition queue limit (deployment.py).
        tags=heavy_run_tags(),
        description="Everything for one UTC day: search, band windows, scene metadata, "
        "analysis-ready products and datamart tables.",
    )
    schedules = (
        [build_daily_schedule(INGEST_JOB, partitions, config.schedule)]
        if config.schedule.enabled
        else []
    )
    return Definitions(
        assets=assets,
        jobs=[ingest_job, reconcile_catalog_job],
        schedules=schedules,
        sensors=[
            build_late_scenes_sensor(INGEST_JOB, partitions, config.late_data),
            *([catalog_root_sensor()] if config.transform.enabled else []),
        ],
        resources=build_resources(config),
        # k8s_job_executor (one pod per step) when GEOSPATIAL_PIPELINE_ENV is dev/prod.
        executor=executor_for(),
    )


defs = build_defs(load_config())
