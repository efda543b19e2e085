"""changed_since_published: a published object is the validated one only while its stored
size and SHA-256 are the manifest's, in a local directory and in S3 (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geospatial_pipeline.storage.object_store import LocalObjectStore, ObjectStore, S3ObjectStore
from geospatial_pipeline.storage.verify import MISSING, changed_since_published


def _published(store: ObjectStore) -> list[dict[str, Any]]:
    entries = []
    for name in ("a", "b", "c", "d"):
        put = store.put_bytes(f"layers/{name}.tif", f"COG bytes of {name}".encode() * 50)
        entries.append({"key": put.key, "bytes": put.size, "sha256": put.sha256})
    return entries


def _tamper(store: ObjectStore, entries: list[dict[str, Any]]) -> None:
    store.put_bytes(entries[1]["key"], b"x" * 10)  # other size
    same_size = bytearray(store.get_bytes(entries[2]["key"]))
    same_size[0] ^= 1
    store.put_bytes(entries[2]["key"], bytes(same_size))
    store.delete(entries[3]["key"])


def _expect(entries: list[dict[str, Any]], found: dict[str, str]) -> None:
    a, b, c, d = (e["key"] for e in entries)
    assert a not in found
    assert found[b] == f"10 bytes stored, {entries[1]['bytes']} published"
    assert found[c].startswith("stored SHA-256 ") and entries[2]["sha256"] in found[c]
    assert found[d] == MISSING
    assert len(found) == 3


def test_local_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    entries = _published(store)
    assert changed_since_published(store, entries) == {}
    _tamper(store, entries)
    _expect(entries, changed_since_published(store, entries))


def test_s3_store_and_a_foreign_writer(s3_server: Any) -> None:
    s3_server.create_bucket("verify")
    client = s3_server.boto3_client()
    store = S3ObjectStore("s3://verify/p", client=client, endpoint_url=s3_server.endpoint_url)
    entries = _published(store)
    assert changed_since_published(store, entries) == {}
    _tamper(store, entries)
    _expect(entries, changed_since_published(store, entries))
    # The same bytes written back by another tool, without the SHA-256 the pipeline records:
    # nothing vouches for them any more.
    client.put_object(
        Bucket="verify", Key=f"p/{entries[1]['key']}", Body=b"y" * entries[1]["bytes"]
    )
    found = changed_since_published(store, entries[:2])
    assert found == {
        entries[1]["key"]: f"stored without a SHA-256, published {entries[1]['sha256']}"
    }
