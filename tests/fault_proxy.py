"""A fault-injecting HTTP proxy on 127.0.0.1 for the STAC API (threads, bounded lifetime).

Each request is relayed to the upstream API unless a seeded draw makes it fail; failing
requests cycle through the fault kinds so a short run still meets every kind:

- ``500`` / ``502`` / ``503``: an error status with a JSON body, upstream never asked;
- ``429``: too many requests, with ``Retry-After`` (seconds);
- ``reset``: the request reaches upstream, then the client's connection is reset (RST);
- ``stall``: the request reaches upstream, the answer is held back longer than the
  client's timeout, and the connection is closed without a response.

The API writes absolute links with its own address (rustac ignores ``Host``), so response
bodies have the upstream root rewritten to the proxy's: a client that follows ``next`` or
the landing page's ``search`` link stays behind the proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

FAULT_KINDS = ("500", "502", "503", "429", "reset", "stall")
# Hop-by-hop headers, and the ones the relay recomputes after rewriting the body.
_DROP_REQUEST = {"host", "connection", "keep-alive", "accept-encoding", "content-length"}
_DROP_RESPONSE = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-encoding",
    "content-length",
}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: bytes
    fault: str | None


class FaultProxy:
    """Relay ``http://127.0.0.1:PORT`` to ``upstream`` with injected faults.

    Use as a context manager; ``seen`` lists every request in arrival order and
    ``faults`` counts the faults injected per kind.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int,
        fault_rate: float = 0.3,
        stall_s: float = 2.0,
        retry_after_s: int = 1,
        kinds: tuple[str, ...] = FAULT_KINDS,
        lifetime_s: float = 300.0,
        upstream_timeout_s: float = 30.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.upstream = upstream.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 80
        self._rng = random.Random(seed)
        self.fault_rate = fault_rate
        self.stall_s = stall_s
        self.retry_after_s = retry_after_s
        self.kinds = kinds
        self.lifetime_s = lifetime_s
        self.upstream_timeout_s = upstream_timeout_s
        self.seen: list[Seen] = []
        self.faults: Counter[str] = Counter()
        self.enabled = True
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FaultProxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        serve = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        serve.start()
        # A test that dies without stopping us must not leave a listener behind for long.
        timer = threading.Timer(self.lifetime_s, self.stop)
        timer.daemon = True
        timer.start()
        self._threads = [serve, timer]
        return self

    def stop(self) -> None:
        self._closing.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                if isinstance(thread, threading.Timer):
                    thread.cancel()
                thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ decisions
    def _decide(self, method: str, path: str, body: bytes) -> str | None:
        with self._lock:
            fault = None
            # One draw per request, also when disabled, so the schedule depends only on
            # the seed and the order of requests.
            draw = self._rng.random()
            if self.enabled and draw < self.fault_rate:
                fault = self.kinds[sum(self.faults.values()) % len(self.kinds)]
                self.faults[fault] += 1
            self.seen.append(Seen(method, path, body, fault))
            return fault

    def total_faults(self) -> int:
        return sum(self.faults.values())

    # ------------------------------------------------------------------ relay
    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self.upstream_timeout_s)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _DROP_RESPONSE]
            return resp.status, out_headers, data
        finally:
            conn.close()

    def _rewrite(self, data: bytes, proxy_url: str) -> bytes:
        return data.replace(self.upstream.encode(), proxy_url.encode())


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _error(self, status: int, extra: dict[str, str] | None = None) -> None:
            body = json.dumps({"code": str(status), "description": "injected fault"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _reset(self) -> None:
            # SO_LINGER 0: close() sends RST instead of FIN, the client sees ECONNRESET.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()

        def _relay(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy._decide(method, self.path, body)
            if fault in ("500", "502", "503"):
                self._error(int(fault))
                return
            if fault == "429":
                self._error(429, {"Retry-After": str(proxy.retry_after_s)})
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROP_REQUEST}
            headers["Host"] = f"{proxy._host}:{proxy._port}"
            try:
                status, out_headers, data = proxy._forward(method, self.path, headers, body)
            except OSError as exc:
                self._error(502, {"X-Upstream-Error": type(exc).__name__})
                return
            if fault == "reset":
                self._reset()
                return
            if fault == "stall":
                # Longer than the client's timeout; then hang up without an answer.
                proxy._closing.wait(proxy.stall_s)
                self._reset()
                return
            data = proxy._rewrite(data, f"http://127.0.0.1:{self.server.server_address[1]}")
            self.send_response(status)
            for key, value in out_headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._relay("GET")

        def do_POST(self) -> None:
            self._relay("POST")

        def do_HEAD(self) -> None:
            self._relay("HEAD")

    return Handler
