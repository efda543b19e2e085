"""Cut the AOI windows of many (item, AOI, band) assets into COGs in an object store.

Reads run concurrently across assets and scenes: on real S3 each cold read costs two
sequential round trips (header, then tiles), so overlapping them is what keeps small AOIs
fast.

One bad item never sinks the day. Its faults are data faults (``SourceFault``: a missing
band asset, a 404, a file that is not a raster, a corrupt or truncated one); the item is
quarantined — none of its objects enter the manifest — and every other item lands. Any
other failure (endpoint down, credentials, throttling after retries, our own store
refusing a write, anything unrecognised) is systemic: it fails the run so a retry can fix
it, because quarantining every item of the day for it would hide the outage.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rasterio.session import Session
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.errors import RasterError
from geospatial_pipeline.raster.cog import (
    SourceFault,
    WindowData,
    encode_cog,
    gdal_env,
    read_aoi_window,
    validate_cog_bytes,
)
from geospatial_pipeline.raster.gdal_env import gdal_path_for_href
from geospatial_pipeline.storage.object_store import ObjectStore

COG_CONTENT_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
# Classification rasters: resampling must never invent a class.
CATEGORICAL_BANDS = frozenset({"scl", "cloud", "snow"})
# Decoded window bytes the concurrent tasks may hold at once. A task holds its window
# about three times over while it runs (the decoded pixels, GDAL's raw tiles, the encoded
# COG), so this bounds the step near 3 x 160 MiB whatever the AOI: 20 km windows of 10 m
# bands (8.6 MB) still run 8 at a time, 60 km ones (77 MB) 2 at a time, where 8 took the
# process to 1.8 GB (benchmarks/README.md, "End to end").
WINDOW_BYTES_IN_FLIGHT = 160 * 1024 * 1024


class ByteBudget:
    """Bytes held by concurrent tasks, at most ``limit`` at once, except that a task is
    always let through when nothing is held (a window larger than the whole budget runs
    alone instead of never)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a byte budget must be positive, got {limit}")
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.held == 0 or self.held + n <= self.limit)
            self.held += n
            self.peak = max(self.peak, self.held)

    def release(self, n: int) -> None:
        with self._cond:
            self.held -= n
            self._cond.notify_all()


@dataclass(frozen=True)
class BandTask:
    item_id: str
    aoi: str
    band: str
    href: str
    key: str


@dataclass(frozen=True)
class ItemFault:
    """Why one (item, AOI, band) could not be cut: a property of the item's data."""

    item_id: str
    band: str
    reason: str
    aoi: str | None = None  # None: the fault holds for every AOI (e.g. no such asset)
    href: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"aoi": self.aoi, "band": self.band, "href": self.href, "reason": self.reason}


@dataclass
class Extraction:
    """Results of the items that landed whole, and the faults of the quarantined ones."""

    results: list[BandResult] = field(default_factory=list)
    quarantined: dict[str, list[ItemFault]] = field(default_factory=dict)
    peak_window_bytes: int = 0  # decoded window bytes held at once, at most

    def quarantine(self, faults: Sequence[ItemFault]) -> None:
        for fault in faults:
            self.quarantined.setdefault(fault.item_id, []).append(fault)
        self.results = [r for r in self.results if r.task.item_id not in self.quarantined]

    def require_some_landed(self, planned: Sequence[str]) -> None:
        """Refuse a day on which every planned item failed.

        A fault that hits every item (a moved bucket answering 404 everywhere, a changed
        href layout) is more likely the source's than each item's. Quarantining them all
        would replace the day's rows and objects with nothing; failing the run keeps them
        and says why, and a retry lands the day once the source is fixed.
        """
        ids = set(planned)
        if ids and ids <= set(self.quarantined):
            reasons = "; ".join(
                f"{item_id}: {self.quarantined[item_id][0].reason}" for item_id in sorted(ids)
            )
            raise RasterError(
                f"every item of the day failed ({len(ids)}), so nothing was replaced: {reasons}"
            )

    def manifest(self, day: str, collection: str) -> dict[str, Any]:
        """The band manifest downstream steps read: objects of landed items only."""
        return {
            "day": day,
            "collection": collection,
            "objects": [r.manifest_entry() for r in self.results],
            "quarantined": self.quarantine_entries(),
        }

    def quarantine_entries(self) -> list[dict[str, Any]]:
        """One entry per quarantined item, as the manifest and the check list them."""
        return [
            {
                "id": item_id,
                "reason": "; ".join(
                    sorted(
                        {f"{f.band}{f' ({f.aoi})' if f.aoi else ''}: {f.reason}" for f in faults}
                    )
                ),
                # Sorted: threads finish in any order, the manifest must not change with it.
                "faults": sorted(
                    (f.as_dict() for f in faults),
                    key=lambda d: (d["aoi"] or "", d["band"], d["reason"]),
                ),
            }
            for item_id, faults in sorted(self.quarantined.items())
        ]


@dataclass(frozen=True)
class BandResult:
    task: BandTask
    key: str | None  # None when the AOI does not overlap the raster
    url: str | None
    bytes: int
    sha256: str | None
    written: bool
    window: dict[str, int] | None
    epsg: int | None
    transform: list[float] | None
    read_s: float

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "item_id": self.task.item_id,
            "aoi": self.task.aoi,
            "band": self.task.band,
            "source_href": self.task.href,
            "key": self.key,
            "url": self.url,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "window": self.window,
            "epsg": self.epsg,
            "transform": self.transform,
        }


def plan_band_tasks(
    items: Mapping[str, Mapping[str, Any]],
    by_aoi: Mapping[str, Sequence[str]],
    aois: Sequence[str],
    bands: Sequence[str],
    key_for: Callable[[str, str, str], str],
) -> tuple[list[BandTask], list[ItemFault]]:
    """One task per (AOI, item, band); an item lacking a band asset gets no task at all.

    ``key_for(aoi, item_id, band)`` is the object key. The persisted items may predate the
    configured bands (a band added since), so a missing asset is a fault of that item.
    """
    tasks: list[BandTask] = []
    faults: list[ItemFault] = []
    missing: set[str] = set()
    for item_id in sorted({i for aoi in aois for i in by_aoi.get(aoi, [])}):
        assets = items[item_id].get("assets") or {}
        for band in bands:
            href = (assets.get(band) or {}).get("href")
            if not isinstance(href, str) or not href:
                faults.append(ItemFault(item_id, band, f"no {band!r} asset with an href"))
                missing.add(item_id)
    for aoi in sorted(aois):
        for item_id in sorted(by_aoi.get(aoi, [])):
            if item_id in missing:
                continue
            for band in bands:
                href = items[item_id]["assets"][band]["href"]
                tasks.append(BandTask(item_id, aoi, band, href, key_for(aoi, item_id, band)))
    return tasks, faults


def _read(
    task: BandTask,
    aoi: BaseGeometry,
    options: Mapping[str, Any],
    session: Session | None,
    reserve: Callable[[int], None],
) -> WindowData | None:
    path = gdal_path_for_href(task.href)
    try:
        with gdal_env(options, session):
            return read_aoi_window(path, aoi, reserve=reserve)
    except SourceFault as fault:
        if fault.kind != "corrupt":
            raise
    # A read error can also be a connection dropped mid-tile; a fresh read tells them
    # apart (GDAL keeps no cache of the file between opens, see ObjectStoreResource).
    with gdal_env(options, session):
        return read_aoi_window(path, aoi, reserve=reserve)


def _run_task(
    task: BandTask,
    aoi: BaseGeometry,
    store: ObjectStore,
    options: Mapping[str, Any],
    session: Session | None,
    quarantined: Callable[[str], bool] = lambda item_id: False,
    budget: ByteBudget | None = None,
) -> BandResult | None:
    """Cut and publish one window; None when its item was quarantined meanwhile. The
    window's bytes are held in ``budget`` from its header until it is published."""
    held = 0

    def reserve(n: int) -> None:
        nonlocal held
        if budget is not None and not held:  # once: a retried read reuses it
            budget.acquire(n)
            held = n

    try:
        return _cut_and_publish(task, aoi, store, options, session, quarantined, reserve)
    finally:
        if budget is not None and held:
            budget.release(held)


def _cut_and_publish(
    task: BandTask,
    aoi: BaseGeometry,
    store: ObjectStore,
    options: Mapping[str, Any],
    session: Session | None,
    quarantined: Callable[[str], bool],
    reserve: Callable[[int], None],
) -> BandResult | None:
    start = time.perf_counter()
    data = _read(task, aoi, options, session, reserve)
    read_s = time.perf_counter() - start
    if data is None:
        return BandResult(task, None, None, 0, None, False, None, None, None, read_s)
    cog = encode_cog(data, categorical=task.band in CATEGORICAL_BANDS)
    check = validate_cog_bytes(cog)
    if not check.valid:
        # Never publish an object downstream consumers would reject.
        raise RasterError(f"encoded COG for {task.key} is invalid: {check.errors}")
    if quarantined(task.item_id):
        return None  # spare the write; its objects would be removed again anyway
    put = store.put_bytes(task.key, cog, COG_CONTENT_TYPE)
    win = data.window
    return BandResult(
        task=task,
        key=put.key,
        url=put.url,
        bytes=put.size,
        sha256=put.sha256,
        written=put.written,
        window={
            "col_off": win.col_off,
            "row_off": win.row_off,
            "width": win.width,
            "height": win.height,
        },
        epsg=data.epsg,
        transform=list(data.transform)[:6],
        read_s=read_s,
    )


def extract_band_windows(
    tasks: Sequence[BandTask],
    aois: Mapping[str, BaseGeometry],
    store: ObjectStore,
    *,
    gdal_options: Mapping[str, Any],
    session: Session | None = None,
    max_workers: int = 8,
    window_bytes_in_flight: int = WINDOW_BYTES_IN_FLIGHT,
) -> Extraction:
    """Run every task, ``max_workers`` at a time and with at most
    ``window_bytes_in_flight`` decoded window bytes held at once; quarantine the items
    with a data fault, keep the others.

    A systemic failure cancels the queued tasks and raises once the running ones finish.
    """
    out = Extraction()
    if not tasks:
        return out
    failed: dict[str, list[ItemFault]] = defaultdict(list)
    lock = threading.Lock()
    budget = ByteBudget(window_bytes_in_flight)

    def run(task: BandTask) -> BandResult | None:
        # Every task is read even once its item failed: which faults are listed must not
        # depend on which thread came first, or a re-run would rewrite the manifest.
        try:
            return _run_task(
                task, aois[task.aoi], store, gdal_options, session, failed.__contains__, budget
            )
        except SourceFault as fault:
            with lock:
                failed[task.item_id].append(
                    ItemFault(task.item_id, task.band, str(fault), task.aoi, task.href)
                )
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(tasks)))) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        try:
            done = [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    out.results = [r for r in done if r is not None]
    out.peak_window_bytes = budget.peak
    for faults in failed.values():
        out.quarantine(faults)
    return out


def landed_by_aoi(
    by_aoi: Mapping[str, Sequence[str]], manifest: Mapping[str, Any]
) -> dict[str, list[str]]:
    """The day's items per AOI without those band_rasters quarantined: downstream steps
    build nothing for them (they stay in the day's items, so a re-run retries them)."""
    quarantined = {entry["id"] for entry in manifest.get("quarantined", [])}
    return {aoi: [i for i in ids if i not in quarantined] for aoi, ids in by_aoi.items()}
