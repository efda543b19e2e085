"""The static product catalog served as a STAC API on 127.0.0.1 (``make dev``).

The static catalog (``processed/catalog.json`` in the object store) stays the source of
truth; this reads it into a rustac in-memory STAC API so pystac-client (and odc-stac) can
search the products by collection, bbox and datetime without PostgreSQL. rustac has no
transaction endpoint, so a reloader thread re-reads the catalog every few seconds and
restarts rustac on the same port when it changed: products materialized during the
session appear without restarting anything.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import posixpath
import threading
from typing import Any, Self

from geospatial_pipeline.errors import LocalServerError
from geospatial_pipeline.layout import PRODUCTS_ROOT
from geospatial_pipeline.local.process import LocalServer
from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.stac.products import (
    LICENSE,
    ROOT_CATALOG_ID,
    STAC_VERSION,
    linked_keys,
)
from geospatial_pipeline.storage.object_store import ObjectStore

logger = logging.getLogger(__name__)

DEFAULT_PRODUCTS_PORT = 7823
DEFAULT_POLL_INTERVAL_S = 3.0

# Relative links point into the static tree; in the API they would resolve against the
# API's URLs and lead nowhere, so only absolute ones (sources, map viewers) are kept.
_ABSOLUTE_PREFIXES = ("http://", "https://", "s3://", "file://", "/")


def _read(store: ObjectStore, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(store.get_bytes(key))
    return doc


def _absolute_links(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        link
        for link in doc.get("links", [])
        if str(link.get("href", "")).startswith(_ABSOLUTE_PREFIXES)
    ]


def empty_products_collection(collection: str) -> dict[str, Any]:
    """The products collection before any product exists (same id as the static one's)."""
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "id": f"{ROOT_CATALOG_ID}-{collection}",
        "title": f"Analysis-ready {collection}",
        "description": f"Analysis-ready products of {collection} (none materialized yet)",
        "license": LICENSE,
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }


def _api_item(store: ObjectStore, item_key: str, collection_id: str) -> dict[str, Any]:
    item = _read(store, item_key)
    out = copy.deepcopy(item)
    out["collection"] = collection_id
    out["links"] = _absolute_links(item)
    for name, asset in out.get("assets", {}).items():
        href = str(asset.get("href", ""))
        if href.startswith(_ABSOLUTE_PREFIXES):
            continue
        # odc-stac / rasterio open the href as given: an absolute path in a local store,
        # the object's URL in S3.
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(item_key), href))
        if resolved.startswith(".."):
            raise LocalServerError(
                f"item {item_key}: asset {name!r} href {href!r} escapes the store"
            )
        asset["href"] = store.url(resolved)
    return out


def load_product_catalog(
    store: ObjectStore, collection: str, root_key: str = PRODUCTS_ROOT
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, collections) of the static catalog at ``root_key``, ready for a STAC API.

    Walks root -> collections -> (date, AOI) sub-catalogs -> items. Items get their
    collection's id and absolute asset hrefs; relative links are dropped. Without a root
    catalog yet, one empty products collection (named after ``collection``) is served so
    that clients can already open it.
    """
    if store.head(root_key) is None:
        return [], [empty_products_collection(collection)]
    root = _read(store, root_key)
    items: list[dict[str, Any]] = []
    collections: list[dict[str, Any]] = []
    for collection_key in linked_keys(root, root_key, "child"):
        doc = _read(store, collection_key)
        collection_id = str(doc["id"])
        collections.append({**doc, "links": _absolute_links(doc)})
        for sub_key in linked_keys(doc, collection_key, "child"):
            sub = _read(store, sub_key)
            items.extend(
                _api_item(store, item_key, collection_id)
                for item_key in linked_keys(sub, sub_key, "item")
            )
    return items, collections


def _signature(items: list[dict[str, Any]], collections: list[dict[str, Any]]) -> str:
    text = json.dumps([items, collections], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ProductsApi(LocalServer):
    """rustac serving the static product catalog, reloaded when the catalog changes.

    The whole tree is re-read on each poll, not only the root: a partition run rewrites
    its sub-catalog and items without touching the root, and the root step rewrites the
    collection, never the root catalog's bytes once its one collection is linked.
    """

    def __init__(
        self,
        store: ObjectStore,
        collection: str,
        *,
        root_key: str = PRODUCTS_ROOT,
        port: int | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        self._store = store
        self._collection = collection
        self._root_key = root_key
        self._port = port
        self._poll_interval_s = poll_interval_s
        self._server: RustacStacServer | None = None
        self._signature = ""
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.reloads = 0  # restarts after a catalog change (for the log and tests)

    @property
    def url(self) -> str:
        if self._server is None:
            raise LocalServerError("ProductsApi has not been started")
        return self._server.url

    @property
    def item_count(self) -> int:
        if self._server is None:
            raise LocalServerError("ProductsApi has not been started")
        return self._server.item_count

    def start(self) -> Self:
        if self._server is not None:
            raise LocalServerError("ProductsApi is already started")
        items, collections = load_product_catalog(self._store, self._collection, self._root_key)
        self._signature = _signature(items, collections)
        self._server = RustacStacServer(items, collections, port=self._port).start()
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._poll, name="products-api-reloader", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._lock:
            if self._server is not None:
                self._server.stop(timeout_s)
                self._server = None

    def reload_if_changed(self) -> bool:
        """Re-read the catalog; restart rustac with it when it changed. True if it did."""
        items, collections = load_product_catalog(self._store, self._collection, self._root_key)
        signature = _signature(items, collections)
        with self._lock:
            if self._server is None or signature == self._signature:
                return False
            self._server.restart_with(items, collections)
            self._signature = signature
            self.reloads += 1
        logger.info("products STAC API reloaded: %d items at %s", len(items), self.url)
        return True

    def _poll(self) -> None:
        while not self._stop_event.wait(self._poll_interval_s):
            try:
                self.reload_if_changed()
            except Exception:
                # A catalog caught mid-publication (or a store hiccup) must not end the
                # session's API: keep serving the last good catalog, retry next poll.
                logger.exception("products STAC API: reloading %s failed", self._root_key)
