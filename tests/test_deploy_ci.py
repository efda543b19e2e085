"""The GitHub Actions workflow runs what this repository's own entry points run."""

from __future__ import annotations

from typing import Any

import yaml

from tools.deploy_checks import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def commands(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_workflow_lints_tests_checks_terraform_and_pushes_on_tags() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    jobs = doc["jobs"]
    assert "make lint" in commands(jobs["lint"])  # ruff format/check and mypy
    test = commands(jobs["test"])
    assert "checkov-venv" in test and "make test" in test
    assert jobs["test"]["services"]["postgres"]["ports"] == ["5432:5432"]
    terraform = commands(jobs["terraform"])
    assert "terraform fmt -check -recursive" in terraform
    for directory in ("terraform/modules/aws", "terraform/modules/cluster", "terraform;"):
        assert directory in terraform
    assert "validate" in terraform and "-backend=false" in terraform
    assert "tf-check" in terraform

    # YAML reads the key `on` as True.
    triggers = doc[True]
    assert triggers["push"]["tags"] == ["v*"]
    image = jobs["image"]
    assert set(image["needs"]) == {"lint", "test", "terraform"}
    assert image["permissions"]["id-token"] == "write"
    build = next(s for s in image["steps"] if s.get("uses", "").startswith("docker/build-push"))
    assert build["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    assert "steps.ecr.outputs.registry" in build["with"]["tags"]
    login = next(s for s in image["steps"] if "amazon-ecr-login" in s.get("uses", ""))
    assert login["if"] == "startsWith(github.ref, 'refs/tags/v')"
