"""Object storage with publish semantics: a local directory or an S3 bucket/prefix.

Readers never see a half-written object. On S3 one PutObject is atomic by itself, so an
object is published with a single PutObject carrying its SHA-256 checksum, which the
server verifies before storing anything (no temporary key: on a versioned bucket every
deleted temporary object would linger as a noncurrent version). A local directory gets a
temporary file in the same directory, fsynced, then renamed over the target. A write whose
content (sha256) equals the published object's is skipped, so re-running a partition
rewrites nothing that did not change.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geospatial_pipeline.errors import StorageError
from geospatial_pipeline.storage.keys import check_key

SHA256_META = "sha256"
# Versions before single-PUT publishing staged S3 writes under this prefix; the bucket's
# lifecycle rule expires leftovers and list() never reports them.
TMP_PREFIX = "_tmp"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class PutResult:
    key: str
    url: str
    size: int
    sha256: str
    written: bool  # False when identical content was already published


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore(ABC):
    """Keys are relative to the store's root (a directory or s3://bucket/prefix)."""

    @property
    @abstractmethod
    def root_url(self) -> str: ...

    @abstractmethod
    def url(self, key: str) -> str:
        """Address of ``key`` for people and STAC links (s3://... or a file path)."""

    @abstractmethod
    def gdal_path(self, key: str) -> str:
        """Path GDAL opens for ``key`` (/vsis3/... or a file path)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def _write_published(self, key: str, data: bytes, digest: str, content_type: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Published objects under ``prefix`` (temporary objects excluded)."""

    @abstractmethod
    def folders(self, prefix: str) -> Sequence[str]:
        """The keys of the folders directly under ``prefix``, sorted: one level, so the cost
        grows with the folders, not with every object below them."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> PutResult:
        check_key(key)
        digest = sha256_hex(data)
        existing = self.head(key)
        if existing is not None and existing.sha256 == digest and existing.size == len(data):
            return PutResult(key, self.url(key), len(data), digest, written=False)
        self._write_published(key, data, digest, content_type)
        return PutResult(key, self.url(key), len(data), digest, written=True)


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(str(root).removeprefix("file://")).resolve()

    @property
    def root_url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        check_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StorageError(f"object key {key!r} escapes the store root")
        return path

    def url(self, key: str) -> str:
        return str(self._path(key))

    def gdal_path(self, key: str) -> str:
        return str(self._path(key))

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return ObjectInfo(key, len(data), sha256_hex(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"object {key!r} not found in {self.root}") from None

    def _write_published(self, key: str, data: bytes, digest: str, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A dot name is never listed; O_EXCL on a unique name, and mode 0o666 so the umask
        # applies as for any file (mkstemp would leave the published object 0600).
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)  # atomic on POSIX: readers see old or new, never partial
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # The rename itself survives a crash only once the directory is on disk.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                yield ObjectInfo(key, path.stat().st_size, None)

    def folders(self, prefix: str) -> Sequence[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.iterdir()
            if p.is_dir() and not p.name.startswith(".")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3ObjectStore(ObjectStore):
    def __init__(
        self,
        url: str,
        *,
        client: Any,
        endpoint_url: str | None = None,
    ) -> None:
        if not url.startswith("s3://"):
            raise StorageError(f"not an s3 url: {url!r}")
        bucket, _, prefix = url[5:].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.endpoint_url = endpoint_url

    @property
    def root_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def gdal_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self._full(key)}"

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"cannot stat {self.url(key)}: {exc}") from exc
        return ObjectInfo(
            key, int(resp["ContentLength"]), resp.get("Metadata", {}).get(SHA256_META)
        )

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            raise StorageError(f"cannot read {self.url(key)}: {exc}") from exc
        body: bytes = resp["Body"].read()
        return body

    def _write_published(self, key: str, data: bytes, digest: str, content_type: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._full(key),
                Body=data,
                ContentType=content_type,
                # The server recomputes it and refuses the object (BadDigest) on mismatch.
                ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode("ascii"),
                # Kept as metadata too: head() compares it to skip unchanged content.
                Metadata={SHA256_META: digest},
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot write {self.url(key)}: {exc}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        full = self._full(prefix) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"].removeprefix(strip)
                if key.startswith(f"{TMP_PREFIX}/"):
                    continue
                yield ObjectInfo(key, int(obj["Size"]), None)

    def folders(self, prefix: str) -> Sequence[str]:
        full = self._full(prefix) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        found = [
            common["Prefix"].removeprefix(strip).rstrip("/")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/")
            for common in page.get("CommonPrefixes", [])
        ]
        return sorted(k for k in found if k != TMP_PREFIX)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
