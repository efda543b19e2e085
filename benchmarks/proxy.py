"""A byte-counting TCP proxy for HTTP/1.1 on 127.0.0.1 (threads, bounded lifetime).

It relays bytes unchanged (SigV4 signatures stay valid: the Host header names the proxy,
and the server checks the signature against the Host it receives) and, on the side,
parses both directions just enough to count, per object path:

- requests (method, and whether they carried a ``Range`` header),
- response body bytes (``Content-Length`` of each response; none for ``HEAD``/204/304),
- raw bytes received from upstream (bodies plus status lines and headers).

Only used for the bytes pass of the benchmark; timed runs talk to the server directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_BUF = 256 * 1024
_MAX_HEADER = 64 * 1024


@dataclass
class PathStats:
    requests: int = 0
    range_requests: int = 0
    body_bytes: int = 0
    wire_bytes: int = 0
    ranges: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    method: str
    path: str


class _HttpStream:
    """Incremental HTTP/1.1 framing for one direction of one connection.

    ``on_head(head)`` is called for each header block and returns the length of the body
    that follows; ``on_body(n)`` for each piece of body. Chunked bodies are not framed (S3
    range responses carry Content-Length): after one, parsing stops, relaying goes on.
    """

    def __init__(self, on_head: Callable[[bytes], int], on_body: Callable[[int], None]) -> None:
        self._buf = b""
        self._body_left = 0
        self._on_head = on_head
        self._on_body = on_body
        self.broken = False

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view) and not self.broken:
            if self._body_left:
                take = min(self._body_left, len(view))
                self._body_left -= take
                self._on_body(take)
                view = view[take:]
                continue
            self._buf += bytes(view)
            view = memoryview(b"")
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEADER:
                    self.broken = True
                return
            head, rest = self._buf[: end + 4], self._buf[end + 4 :]
            self._buf = b""
            length = self._on_head(head)
            if length < 0:
                self.broken = True
                return
            self._body_left = length
            view = memoryview(rest)


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields


class ByteCountingProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; count per-path requests and bytes.

    Use as a context manager. The proxy shuts itself down after ``max_lifetime_s`` even if
    nobody calls :meth:`stop`, and every socket has a timeout, so no thread outlives it
    for long.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        max_lifetime_s: float = 600,
        socket_timeout_s: float = 60,
    ) -> None:
        self._upstream = upstream
        self._max_lifetime_s = max_lifetime_s
        self._socket_timeout_s = socket_timeout_s
        self._lock = threading.Lock()
        self._stats: dict[str, PathStats] = {}
        self._unparsed_bytes = 0
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._deadline_timer: threading.Timer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ByteCountingProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.5)
        self._listener = listener
        self._spawn(self._accept_loop, "proxy-accept")
        self._deadline_timer = threading.Timer(self._max_lifetime_s, self.stop)
        self._deadline_timer.daemon = True
        self._deadline_timer.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(timeout=5)

    def __enter__(self) -> ByteCountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ counters
    def reset(self) -> None:
        with self._lock:
            self._stats = {}
            self._unparsed_bytes = 0

    def snapshot(self) -> dict[str, PathStats]:
        with self._lock:
            return {
                k: PathStats(v.requests, v.range_requests, v.body_bytes, v.wire_bytes, [*v.ranges])
                for k, v in self._stats.items()
            }

    @property
    def unparsed_bytes(self) -> int:
        with self._lock:
            return self._unparsed_bytes

    def wait_idle(self, quiet_s: float = 0.2, timeout_s: float = 5) -> None:
        """Wait until no connection is open (children closed theirs on exit)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._sockets:
                    return
            time.sleep(quiet_s / 4)

    # ------------------------------------------------------------------ internals
    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        sock.settimeout(self._socket_timeout_s)
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=10)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._track(sock)
            pending: deque[_Request] = deque()
            self._spawn(self._pump_requests, "proxy-c2s", client, upstream, pending)
            self._spawn(self._pump_responses, "proxy-s2c", upstream, client, pending)

    def _pump_requests(
        self, src: socket.socket, dst: socket.socket, pending: deque[_Request]
    ) -> None:
        def on_head(head: bytes) -> int:
            start, fields = _headers(head)
            parts = start.split(" ")
            method = parts[0]
            path = unquote(urlsplit(parts[1] if len(parts) > 1 else "").path)
            pending.append(_Request(method, path))
            with self._lock:
                stats = self._stats.setdefault(path, PathStats())
                stats.requests += 1
                if "range" in fields:
                    stats.range_requests += 1
                    stats.ranges.append(fields["range"].removeprefix("bytes="))
            if fields.get("transfer-encoding", "").lower() == "chunked":
                return -1
            return int(fields.get("content-length", "0") or 0)

        stream = _HttpStream(on_head, lambda n: None)
        try:
            while True:
                data = src.recv(_BUF)
                if not data:
                    break
                # Parsed before forwarding, so the request is queued before any response.
                stream.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _pump_responses(
        self, src: socket.socket, dst: socket.socket, pending: deque[_Request]
    ) -> None:
        current = PathStats()  # replaced at the first response head

        def on_head(head: bytes) -> int:
            nonlocal current
            start, fields = _headers(head)
            parts = start.split(" ")
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if 100 <= status < 200:
                return 0  # interim response; its request is still pending
            request = pending.popleft() if pending else _Request("?", "?")
            with self._lock:
                current = self._stats.setdefault(request.path, PathStats())
                current.wire_bytes += len(head)
            if request.method == "HEAD" or status in (204, 304):
                return 0
            if fields.get("transfer-encoding", "").lower() == "chunked":
                return -1
            return int(fields.get("content-length", "0") or 0)

        def on_body(n: int) -> None:
            with self._lock:
                current.body_bytes += n
                current.wire_bytes += n

        stream = _HttpStream(on_head, on_body)
        try:
            while True:
                data = src.recv(_BUF)
                if not data:
                    break
                if stream.broken:
                    with self._lock:
                        self._unparsed_bytes += len(data)
                else:
                    stream.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            self._untrack(src)
            self._untrack(dst)
