"""Let pystac read a static catalog straight from the pipeline's object store."""

from __future__ import annotations

from typing import Any

import pystac
from pystac.stac_io import DefaultStacIO

from geospatial_pipeline.storage.object_store import ObjectStore


class ObjectStoreStacIO(DefaultStacIO):
    """Reads hrefs under the store's root through the store (S3 or local directory)."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__()
        self.store = store
        self.root = store.root_url.rstrip("/") + "/"

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source.href if isinstance(source, pystac.Link) else source)
        if href.startswith(self.root):
            return self.store.get_bytes(href[len(self.root) :]).decode("utf-8")
        return str(super().read_text(source, *args, **kwargs))


def load_catalog(store: ObjectStore, key: str) -> pystac.Catalog:
    io = ObjectStoreStacIO(store)
    return pystac.Catalog.from_file(store.url(key), stac_io=io)
