"""Partition helpers for tests: the AOIs of a configuration registered as the request
sensor and `aois sync` register them, and (date, aoi) keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dagster import DagsterInstance, MultiPartitionKey

from geospatial_pipeline.config import PipelineConfig
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.ondemand import service
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME, partition_key
from geospatial_pipeline.resources.storage import ObjectStoreResource

# Every configuration a test builds definitions from uses the code location's partitions
# (tests/location_config.yaml).
PARTITIONS: dict[str, Any] = {"start_date": "2020-01-01"}


def register_aois(config: PipelineConfig, instance: DagsterInstance) -> list[str]:
    store = ObjectStoreResource.from_config(config.storage).store()
    service.sync_config_aois(store, config.aois, config.partitions, now=dt.datetime.now(dt.UTC))
    names = [a.name for a in config.aois]
    instance.add_dynamic_partitions(AOI_PARTITIONS_NAME, names)
    return names


def key(day: str | dt.date, aoi: str) -> MultiPartitionKey:
    d = dt.date.fromisoformat(day) if isinstance(day, str) else day
    return partition_key(Partition(d, aoi))


def materialize_partition(
    config: PipelineConfig,
    day: str | dt.date,
    aoi: str,
    *,
    instance: DagsterInstance | None = None,
    selection: Any = None,
    raise_on_error: bool = False,
    resources: dict[str, Any] | None = None,
) -> Any:
    """One (day, aoi) partition of the configured graph, the configuration's AOIs
    registered first (in a throwaway instance unless one is given)."""
    from dagster import materialize

    from geospatial_pipeline.definitions import build_assets
    from geospatial_pipeline.resources import build_resources

    def run(inst: DagsterInstance) -> Any:
        register_aois(config, inst)
        return materialize(
            build_assets(config),
            partition_key=key(day, aoi),
            resources=resources or build_resources(config),
            instance=inst,
            selection=selection,
            raise_on_error=raise_on_error,
        )

    if instance is not None:
        return run(instance)
    with DagsterInstance.ephemeral() as inst:
        return run(inst)
