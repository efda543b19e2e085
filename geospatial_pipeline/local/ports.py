"""Loopback port helpers shared by the local helper servers."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from geospatial_pipeline.errors import LocalServerError

LOOPBACK = "127.0.0.1"
_TCP_LISTEN = "0A"  # state code of a listening socket in /proc/net/tcp*


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port; there is an unavoidable race between closing the
    probe socket and the server binding it, which callers absorb by retrying startup.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free loopback ports.

    All probe sockets are held open together so the kernel cannot hand out the same
    port twice within one call.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_pair(
    offset: int, *, exclude: Iterable[int] = (), attempts: int = 200
) -> tuple[int, int]:
    """Return free loopback ports ``p`` and ``p + offset`` (both bindable right now).

    For servers that derive one port from another instead of honouring the flag for it.
    """
    excluded = set(exclude)
    for _ in range(attempts):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as first,
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second,
        ):
            first.bind((LOOPBACK, 0))
            port = int(first.getsockname()[1])
            if port + offset > 65535 or {port, port + offset} & excluded:
                continue
            try:
                second.bind((LOOPBACK, port + offset))
            except OSError:
                continue
            return port, port + offset
    raise LocalServerError(f"no free loopback port pair {offset} apart after {attempts} tries")


# Local servers listen on loopback; never route the probe through an HTTP(S)_PROXY.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for_http(
    url: str,
    timeout_s: float,
    *,
    interval_s: float = 0.1,
    is_alive: Callable[[], bool] | None = None,
) -> None:
    """Block until ``url`` answers any HTTP response (even 4xx/5xx) or raise on timeout.

    Any status counts as "up": the point is that a server is accepting and parsing
    requests, not that this particular path is healthy. ``is_alive`` lets the caller
    fail fast when the server process already died instead of waiting out the timeout.
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"wait_for_http needs an http(s) URL, got {url!r}")
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if is_alive is not None and not is_alive():
            raise LocalServerError(f"server process exited before {url} answered")
        try:
            with _NO_PROXY_OPENER.open(url, timeout=2) as response:
                response.read()
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last_error = exc
        time.sleep(interval_s)
    raise LocalServerError(f"{url} did not answer within {timeout_s:.0f}s: {last_error!r}")


def process_group_pids(pgid: int) -> list[int]:
    """PIDs of all live processes in process group ``pgid`` (Linux /proc only)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses, so split after
        # the last ")"; pgrp is then the 3rd field (state, ppid, pgrp).
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _decode_proc_address(hex_addr: str) -> str:
    # /proc/net/tcp* prints each 32-bit word in host byte order.
    raw = bytes.fromhex(hex_addr)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    packed = b"".join(int.from_bytes(w, sys.byteorder).to_bytes(4, "big") for w in words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed)


def listening_sockets(pids: Iterable[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by ``pids``.

    Reads /proc/net/tcp and /proc/net/tcp6 and matches socket inodes against the
    processes' file descriptors, so it sees exactly what those processes bound,
    whatever ports they chose. Linux only.
    """
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found: list[tuple[str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != _TCP_LISTEN or inode not in inodes:
                continue
            addr_hex, port_hex = local.split(":")
            found.append((_decode_proc_address(addr_hex), int(port_hex, 16)))
    return sorted(found)
