"""One run, one or several (date, aoi) partitions.

A run launched from the UI, the schedule or a sensor covers one partition; a backfill
groups up to ``partitions.backfill_partitions_per_run`` partitions of one AOI into a run
(partitions.BACKFILL_POLICY), so it pays Dagster's per-run cost (queue, process start,
code location import) once per group rather than once per day. Every asset body
therefore loops over its run's partitions, each iteration reading and writing only that
partition's objects and rows, and reports per partition: its own materialization metadata
(``add_asset_metadata`` with the partition key) and check results that name it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
)

from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.partitions import partition_key, partition_of
from geospatial_pipeline.resources.storage import ObjectStoreResource


@dataclass
class PartitionOutcome:
    """What one partition's iteration of an asset body reports."""

    metadata: dict[str, Any]
    checks: list[AssetCheckResult] = field(default_factory=list)


def aoi_of(object_store: ObjectStoreResource, part: Partition) -> registry.AoiRecord:
    """The partition's AOI as registered. A retired AOI gets no new runs from the
    schedule or the sensors; one launched by hand for a day from its retirement on is
    refused, so nothing is written for it."""
    record = registry.load(object_store.store(), part.aoi)
    if record.retired_on is not None and part.day >= record.retired_on:
        raise ConfigError(
            f"AOI {part.aoi!r} was retired on {record.retired_on.isoformat()}: no runs for "
            f"{part.day.isoformat()} (`python -m geospatial_pipeline aois unretire "
            f"{part.aoi}` to run it again)"
        )
    return record


def run_partitions(
    context: AssetExecutionContext, object_store: ObjectStoreResource
) -> list[tuple[Partition, registry.AoiRecord]]:
    """The run's partitions with their AOIs, every one checked before anything is
    written (a retired AOI anywhere in a group refuses the group up front)."""
    parts = [partition_of(key) for key in context.partition_keys]
    return [(part, aoi_of(object_store, part)) for part in parts]


def materialize_each(
    context: AssetExecutionContext, outcomes: Sequence[tuple[Partition, PartitionOutcome]]
) -> MaterializeResult:
    """The asset's result: with one partition, its metadata and checks as they are; with
    several, each partition's metadata on its own materialization and each check merged
    over the partitions, naming those that failed."""
    if len(outcomes) == 1:
        ((_, only),) = outcomes
        return MaterializeResult(metadata=only.metadata, check_results=only.checks)
    for part, outcome in outcomes:
        context.add_asset_metadata(outcome.metadata, partition_key=partition_key(part))
    names = [c.check_name for c in outcomes[0][1].checks]
    return MaterializeResult(
        metadata={"partitions": len(outcomes)},
        check_results=[
            merge_checks([(p, next(c for c in o.checks if c.check_name == n)) for p, o in outcomes])
            for n in names
        ],
    )


def merge_checks(results: Sequence[tuple[Partition, AssetCheckResult]]) -> AssetCheckResult:
    """One check over several partitions: passed when each passed; the description and
    metadata name the partitions that failed and why."""
    first = results[0][1]
    failed = [(p, r) for p, r in results if not r.passed]
    return AssetCheckResult(
        check_name=first.check_name,
        asset_key=first.asset_key,
        passed=not failed,
        severity=(failed[0][1] if failed else first).severity,
        description=(
            "; ".join(f"{p}: {r.description or 'failed'}" for p, r in failed)
            if failed
            else f"passed for each of the {len(results)} partitions"
        )[:2000],
        metadata={
            "partitions": len(results),
            "failed_partitions": MetadataValue.json([str(p) for p, _ in failed]),
        },
    )


def check_each(
    context: AssetCheckExecutionContext, check: Callable[[Partition], AssetCheckResult]
) -> AssetCheckResult:
    """An @asset_check over its run's partitions (one, or a backfill's group)."""
    parts = [partition_of(key) for key in context.op_execution_context.partition_keys]
    results = [(part, check(part)) for part in parts]
    return results[0][1] if len(results) == 1 else merge_checks(results)
