"""Offline checks of the deployment files (helm/, terraform/, deploy/, Dockerfile).

Shared by tests/test_deploy_*.py; nothing here talks to a cluster or a cloud.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
