"""Object keys built from untrusted parts (item ids come from a remote API)."""

from __future__ import annotations

import hashlib
import posixpath
import re

from geospatial_pipeline.errors import StorageError

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_COMPONENT = 200


def sanitize_component(value: str) -> str:
    """Make ``value`` one safe path component: no separators, no dot-only names.

    A changed value gets a short hash of the original appended, so two different hostile
    ids can never collapse onto the same key.
    """
    cleaned = _SAFE.sub("_", value).lstrip(".")
    if not cleaned.strip("._-"):
        cleaned = "_"
    cleaned = cleaned[:_MAX_COMPONENT]
    if cleaned != value:
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:10]
        cleaned = f"{cleaned}-{digest}"
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
