"""The local instance `make demo` / `make dev` write (geospatial_pipeline/demo.py): the same
run-queue and pool limits as the deployed instances, and the run queue honouring them.

The queue check runs one iteration of Dagster's own run-queue daemon over runs queued in a
real (SQLite) instance built from that file; only the run launcher is Dagster's test
launcher, which records the runs it is handed instead of starting processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.test_utils import (
    create_run_for_test,
    create_test_daemon_workspace_context,
)
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from geospatial_pipeline.demo import write_instance_config
from geospatial_pipeline.deployment import PARTITION_TAG, RASTER_POOL_LIMITS, partition_run_limit
from tests.partitioning import key


def test_local_instance_has_the_partition_and_pool_limits(tmp_path: Path) -> None:
    write_instance_config(tmp_path)
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert not instance.telemetry_enabled
        # Slots a dead run still holds are freed (the pool's one slot would deadlock).
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    assert concurrency.pool_config.default_pool_limit == RASTER_POOL_LIMITS["local"]
    queue = concurrency.run_queue_config
    assert queue is not None and partition_run_limit() in queue.tag_concurrency_limits


@pytest.fixture
def queue_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    path = write_instance_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["run_launcher"] = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}
    path.write_text(yaml.safe_dump(doc))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        yield instance


def test_queue_starts_one_run_per_partition(queue_instance: DagsterInstance) -> None:
    """Two queued runs of one (date, aoi) partition, one of the other AOI on the same day
    and one of the same AOI on the next day: the daemon starts one run of each partition;
    the second run of the first waits until that one ends. The limit is per partition key
    (``aoi|date``), so neither the day nor the AOI alone holds a run back."""
    partition, same_day, same_aoi = (
        str(key(day, aoi))
        for day, aoi in (("2024-06-15", "dunes"), ("2024-06-15", "wadi"), ("2024-06-16", "dunes"))
    )
    assert partition == "dunes|2024-06-15"  # the tag value Dagster gives a run of it
    # Queued runs name their code location (the daemon pauses a location that fails).
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            RegisteredCodeLocationOrigin("geospatial_pipeline"), "__repository__"
        ),
        "ingest_daily",
    )
    first, second, third, fourth = (
        create_run_for_test(
            queue_instance,
            job_name="ingest_daily",
            status=DagsterRunStatus.QUEUED,
            tags={PARTITION_TAG: tag},
            remote_job_origin=origin,
        ).run_id
        for tag in (partition, partition, same_day, same_aoi)
    )

    def dequeue() -> set[str]:
        with create_test_daemon_workspace_context(
            EmptyWorkspaceTarget(), queue_instance
        ) as context:
            list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(context))
        return {
            run_id
            for run_id in (first, second, third, fourth)
            if queue_instance.get_run_by_id(run_id).status != DagsterRunStatus.QUEUED  # type: ignore[union-attr]
        }

    assert dequeue() == {first, third, fourth}
    assert dequeue() == {first, third, fourth}  # still held: the partition's first run runs
    queue_instance.report_run_failed(queue_instance.get_run_by_id(first))  # type: ignore[arg-type]
    assert dequeue() == {first, second, third, fourth}


def test_deployed_instances_free_the_slots_of_ended_runs() -> None:
    repo = Path(__file__).resolve().parents[1]
    helm = yaml.safe_load((repo / "helm" / "dagster" / "values.yaml").read_text())
    monitoring = helm["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] and monitoring["freeSlotsAfterRunEndSeconds"] > 0
    deploy = yaml.safe_load((repo / "deploy" / "dagster.yaml").read_text())
    assert deploy["run_monitoring"]["enabled"]
    assert deploy["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
