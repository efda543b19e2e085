"""The dedupe rule on the real recordings: the reprocessed _1_ items win."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from geospatial_pipeline.stac.dedupe import dedupe_scenes
from geospatial_pipeline.stac.models import validate_item

BANDS = ["red", "nir", "scl"]


def test_newest_processing_wins_on_real_items(real_items: dict[str, dict[str, Any]]) -> None:
    scenes = [validate_item(raw, BANDS) for raw in real_items.values()]
    kept, superseded = dedupe_scenes(scenes)
    kept_ids = {s.id for s in kept}
    assert len(kept) == 9  # 8 tile-days x 1 + the unrelated 29RKH scene
    assert "S2A_29RKH_20200219_0_L2A" in kept_ids
    for tile in ("32TMT", "32TNT", "32UMU", "32UNU"):
        for day in ("20200302", "20200305"):
            assert f"S2A_{tile}_{day}_1_L2A" in kept_ids
            assert f"S2A_{tile}_{day}_0_L2A" not in kept_ids
    assert {(s.item_id, s.superseded_by) for s in superseded} == {
        (f"S2A_{t}_{d}_0_L2A", f"S2A_{t}_{d}_1_L2A")
        for t in ("32TMT", "32TNT", "32UMU", "32UNU")
        for d in ("20200302", "20200305")
    }


def test_order_of_input_does_not_matter(real_items: dict[str, dict[str, Any]]) -> None:
    scenes = [validate_item(raw, BANDS) for raw in real_items.values()]
    a, _ = dedupe_scenes(scenes)
    b, _ = dedupe_scenes(list(reversed(scenes)))
    assert {s.id for s in a} == {s.id for s in b}


def test_distinct_passes_over_one_tile_are_kept(real_items: dict[str, dict[str, Any]]) -> None:
    raw = real_items["S2A_32TMT_20200302_0_L2A"]
    later = copy.deepcopy(raw)
    later["id"] = "S2A_32TMT_20200302_9_L2A"
    t = dt.datetime.fromisoformat(raw["properties"]["datetime"].replace("Z", "+00:00"))
    later["properties"]["datetime"] = (t + dt.timedelta(minutes=100)).isoformat()
    kept, superseded = dedupe_scenes([validate_item(r, BANDS) for r in (raw, later)])
    assert len(kept) == 2 and not superseded


def test_baseline_beats_update_time(real_items: dict[str, dict[str, Any]]) -> None:
    old = copy.deepcopy(real_items["S2A_32TNT_20200305_0_L2A"])
    new = real_items["S2A_32TNT_20200305_1_L2A"]
    old["properties"]["updated"] = "2030-01-01T00:00:00Z"  # touched later, still older data
    kept, _ = dedupe_scenes([validate_item(r, BANDS) for r in (old, new)])
    assert [s.id for s in kept] == ["S2A_32TNT_20200305_1_L2A"]
