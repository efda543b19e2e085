"""Alerts reach a local receiver (pytest-httpserver on 127.0.0.1) with the partition, the
reason and a link into the UI: run failures from real failed runs, blocking quality gates,
late scenes, requests that ended; Slack through dagster-slack's SlackResource pointed at
the same receiver. A failing receiver (HTTP 500, refused, slow) fails nothing."""

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    EnvVar,
    MaterializeResult,
    asset,
    asset_check,
    build_resources,
    build_run_status_sensor_context,
    build_sensor_context,
    materialize,
)
from dagster_slack import SlackResource
from pytest_httpserver import HTTPServer
from slack_sdk.web.client import WebClient
from werkzeug import Request, Response

from geospatial_pipeline import notify
from geospatial_pipeline.alerts import (
    RUN_FAILURE_SENSOR,
    alert_sensors,
    build_run_failure_alert_sensor,
    check_descriptions,
    retry_pending,
    send_late_scenes,
)
from geospatial_pipeline.assets.ingest import STAC_ITEMS
from geospatial_pipeline.config import NotificationsConfig, StacConfig, parse_config
from geospatial_pipeline.definitions import build_defs
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.layout import Partition, items_key
from geospatial_pipeline.local.ports import free_port
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.notify.messages import MAX_LINES
from geospatial_pipeline.on_demand import REQUEST_TAG, build_status_sensor
from geospatial_pipeline.ondemand import requests
from geospatial_pipeline.partitions import AOI_PARTITIONS_NAME, PARTITIONS, partition_key
from geospatial_pipeline.resources.notify import NotifierResource, require_notification_secrets
from geospatial_pipeline.resources.stac import StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.sensors import SENSOR_NAME, TRIGGER_TAG, build_late_scenes_sensor
from geospatial_pipeline.stac.late import LateItem
from tests.conftest import dagster_home
from tests.partitioning import register_aois

UI = "http://dagster.example.test:3000"
AOI = "toulouse-centre"
DAY = "2024-06-15"
KEY = f"{AOI}|{DAY}"
HOOK = "/hooks/alerts"
SOURCE_404 = "band red of S2B_31TCJ_20240615_0_L2A: HTTP 404 from the source bucket"


# Small assets on the pipeline's own (date, aoi) partitions: a run fails the way the
# real ones do (a step error, a blocking check) without fetching imagery.
@asset(partitions_def=PARTITIONS)
def band_rasters_probe() -> None:
    raise ValueError(SOURCE_404)


@asset(
    partitions_def=PARTITIONS,
    check_specs=[
        AssetCheckSpec(
            "has_valid_pixels",
            asset="analysis_ready_probe",
            blocking=True,
            description="At least one scene of the partition has valid (unmasked) pixels",
        )
    ],
)
def analysis_ready_probe(context: AssetExecutionContext) -> MaterializeResult:
    return MaterializeResult(
        check_results=[
            AssetCheckResult(
                check_name="has_valid_pixels",
                passed=False,
                description=f"0 valid pixels in 2 scenes of {context.partition_key} (all cloud)",
            )
        ]
    )


@asset(partitions_def=PARTITIONS, deps=[analysis_ready_probe])
def ndvi_composite_probe() -> None:
    pass


@asset(partitions_def=PARTITIONS)
def stac_catalog_probe() -> None:
    pass


@asset_check(
    asset=stac_catalog_probe,
    blocking=True,
    description="Every product item of the partition validates against its STAC schemas",
)
def items_valid_probe(context: AssetCheckExecutionContext) -> AssetCheckResult:
    key = context.op_execution_context.partition_key
    return AssetCheckResult(passed=False, description=f"1 of 3 items of {key} invalid: no bbox")


@asset(partitions_def=PARTITIONS, deps=[stac_catalog_probe])
def datamart_probe() -> None:
    pass


@asset(partitions_def=PARTITIONS)
def request_day_probe() -> None:
    pass


PROBES = [
    band_rasters_probe,
    analysis_ready_probe,
    ndvi_composite_probe,
    stac_catalog_probe,
    items_valid_probe,
    datamart_probe,
]


@pytest.fixture
def receiver(httpserver_ipv4: HTTPServer) -> Iterator[HTTPServer]:
    httpserver_ipv4.expect_request(HOOK, method="POST").respond_with_json({"ok": True})
    yield httpserver_ipv4
    httpserver_ipv4.clear()


def posted(server: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(request.get_data()) for request, _ in server.log]


def notifier_for(server: HTTPServer, **over: Any) -> NotifierResource:
    return NotifierResource(ui_base_url=UI, webhook_url=server.url_for(HOOK), timeout_s=2.0, **over)


def instance_at(path: Path, yaml_extra: str = "") -> DagsterInstance:
    home = dagster_home(path)
    if yaml_extra:
        with (home / "dagster.yaml").open("a") as f:
            f.write(yaml_extra)
    instance = DagsterInstance.local_temp(str(home))
    instance.add_dynamic_partitions(AOI_PARTITIONS_NAME, [AOI, "blagnac"])
    return instance


def failed_run(instance: DagsterInstance, assets: list[Any], **tags: str) -> str:
    result = materialize(
        assets, instance=instance, partition_key=KEY, raise_on_error=False, tags=tags
    )
    assert not result.success
    return result.run_id


def evaluate_failure_sensor(instance: DagsterInstance, run_id: str, notifier: Any) -> None:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    failure = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    event = failure[0].event_log_entry.dagster_event
    assert event is not None
    sensor = build_run_failure_alert_sensor(check_descriptions(PROBES))
    # Entered, as the daemon enters it: the notifier's nested Slack resource is built
    # in the context's scope.
    with build_run_status_sensor_context(
        sensor_name=RUN_FAILURE_SENSOR,
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"notifier": notifier},
    ).for_run_failure() as context:
        sensor(context)


def test_a_failed_run_is_reported_with_its_partition_reason_and_link(
    tmp_path: Path, receiver: HTTPServer
) -> None:
    instance = instance_at(tmp_path / "home")
    run_id = failed_run(instance, [band_rasters_probe])
    evaluate_failure_sensor(instance, run_id, notifier_for(receiver))
    (body,) = posted(receiver)
    assert body["event"] == "run_failed"
    assert body["fields"]["partition"] == KEY
    assert SOURCE_404 in body["fields"]["reason"]
    assert body["fields"]["failed steps"] == "band_rasters_probe"
    assert body["link"] == f"{UI}/runs/{run_id}"
    # Receivers that show one string get all of it; Teams gets an Adaptive Card.
    assert KEY in body["text"] and SOURCE_404 in body["text"] and body["link"] in body["text"]
    card = body["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["actions"][0]["url"] == f"{UI}/runs/{run_id}"
    facts = {f["title"]: f["value"] for f in card["content"]["body"][1]["facts"]}
    assert facts["partition"] == KEY


# (asset, its downstream, check, what the check verifies, why it failed): one blocking check
# declared on its asset (check_specs), one as its own @asset_check.
GATES = [
    (
        analysis_ready_probe,
        ndvi_composite_probe,
        "has_valid_pixels",
        "At least one scene of the partition has valid (unmasked) pixels",
        f"0 valid pixels in 2 scenes of {KEY} (all cloud)",
    ),
    (
        stac_catalog_probe,
        datamart_probe,
        "items_valid_probe",
        "Every product item of the partition validates against its STAC schemas",
        f"1 of 3 items of {KEY} invalid: no bbox",
    ),
]


def test_a_blocking_check_that_stopped_a_partition_names_check_asset_partition(
    tmp_path: Path, receiver: HTTPServer
) -> None:
    instance = instance_at(tmp_path / "home")
    run_id = failed_run(instance, [p for p in PROBES if p is not band_rasters_probe])
    evaluate_failure_sensor(instance, run_id, notifier_for(receiver))
    bodies = {b["fields"]["check"]: b for b in posted(receiver)}
    assert sorted(bodies) == ["has_valid_pixels", "items_valid_probe"]
    for gated, downstream, check, verifies, why in GATES:
        # The gate held: nothing downstream of the failed check was materialized.
        assert instance.get_latest_materialization_event(downstream.key) is None
        body = bodies[check]
        assert body["event"] == "quality_gate"
        asset_name = gated.key.to_user_string()
        assert body["fields"]["asset"] == asset_name
        assert body["fields"]["partition"] == KEY
        assert body["fields"]["check description"] == verifies
        assert body["links"]["run"] in body["text"]
        assert body["fields"]["reason"] == why
        assert body["link"] == f"{UI}/assets/{asset_name}?view=checks"
        assert body["links"]["run"] == f"{UI}/runs/{run_id}"


def test_no_alert_while_a_run_retry_is_pending_and_one_when_retries_are_used_up(
    tmp_path: Path, receiver: HTTPServer
) -> None:
    instance = instance_at(tmp_path / "home", "run_retries:\n  enabled: true\n  max_retries: 2\n")
    pending = failed_run(instance, [band_rasters_probe])
    pending_run = instance.get_run_by_id(pending)
    assert pending_run is not None and pending_run.tags.get("dagster/will_retry") == "true"
    evaluate_failure_sensor(instance, pending, notifier_for(receiver))
    assert posted(receiver) == []
    # The run's own max_retries tag: no retry left, so this failure is the one to report.
    last = failed_run(instance, [band_rasters_probe], **{"dagster/max_retries": "0"})
    evaluate_failure_sensor(instance, last, notifier_for(receiver))
    (body,) = posted(receiver)
    assert body["link"].endswith(f"/runs/{last}") and body["fields"]["partition"] == KEY


@pytest.mark.parametrize(
    ("tags", "enabled", "expected"),
    [
        ({}, False, False),
        ({}, True, True),
        ({"dagster/retry_number": "1"}, True, True),
        ({"dagster/retry_number": "2"}, True, False),
        ({"dagster/max_retries": "5", "dagster/retry_number": "4"}, True, True),
        ({"dagster/max_retries": "0"}, True, False),
        ({"dagster/max_retries": "many"}, True, False),
        ({"dagster/failure_reason": "STEP_FAILURE"}, True, True),
        (
            {
                "dagster/failure_reason": "STEP_FAILURE",
                "dagster/retry_on_asset_or_op_failure": "false",
            },
            True,
            False,
        ),
        # The instance's own verdict wins once it is there.
        ({"dagster/will_retry": "false"}, True, False),
        ({"dagster/will_retry": "true", "dagster/retry_number": "9"}, True, True),
    ],
)
def test_retry_pending_rule(tags: dict[str, str], enabled: bool, expected: bool) -> None:
    got = retry_pending(
        tags, retries_enabled=enabled, default_max_retries=2, retry_on_step_failure=True
    )
    assert got is expected


def late(item_id: str, day: str, aoi: str, reason: str) -> LateItem:
    return LateItem(
        item_id=item_id,
        part=Partition(dt.date.fromisoformat(day), aoi),
        updated=dt.datetime(2023, 10, 12, 7, 31, tzinfo=dt.UTC),
        fingerprint="sha256:" + item_id,
        reason=reason,
        item={"id": item_id, "type": "Feature"},
    )


# ESA's reprocessed `_1_` items of 2020-03-02, which reached Earth Search in October 2023
# (the recordings of tests/test_late_scenes.py), for two AOIs, plus one of the next day.
LATES = [
    *(
        late(
            f"S2A_{tile}_20200302_1_L2A",
            "2020-03-02",
            "upper-rhine",
            "not among the 4 item(s) the run of 2020-03-02/upper-rhine saw",
        )
        for tile in ("32TMT", "32TNT", "32UMU", "32UNU")
    ),
    late(
        "S2A_32TMT_20200302_1_L2A",
        "2020-03-02",
        "zurich",
        "not among the 2 item(s) the run of 2020-03-02/zurich saw",
    ),
    late(
        "S2A_32TMT_20200303_1_L2A",
        "2020-03-03",
        "upper-rhine",
        "content differs from the version the run of 2020-03-03/upper-rhine saw",
    ),
]


def test_late_scenes_of_a_tick_are_one_summarised_message(receiver: HTTPServer) -> None:
    notifier = notifier_for(receiver)
    send_late_scenes(
        notifier, LATES, asset_path=["stac_items"], trigger_tag=(TRIGGER_TAG, SENSOR_NAME)
    )
    send_late_scenes(notifier, [], asset_path=["stac_items"], trigger_tag=("t", "v"))
    (body,) = posted(receiver)  # one per tick; none for a tick without late scenes
    assert body["event"] == "late_scenes"
    assert body["title"].startswith("5 late scene(s) for 3 partition(s)")
    assert body["fields"]["partitions"] == (
        "upper-rhine|2020-03-02, zurich|2020-03-02, upper-rhine|2020-03-03"
    )
    assert body["fields"]["days"] == "2020-03-02 … 2020-03-03 (2 days)"
    assert body["details"][0] == (
        "upper-rhine|2020-03-02: S2A_32TMT_20200302_1_L2A, S2A_32TNT_20200302_1_L2A, "
        "S2A_32UMU_20200302_1_L2A, S2A_32UNU_20200302_1_L2A "
        "(not among the 4 item(s) the run of 2020-03-02/upper-rhine saw)"
    )
    assert "content differs" in body["details"][2]
    assert body["link"] == (
        f"{UI}/runs?q%5B%5D=tag%3Ageospatial_pipeline%2Ftrigger%3Dlate_scenes_sensor"
    )
    assert body["links"]["asset"] == f"{UI}/assets/stac_items?view=partitions"


def test_a_long_late_list_is_capped() -> None:
    many = [
        late(f"S2A_31TCJ_202003{d:02d}_1_L2A", f"2020-03-{d:02d}", AOI, "late")
        for d in range(1, 31)
    ]
    message = notify.late_scenes(
        ui_base_url=UI, lates=many, asset_path=["stac_items"], trigger_tag=("t", "v")
    )
    assert len(message.details) == MAX_LINES + 1
    assert message.details[-1] == "… and 10 more"


def status_site(tmp_path: Path) -> tuple[DagsterInstance, ObjectStoreResource]:
    instance = instance_at(tmp_path / "home")
    return instance, ObjectStoreResource(url=str(tmp_path / "store"))


def accept(store: ObjectStoreResource, request_id: str, days: list[str]) -> None:
    request = requests.validate_request(
        {
            "aoi": {"name": "blagnac", "bbox": [1.33, 43.62, 1.40, 43.66]},
            "start_date": days[0],
            "end_date": days[-1],
            "request_id": request_id,
        },
        max_days=366,
    )
    requests.write_status(store.store(), requests.accepted(request, dt.datetime.now(dt.UTC)))


def tick_status(
    instance: DagsterInstance, store: ObjectStoreResource, notifier: Any, cursor: str | None
) -> Any:
    sensor = build_status_sensor(parse_config(_minimal()).requests)
    with build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={
            "stac": StacSearchResource.from_config(StacConfig()),
            "object_store": store,
            "notifier": notifier,
        },
    ) as context:
        return sensor(context)


def test_a_request_that_failed_then_completed_is_reported_each_time(
    tmp_path: Path, receiver: HTTPServer
) -> None:
    instance, store = status_site(tmp_path)
    accept(store, "blagnac-june", ["2024-06-15"])
    failed = materialize(
        [band_rasters_probe],
        instance=instance,
        partition_key="blagnac|2024-06-15",
        raise_on_error=False,
        tags={REQUEST_TAG: "blagnac-june"},
    )
    first = tick_status(instance, store, notifier_for(receiver), None)
    (body,) = posted(receiver)
    assert body["event"] == "request_ended"
    assert body["title"] == "Imagery request blagnac-june failed"
    assert body["fields"]["partitions"] == "blagnac|2024-06-15"
    assert body["fields"]["reason"] == "1 of 1 day(s) failed"
    assert body["details"] == [f"blagnac|2024-06-15: failed, run {UI}/runs/{failed.run_id}"]
    assert body["link"] == f"{UI}/runs?q%5B%5D=tag%3Ageospatial_pipeline%2Frequest%3Dblagnac-june"
    # A tick that changes nothing sends nothing again.
    tick_status(instance, store, notifier_for(receiver), first.cursor)
    assert len(posted(receiver)) == 1
    rerun = materialize(
        [request_day_probe],
        instance=instance,
        partition_key="blagnac|2024-06-15",
        tags={REQUEST_TAG: "blagnac-june"},
    )
    assert rerun.success
    tick_status(instance, store, notifier_for(receiver), first.cursor)
    assert [b["title"] for b in posted(receiver)] == [
        "Imagery request blagnac-june failed",
        "Imagery request blagnac-june complete",
    ]
    assert posted(receiver)[1]["fields"]["reason"] == "all 1 day(s) succeeded"


def test_a_failing_receiver_fails_nothing(tmp_path: Path, httpserver_ipv4: HTTPServer) -> None:
    httpserver_ipv4.expect_request(HOOK, method="POST").respond_with_data(
        "receiver broken", status=500
    )
    instance = instance_at(tmp_path / "home")
    run_id = failed_run(instance, [band_rasters_probe])
    # HTTP 500: the sensor evaluates, the delivery is reported as failed.
    evaluate_failure_sensor(instance, run_id, notifier_for(httpserver_ipv4))
    assert len(httpserver_ipv4.log) == 1
    message = notify.run_failed(
        ui_base_url=UI, run_id=run_id, job_name="j", partition=KEY, reason="r"
    )
    (d500,) = notifier_for(httpserver_ipv4).send(message)
    assert not d500.ok and d500.error is not None and d500.error.startswith("HTTP 500")
    # Connection refused: nothing listens on the port.
    refused_url = f"http://127.0.0.1:{free_port()}/hooks/secret-token"
    refused = NotifierResource(ui_base_url=UI, webhook_url=refused_url, timeout_s=1.0)
    evaluate_failure_sensor(instance, run_id, refused)
    (d_refused,) = refused.send(message)
    assert d_refused.error == "cannot connect (refused or unreachable)"
    assert "secret-token" not in str(d_refused)
    # A receiver slower than the timeout: one attempt, bounded, then on.
    httpserver_ipv4.clear()

    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response("late")

    httpserver_ipv4.expect_request(HOOK, method="POST").respond_with_handler(slow)
    started = time.monotonic()
    (d_slow,) = NotifierResource(
        ui_base_url=UI, webhook_url=httpserver_ipv4.url_for(HOOK), timeout_s=0.5
    ).send(message)
    assert d_slow.error == "no answer within 0.5 s"
    assert time.monotonic() - started < 1.4
    # The server logs the request when its handler returns: let it, so the next test
    # starts with an empty log.
    while not httpserver_ipv4.log and time.monotonic() - started < 5:
        time.sleep(0.05)
    # The request sensor's path too: a status tick with a dead receiver still writes.
    store = ObjectStoreResource(url=str(tmp_path / "store"))
    accept(store, "dead-receiver", ["2024-06-15"])
    materialize(
        [band_rasters_probe],
        instance=instance,
        partition_key="blagnac|2024-06-15",
        raise_on_error=False,
        tags={REQUEST_TAG: "dead-receiver"},
    )
    tick_status(instance, store, refused, None)
    status = requests.read_status(store.store(), "dead-receiver")
    assert status is not None and status.state == "failed"


class LocalSlack(SlackResource):
    """dagster-slack's resource with its client pointed at the local receiver."""

    api_url: str

    def get_client(self) -> WebClient:
        return WebClient(token=self.token, base_url=self.api_url)


def test_slack_posts_through_the_slack_resource(httpserver_ipv4: HTTPServer) -> None:
    httpserver_ipv4.expect_request("/api/chat.postMessage", method="POST").respond_with_json(
        {"ok": True, "channel": "C1", "ts": "1.0"}
    )
    notifier = NotifierResource(
        ui_base_url=UI,
        slack=LocalSlack(token="xoxb-test", api_url=httpserver_ipv4.url_for("/api/")),
        slack_channel="#eo-alerts",
    )
    message = notify.run_failed(
        ui_base_url=UI, run_id="r-1", job_name="ingest_daily", partition=KEY, reason="boom <x>"
    )
    (delivery,) = notifier.send(message)
    assert delivery.ok, delivery.error
    ((request, _),) = httpserver_ipv4.log
    assert request.headers["Authorization"] == "Bearer xoxb-test"
    body = request.get_json() if request.is_json else dict(request.form)
    assert body["channel"] == "#eo-alerts"
    assert KEY in body["text"] and "boom <x>" in body["text"]
    blocks = body["blocks"] if isinstance(body["blocks"], list) else json.loads(body["blocks"])
    rendered = json.dumps(blocks)
    assert f"<{UI}/runs/r-1|Open in Dagster>" in rendered
    assert "boom &lt;x&gt;" in rendered  # Slack markup escaped
    # Slack answering an error, then Slack unreachable: reported, not raised.
    httpserver_ipv4.clear()
    httpserver_ipv4.expect_request("/api/chat.postMessage").respond_with_json(
        {"ok": False, "error": "channel_not_found"}
    )
    (refused,) = notifier.send(message)
    assert not refused.ok and "channel_not_found" in str(refused.error)
    dead = NotifierResource(
        ui_base_url=UI,
        slack=LocalSlack(token="xoxb-test", api_url=f"http://127.0.0.1:{free_port()}/api/"),
        slack_channel="#eo-alerts",
        timeout_s=1.0,
    )
    (unreachable,) = dead.send(message)
    assert not unreachable.ok


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = NotificationsConfig(
        webhook_url_env_var="ALERTS_WEBHOOK_URL",
        slack_token_env_var="ALERTS_SLACK_TOKEN",
        slack_channel="#eo",
        events=["run_failed", "request_ended"],
    )
    with pytest.raises(ConfigError, match="ALERTS_WEBHOOK_URL is not set"):
        require_notification_secrets(config, {"ALERTS_SLACK_TOKEN": "xoxb"})
    with pytest.raises(ConfigError, match="must hold an http"):
        require_notification_secrets(
            config, {"ALERTS_WEBHOOK_URL": "ftp://x", "ALERTS_SLACK_TOKEN": "xoxb"}
        )
    monkeypatch.setenv("ALERTS_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("ALERTS_SLACK_TOKEN", "xoxb-from-env")
    resource = NotifierResource.from_config(config)
    assert isinstance(resource.webhook_url, EnvVar)
    with build_resources({"notifier": resource}) as built:
        notifier = built.notifier
        assert notifier.webhook_url == "http://127.0.0.1:9/hook"
        assert notifier.slack.token == "xoxb-from-env"
        assert notifier.sends("request_ended") and not notifier.sends("late_scenes")
    # No receiver: no run-failure sensor, and a notifier that sends nothing.
    assert alert_sensors(NotificationsConfig(), []) == []
    assert len(alert_sensors(config, [])) == 1
    silent = NotifierResource.from_config(NotificationsConfig())
    assert not any(silent.sends(event) for event in NotificationsConfig().events)
    with pytest.raises(ConfigError, match="slack_channel"):
        parse_config({**_minimal(), "notifications": {"slack_token_env_var": "T"}})


def _minimal() -> dict[str, Any]:
    return {
        "aois": [{"name": AOI, "bbox": [1.40, 43.58, 1.47, 43.62]}],
        "partitions": {"start_date": "2020-01-01"},
        "storage": {"url": "/tmp/unused"},
        "warehouse": {"kind": "duckdb", "path": "/tmp/unused.duckdb"},
        "transform": {"enabled": False},
    }


def test_the_late_scene_sensor_sends_one_message_for_a_tick_that_recorded_late_scenes(
    tmp_path: Path,
    receiver: HTTPServer,
    real_items: dict[str, dict[str, Any]],
    real_collection: dict[str, Any],
) -> None:
    # The recordings: ESA's reprocessed `_1_` items of 2020-03-02 in the STAC API, while
    # the partition's run saw the `_0_` ones (its items.json); the partition counts as
    # materialized through a reported materialization, so no imagery is fetched.
    day, aoi = dt.date(2020, 3, 2), "upper-rhine"
    tiles = ("32TMT", "32TNT", "32UMU", "32UNU")
    reprocessed = [real_items[f"S2A_{t}_20200302_1_L2A"] for t in tiles]
    with RustacStacServer(reprocessed, [real_collection]) as server:
        config = parse_config(
            {
                **_minimal(),
                "stac": {"api_url": server.url, "page_size": 5, "max_retries": 1},
                "aois": [{"name": aoi, "bbox": [9.0, 47.0, 10.0, 48.0]}],
                "storage": {"url": str(tmp_path / "store")},
                "late_data": {"lookback_days": 3650},
                "notifications": {"webhook_url_env_var": "UNUSED_IN_TEST"},
            }
        )
        instance = DagsterInstance.local_temp(str(dagster_home(tmp_path / "home")))
        register_aois(config, instance)
        part = Partition(day, aoi)
        store = ObjectStoreResource.from_config(config.storage)
        seen = {f"S2A_{t}_20200302_0_L2A": f"sha256:{t}" for t in tiles}
        store.store().put_bytes(
            items_key(config.stac.collection, part),
            json.dumps({"geospatial_pipeline": {"seen": seen}}).encode(),
            "application/json",
        )
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=STAC_ITEMS, partition=partition_key(part))
        )
        sensor = build_late_scenes_sensor("ingest_daily", config.late_data)
        resources = {
            "stac": StacSearchResource.from_config(config.stac),
            "object_store": store,
            "notifier": notifier_for(receiver),
        }
        with build_sensor_context(instance=instance, resources=resources) as context:
            first = sensor(context)
        assert len(first.run_requests) == 1
        (body,) = posted(receiver)
        assert body["title"].startswith("4 late scene(s) for 1 partition(s)")
        assert body["fields"]["partitions"] == "upper-rhine|2020-03-02"
        assert body["details"][0].startswith(
            "upper-rhine|2020-03-02: S2A_32TMT_20200302_1_L2A, S2A_32TNT_20200302_1_L2A"
        )
        assert "not among the 4 item(s)" in body["details"][0]
        assert body["link"].startswith(f"{UI}/runs?")
        # The next tick re-reads the same items (the cursor overlap): already recorded, so
        # its run request repeats (deduplicated by run key) but no second message.
        with build_sensor_context(
            instance=instance, cursor=first.cursor, resources=resources
        ) as context:
            sensor(context)
        assert len(posted(receiver)) == 1
        instance.dispose()


def test_the_code_location_wires_alerts_only_with_a_receiver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quiet = build_defs(parse_config(_minimal()))
    assert RUN_FAILURE_SENSOR not in {s.name for s in quiet.get_repository_def().sensor_defs}
    # The sensors that can alert always take the notifier; here it has nowhere to send.
    silent = quiet.resources["notifier"]
    assert silent.webhook_url is None and silent.slack is None
    assert not any(silent.sends(event) for event in silent.events)
    with pytest.raises(ConfigError, match="ALERTS_WEBHOOK_URL is not set"):
        build_defs(parse_config({**_minimal(), "notifications": WEBHOOK_ONLY}))
    monkeypatch.setenv("ALERTS_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    repo = build_defs(parse_config({**_minimal(), "notifications": WEBHOOK_ONLY}))
    repo_def = repo.get_repository_def()
    assert isinstance(repo.resources["notifier"].webhook_url, EnvVar)
    needs = {s.name: s.required_resource_keys for s in repo_def.sensor_defs}
    assert "notifier" in needs[RUN_FAILURE_SENSOR]
    assert "notifier" in needs["late_scenes_sensor"]
    assert "notifier" in needs["request_status_sensor"]


WEBHOOK_ONLY = {"webhook_url_env_var": "ALERTS_WEBHOOK_URL"}
