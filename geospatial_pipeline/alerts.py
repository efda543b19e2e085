"""Alerts, the Dagster side: a run-failure sensor (a failed run, or the blocking quality
gate that stopped its partition) and what the late-scene and request-status sensors call
to report. Messages and their delivery are plain functions (notify/); the receivers and
events are the ``notifier`` resource (resources/notify.py, from ``notifications``).

No alert for a failure a run retry will still handle: Dagster's auto-reexecution retries
a failed run while its retries are not used up, and the retry's own failure is the one
to report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from dagster import (
    AssetCheckKey,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetsDefinition,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    run_failure_sensor,
)

from geospatial_pipeline import notify
from geospatial_pipeline.config import NotificationsConfig
from geospatial_pipeline.ondemand.requests import RequestStatus
from geospatial_pipeline.resources.notify import NotifierResource
from geospatial_pipeline.stac.late import LateItem

RUN_FAILURE_SENSOR = "run_failure_alerts"

# Dagster's run tags for retries (dagster/_core/storage/tags.py; spelt out here, the
# module is private).
WILL_RETRY_TAG = "dagster/will_retry"
RETRY_NUMBER_TAG = "dagster/retry_number"
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_ON_ASSET_OR_OP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
FAILURE_REASON_TAG = "dagster/failure_reason"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _flag(value: str | None, default: bool) -> bool:
    return default if value is None else value.strip().lower() == "true"


def retry_pending(
    tags: Mapping[str, str],
    *,
    retries_enabled: bool,
    default_max_retries: int,
    retry_on_step_failure: bool,
) -> bool:
    """Whether Dagster's run retries will re-execute this failed run.

    The instance tags a failed run ``dagster/will_retry`` when retries are on; without that
    tag (the daemon has not judged it yet) the same rule is applied here: retries enabled
    on the instance, a step failure retried unless turned off, and fewer retries so far
    (``dagster/retry_number``) than allowed (the run's ``dagster/max_retries`` tag, else
    the instance's ``run_retries.max_retries``)."""
    if WILL_RETRY_TAG in tags:
        return _flag(tags[WILL_RETRY_TAG], False)
    if not retries_enabled:
        return False
    if tags.get(FAILURE_REASON_TAG) == "STEP_FAILURE" and not _flag(
        tags.get(RETRY_ON_ASSET_OR_OP_FAILURE_TAG), retry_on_step_failure
    ):
        return False
    try:
        max_retries = int(tags.get(MAX_RETRIES_TAG, default_max_retries))
        retry_number = int(tags.get(RETRY_NUMBER_TAG, 0))
    except ValueError:
        # Dagster does not retry a run whose retry tags are not numbers either.
        return False
    return retry_number < max_retries


def run_retry_pending(run: DagsterRun, instance: DagsterInstance) -> bool:
    return retry_pending(
        run.tags,
        retries_enabled=instance.run_retries_enabled,
        default_max_retries=instance.run_retries_max_retries,
        retry_on_step_failure=instance.run_retries_retry_on_asset_or_op_failure,
    )


def run_partition(tags: Mapping[str, str]) -> str | None:
    """The run's partition key, or its range (a backfill's grouped run)."""
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    if RANGE_START_TAG in tags:
        start, end = tags[RANGE_START_TAG], tags.get(RANGE_END_TAG, tags[RANGE_START_TAG])
        return start if start == end else f"{start} … {end}"
    return None


def check_descriptions(
    definitions: Sequence[AssetsDefinition | AssetChecksDefinition],
) -> dict[AssetCheckKey, str]:
    """What each check verifies (its spec's description), for the quality gate message."""
    return {
        spec.key: spec.description
        for d in definitions
        for spec in d.check_specs
        if spec.description
    }


def failure_messages(
    context: RunFailureSensorContext,
    ui_base_url: str,
    descriptions: Mapping[AssetCheckKey, str],
) -> list[notify.Message]:
    """A quality gate message per failed blocking check of the run; else one message for
    the failed run with its first step's error."""
    run = context.dagster_run
    partition = run_partition(run.tags)
    records = context.instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    gates = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        evaluation = event.asset_check_evaluation_data
        if (
            evaluation.passed
            or not evaluation.blocking
            or evaluation.severity != AssetCheckSeverity.ERROR
        ):
            continue
        gates.append(
            notify.quality_gate(
                ui_base_url=ui_base_url,
                run_id=run.run_id,
                asset_path=evaluation.asset_key.path,
                check_name=evaluation.check_name,
                partition=evaluation.partition or partition,
                check_description=descriptions.get(
                    AssetCheckKey(evaluation.asset_key, evaluation.check_name)
                ),
                reason=evaluation.description,
            )
        )
    if gates:
        return gates
    steps = context.get_step_failure_events()
    error = steps[0].step_failure_data.error if steps else None
    if error is not None:
        # Dagster wraps the asset's own exception ("Error occurred while executing op
        # …"); the innermost cause is what went wrong.
        while error.cause is not None:
            error = error.cause
        reason = error.message.strip()
    else:
        reason = context.failure_event.message or "the run failed"
    return [
        notify.run_failed(
            ui_base_url=ui_base_url,
            run_id=run.run_id,
            job_name=run.job_name,
            partition=partition,
            reason=reason[:1000],
            failed_steps=[e.step_key for e in steps if e.step_key],
        )
    ]


def build_run_failure_alert_sensor(descriptions: Mapping[AssetCheckKey, str]) -> SensorDefinition:
    @run_failure_sensor(
        name=RUN_FAILURE_SENSOR,
        # On from the first deploy: it exists only when a receiver is configured.
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Sends an alert for each failed run of this code location that no automatic "
            "retry will handle: the blocking quality gate that stopped its partition (check, "
            "asset, partition, why), or the run's failure, linked to the Dagster UI."
        ),
    )
    def run_failure_alerts(context: RunFailureSensorContext, notifier: NotifierResource) -> None:
        run = context.dagster_run
        if run_retry_pending(run, context.instance):
            context.log.info("run %s failed; a retry will handle it: no alert", run.run_id)
            return
        for message in failure_messages(context, notifier.ui_base_url, descriptions):
            notifier.send(message, log=context.log)

    return run_failure_alerts


def alert_sensors(
    config: NotificationsConfig,
    definitions: Sequence[AssetsDefinition | AssetChecksDefinition],
) -> list[SensorDefinition]:
    """The run-failure alert sensor when run failures or quality gates send alerts."""
    if not (config.sends("run_failed") or config.sends("quality_gate")):
        return []
    return [build_run_failure_alert_sensor(check_descriptions(definitions))]


def send_late_scenes(
    notifier: NotifierResource,
    lates: Sequence[LateItem],
    *,
    asset_path: Sequence[str],
    trigger_tag: tuple[str, str],
    log: logging.Logger | None = None,
) -> None:
    """One summarised message for a sensor tick's late items (none when there are none)."""
    if lates and notifier.sends("late_scenes"):
        notifier.send(
            notify.late_scenes(
                ui_base_url=notifier.ui_base_url,
                lates=lates,
                asset_path=asset_path,
                trigger_tag=trigger_tag,
            ),
            log=log,
        )


def send_request_ended(
    notifier: NotifierResource,
    status: RequestStatus,
    *,
    request_tag: str,
    log: logging.Logger | None = None,
) -> None:
    if status.state in ("complete", "failed") and notifier.sends("request_ended"):
        notifier.send(
            notify.request_ended(
                ui_base_url=notifier.ui_base_url, status=status, request_tag=request_tag
            ),
            log=log,
        )
