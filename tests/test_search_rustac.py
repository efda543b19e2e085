"""Search against a real local STAC API (rustac) loaded with the real recorded items."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from geospatial_pipeline.local.stac_server import RustacStacServer
from geospatial_pipeline.stac.search import (
    AoiQuery,
    SearchSettings,
    filter_mode,
    open_client,
    search_day,
)

BBOX = (9.0, 47.0, 10.0, 48.0)
BANDS = ["red", "green", "blue", "nir", "scl"]
TILES = ("32TMT", "32TNT", "32UMU", "32UNU")


def _edge_items(real_items: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of a real item moved to the very edges of the UTC day 2020-03-03."""
    out = []
    for suffix, when, square in (
        ("LAST", "2020-03-02T23:59:59.999000Z", "AA"),
        ("FIRST", "2020-03-03T00:00:00Z", "AB"),
        ("OFFSET", "2020-03-03T00:30:00+01:00", "AC"),  # = 2020-03-02T23:30Z
    ):
        item = copy.deepcopy(real_items["S2A_32TMT_20200305_1_L2A"])
        item["id"] = f"EDGE_{suffix}"
        item["properties"]["datetime"] = when
        item["properties"]["mgrs:grid_square"] = square
        out.append(item)
    return out


@pytest.fixture(scope="module")
def stac_url(
    real_items: dict[str, dict[str, Any]], real_collection: dict[str, Any]
) -> Iterator[str]:
    items = [*real_items.values(), *_edge_items(real_items)]
    with RustacStacServer(items, [real_collection]) as server:
        yield server.url


def settings(url: str, **kw: Any) -> SearchSettings:
    return SearchSettings(api_url=url, collection="sentinel-2-l2a", backoff_s=0.01, **kw)


AOI = AoiQuery("upper-rhine", {}, BBOX)


def test_rustac_declares_no_query_extension(stac_url: str) -> None:
    assert filter_mode(open_client(settings(stac_url))) == "client"


def test_pagination_over_all_16_items_with_small_pages(stac_url: str) -> None:
    s = settings(stac_url, page_size=3)
    client = open_client(s)
    days = [dt.date(2020, 3, d) for d in range(1, 6)]
    results = {day: search_day(client, s, day, [AOI], BANDS) for day in days}
    assert sum(r.matched for r in results.values()) == 16 + 3  # 16 real + 3 edge items
    for day in (dt.date(2020, 3, 2), dt.date(2020, 3, 5)):
        stamp = day.strftime("%Y%m%d")
        got = results[day]
        kept = [i["id"] for i in got.items if not i["id"].startswith("EDGE")]
        assert kept == [f"S2A_{t}_{stamp}_1_L2A" for t in TILES]
        assert [s.item_id for s in got.superseded] == [f"S2A_{t}_{stamp}_0_L2A" for t in TILES]
        assert {
            i["properties"]["s2:processing_baseline"] for i in got.items if i["id"] in kept
        } == {"05.00"}
    assert results[dt.date(2020, 3, 1)].items == []


def test_utc_day_edges(stac_url: str) -> None:
    s = settings(stac_url, page_size=2)
    client = open_client(s)
    day2 = {i["id"] for i in search_day(client, s, dt.date(2020, 3, 2), [AOI], BANDS).items}
    day3 = {i["id"] for i in search_day(client, s, dt.date(2020, 3, 3), [AOI], BANDS).items}
    assert {"EDGE_LAST", "EDGE_OFFSET"} <= day2 and "EDGE_FIRST" not in day2
    assert day3 == {"EDGE_FIRST"}


def test_cloud_filter_on_client_after_dedupe(stac_url: str) -> None:
    # 32UMU 03-02: _0_ is 87.9 % cloudy, its replacement _1_ 99.86 %. With a 99 % limit the
    # newer processing is dropped and the older one must not come back in its place.
    s = settings(stac_url, max_cloud_cover=99.0)
    got = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    ids = {i["id"] for i in got.items}
    assert "S2A_32UMU_20200302_0_L2A" not in ids
    assert "S2A_32UMU_20200302_1_L2A" not in ids
    assert all(i["properties"]["eo:cloud_cover"] <= 99.0 for i in got.items)
    assert got.filter_mode == "client"


def test_two_aois_share_items_and_max_items(stac_url: str) -> None:
    west = AoiQuery("west", {}, (9.0, 47.0, 9.4, 48.0))
    poly = {
        "type": "Polygon",
        "coordinates": [[[9.6, 47.2], [9.9, 47.2], [9.9, 47.8], [9.6, 47.8], [9.6, 47.2]]],
    }
    east = AoiQuery("east", poly)
    s = settings(stac_url, max_items_per_day=3)
    got = search_day(open_client(s), s, dt.date(2020, 3, 5), [west, east], BANDS)
    assert len(got.items) == 3 and len(got.dropped_over_limit) == 1
    assert got.by_aoi["west"] and got.by_aoi["east"]
    # The dropped one is the cloudiest of the four 05.00 scenes (32UNU, 99.999988 %).
    assert got.dropped_over_limit == ["S2A_32UNU_20200305_1_L2A"]
    worst_kept = max(i["properties"]["eo:cloud_cover"] for i in got.items)
    assert worst_kept < 99.999988
