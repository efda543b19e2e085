"""Helm values (helm/) for the official dagster/dagster and dagster/dagster-user-deployments
charts, validated offline against the charts' own schemas in ../shared/schemas.

Helm validates the chart defaults merged with the values files (in order) against
values.schema.json (draft 7); that is what happens here, after rendering the files the way
Terraform does (templatefile() with the cluster module's variables). The schemas $ref
Kubernetes definitions on an external site that cannot be fetched offline: those
subschemas are treated as permissive (tools/deploy_checks/helm.py says exactly how), so
the Kubernetes-typed fields that matter (resources, securityContext, volumes, env) are
checked by the tests below instead.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, DagsterInvalidConfigError

from geospatial_pipeline.config import SNOWFLAKE_PASSWORD_ENV_VAR, parse_config, require_secrets
from geospatial_pipeline.deployment import (
    DEPLOY_ENV_VAR,
    HEAVY_TAG_KEY,
    RASTER_POOL_LIMITS,
    partition_run_limit,
)
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.resources.notify import require_notification_secrets
from tools.deploy_checks import REPO
from tools.deploy_checks import dockerfile as df
from tools.deploy_checks import terraform as tf
from tools.deploy_checks.helm import (
    ENVIRONMENTS,
    HELM_DIR,
    SAMPLE_TEMPLATE_VARS,
    Chart,
    chart_defaults,
    chart_instance_config,
    helm_merge,
    merged_values,
    placeholders,
    schema_errors,
    values_files,
)

CHARTS: tuple[Chart, ...] = ("dagster", "user-deployments")
GRPC_PREFIX = ["dagster", "api", "grpc", "-h", "0.0.0.0"]  # what the chart puts first


def dagster_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d.split("==")[1] for d in deps if d.startswith("dagster=="))


def cluster_locals() -> dict[str, Any]:
    return {k: tf.unquote(v) for k, v in tf.locals_of(tf.MODULES["cluster"]).items()}


def root_locals() -> dict[str, Any]:
    return {k: tf.unquote(v) for k, v in tf.locals_of(tf.ROOT).items()}


def user_deployment(environment: str) -> dict[str, Any]:
    deployments = merged_values("user-deployments", environment)["deployments"]
    assert len(deployments) == 1
    return deployments[0]


def env_value(deployment: dict[str, Any], name: str) -> str:
    return next(e["value"] for e in deployment["env"] if e["name"] == name)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("chart", CHARTS)
def test_values_validate_against_the_chart_schema(chart: Chart, environment: str) -> None:
    assert schema_errors(chart, chart_defaults(chart)) == []  # the rule itself is sound
    assert schema_errors(chart, merged_values(chart, environment)) == []


def test_schema_check_rejects_what_helm_would() -> None:
    """The validation is not vacuous: mistakes a values file can make are caught."""
    good = merged_values("dagster", "prod")
    typo = copy.deepcopy(good)
    typo["dagsterDaemon"]["runCoordinater"] = typo["dagsterDaemon"].pop("runCoordinator")
    assert any("runCoordinater" in e for e in schema_errors("dagster", typo))

    no_limit = copy.deepcopy(good)
    queued = no_limit["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    queued["tagConcurrencyLimits"] = [{"key": "dagster/backfill"}]
    errors = schema_errors("dagster", no_limit)
    assert [e.split(":")[0] for e in errors] == [
        "dagsterDaemon.runCoordinator.config.queuedRunCoordinator"
    ]

    wrong_type = copy.deepcopy(good)
    wrong_type["runLauncher"]["type"] = "KubernetesRunLauncher"
    assert schema_errors("dagster", wrong_type)

    deployment = merged_values("user-deployments", "prod")
    del deployment["deployments"][0]["port"]
    assert schema_errors("user-deployments", deployment) == [
        "deployments.0: 'port' is a required property"
    ]


def test_helm_merge_follows_helm() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1, "c": 3}
    assert helm_merge(base, {"a": {"y": [3]}, "b": None}) == {"a": {"x": 1, "y": [3]}, "c": 3}


def test_placeholders_are_exactly_the_terraform_template_variables() -> None:
    """Every ${...} in a values file is a key of the cluster module's helm_template_vars
    (templatefile() fails on any other), and the test renders with all of them."""
    template_vars = set(tf.locals_of(tf.MODULES["cluster"])["helm_template_vars"])
    assert set(SAMPLE_TEMPLATE_VARS) == template_vars
    used: set[str] = set()
    for chart in CHARTS:
        for environment in ENVIRONMENTS:
            for path in values_files(chart, environment):
                names = placeholders(path.read_text())
                assert names <= template_vars, (path, names - template_vars)
                used |= names
    assert used == template_vars - {"environment"}  # every variable is used somewhere
    # No values file is left out of both releases.
    on_disk = {p.relative_to(HELM_DIR) for p in HELM_DIR.glob("*/values*.yaml")}
    listed = {
        p.relative_to(HELM_DIR) for c in CHARTS for e in ENVIRONMENTS for p in values_files(c, e)
    }
    assert on_disk == listed


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_dagster_release(environment: str) -> None:
    values = merged_values("dagster", environment)
    names = cluster_locals()

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["securityContext"]["runAsUser"] == image_uid()
    assert launcher["securityContext"]["readOnlyRootFilesystem"] is True

    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["enabled"] is True
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # The limits themselves: test_instance_limits_as_dagster_loads_them.
    assert daemon["runRetries"]["enabled"] is True and daemon["runRetries"]["maxRetries"] >= 1
    assert daemon["runMonitoring"]["enabled"] is True
    assert values["dagsterWebserver"]["image"]["tag"] == dagster_pin()
    assert daemon["image"]["tag"] == dagster_pin()

    # User deployments are off in this release; the webserver reaches the separate one.
    assert values["dagster-user-deployments"]["enabled"] is False
    deployment = user_deployment(environment)
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]["location_name"]
    assert values["dagsterWebserver"]["workspace"] == {
        "enabled": True,
        "servers": [{"host": deployment["name"], "port": deployment["port"], "name": location}],
        "externalConfigmap": None,
    }

    logs = values["computeLogManager"]
    assert logs["type"] == "S3ComputeLogManager"
    assert logs["config"]["s3ComputeLogManager"]["bucket"] == "acme-geospatial-prod-logs"
    assert logs["config"]["s3ComputeLogManager"]["localDir"].startswith("/tmp/")

    # Secrets: the External Secrets Operator writes the PostgreSQL one (Terraform names it,
    # never holds it), the chart must not generate another.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"] == names["postgres_secret"]
    assert values["serviceAccount"]["name"] == root_locals()["dagster_service_account"]
    role = values["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role == SAMPLE_TEMPLATE_VARS["dagster_role_arn"]

    pg = values["postgresql"]
    if environment == "prod":
        assert pg["enabled"] is False
        assert pg["postgresqlHost"] == SAMPLE_TEMPLATE_VARS["postgres_host"]
        assert pg["postgresqlParams"] == {"sslmode": "require"}
    else:
        assert pg["enabled"] is True and pg["existingSecret"] == names["postgres_secret"]


def load_instance(config: dict[str, Any], home: Path) -> DagsterInstance:
    """A DagsterInstance from ``config`` (what the chart renders) on SQLite storage."""
    home.mkdir(parents=True, exist_ok=True)
    doc = {
        **config,
        "storage": {"sqlite": {"base_dir": str(home)}},
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(doc))
    return DagsterInstance.from_config(str(home))


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_instance_limits_as_dagster_loads_them(environment: str, tmp_path: Path) -> None:
    """The run queue and pool limits of the instance the chart renders, read back by Dagster
    itself: one run per partition, the raster pool's limit, backfills never take every slot,
    and no run-tag limit left for raster runs (the pool replaces it)."""
    values = merged_values("dagster", environment)
    with load_instance(chart_instance_config(values), tmp_path / "home") as instance:
        concurrency = instance.get_concurrency_config()
    pools = concurrency.pool_config
    assert pools.default_pool_limit == RASTER_POOL_LIMITS[environment]
    assert pools.pool_granularity is not None and pools.pool_granularity.value == "op"
    queue = concurrency.run_queue_config
    assert queue is not None and queue.max_concurrent_runs > 0
    limits = queue.tag_concurrency_limits
    assert partition_run_limit() in limits
    backfill = next(t for t in limits if t["key"] == "dagster/backfill")
    assert 0 < backfill["limit"] < queue.max_concurrent_runs
    assert not any(t["key"] == HEAVY_TAG_KEY for t in limits)


def test_limits_in_the_run_coordinator_are_refused_next_to_pools(tmp_path: Path) -> None:
    """Why values.yaml empties queuedRunCoordinator: with the chart's defaults there (or any
    limit), the chart renders run_coordinator limits that Dagster refuses next to
    concurrency.pools, and the daemon would not start."""
    defaults = merged_values("dagster", "prod")
    defaults["dagsterDaemon"]["runCoordinator"] = chart_defaults("dagster")["dagsterDaemon"][
        "runCoordinator"
    ]
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        load_instance(chart_instance_config(defaults), tmp_path / "defaults")

    # The same limits written where the chart has its own keys are refused too.
    in_coordinator = merged_values("dagster", "prod")
    runs = in_coordinator["additionalInstanceConfig"]["concurrency"].pop("runs")
    queued = in_coordinator["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    queued["maxConcurrentRuns"] = runs["max_concurrent_runs"]
    queued["tagConcurrencyLimits"] = runs["tag_concurrency_limits"]
    assert schema_errors("dagster", in_coordinator) == []  # the chart's schema accepts it
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent_runs"):
        load_instance(chart_instance_config(in_coordinator), tmp_path / "coordinator")


def image_uid() -> int:
    user = next(i for i in df.instructions() if i.keyword == "USER")
    return int(user.value.split(":")[0])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_user_deployment(environment: str) -> None:
    values = merged_values("user-deployments", environment)
    deployment = user_deployment(environment)
    names = cluster_locals()

    # The chart's command is the image's CMD (only the bind address comes from the chart).
    cmd = next(i for i in df.instructions() if i.keyword == "CMD").json_args()
    port = int(next(i for i in df.instructions() if i.keyword == "EXPOSE").value)
    chart_cmd = [*GRPC_PREFIX, "-p", str(deployment["port"]), *deployment["dagsterApiGrpcArgs"]]
    assert deployment["port"] == port
    assert grpc_options(chart_cmd) == grpc_options(cmd)
    assert deployment["image"] == {
        "repository": SAMPLE_TEMPLATE_VARS["image_repository"],
        "tag": SAMPLE_TEMPLATE_VARS["image_tag"],
        "pullPolicy": "IfNotPresent",
    }
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}

    # Environment: the executor switch, the config path inside the ConfigMap's mount.
    assert env_value(deployment, DEPLOY_ENV_VAR) == environment
    config_path = env_value(deployment, "GEOSPATIAL_PIPELINE_CONFIG")
    volumes = {v["name"]: v for v in deployment["volumes"]}
    mount = next(
        m
        for m in deployment["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == names["pipeline_config_map"]
    )
    assert config_path == f"{mount['mountPath']}/pipeline.yaml" and mount["readOnly"] is True
    assert deployment["envConfigMaps"] == [{"name": names["pipeline_env_map"]}]
    assert deployment["envSecrets"] == [{"name": names["snowflake_secret"]}]

    # A read-only root filesystem needs a writable /tmp (TMPDIR, GDAL, compute logs).
    assert deployment["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in deployment["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]
    assert env_value(deployment, "TMPDIR") == "/tmp"
    pod = deployment["podSecurityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == image_uid()
    assert deployment["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    resources = deployment["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"} and "memory" in resources["limits"]

    # IRSA: the service account the role trusts, annotated with the role.
    account = values["serviceAccount"]
    assert account["create"] is True
    assert account["name"] == root_locals()["code_location_service_account"]
    role = account["annotations"]["eks.amazonaws.com/role-arn"]
    assert role == SAMPLE_TEMPLATE_VARS["code_location_role_arn"]
    assert values["global"]["postgresqlSecretName"] == names["postgres_secret"]


def grpc_options(args: list[str]) -> dict[str, str]:
    """`dagster api grpc` options as {short option: value}, without the bind host (the
    chart binds 0.0.0.0 itself)."""
    assert args[:3] == ["dagster", "api", "grpc"], args
    aliases = {"--module-name": "-m", "--host": "-h", "--port": "-p"}
    rest = args[3:]
    assert len(rest) % 2 == 0, rest  # every option used here takes a value
    options = {aliases.get(rest[i], rest[i]): rest[i + 1] for i in range(0, len(rest), 2)}
    options.pop("-h")
    return options


def test_dev_and_prod_deployments_differ_only_where_meant() -> None:
    """`deployments` is a list, so Helm cannot merge it from the shared base: each
    environment repeats the entry. Everything but resources and the environment name must
    stay identical."""
    dev, prod = user_deployment("dev"), user_deployment("prod")
    for deployment in (dev, prod):
        deployment.pop("resources")
        deployment["env"] = [e for e in deployment["env"] if e["name"] != DEPLOY_ENV_VAR]
    assert dev == prod


def test_chart_version_follows_the_dagster_pin() -> None:
    root_vars = tf.declared_variables(tf.ROOT)
    assert tf.unquote(root_vars["dagster_chart_version"]["default"]) == dagster_pin()


def _readme_yaml_block(first_line: str) -> dict[str, Any]:
    """The README's YAML example that starts with ``first_line``."""
    text = (REPO / "README.md").read_text()
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        if body.startswith(first_line):
            return dict(yaml.safe_load(body))
    raise AssertionError(f"README has no YAML example starting with {first_line!r}")


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_secrets_the_pipeline_yaml_can_name_reach_the_pods(environment: str) -> None:
    """The variables the README's examples name (alert receivers, the pgstac password)
    come from optional Secret keys: a deployment without them still loads, and one whose
    pipeline YAML names them finds them set."""
    deployment = user_deployment(environment)
    from_secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in deployment["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert all(ref["optional"] is True for ref in from_secrets.values()), from_secrets
    pipeline = yaml.safe_load((REPO / "deploy" / "pipeline" / f"{environment}.yaml").read_text())
    config = parse_config(
        {
            **pipeline,
            "storage": {"url": "s3://bucket/prefix"},
            **_readme_yaml_block("notifications:"),
            **_readme_yaml_block("publish:"),
        }
    )
    # Each Secret key as the pod would see it (the webhook's value must be a URL).
    environ = {name: "https://hooks.example.org/x" for name in from_secrets}
    environ[SNOWFLAKE_PASSWORD_ENV_VAR] = "x"

    def check(env: dict[str, str]) -> None:
        require_secrets(config, env)
        require_notification_secrets(config.notifications, env)

    check(environ)
    for name in (
        config.notifications.webhook_url_env_var,
        config.notifications.slack_token_env_var,
        config.publish.pgstac_password_env_var,
    ):
        assert name in from_secrets, name
        without = {k: v for k, v in environ.items() if k != name}
        with pytest.raises(ConfigError, match=name):
            check(without)
