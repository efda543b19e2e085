"""checkov (static analysis of infrastructure code) over terraform/ and over the Kubernetes
objects this deployment makes: the code server's Deployment, Service, ServiceAccount and
NetworkPolicies (built from the Helm values as the chart's templates render them; there is
no helm binary here), a run's Job (built by the run launcher of deploy/dagster.yaml) and a
heavy step's Job (built by dagster-k8s from deploy/dagster.yaml, the chart's container
context, the executor config and the op tags).

No check may fail. Skips are documented: inline `#checkov:skip=ID:reason` in the Terraform,
tools/deploy_checks/checkov.py:K8S_SKIPS for the Kubernetes objects.

checkov runs from its own environment (.venv-checkov, `make checkov-venv`, created by
.ci/run before the tests); on a machine without it the test is skipped, in CI it fails.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import asset

from geospatial_pipeline.deployment import (
    heavy_op_tags,
    heavy_run_tags,
    step_executor_config,
)
from tools.deploy_checks import checkov
from tools.deploy_checks.helm import ENVIRONMENTS
from tools.deploy_checks.k8s import code_server_manifests, run_job, step_job
from tools.deploy_checks.terraform import TERRAFORM_DIR


def heavy_step_job(environment: str, workdir: Path) -> dict[str, Any]:
    """The Job dagster-k8s makes for a step of ``band_rasters`` (a heavy op) of a heavy run."""

    @asset(name="band_rasters", op_tags=heavy_op_tags(environment))
    def band_rasters() -> None: ...

    return step_job(
        environment,
        "band_rasters",
        band_rasters.op.tags,
        step_executor_config(environment),
        heavy_run_tags(),
        workdir,
    )


def write_manifests(directory: Path, workdir: Path) -> None:
    for environment in ENVIRONMENTS:
        docs = [
            *code_server_manifests(environment),
            heavy_step_job(environment, workdir),
            run_job(environment, heavy_run_tags(), workdir),
        ]
        (directory / f"{environment}.yaml").write_text(yaml.safe_dump_all(docs))


def test_checkov_finds_nothing_to_fix(tmp_path: Path) -> None:
    if not checkov.CHECKOV.exists():
        message = f"{checkov.CHECKOV} is missing: run `make checkov-venv`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    write_manifests(manifests, tmp_path)

    report = checkov.run([TERRAFORM_DIR, manifests], ["terraform", "kubernetes"], checkov.K8S_SKIPS)
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for c in report.failed
    ]
    assert failed == []
    # Both scans ran on real content.
    assert len(report.passed.get("terraform", ())) > 100
    kubernetes = report.passed.get("kubernetes", set())
    kinds = {resource.split(".")[0] for _, resource, _ in kubernetes}
    assert {"Deployment", "Job", "ServiceAccount", "Service"} <= kinds
    # The NetworkPolicies in the values select the code server's and the step's pods
    # (tests/test_deploy_security.py checks what they allow and deny).
    isolated = {
        resource.split(".")[2] for check, resource, _ in kubernetes if check == "CKV2_K8S_6"
    }
    names = {name.split(".app.")[0] for name in isolated}
    assert {
        "dagster-step-band-rasters",
        "geospatial-pipeline-dagster-user-deployments-geospatial-pipeline",
    } <= names
    assert any(name.startswith("dagster-run-") for name in names), names
    # Every Terraform skip says why.
    for check in report.skipped:
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check["check_id"]
