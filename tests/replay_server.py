"""A loopback HTTP server that replays the recorded Earth Search v1 responses.

Hrefs in the recordings point at the real API; they are rewritten to this server so
pystac-client follows the recorded links (including POST `next` bodies) to us.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REAL_ROOT = "https://earth-search.aws.element84.com/v1"


@dataclass
class Recorded:
    root: Path
    base_url: str = ""

    def load(self, name: str) -> Any:
        text = (self.root / name).read_text()
        return json.loads(text.replace(REAL_ROOT, self.base_url))


@dataclass
class ReplayState:
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    # Called before answering; may return (status, headers, body) to answer instead, or
    # "reset" to drop the connection without a response.
    fault: Callable[[str, str, int], Any] | None = None


def _handler(rec: Recorded, state: ReplayState) -> type[BaseHTTPRequestHandler]:
    pages = [
        rec.load(n) for n in ("search_page.json", "search_page_2.json", "search_page_3_empty.json")
    ]
    tokens = {None: 0}
    for i, page in enumerate(pages[:-1]):
        nxt = next(link for link in page["links"] if link["rel"] == "next")
        tokens[nxt["body"]["next"]] = i + 1

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _faulted(self, method: str) -> bool:
            if state.fault is None:
                return False
            # Attempts before this one, for the same method and path.
            count = sum(1 for m, p, _ in state.requests if m == method and p == self.path) - 1
            answer = state.fault(method, self.path, count)
            if answer is None:
                return False
            if answer == "reset":
                self.close_connection = True
                self.connection.shutdown(2)
                return True
            status, headers, body = answer
            self._send(status, body, headers)
            return True

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, None))
            if self._faulted("GET"):
                return
            path = self.path.split("?")[0].rstrip("/")
            if path == "/v1":
                self._send(200, rec.load("landing_v1.json"))
            elif path == "/v1/conformance":
                self._send(200, {"conformsTo": rec.load("landing_v1.json")["conformsTo"]})
            elif path == "/v1/collections/sentinel-2-l2a":
                self._send(200, rec.load("collection_sentinel-2-l2a.json"))
            else:
                self._send(404, rec.load("error_404_collection_not_found.json"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append(("POST", self.path, body))
            if self._faulted("POST"):
                return
            if self.path.rstrip("/") != "/v1/search":
                self._send(404, {"code": "NotFound"})
                return
            index = tokens.get(body.get("next"))
            if index is None:
                self._send(400, {"code": "BadRequest", "description": "unknown next token"})
                return
            self._send(200, pages[index])

    return Handler


@contextmanager
def replay_server(
    recordings: Path, state: ReplayState | None = None
) -> Iterator[tuple[str, ReplayState]]:
    state = state or ReplayState()
    rec = Recorded(recordings)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    rec.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.RequestHandlerClass = _handler(rec, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec.base_url, state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
