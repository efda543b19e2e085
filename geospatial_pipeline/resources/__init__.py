"""Resources built from the pipeline configuration: the one place where values differ
between environments (the classes are the same everywhere)."""

from __future__ import annotations

from typing import Any

from dagster_duckdb import DuckDBResource

from geospatial_pipeline.config import (
    DuckDBWarehouseConfig,
    PipelineConfig,
    SnowflakeWarehouseConfig,
)
from geospatial_pipeline.resources.maps import MapsResource
from geospatial_pipeline.resources.notify import NotifierResource
from geospatial_pipeline.resources.pgstac import PgstacResource
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.transform import TransformResource
from geospatial_pipeline.resources.warehouse import (
    DuckDBWarehouse,
    WarehouseResource,
    snowflake_auth,
)


def build_warehouse(config: PipelineConfig) -> WarehouseResource:
    wh = config.warehouse
    if isinstance(wh, DuckDBWarehouseConfig):
        return DuckDBWarehouse(duckdb=DuckDBResource(database=wh.path))
    assert isinstance(wh, SnowflakeWarehouseConfig)
    # Imported here: dagster_snowflake is about half of the code location's import time.
    from dagster_snowflake import SnowflakeResource

    from geospatial_pipeline.resources.snowflake import SnowflakeWarehouse

    return SnowflakeWarehouse(
        snowflake=SnowflakeResource(
            account=wh.account,
            user=wh.user,
            **snowflake_auth(wh.password_env_var),
            database=wh.database,
            schema=wh.schema_name,
            warehouse=wh.warehouse,
            role=wh.role,
        )
    )


def build_resources(config: PipelineConfig) -> dict[str, Any]:
    return {
        "stac": StacSearchResource.from_config(config.stac),
        "scope": ScopeResource.from_config(config),
        "object_store": ObjectStoreResource.from_config(config.storage),
        "warehouse": build_warehouse(config),
        "transform": TransformResource.from_config(config.transform),
        "maps": MapsResource.from_config(config.maps),
        # Always: the sensors that can alert take it; with no receiver it sends nothing.
        "notifier": NotifierResource.from_config(config.notifications),
        # Only with publish.pgstac: its password variable is then required (require_secrets).
        **({"pgstac": PgstacResource.from_config(config.publish)} if config.publish.pgstac else {}),
    }
