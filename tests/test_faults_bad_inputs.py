"""Fault suite, bad inputs: every bad configuration the suite knows is refused when the code
location loads, with an error naming the field, before anything is written. (Hostile STAC
items are run through a real partition in ``test_hostile_items.py`` and failing items in
``test_item_isolation.py``: the good items land, the bad ones are listed by name.)"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from geospatial_pipeline.config import CONFIG_ENV_VAR, load_config
from geospatial_pipeline.definitions import build_defs
from geospatial_pipeline.errors import ConfigError
from tests.conftest import dagster_home
from tests.test_config import BAD_CONFIG_IDS, BAD_CONFIGS, BASE


def _write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    """``doc`` with its store and warehouse moved under ``tmp_path`` (unless the case is
    about them), so anything the loader wrote would show up there."""
    doc = copy.deepcopy(doc)
    if doc.get("storage") == BASE["storage"]:
        doc["storage"] = {"url": str(tmp_path / "objects")}
    if doc.get("warehouse") == BASE["warehouse"]:
        doc["warehouse"] = {"kind": "duckdb", "path": str(tmp_path / "w.duckdb")}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _written(tmp_path: Path) -> list[str]:
    return sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.name != "pipeline.yaml"
    )


@pytest.mark.parametrize(("doc", "field", "words"), BAD_CONFIGS, ids=BAD_CONFIG_IDS)
def test_code_location_refuses_bad_config_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: dict[str, Any], field: str, words: str
) -> None:
    path = _write_config(tmp_path, doc)
    monkeypatch.chdir(tmp_path)  # a relative default would land here
    with pytest.raises(ConfigError) as err:
        build_defs(load_config(path))
    lines = str(err.value).splitlines()
    assert str(path) in lines[0]
    assert any(line.strip().startswith(field) and words in line for line in lines), lines
    assert _written(tmp_path) == []


def test_dagster_refuses_to_load_a_bad_config(tmp_path: Path) -> None:
    """The way a deployment loads the code location: it exits non-zero, naming the field."""
    doc, field, _ = BAD_CONFIGS[BAD_CONFIG_IDS.index("empty-storage-url")]
    path = _write_config(tmp_path, doc)
    dagster = Path(sys.executable).with_name("dagster")
    home = dagster_home(tmp_path / "home")
    env = {**os.environ, CONFIG_ENV_VAR: str(path), "DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "geospatial_pipeline.definitions"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert "storage.url" in proc.stdout + proc.stderr and field == "storage.url"
    assert [p for p in _written(tmp_path) if not p.startswith("home")] == []
