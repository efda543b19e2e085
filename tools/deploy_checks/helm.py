"""Helm values as Helm sees them: Terraform-rendered, merged over the chart defaults,
validated against the chart's own ``values.schema.json`` (JSON Schema draft 7)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft7Validator
from referencing import Registry

from tools.deploy_checks import REPO, SHARED

Chart = Literal["dagster", "user-deployments"]
ENVIRONMENTS = ("dev", "prod")
HELM_DIR = REPO / "helm"
SCHEMAS = SHARED / "schemas"
# Local directory under helm/ -> name of the chart's files in ../shared/schemas.
CHART_FILES: dict[Chart, str] = {
    "dagster": "dagster",
    "user-deployments": "dagster-user-deployments",
}

# What Terraform substitutes (terraform/modules/cluster: local.helm_template_vars), with
# values of the real shape, so the rendered files are what a cluster would receive.
SAMPLE_TEMPLATE_VARS: dict[str, str] = {
    "environment": "prod",
    "image_repository": "111111111111.dkr.ecr.eu-west-1.amazonaws.com/geospatial-pipeline",
    "image_tag": "v0.1.0",
    "code_location_role_arn": (
        "arn:aws:iam::111111111111:role/geospatial-pipeline-prod-code-location"
    ),
    "dagster_role_arn": "arn:aws:iam::111111111111:role/geospatial-pipeline-prod-dagster",
    "compute_logs_bucket": "acme-geospatial-prod-logs",
    "aws_region": "eu-west-1",
    "postgres_host": "dagster-prod.cluster-abcdefghijkl.eu-west-1.rds.amazonaws.com",
    "postgres_username": "dagster",
    "postgres_database": "dagster",
    "vpc_cidr": "10.20.0.0/16",
    # sha256() of the pipeline YAML in the ConfigMap: 64 lowercase hex digits.
    "pipeline_config_sha256": hashlib.sha256(b"aois: []\n").hexdigest(),
}

# Terraform template syntax: ${name} interpolates, $${ is a literal "${", %{ starts a
# directive (not used in the values files, refused here so nothing goes unchecked).
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([^}]*)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TemplateError(ValueError):
    """A values file uses template syntax that the check does not (or cannot) render."""


def values_files(chart: Chart, environment: str) -> list[Path]:
    """The files Terraform passes to the release, in Helm's merge order."""
    return [HELM_DIR / chart / "values.yaml", HELM_DIR / chart / f"values-{environment}.yaml"]


def placeholders(text: str) -> set[str]:
    """Names interpolated by a Terraform template."""
    if "%{" in text:
        raise TemplateError("template directives (%{...}) are not supported in values files")
    names = set()
    for expr in _INTERPOLATION.findall(text):
        name = expr.strip()
        if not _IDENTIFIER.match(name):
            raise TemplateError(
                f"only plain ${{name}} interpolations are supported, got ${{{expr}}}"
            )
        names.add(name)
    return names


def render(text: str, variables: Mapping[str, str]) -> str:
    """Terraform's templatefile() for plain ${name} interpolations: unknown names fail."""
    missing = placeholders(text) - set(variables)
    if missing:
        raise TemplateError(f"no template variable {sorted(missing)}")
    rendered = _INTERPOLATION.sub(lambda m: variables[m.group(1).strip()], text)
    return rendered.replace("$${", "${")


def load_rendered(path: Path, variables: Mapping[str, str]) -> dict[str, Any]:
    doc = yaml.safe_load(render(path.read_text(encoding="utf-8"), variables))
    return doc or {}


def helm_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values: maps merge key by key, anything else (lists included)
    is replaced, and a null removes the key."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_defaults(chart: Chart) -> dict[str, Any]:
    path = SCHEMAS / f"{CHART_FILES[chart]}.values.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def merged_values(
    chart: Chart, environment: str, variables: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Chart defaults, then each values file rendered with ``variables``."""
    env_vars = {**SAMPLE_TEMPLATE_VARS, "environment": environment, **(variables or {})}
    merged = chart_defaults(chart)
    for path in values_files(chart, environment):
        merged = helm_merge(merged, load_rendered(path, env_vars))
    return merged


K8S_SCHEMA_SITE = "https://kubernetesjsonschema.dev/"


def _without_external_refs(node: Any) -> Any:
    """The schema with every subschema that ``$ref``s the Kubernetes definitions replaced
    by the empty schema (anything validates).

    Those definitions live on an external site that cannot be fetched offline. Under draft
    7 a ``$ref``'s sibling keywords are ignored, so the empty schema is what such a
    subschema means once its target is treated as permissive: the Kubernetes-typed fields
    (resources, securityContext, volumes, env entries, ...) are not checked by the schema
    here; tests/test_deploy_helm.py checks the ones that matter itself.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(K8S_SCHEMA_SITE):
            return {}
        return {key: _without_external_refs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_without_external_refs(item) for item in node]
    return node


def _no_remote(uri: str) -> Any:
    raise LookupError(f"remote $ref {uri} left in the schema (nothing is fetched)")


def validator(chart: Chart) -> Draft7Validator:
    path = SCHEMAS / f"{CHART_FILES[chart]}.values.schema.json"
    schema = _without_external_refs(json.loads(path.read_text(encoding="utf-8")))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=Registry(retrieve=_no_remote))  # type: ignore[call-arg]


def schema_errors(chart: Chart, values: Mapping[str, Any]) -> list[str]:
    """Every violation, as "path: message", sorted (empty when the values validate)."""
    errors = validator(chart).iter_errors(values)
    return sorted(
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors
    )


def _helm_empty(value: Any) -> bool:
    """Sprig's ``empty``: what ``compact`` drops (nil, false, 0, "", empty list or map)."""
    return value is None or value is False or value == 0 or value in ("", [], {})


def chart_instance_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """The run-queue and concurrency part of the instance dagster.yaml the dagster chart
    (1.10) writes into its ConfigMap from ``values``: ``run_coordinator`` rendered as the
    chart's ``dagsterYaml.runCoordinator.queued`` template does, then
    ``additionalInstanceConfig`` appended (a top-level key given twice: the later wins,
    as in PyYAML, which Dagster reads the file with)."""
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    out: dict[str, Any] = {}
    if daemon["enabled"] and coordinator["enabled"]:
        if coordinator["type"] != "QueuedRunCoordinator":
            raise TemplateError(f"run coordinator {coordinator['type']!r} is not rendered here")
        queued = coordinator["config"].get("queuedRunCoordinator") or {}
        rendered: dict[str, Any] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        }
        if not all(_helm_empty(v) for v in queued.values()):
            max_runs = queued.get("maxConcurrentRuns")
            config: dict[str, Any] = {"max_concurrent_runs": -1 if max_runs is None else max_runs}
            for key, name in (
                ("tagConcurrencyLimits", "tag_concurrency_limits"),
                ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
                ("dequeueUseThreads", "dequeue_use_threads"),
                ("dequeueNumWorkers", "dequeue_num_workers"),
            ):
                if not _helm_empty(queued.get(key)):
                    config[name] = queued[key]
            block = queued.get("blockOpConcurrencyLimitedRuns")
            if not _helm_empty(block):
                config["block_op_concurrency_limited_runs"] = {
                    "enabled": block["enabled"],
                    "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"],
                }
            rendered["config"] = config
        out["run_coordinator"] = rendered
    out.update(copy.deepcopy(dict(values.get("additionalInstanceConfig") or {})))
    return out
