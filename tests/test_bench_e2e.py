"""The end-to-end benchmark's pure helpers (benchmarks/e2e.py): the scaling exponent fit and
the items of the scaling partitions, which the pipeline must see as distinct scenes."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from typing import Any

import pytest

from benchmarks import realistic
from benchmarks.e2e import (
    RETIME,
    aoi_box,
    fit_exponent,
    interleave_zones,
    median_steps,
    retimed,
    scaling_items,
)
from geospatial_pipeline.stac.dedupe import dedupe_scenes
from geospatial_pipeline.stac.models import validate_item

BANDS = ["red", "green", "blue", "nir", "scl"]


def test_fit_exponent_recovers_the_power_of_a_power_law() -> None:
    ns = [1, 2, 4, 8]
    assert fit_exponent(ns, [3.0 * n**1.0 for n in ns]) == pytest.approx(1.0)
    assert fit_exponent(ns, [0.5 * n**1.5 for n in ns]) == pytest.approx(1.5)
    # A fixed cost per run bends the curve below linear.
    assert fit_exponent(ns, [10 + n for n in ns]) < 0.5


def test_fit_exponent_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="two different n"):
        fit_exponent([4, 4], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        fit_exponent([1, 2], [0.0, 1.0])


def _template(item_id: str, epsg: int, tile: tuple[int, str, str]) -> dict[str, Any]:
    """The real Earth Search item the realistic items are modelled on, under another id,
    tile and zone (what interleave/retime read)."""
    item: dict[str, Any] = json.loads(realistic.TEMPLATE_ITEM.read_text())
    item = copy.deepcopy(item)
    item["id"] = item_id
    zone, band, square = tile
    item["properties"].update(
        {
            "proj:epsg": epsg,
            "mgrs:utm_zone": zone,
            "mgrs:latitude_band": band,
            "mgrs:grid_square": square,
            "grid:code": f"MGRS-{zone}{band}{square}",
        }
    )
    return item


def _day_items() -> list[dict[str, Any]]:
    return [
        _template("S2A_30TYN_20240615_0_L2A", 32630, (30, "T", "YN")),
        _template("S2A_30TYP_20240615_0_L2A", 32630, (30, "T", "YP")),
        _template("S2A_31TBH_20240615_0_L2A", 32631, (31, "T", "BH")),
        _template("S2A_31TBJ_20240615_0_L2A", 32631, (31, "T", "BJ")),
    ]


def test_prefixes_mix_the_zones() -> None:
    ordered = interleave_zones(_day_items())
    zones = [it["properties"]["proj:epsg"] for it in ordered]
    assert zones == [32630, 32631, 32630, 32631]
    assert sorted(it["id"] for it in ordered) == sorted(it["id"] for it in _day_items())


def test_retimed_items_are_new_acquisitions_of_the_same_files() -> None:
    items = _day_items()
    eight = scaling_items(items, 8)
    assert len(eight) == 8
    assert len({it["id"] for it in eight}) == 8
    first, again = eight[0], eight[4]
    assert again["id"] == first["id"].replace("_0_L2A", "_p2_L2A")
    assert again["assets"] == first["assets"]  # same files: nothing new to upload
    gap = dt.datetime.fromisoformat(again["properties"]["datetime"].replace("Z", "+00:00"))
    gap -= dt.datetime.fromisoformat(first["properties"]["datetime"].replace("Z", "+00:00"))
    assert gap == RETIME
    assert again["properties"]["s2:datatake_id"] != first["properties"]["s2:datatake_id"]
    # The pipeline's duplicate handling keeps all eight: none is a reprocessing of another.
    kept, superseded = dedupe_scenes([validate_item(it, BANDS) for it in eight])
    assert len(kept) == 8 and superseded == []
    # ...whereas the same item twice at the same time would be one scene.
    twin = copy.deepcopy(first)
    twin["id"] = first["id"].replace("_0_", "_1_")
    kept, superseded = dedupe_scenes([validate_item(it, BANDS) for it in (first, twin)])
    assert len(kept) == 1 and len(superseded) == 1


def test_fewer_scenes_are_a_prefix_and_the_originals_come_first() -> None:
    items = _day_items()
    assert [it["id"] for it in scaling_items(items, 2)] == [
        it["id"] for it in scaling_items(items, 8)[:2]
    ]
    assert {it["id"] for it in scaling_items(items, 4)} == {it["id"] for it in items}


def test_retime_needs_a_first_processing_id() -> None:
    item = _template("not-earth-search", 32630, (30, "T", "YN"))
    with pytest.raises(ValueError, match="not-earth-search"):
        retimed(item, RETIME, "p2")


def test_the_20_km_box_is_the_realistic_aoi() -> None:
    assert aoi_box(realistic.AOI_KM).equals(realistic.aoi_geometry())
    big = aoi_box(60).bounds
    small = aoi_box(20).bounds
    assert (big[3] - big[1]) == pytest.approx(3 * (small[3] - small[1]))
    assert math.isclose(aoi_box(60).centroid.x, realistic.AOI_CENTRE[0], abs_tol=1e-9)


def test_median_steps_keeps_steps_of_every_run() -> None:
    runs = [{"a": 1.0, "b": 5.0}, {"a": 3.0, "b": 1.0, "c": 9.0}, {"a": 2.0, "b": 2.0}]
    assert median_steps(runs) == {"a": 2.0, "b": 2.0}
