"""Terraform read with python-hcl2: declared vs used variables, module calls, locals, and
the paths a configuration reads (values files, pipeline YAML)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

from tools.deploy_checks import REPO

TERRAFORM_DIR = REPO / "terraform"
ROOT = TERRAFORM_DIR
MODULES = {
    "aws": TERRAFORM_DIR / "modules" / "aws",
    "cluster": TERRAFORM_DIR / "modules" / "cluster",
}
# Where the AWS provider is mirrored on the development machines and CI (outside the repo).
PROVIDER_MIRROR = Path("/opt/tf-plugins")
_VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")


def terraform_binary() -> str | None:
    return shutil.which("terraform")


def unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals: '"abc"' -> 'abc'."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def unquote_all(value: Any) -> Any:
    """:func:`unquote` through lists and maps."""
    if isinstance(value, list):
        return [unquote_all(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote_all(v) for k, v in value.items() if not k.startswith("__")}
    return unquote(value)


@cache
def parse_file(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        doc: dict[str, Any] = hcl2.load(handle)
    return doc


def parse_module(directory: Path) -> dict[Path, dict[str, Any]]:
    return {path: parse_file(path) for path in sorted(directory.glob("*.tf"))}


def blocks(directory: Path, kind: str) -> Iterator[dict[str, Any]]:
    for doc in parse_module(directory).values():
        yield from doc.get(kind, [])


def declared_variables(directory: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in blocks(directory, "variable"):
        for name, body in block.items():
            out[unquote(name)] = body
    return out


def required_variables(directory: Path) -> set[str]:
    return {name for name, body in declared_variables(directory).items() if "default" not in body}


def referenced_variables(directory: Path) -> set[str]:
    """Every var.NAME in the module's expressions (the parser has dropped the comments)."""
    names: set[str] = set()
    for doc in parse_module(directory).values():
        names.update(_VAR_REF.findall(json.dumps(doc)))
    return names


def locals_of(directory: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in blocks(directory, "locals"):
        out.update({k: v for k, v in block.items() if not k.startswith("__")})
    return out


@dataclass(frozen=True)
class ModuleCall:
    name: str
    source: Path
    arguments: dict[str, Any]


META_ARGUMENTS = {
    "source",
    "version",
    "providers",
    "depends_on",
    "count",
    "for_each",
    "__is_block__",
}


def module_calls(directory: Path) -> list[ModuleCall]:
    calls = []
    for block in blocks(directory, "module"):
        for name, body in block.items():
            source = (directory / unquote(body["source"])).resolve()
            arguments = {k: v for k, v in body.items() if k not in META_ARGUMENTS}
            calls.append(ModuleCall(unquote(name), source, arguments))
    return calls


def resources(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in blocks(directory, "resource"):
        for rtype, named in block.items():
            if unquote(rtype) == kind:
                out.update({unquote(n): body for n, body in named.items()})
    return out


def parse_tfvars(path: Path) -> dict[str, Any]:
    return {k: v for k, v in parse_file(path).items() if not k.startswith("__")}


def cli_config(path: Path) -> Path:
    """A Terraform CLI config that installs the AWS provider from the local mirror only
    (the registry is not reachable here); written to ``path``."""
    path.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{PROVIDER_MIRROR}"\n'
        '    include = ["registry.terraform.io/hashicorp/aws"]\n'
        "  }\n"
        "}\n",
        encoding="utf-8",
    )
    return path


def mirrored_aws_versions() -> list[str]:
    base = PROVIDER_MIRROR / "registry.terraform.io" / "hashicorp" / "aws"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []
