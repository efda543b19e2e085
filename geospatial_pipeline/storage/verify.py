"""Is a published object still the one that was checked before publishing?

Every COG the pipeline publishes is validated from its bytes in memory before the PUT, and
its SHA-256 goes into the partition's manifest. The S3 server verifies the checksum sent
with the PUT (``ChecksumSHA256``) and refuses a body that differs, so an object whose stored
size and SHA-256 still equal the manifest's is byte for byte the validated one. Comparing
them (one HEAD per object) replaces reading and re-validating every object: it fails when an
object is missing, truncated, overwritten or rewritten by another writer, which is what
reading it back could find.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from geospatial_pipeline.storage.object_store import ObjectStore

MISSING = "missing"


def changed_since_published(
    store: ObjectStore, entries: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Key -> what differs, for the manifest entries (``key``, ``bytes``, ``sha256``) whose
    stored object is missing or is not the published one."""
    found = {}
    for entry in entries:
        key = str(entry["key"])
        info = store.head(key)
        if info is None:
            found[key] = MISSING
        elif info.size != entry["bytes"]:
            found[key] = f"{info.size} bytes stored, {entry['bytes']} published"
        elif info.sha256 is None:
            # Written by another tool: nothing vouches that these are the validated bytes.
            found[key] = f"stored without a SHA-256, published {entry['sha256']}"
        elif info.sha256 != entry["sha256"]:
            found[key] = f"stored SHA-256 {info.sha256}, published {entry['sha256']}"
    return found
