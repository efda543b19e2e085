"""Rules about the package's source: each configuration default is written once (in the
config models), and nothing relies on Dagster's private modules."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import geospatial_pipeline
from geospatial_pipeline import config as config_module
from geospatial_pipeline.config import CONFIG_ENV_VAR

PACKAGE = Path(geospatial_pipeline.__file__).parent
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def config_models() -> list[type[BaseModel]]:
    return [
        obj
        for obj in vars(config_module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == config_module.__name__
    ]


def config_defaults() -> dict[str, list[Any]]:
    """Field name -> the defaults the config models give it (None and booleans left out:
    too common to mean a copy)."""
    found: dict[str, list[Any]] = {}
    for model in config_models():
        for name, field in model.model_fields.items():
            if field.is_required():
                continue
            value = field.get_default(call_default_factory=True)
            if value is None or isinstance(value, bool):
                continue
            found.setdefault(name, []).append(value)
    return found


def class_fields(tree: ast.AST) -> Iterator[tuple[str, str, ast.expr]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and stmt.value is not None
                ):
                    yield node.name, stmt.target.id, stmt.value


def same(a: Any, b: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple | list) else v  # noqa: E731
    return bool(norm(a) == norm(b))


def test_no_config_default_is_written_again_outside_the_config() -> None:
    defaults = config_defaults()
    assert {"resolution", "invalid_scl_classes", "max_cloud_cover", "region"} <= set(defaults)
    copies = []
    for path in SOURCES:
        if path == Path(config_module.__file__):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls, name, value in class_fields(tree):
            try:
                literal = ast.literal_eval(value)
            except ValueError:
                continue  # not a literal: e.g. default_of(Model, "field")
            if any(same(literal, d) for d in defaults.get(name, [])):
                copies.append(f"{path.relative_to(PACKAGE)}: {cls}.{name} = {literal!r}")
    assert not copies, "config defaults declared again:\n" + "\n".join(copies)


def default_literal(node: ast.expr) -> Any:
    """The literal a binding gives, seeing through ``Field(default)``/``Field(default=...)``;
    ValueError when it is not a literal."""
    if isinstance(node, ast.Call) and (
        getattr(node.func, "id", None) == "Field" or getattr(node.func, "attr", None) == "Field"
    ):
        given = [kw.value for kw in node.keywords if kw.arg == "default"] or node.args[:1]
        if not given:
            raise ValueError("Field without a default")
        node = given[0]
    return ast.literal_eval(node)


def setting_name(name: str) -> str:
    """``--max-days``, ``MAX_DAYS`` and ``max_days`` all name the field ``max_days``."""
    return name.lstrip("-_").replace("-", "_").lower()


def bindings(tree: ast.AST) -> Iterator[tuple[int, str, str, ast.expr]]:
    """(line, where, name, value) of every place a name is given a value: class fields,
    function parameter defaults, assignments (module constants too), command-line option
    defaults (``add_argument("--max-days", default=...)``) and call keywords
    (``sensor(minimum_interval_seconds=...)``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and stmt.value is not None
                ):
                    yield stmt.lineno, f"{node.name}.{stmt.target.id}", stmt.target.id, stmt.value
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            with_default = positional[len(positional) - len(args.defaults) :]
            pairs = [*zip(with_default, args.defaults, strict=True)]
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d]
            for arg, value in pairs:
                yield value.lineno, f"{node.name}({arg.arg}=...)", arg.arg, value
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    yield node.lineno, target.id, target.id, node.value
        elif isinstance(node, ast.Call):
            options = [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value[:1] == "-"
            ]
            options += [
                kw.value.value
                for kw in node.keywords
                if kw.arg == "dest"
                and isinstance(kw.value, ast.Constant)
                and isinstance(kw.value.value, str)
            ]
            for kw in node.keywords:
                if kw.arg == "default":
                    for option in options:
                        yield kw.value.lineno, f"option {option} default", str(option), kw.value
                elif kw.arg is not None:
                    yield kw.value.lineno, f"call keyword {kw.arg}=", kw.arg, kw.value


# Same name and value as a config default, but not a copy of it: (path, where) -> why.
NOT_COPIES = {
    ("local/seaweed.py", "REGION"): "the local S3 server's own region, not storage.region's",
}
# Copies found when the scan was widened to every binding (parameters, constants, call
# keywords), in files whose owners were told; each should read the config model instead.
# Remove an entry once its file is fixed (the test fails on an entry no longer found).
REPORTED_COPIES: set[tuple[str, str]] = set()


def test_no_config_default_is_bound_again_anywhere() -> None:
    """Wider than the class-field rule above: any binding of a config field's name to its
    default value, in every module of the package (the on-demand modules and the CLI
    included)."""
    scanned = {p.relative_to(PACKAGE).as_posix() for p in SOURCES}
    assert {"ondemand/registry.py", "ondemand/service.py", "on_demand.py", "cli.py"} <= scanned
    defaults = config_defaults()
    found: dict[tuple[str, str], str] = {}
    for path in SOURCES:
        if path == Path(config_module.__file__):
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        for line, where, name, value in bindings(ast.parse(path.read_text(encoding="utf-8"))):
            try:
                literal = default_literal(value)
            except (ValueError, TypeError, SyntaxError):
                continue
            if any(same(literal, d) for d in defaults.get(setting_name(name), [])):
                found[(rel, where)] = f"{rel}:{line}: {where} {literal!r}"
    copies = sorted(v for k, v in found.items() if k not in NOT_COPIES and k not in REPORTED_COPIES)
    assert not copies, "config defaults declared again:\n" + "\n".join(copies)
    assert set(NOT_COPIES) <= set(found), "stale NOT_COPIES entries"
    fixed = sorted(REPORTED_COPIES - set(found))
    assert not fixed, f"fixed (remove from REPORTED_COPIES): {fixed}"


def test_the_invalid_scl_classes_are_listed_once() -> None:
    pattern = re.compile(r"0,\s*1,\s*3,\s*8,\s*9,\s*10\b")
    hits = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in SOURCES
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == [hits[0]] and hits[0].startswith("config.py:"), hits


@pytest.mark.parametrize(
    ("resource", "model", "per_run_only"),
    [
        ("geospatial_pipeline.resources.stac:StacSearchResource", "StacConfig", set()),
        (
            "geospatial_pipeline.resources.transform:TransformResource",
            "TransformConfig",
            {"enabled"},
        ),
        ("geospatial_pipeline.resources.storage:ObjectStoreResource", "StorageConfig", set()),
    ],
)
def test_resources_mirror_the_config_fields_and_defaults(
    resource: str, model: str, per_run_only: set[str]
) -> None:
    import importlib

    module, name = resource.split(":")
    cls = getattr(importlib.import_module(module), name)
    config_cls: type[BaseModel] = getattr(config_module, model)
    wanted = set(config_cls.model_fields) - per_run_only
    assert wanted <= set(cls.model_fields), sorted(wanted - set(cls.model_fields))
    for field in wanted:
        mine, theirs = cls.model_fields[field], config_cls.model_fields[field]
        assert mine.is_required() == theirs.is_required(), field
        if not theirs.is_required():
            assert same(
                mine.get_default(call_default_factory=True),
                theirs.get_default(call_default_factory=True),
            ), field


def test_plain_function_settings_are_the_config_models() -> None:
    from geospatial_pipeline.config import StacConfig, TransformConfig
    from geospatial_pipeline.raster.scene import TransformSettings
    from geospatial_pipeline.stac.search import SearchSettings

    assert issubclass(SearchSettings, StacConfig)
    assert set(SearchSettings.model_fields) - set(StacConfig.model_fields) == {"backoff_s"}
    assert issubclass(TransformSettings, TransformConfig)
    assert set(TransformSettings.model_fields) == set(TransformConfig.model_fields)


def dagster_private_uses(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagster._"):
            yield f"line {node.lineno}: from {node.module} import ..."
        elif isinstance(node, ast.Import):
            yield from (
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("dagster._")
            )
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("dagster", "dg")
            and node.attr.startswith("_")
        ):
            yield f"line {node.lineno}: {node.value.id}.{node.attr}"


def test_no_module_uses_dagster_private_modules() -> None:
    found = [
        f"{p.relative_to(PACKAGE)} {use}"
        for p in SOURCES
        for use in dagster_private_uses(ast.parse(p.read_text(encoding="utf-8")))
    ]
    assert not found, "private Dagster API used:\n" + "\n".join(found)


def test_code_location_with_duckdb_does_not_import_snowflake() -> None:
    """dagster_snowflake is about half of the code location's import time (every run and
    step process pays it): only a Snowflake warehouse may pull it in."""
    code = (
        "import sys, geospatial_pipeline.definitions as d\n"
        "assert type(d.defs.resources['warehouse']).__name__ == 'DuckDBWarehouse'\n"
        "print(sorted(m for m in sys.modules if m == 'dagster_snowflake' "
        "or m.startswith(('dagster_snowflake.', 'snowflake.connector'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV_VAR}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
