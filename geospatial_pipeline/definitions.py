"""Assemble the code location: ``defs`` is what Dagster loads.

Assets and checks are module-level definitions in ``assets/`` (ingest, warehouse,
transform, catalog, datamart), all partitioned by date x AOI (partitions.py); sensors and
the schedule are built here from the configuration they depend on.
"""

from __future__ import annotations

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    Definitions,
    define_asset_job,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from geospatial_pipeline.alerts import alert_sensors
from geospatial_pipeline.assets import catalog, datamart, ingest, publish, transform, warehouse
from geospatial_pipeline.config import PipelineConfig, load_config, require_secrets
from geospatial_pipeline.deployment import executor_for, heavy_run_tags
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.on_demand import on_demand_sensors, request_imagery
from geospatial_pipeline.partitions import PARTITIONS_SETTINGS
from geospatial_pipeline.reconciliation import reconcile_catalog_job
from geospatial_pipeline.resources import build_resources
from geospatial_pipeline.resources.notify import require_notification_secrets
from geospatial_pipeline.schedules import build_daily_schedule
from geospatial_pipeline.sensors import build_late_scenes_sensor

INGEST_JOB = "ingest_daily"
INGEST_MODULES = [ingest, warehouse]
TRANSFORM_MODULES = [transform, catalog, datamart]


def build_assets(config: PipelineConfig) -> list[AssetsDefinition]:
    """The assets and asset checks the configuration enables."""
    if config.partitions != PARTITIONS_SETTINGS:
        raise ConfigError(
            "partitions: the assets were defined with the code location's configuration "
            f"({PARTITIONS_SETTINGS.model_dump(mode='json')}, from GEOSPATIAL_PIPELINE_CONFIG "
            f"at import); this configuration has {config.partitions.model_dump(mode='json')}"
        )
    modules = INGEST_MODULES + (TRANSFORM_MODULES if config.transform.enabled else [])
    # Products in a STAC API when a pgstac database is configured (publish.pgstac).
    modules += [publish] if config.transform.enabled and config.publish.pgstac else []
    assets = [a for a in load_assets_from_modules(modules) if isinstance(a, AssetsDefinition)]
    return [*assets, *load_asset_checks_from_modules(modules)]


def build_defs(config: PipelineConfig) -> Definitions:
    # Fail while loading the code location, naming the variable, rather than mid-run.
    require_secrets(config)
    require_notification_secrets(config.notifications)
    everything = build_assets(config)
    checks = [a for a in everything if isinstance(a, AssetChecksDefinition)]
    assets = [a for a in everything if not isinstance(a, AssetChecksDefinition)]
    ingest_job = define_asset_job(
        INGEST_JOB,
        # Without the root catalog: concurrent partition runs would race on it; its
        # automation condition runs it once sub-catalogs have changed.
        selection=[key for a in assets for key in a.keys if key != catalog.STAC_CATALOG_ROOT],
        # A label for the UI and the k8s run pod; the limits are the raster pool on the assets
        # and the one-run-per-partition queue limit (deployment.py).
        tags=heavy_run_tags(),
        description="Everything for one (date, AOI): search, band windows, scene metadata, "
        "analysis-ready products, sub-catalog and datamart tables.",
    )
    schedules = (
        [build_daily_schedule(INGEST_JOB, config.schedule)] if config.schedule.enabled else []
    )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[ingest_job, reconcile_catalog_job, request_imagery],
        schedules=schedules,
        sensors=[
            build_late_scenes_sensor(INGEST_JOB, config.late_data),
            *on_demand_sensors(INGEST_JOB, config),
            *([catalog.catalog_root_sensor()] if config.transform.enabled else []),
            # The run-failure sensor only with a receiver configured (notifications).
            *alert_sensors(config.notifications, everything),
        ],
        resources=build_resources(config),
        # k8s_job_executor (one pod per step) when GEOSPATIAL_PIPELINE_ENV is dev/prod.
        executor=executor_for(),
    )


defs = build_defs(load_config())
