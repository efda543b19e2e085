"""Object keys built from untrusted parts (item ids come from a remote API)."""

from __future__ import annotations

import hashlib
import posixpath
import re

from geospatial_pipeline.errors import StorageError

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_COMPONENT = 200
# Joins a changed value to the hash of the original. It is outside the safe characters, so
# an unchanged value never contains it and can never equal an encoded one.
_MARK = "~"
_DIGEST_HEX = 24  # 96 bits: no practical way to make two values share a digest


def sanitize_component(value: str) -> str:
    """Make ``value`` one safe path component: no separators, no dot-only names.

    A value that already is one (ASCII letters, digits, '.', '_', '-', not starting with
    '.', at most 200 characters) is kept as is. Any other value becomes its cleaned form,
    ``~`` and a hash of the original, so the mapping is one to one: two different values
    never share a key. (STAC item ids that are not safe are rejected before they get here;
    see stac.models.)
    """
    cleaned = _SAFE.sub("_", value).lstrip(".")
    if not cleaned.strip("._-"):
        cleaned = "_"
    cleaned = cleaned[:_MAX_COMPONENT]
    if cleaned != value:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:_DIGEST_HEX]
        cleaned = f"{cleaned}{_MARK}{digest}"
    return cleaned


def join_key(*parts: str) -> str:
    """Join already-sanitized or trusted components; refuse anything that could escape."""
    key = "/".join(p.strip("/") for p in parts if p)
    check_key(key)
    return key


def check_key(key: str) -> None:
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"unsafe object key {key!r}")
    segments = key.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise StorageError(f"unsafe object key {key!r}")
    if posixpath.normpath(key) != key:
        raise StorageError(f"unsafe object key {key!r}")
