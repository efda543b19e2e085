"""A loopback STAC API that filters like Earth Search: the real local API (rustac) does
the search, this proxy adds what rustac lacks, the STAC ``query`` extension.

It declares the conformance class Earth Search declares (``item-search#query``), applies
the comparison operators of ``query`` (eq, neq, lt, lte, gt, gte; timestamps compared as
instants) to the items rustac returns, and pages the result itself. Every search body it
receives is kept, so tests can check what a client asked for.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from geospatial_pipeline.local.stac_server import iter_search_pages

QUERY_CONFORMANCE = "https://api.stacspec.org/v1.0.0/item-search#query"
_OPS = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
}


class QueryError(ValueError):
    pass


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return value


def matches(item: dict[str, Any], query: dict[str, Any]) -> bool:
    props = item.get("properties") or {}
    for name, ops in query.items():
        if name not in props:
            return False
        actual = _comparable(props[name])
        for op, wanted in ops.items():
            if op not in _OPS:
                raise QueryError(f"query operator {op!r} on {name!r} is not supported")
            if not _OPS[op](actual, _comparable(wanted)):
                return False
    return True


@dataclass
class ProxyState:
    searches: list[dict[str, Any]] = field(default_factory=list)


def _handler(upstream: str, base_url: str, state: ProxyState) -> type[BaseHTTPRequestHandler]:
    session = requests.Session()
    session.trust_env = False

    def rewrite(text: str) -> Any:
        return json.loads(text.replace(upstream, base_url))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            response = session.get(upstream + self.path, timeout=30)
            body = rewrite(response.text)
            if isinstance(body, dict) and "conformsTo" in body:
                body["conformsTo"] = sorted({*body["conformsTo"], QUERY_CONFORMANCE})
            self._send(response.status_code, body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/") != "/search":
                self._send(404, {"code": "NotFound"})
                return
            state.searches.append(body)
            request = {k: v for k, v in body.items() if k not in ("query", "next", "limit")}
            found = [
                feature
                for page in iter_search_pages(upstream, {**request, "limit": 1000})
                for feature in page["features"]
            ]
            try:
                found = [f for f in found if matches(f, body.get("query") or {})]
            except QueryError as exc:
                self._send(400, {"code": "BadRequest", "description": str(exc)})
                return
            offset, limit = int(body.get("next") or 0), int(body.get("limit") or 10)
            page = {
                "type": "FeatureCollection",
                "features": [rewrite(json.dumps(f)) for f in found[offset : offset + limit]],
                "numberMatched": len(found),
                "links": [],
            }
            if offset + limit < len(found):
                page["links"].append(
                    {
                        "rel": "next",
                        "method": "POST",
                        "href": f"{base_url}/search",
                        "body": {**body, "next": str(offset + limit)},
                        "merge": False,
                    }
                )
            self._send(200, page)

    return Handler


@contextmanager
def query_proxy(upstream: str) -> Iterator[tuple[str, ProxyState]]:
    """Serve ``upstream`` (a STAC API URL without trailing slash) with ``query`` support."""
    state = ProxyState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    server.RequestHandlerClass = _handler(upstream.rstrip("/"), base_url, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base_url, state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
