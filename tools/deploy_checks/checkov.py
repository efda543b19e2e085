"""checkov over terraform/ and over the Kubernetes objects the deployment produces, run
from its own environment (.venv-checkov, from tools/checkov/requirements.lock)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.deploy_checks import REPO

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"

# Checks skipped for the Kubernetes objects, and why. (Terraform skips are inline
# `#checkov:skip=` comments next to the resource they concern.)
K8S_SKIPS: dict[str, str] = {
    "CKV_K8S_11": "No CPU limits on purpose: CPU is compressible and CFS throttling slows "
    "GDAL decoding; requests place the pods, memory limits are set.",
    "CKV_K8S_15": "Image tags are immutable in ECR (IMMUTABLE): IfNotPresent cannot run "
    "stale code and avoids one registry pull per step pod.",
    "CKV_K8S_43": "Same guarantee as a digest: ECR refuses to re-point a tag, and the tag "
    "is the release version deployed by Terraform.",
    "CKV_K8S_35": "The Snowflake credentials (SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY) "
    "are read from the environment by design (dagster EnvVar) and the chart injects "
    "DAGSTER_PG_PASSWORD as an env var from its Secret; both Secrets are written by the "
    "External Secrets Operator, never by Terraform.",
    "CKV_K8S_38": "The code server and run pods call the Kubernetes API (they launch the "
    "run and step jobs): they need their service account token.",
}


@dataclass
class Report:
    passed: dict[str, set[tuple[str, str, str]]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _documents(text: str) -> list[dict[str, Any]]:
    """checkov prints one JSON document per directory/framework, concatenated."""
    decoder = json.JSONDecoder()
    docs: list[dict[str, Any]] = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        obj, index = decoder.raw_decode(text, index)
        docs.extend(obj if isinstance(obj, list) else [obj])
    return docs


def run(directories: list[Path], frameworks: list[str], skips: dict[str, str]) -> Report:
    env = {
        **os.environ,
        # Offline: no platform mapping, no guideline download, no version check.
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        "LOG_LEVEL": "WARNING",
    }
    args = [str(CHECKOV), "--skip-download", "--compact", "-o", "json"]
    for directory in directories:
        args += ["-d", str(directory)]
    args += ["--framework", *frameworks]
    if skips:
        args += ["--skip-check", ",".join(sorted(skips))]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode not in (0, 1):  # 1: some check failed
        raise RuntimeError(f"checkov exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    report = Report()
    seen: set[tuple[str, str, str, str]] = set()
    for doc in _documents(proc.stdout):
        framework = doc["check_type"]
        results = doc["results"]
        report.passed.setdefault(framework, set()).update(
            (c["check_id"], c["resource"], c["file_path"]) for c in results["passed_checks"]
        )
        for kind in ("failed_checks", "skipped_checks"):
            for check in results[kind]:
                key = (kind, check["check_id"], check["resource"], check["file_path"])
                if key in seen:  # several -d runs report the same framework again
                    continue
                seen.add(key)
                getattr(report, kind.split("_")[0]).append(check)
    return report
