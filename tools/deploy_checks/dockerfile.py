"""The Dockerfile and .dockerignore, read the way Docker reads them (enough for the checks)."""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from tools.deploy_checks import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str

    def json_args(self) -> list[str]:
        """Exec-form arguments (["a", "b"]); shell form is refused."""
        args = json.loads(self.value)
        if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
            raise ValueError(f"{self.keyword} is not in exec form: {self.value}")
        return args

    def words(self) -> list[str]:
        return shlex.split(self.value)


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip()))
    if pending:
        raise ValueError("Dockerfile ends inside a continued line")
    return out


def ignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    patterns = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            patterns.append(line.lstrip("/").rstrip("/"))
    return patterns


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Whether a path of the build context is excluded (a pattern matching a directory
    excludes what is under it; "**" matches any number of directories; "!" re-includes)."""
    parts = relpath.strip("/").split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        matched = any(_match(pat, c) for c in candidates)
        if matched:
            ignored = not negate
    return ignored


def _match(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):
        rest = pattern[3:]
        segments = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(segments[i:]), rest) for i in range(len(segments)))
    return fnmatch.fnmatchcase(path, pattern)
