"""Which asset hrefs the pipeline may open.

Asset hrefs come from a remote API, and GDAL opens them with the pipeline's own
credentials: a local path reads this machine's files, an ``s3://`` href reads any bucket the
pipeline's role can read, and a path such as ``/vsis3/…`` or ``/vsicurl/…`` does either
behind a local-looking name. So an href is opened only when its scheme and host are on an
allow-list (``stac.allowed_asset_hosts``). Entries:

- ``s3://bucket``: ``s3://`` hrefs in that bucket;
- ``host.name`` or ``https://host.name[:port]``: ``https://`` hrefs to that host;
- ``http://host.name[:port]``: plain ``http://`` to that host (explicit opt-in only);
- ``file://``: absolute local paths and ``file://`` hrefs, only for a catalog on this
  machine (its API on a loopback address).

Unset, the list is the data hosts of Earth Search v1's ``sentinel-2-l2a`` (the default
catalog): ``s3://sentinel-cogs`` and ``https://sentinel-cogs.s3.us-west-2.amazonaws.com``,
plus ``file://`` when the API is on a loopback address (the demo and the tests).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

EARTH_SEARCH_DATA_HOSTS: tuple[str, ...] = (
    "s3://sentinel-cogs",
    "https://sentinel-cogs.s3.us-west-2.amazonaws.com",
)
LOCAL_FILES = "file://"
_LOOPBACK_NAMES = frozenset({"localhost"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class _Host:
    scheme: str
    host: str
    port: int | None

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        default = _DEFAULT_PORTS.get(scheme)
        return (
            scheme == self.scheme
            and host == self.host
            and (port or default) == (self.port or default)
        )


def parse_entry(entry: str) -> _Host | None:
    """One allow-list entry -> what it allows (None: local files). ValueError says why not."""
    text = entry.strip()
    if text == LOCAL_FILES:
        return None
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("s3", "https", "http"):
        raise ValueError(
            f"{entry!r}: scheme must be s3, https or http (or the entry 'file://'), "
            f"got {parts.scheme!r}"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{entry!r}: {exc}") from None
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        raise ValueError(f"{entry!r}: expected a host name (or s3://bucket) and nothing else")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"{entry!r}: expected a host name (or s3://bucket), not a path")
    if parts.scheme == "s3" and port is not None:
        raise ValueError(f"{entry!r}: an s3:// entry is a bucket name, without a port")
    return _Host(parts.scheme, host, port)


@dataclass(frozen=True)
class AssetHostPolicy:
    hosts: tuple[_Host, ...]
    local_files: bool

    @classmethod
    def from_entries(cls, entries: Sequence[str]) -> AssetHostPolicy:
        parsed = [parse_entry(e) for e in entries]
        return cls(tuple(h for h in parsed if h is not None), any(h is None for h in parsed))

    @classmethod
    def for_catalog(cls, api_url: str, entries: Sequence[str] | None) -> AssetHostPolicy:
        return cls.from_entries(default_asset_hosts(api_url) if entries is None else entries)

    def refusal(self, href: str) -> str | None:
        """Why ``href`` must not be opened, or None when it may be."""
        if any(c in href for c in ("\\", "\x00")) or any(ord(c) < 32 for c in href):
            return f"href {href!r} contains a backslash or control character"
        if href.startswith("/") or href.startswith("file://"):
            return self._local_refusal(href)
        parts = urlsplit(href)
        if "://" not in href or parts.scheme not in ("s3", "https", "http"):
            return f"href {href!r}: scheme not allowed (s3, https, http or a local path)"
        if not href.startswith(f"{parts.scheme}://"):
            # GDAL is given the href as written; only the lower-case spelling is mapped.
            return f"href {href!r}: scheme must be written in lower case"
        if parts.username or parts.password:
            return f"href {href!r} carries credentials"
        if ".." in parts.path.split("/"):
            return f"href {href!r} has a '..' path segment"
        try:
            port = parts.port
        except ValueError:
            return f"href {href!r} has an invalid port"
        host = (parts.hostname or "").lower()
        if any(h.matches(parts.scheme, host, port) for h in self.hosts):
            return None
        where = f"s3://{host}" if parts.scheme == "s3" else f"{parts.scheme}://{parts.netloc}"
        return f"href {href!r}: {where} is not in stac.allowed_asset_hosts"

    def _local_refusal(self, href: str) -> str | None:
        if not self.local_files:
            return f"href {href!r}: local files are not in stac.allowed_asset_hosts"
        path = href.removeprefix("file://")
        if not path.startswith("/"):
            return f"href {href!r}: a local href must be an absolute path"
        if path.startswith("/vsi"):
            # GDAL virtual file systems reach remote stores behind a local-looking path.
            return f"href {href!r}: GDAL virtual file system paths are not allowed"
        return None


def default_asset_hosts(api_url: str) -> list[str]:
    hosts = list(EARTH_SEARCH_DATA_HOSTS)
    if is_loopback_url(api_url):
        hosts.append(LOCAL_FILES)
    return hosts


def check_allowed_hosts(entries: Sequence[str] | None, api_url: str) -> list[str] | None:
    """Validate a configured list (ValueError naming the bad entry); None stays None."""
    if entries is None:
        return None
    if not entries:
        raise ValueError("is empty, so no asset could be opened; leave it unset for the defaults")
    parsed = [parse_entry(e) for e in entries]
    if any(p is None for p in parsed) and not is_loopback_url(api_url):
        raise ValueError(
            "'file://' (local files) is allowed only for a catalog on this machine "
            f"(api_url on a loopback address), not {api_url}"
        )
    return [e.strip() for e in entries]
