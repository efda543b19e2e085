"""The band windows in flight are bounded in bytes: a large AOI cuts its windows a few at
a time instead of holding every worker's window at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from geospatial_pipeline.raster.extract import BandTask, ByteBudget, extract_band_windows
from geospatial_pipeline.storage.object_store import LocalObjectStore
from tests.geotiff import write_geotiff

# 600 x 500 px of uint16 under the AOI: 600 000 decoded bytes per window.
TRANSFORM = Affine(10, 0, 500000, 0, -10, 4800000)
WINDOW_BYTES = 600 * 500 * 2


def _tasks(tmp_path: Path, n: int) -> list[BandTask]:
    rng = np.random.default_rng(3)
    tasks = []
    for i in range(n):
        path = tmp_path / f"src{i}.tif"
        write_geotiff(
            str(path),
            rng.integers(1, 10000, size=(500, 600), dtype=np.uint16),
            crs="EPSG:32631",
            transform=TRANSFORM,
        )
        tasks.append(BandTask(f"item{i}", "a", "red", str(path), f"raw/a/item{i}/red.tif"))
    return tasks


def _aoi() -> dict[str, object]:
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32631", "EPSG:4326", always_xy=True)
    # Slightly inside the raster, so the window is all of it.
    (x0, x1), (y0, y1) = (500001, 505999), (4795001, 4799999)
    lons, lats = to_lonlat.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    return {"a": box(min(lons), min(lats), max(lons), max(lats))}


@pytest.mark.parametrize(
    ("budget", "most_at_once"), [(WINDOW_BYTES * 5 // 2, 2), (WINDOW_BYTES // 2, 1)]
)
def test_windows_in_flight_stay_within_the_budget(
    tmp_path: Path, budget: int, most_at_once: int
) -> None:
    """Six windows on six workers: never more than the budget held at once, and a window
    larger than the whole budget still runs (alone). Every window lands either way."""
    tasks = _tasks(tmp_path, 6)
    store = LocalObjectStore(tmp_path / "store")
    out = extract_band_windows(
        tasks, _aoi(), store, gdal_options={}, max_workers=6, window_bytes_in_flight=budget
    )
    assert sorted(r.task.item_id for r in out.results) == [f"item{i}" for i in range(6)]
    assert all(
        r.window == {"col_off": 0, "row_off": 0, "width": 600, "height": 500} for r in out.results
    )
    assert WINDOW_BYTES <= out.peak_window_bytes <= most_at_once * WINDOW_BYTES


def test_the_budget_lets_one_oversized_holder_through_and_wakes_waiters() -> None:
    budget = ByteBudget(100)
    budget.acquire(60)
    entered = threading.Event()

    def second() -> None:
        budget.acquire(60)  # 120 > 100: waits for the first to release
        entered.set()
        budget.release(60)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.2)
    assert not entered.is_set()
    budget.release(60)
    thread.join(timeout=5)
    assert entered.is_set() and budget.held == 0 and budget.peak == 60
    budget.acquire(500)  # alone and over the limit: let through
    assert budget.held == 500
    budget.release(500)
    with pytest.raises(ValueError, match="positive"):
        ByteBudget(0)
