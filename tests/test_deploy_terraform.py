"""Terraform (terraform/): formatting, offline validation, and a structural read with
python-hcl2 (declared vs used variables, module calls, tfvars, the files the releases read).

Offline here only the AWS provider is mirrored (TF_CLI_CONFIG_FILE points Terraform at the
mirror): `terraform validate` runs for every module whose providers are all mirrored, i.e.
modules/aws; modules/cluster and the root need the kubernetes and helm providers and are
skipped with that reason (CI's terraform job validates them with the registry reachable).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from geospatial_pipeline.config import parse_config, require_secrets
from tools.deploy_checks import REPO
from tools.deploy_checks import terraform as tf
from tools.deploy_checks.helm import ENVIRONMENTS, merged_values

TERRAFORM = tf.terraform_binary()
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="terraform is not installed on this machine"
)
ALL_MODULES = {"root": tf.ROOT, **tf.MODULES}


def run_terraform(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert TERRAFORM is not None
    return subprocess.run(
        [TERRAFORM, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def terraform_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env.update(
        TF_CLI_CONFIG_FILE=str(tf.cli_config(tmp_path / "cli.tfrc")),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",  # no version check against the internet
        TF_DATA_DIR=str(tmp_path / "data"),
    )
    return env


def required_providers(directory: Path) -> dict[str, str]:
    providers: dict[str, str] = {}
    for block in tf.blocks(directory, "terraform"):
        for entry in block.get("required_providers", []):
            for name, spec in entry.items():
                if not name.startswith("__"):
                    providers[name] = tf.unquote(spec["source"])
    return providers


@needs_terraform
def test_fmt(tmp_path: Path) -> None:
    proc = run_terraform(
        "fmt", "-check", "-recursive", "-diff", "-no-color", cwd=tf.TERRAFORM_DIR,
        env=terraform_env(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout}{proc.stderr}"


@needs_terraform
@pytest.mark.parametrize("module", sorted(ALL_MODULES))
def test_init_and_validate_offline(module: str, tmp_path: Path) -> None:
    directory = ALL_MODULES[module]
    providers = required_providers(directory)
    mirrored = {"aws"} if tf.mirrored_aws_versions() else set()
    missing = sorted(set(providers) - mirrored)
    if missing:
        pytest.skip(
            f"{module}: providers {missing} are not available offline (the mirror "
            f"{tf.PROVIDER_MIRROR} has {sorted(mirrored) or 'none'}); covered by fmt -check "
            "and the hcl2 tests here, validated in the workflow's terraform job"
        )
    # A copy, so init writes neither .terraform/ nor a lock file into the repository.
    work = tmp_path / module
    shutil.copytree(directory, work)
    env = terraform_env(tmp_path)
    init = run_terraform("init", "-backend=false", "-input=false", "-no-color", cwd=work, env=env)
    assert init.returncode == 0, init.stdout + init.stderr
    validate = run_terraform("validate", "-json", "-no-color", cwd=work, env=env)
    result = json.loads(validate.stdout)
    assert result["valid"] is True, result
    assert result["warning_count"] == 0, result["diagnostics"]


@pytest.mark.parametrize("module", sorted(ALL_MODULES))
def test_every_variable_used_is_declared_and_every_declared_one_used(module: str) -> None:
    directory = ALL_MODULES[module]
    declared = set(tf.declared_variables(directory))
    used = tf.referenced_variables(directory)
    assert used - declared == set(), f"undeclared: {sorted(used - declared)}"
    assert declared - used == set(), f"never used: {sorted(declared - used)}"
    for name, body in tf.declared_variables(directory).items():
        assert tf.unquote(body.get("description", "")), f"variable {name} has no description"


def test_module_calls_pass_exactly_the_module_variables() -> None:
    calls = {call.name: call for call in tf.module_calls(tf.ROOT)}
    assert {name: call.source for name, call in calls.items()} == {
        name: path.resolve() for name, path in tf.MODULES.items()
    }
    for name, call in calls.items():
        declared = set(tf.declared_variables(call.source))
        given = set(call.arguments)
        assert given - declared == set(), f"module.{name}: unknown arguments"
        missing = tf.required_variables(call.source) - given
        assert missing == set(), f"module.{name}: missing {sorted(missing)}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_tfvars_select_the_environment(environment: str) -> None:
    path = tf.ROOT / "environments" / f"{environment}.tfvars"
    values = {k: tf.unquote(v) for k, v in tf.parse_tfvars(path).items()}
    declared = tf.declared_variables(tf.ROOT)
    assert set(values) - set(declared) == set()
    assert tf.required_variables(tf.ROOT) - set(values) == set()
    assert values["environment"] == environment
    # The root refuses a tfvars file applied in another environment's workspace.
    condition = declared["environment"]["validation"][0]["condition"]
    assert "var.environment == terraform.workspace" in condition
    postgres = {k: tf.unquote(v) for k, v in values["postgres"].items()}
    if environment == "prod":
        assert postgres["host"], "prod uses an external PostgreSQL: host is required"
    assert not any(key.endswith("password") for key in values), "no secret in tfvars"


def test_state_is_remote_in_s3_with_locking() -> None:
    (backend,) = [b for block in tf.blocks(tf.ROOT, "terraform") for b in block.get("backend", [])]
    s3 = backend['"s3"']
    assert s3["use_lockfile"] is True and s3["encrypt"] is True
    assert "bucket" not in s3, "the state bucket is account-specific: -backend-config"


def resolve_path(expression: str, substitutions: dict[str, str]) -> Path:
    text = tf.unquote(expression)
    for name, value in substitutions.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, f"unresolved expression in {expression}"
    return Path(text).resolve()


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helm_releases_read_values_files_that_exist(environment: str) -> None:
    cluster = tf.MODULES["cluster"]
    (call,) = [c for c in tf.module_calls(tf.ROOT) if c.name == "cluster"]
    helm_dir = resolve_path(call.arguments["helm_dir"], {"path.module": str(tf.ROOT)})
    assert helm_dir == (REPO / "helm").resolve()
    local_values = tf.locals_of(cluster)
    releases = tf.resources(cluster, "helm_release")
    assert {tf.unquote(r["chart"]) for r in releases.values()} == {
        "dagster",
        "dagster-user-deployments",
    }
    for name, release in releases.items():
        match = re.fullmatch(
            r"\$\{\[for f in local\.(\w+) : templatefile\(f, local\.helm_template_vars\)\]\}",
            release["values"],
        )
        assert match, f"helm_release.{name}: values must render local files: {release['values']}"
        files = [
            resolve_path(p, {"var.helm_dir": str(helm_dir), "var.environment": environment})
            for p in local_values[match.group(1)]
        ]
        assert len(files) == 2 and all(p.is_file() for p in files), files
        chart_dir = "dagster" if tf.unquote(release["chart"]) == "dagster" else "user-deployments"
        assert [p.parent.name for p in files] == [chart_dir, chart_dir]
        assert release["version"] == "${var.dagster_chart_version}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pipeline_config_of_each_environment_is_valid(environment: str) -> None:
    """The ConfigMap content: deploy/pipeline/<env>.yaml plus the storage Terraform adds."""
    root_locals = tf.locals_of(tf.ROOT)
    expression = root_locals["pipeline_config"]
    assert "/../deploy/pipeline/${var.environment}.yaml" in expression
    assert "storage" in expression and 'module.aws.bucket_names["data"]' in expression
    doc: dict[str, Any] = yaml.safe_load(
        (REPO / "deploy" / "pipeline" / f"{environment}.yaml").read_text()
    )
    assert "storage" not in doc, "storage comes from Terraform (the bucket it created)"
    data_prefix = tf.unquote(root_locals["data_prefix"])
    doc["storage"] = {
        "url": f"s3://acme-geospatial-{environment}-data/{data_prefix}",
        "region": "eu-west-1",
    }
    config = parse_config(doc, f"deploy/pipeline/{environment}.yaml")
    assert config.storage.is_s3
    require_secrets(config, {"SNOWFLAKE_PASSWORD": "set-by-the-secret"})
    # The data bucket's lifecycle rules cover the prefixes the pipeline writes.
    from geospatial_pipeline.layout import (
        Partition,
        late_record_key,
        processed_prefix,
        raw_prefix,
    )
    from geospatial_pipeline.ondemand.registry import aoi_key
    from geospatial_pipeline.ondemand.requests import incoming_key, status_key
    from geospatial_pipeline.storage.object_store import TMP_PREFIX

    rules = tf.unquote_all(tf.locals_of(tf.MODULES["aws"])["buckets"])["data"]
    day = dt.date(2024, 6, 15)
    part = Partition(day, "a")

    def top(prefix: str) -> str:
        return "${var.data_prefix}/" + prefix.split("/")[0] + "/"

    assert rules["raw"]["prefix"] == top(raw_prefix("c", part))
    assert rules["processed"]["prefix"] == top(processed_prefix("c", part))
    assert rules["tmp"]["prefix"] == top(TMP_PREFIX)
    assert rules["tmp"]["expire"] == 1
    # Late-scene records, the AOI registry (every partition's geometry) and the request
    # documents are kept: no rule expires or moves them.
    kept = [late_record_key(day, "x"), aoi_key("a"), incoming_key("r1"), status_key("r1")]
    ruled = {rule["prefix"] for rule in rules.values()}
    for key in kept:
        assert top(key) not in ruled, key
        assert not any(("${var.data_prefix}/" + key).startswith(p) for p in ruled), key


def test_code_location_role_is_least_privilege() -> None:
    """The IRSA policy names actions one by one, on the module's buckets and key only."""
    docs = {
        name: body
        for block in tf.blocks(tf.MODULES["aws"], "data")
        for kind, named in block.items()
        if tf.unquote(kind) == "aws_iam_policy_document"
        for name, body in tf.unquote_all(named).items()
    }
    for name in ("code_location", "dagster"):
        for statement in docs[name]["statement"]:
            actions = statement["actions"]
            assert all("*" not in action for action in actions), (name, actions)
            resources = statement["resources"]
            text = json.dumps(resources)
            assert '"*"' not in text, (name, resources)
            assert "aws_s3_bucket.this" in text or "aws_kms_key.this" in text, (name, resources)
    trust = docs["irsa_trust"]["statement"][0]
    assert trust["actions"] == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {c["variable"].split(":")[-1]: c for c in trust["condition"]}
    assert set(conditions) == {"sub", "aud"}
    assert conditions["sub"]["values"] == ["system:serviceaccount:${var.namespace}:${each.value}"]


def hcl_expression(value: str) -> str:
    """A python-hcl2 attribute value back as a Terraform expression: "${expr}" -> expr."""
    match = re.fullmatch(r"\$\{(.*)\}", value, flags=re.DOTALL)
    assert match, f"not an interpolation: {value}"
    return match.group(1)


def test_code_server_restarts_when_the_pipeline_config_changes(tmp_path: Path) -> None:
    """The code server's pod template carries sha256 of exactly what the ConfigMap holds:
    the cluster module's own expressions, evaluated by Terraform, agree with sha256 of the
    content, and a changed config changes the annotation (so Helm rolls the pods)."""
    cluster = tf.MODULES["cluster"]
    config_map = tf.resources(cluster, "kubernetes_config_map_v1")["pipeline_config"]
    (data,) = config_map["data"] if isinstance(config_map["data"], list) else [config_map["data"]]
    data = {tf.unquote(k): v for k, v in data.items() if not k.startswith("__")}
    checksum = tf.locals_of(cluster)["helm_template_vars"]["pipeline_config_sha256"]
    assert 'kubernetes_config_map_v1.pipeline_config.data["pipeline.yaml"]' in checksum

    # The annotation is the placeholder Terraform fills, in each environment.
    for environment in ENVIRONMENTS:
        digest = hashlib.sha256(environment.encode()).hexdigest()
        values = merged_values("user-deployments", environment, {"pipeline_config_sha256": digest})
        (deployment,) = values["deployments"]
        assert deployment["annotations"]["checksum/pipeline-config"] == digest
        # ... on the deployment that mounts that ConfigMap's pipeline.yaml as its config.
        mounted = {v["configMap"]["name"] for v in deployment["volumes"] if "configMap" in v}
        assert tf.unquote(tf.locals_of(cluster)["pipeline_config_map"]) in mounted
        config_path = next(
            e["value"] for e in deployment["env"] if e["name"] == "GEOSPATIAL_PIPELINE_CONFIG"
        )
        assert Path(config_path).name in data

    if TERRAFORM is None:
        pytest.skip("terraform is not installed: the expressions are not evaluated")
    # The module's two expressions in a configuration of their own (the module needs
    # providers that are not mirrored here); the resource's data becomes a local.
    work = tmp_path / "checksum"
    work.mkdir()
    data_hcl = ", ".join(f'"{k}" = {hcl_expression(v)}' for k, v in data.items())
    (work / "main.tf").write_text(
        'variable "pipeline_config_yaml" {\n  type = string\n}\n'
        "locals {\n"
        f"  config_map_data = {{ {data_hcl} }}\n"
        "  checksum = "
        + hcl_expression(checksum).replace(
            "kubernetes_config_map_v1.pipeline_config.data", "local.config_map_data"
        )
        + "\n}\n"
    )
    prod = (REPO / "deploy" / "pipeline" / "prod.yaml").read_text()
    seen = set()
    # A second content with a non-ASCII character: Terraform hashes the UTF-8 bytes.
    for content in (prod, prod + "# Sète\n"):
        proc = run_terraform(
            "console",
            "-var",
            f"pipeline_config_yaml={content}",
            cwd=work,
            env={**terraform_env(tmp_path), "TF_INPUT": "0"},
            stdin='jsonencode([local.config_map_data["pipeline.yaml"], local.checksum])\n',
        )
        assert proc.returncode == 0, proc.stderr
        held, annotation = json.loads(json.loads(proc.stdout.strip().splitlines()[-1]))
        assert held == content
        assert annotation == hashlib.sha256(held.encode("utf-8")).hexdigest()
        seen.add(annotation)
    assert len(seen) == 2
