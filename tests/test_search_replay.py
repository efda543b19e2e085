"""pystac-client against Earth Search's own recorded pages, replayed on loopback."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from geospatial_pipeline.errors import StacSearchError
from geospatial_pipeline.stac.search import AoiQuery, SearchSettings, open_client, search_day
from tests.conftest import EARTH_SEARCH, require_shared_data
from tests.replay_server import Recorded, ReplayState, replay_server

BBOX = (9.0, 47.0, 10.0, 48.0)
AOI = AoiQuery("upper-rhine", {"type": "Polygon", "coordinates": []}, BBOX)
BANDS = ["red", "green", "blue", "nir", "scl"]


def settings(url: str, **kw: Any) -> SearchSettings:
    return SearchSettings(api_url=url, collection="sentinel-2-l2a", backoff_s=0.01, **kw)


@pytest.fixture(autouse=True)
def _shared() -> None:
    require_shared_data()


def test_follows_recorded_post_next_tokens() -> None:
    recorded_p1 = json.loads((EARTH_SEARCH / "search_page.json").read_text())
    recorded_p2 = json.loads((EARTH_SEARCH / "search_page_2.json").read_text())
    with replay_server(EARTH_SEARCH) as (url, state):
        s = settings(url)
        result = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    posts = [body for method, _, body in state.requests if method == "POST"]
    assert len(posts) == 3
    assert "next" not in posts[0] and posts[0]["bbox"] == list(BBOX)
    assert posts[0]["datetime"].startswith("2020-03-02T00:00:00Z/2020-03-02T23:59:59")
    # merge: false -> the body of each next link is sent exactly as the API gave it
    for sent, page in zip(posts[1:], (recorded_p1, recorded_p2), strict=True):
        link = next(link for link in page["links"] if link["rel"] == "next")
        assert sent == link["body"]
    assert result.matched == 16
    # The recorded pages span 03-01..05; only 03-02 is kept, newest processing per tile.
    assert [i["id"] for i in result.items] == [
        f"S2A_{t}_20200302_1_L2A" for t in ("32TMT", "32TNT", "32UMU", "32UNU")
    ]
    assert {s.item_id for s in result.superseded} == {
        f"S2A_{t}_20200302_0_L2A" for t in ("32TMT", "32TNT", "32UMU", "32UNU")
    }
    # Earth Search declares the query extension, but the cloud filter stays on the client.
    assert result.filter_mode == "client"


def _applying_query(state_box: dict[str, Any]) -> ReplayState:
    """A replay that, like Earth Search, applies a `query` on eo:cloud_cover itself."""

    def fault(method: str, path: str, count: int) -> Any:
        state: ReplayState = state_box["state"]
        body = state.requests[-1][2]
        if method != "POST" or not body.get("query"):
            return None
        rec = Recorded(EARTH_SEARCH, state_box["url"])
        names = ("search_page.json", "search_page_2.json", "search_page_3_empty.json")
        pages = [rec.load(n) for n in names]
        tokens: dict[Any, int] = {None: 0}
        for i, page in enumerate(pages[:-1]):
            tokens[next(lk for lk in page["links"] if lk["rel"] == "next")["body"]["next"]] = i + 1
        page = pages[tokens[body.get("next")]]
        limit = body["query"]["eo:cloud_cover"]["lte"]
        page["features"] = [
            f for f in page["features"] if f["properties"]["eo:cloud_cover"] <= limit
        ]
        return 200, {}, page

    state = ReplayState(fault=fault)
    state_box["state"] = state
    return state


def test_cloud_filter_after_dedupe_on_an_api_with_query() -> None:
    # Real 2020-03-02 items: each tile's reprocessing `_1_` is now cloudier than 99 % while
    # its older `_0_` is below on three tiles (32TMT _1_ 99.69 / _0_ 95.75, 32UMU 99.86 /
    # 87.93, 32UNU 99.52 / 98.23). The newer processing wins the dedupe and is then filtered
    # out: the older one must not come back in its place.
    box: dict[str, Any] = {}
    with replay_server(EARTH_SEARCH, _applying_query(box)) as (url, state):
        box["url"] = url
        s = settings(url, max_cloud_cover=99.0)
        result = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    assert all(
        "query" not in body and "filter" not in body for m, _, body in state.requests if m == "POST"
    )
    assert result.items == []
    tiles = ("32TMT", "32TNT", "32UMU", "32UNU")
    assert [(x.item_id, x.superseded_by) for x in result.superseded] == [
        (f"S2A_{t}_20200302_0_L2A", f"S2A_{t}_20200302_1_L2A") for t in tiles
    ]
    raw = {
        f["id"]: f["properties"]["eo:cloud_cover"]
        for name in ("search_page.json", "search_page_2.json")
        for f in json.loads((EARTH_SEARCH / name).read_text())["features"]
    }
    assert result.too_cloudy == [
        {"id": f"S2A_{t}_20200302_1_L2A", "cloud_cover": raw[f"S2A_{t}_20200302_1_L2A"]}
        for t in tiles
    ]
    assert all(c > 99.0 for c in (x["cloud_cover"] for x in result.too_cloudy))


def test_client_filter_keeps_the_clear_winners() -> None:
    with replay_server(EARTH_SEARCH) as (url, state):
        s = settings(url, max_cloud_cover=99.9)
        result = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    assert all("query" not in body for m, _, body in state.requests if m == "POST")
    # The four `_1_` of 03-02 are between 99.52 and 99.87 % cloudy: all kept, no `_0_`.
    assert [i["id"] for i in result.items] == [
        f"S2A_{t}_20200302_1_L2A" for t in ("32TMT", "32TNT", "32UMU", "32UNU")
    ]
    assert result.too_cloudy == []


def _flaky(failures: dict[int, Any]) -> ReplayState:
    def fault(method: str, path: str, count: int) -> Any:
        return failures.get(count) if method == "POST" else None

    return ReplayState(fault=fault)


@pytest.mark.parametrize(
    "failures",
    [
        {0: (503, {}, {"code": "Unavailable"}), 1: (502, {}, {"code": "BadGateway"})},
        {0: (429, {"Retry-After": "0"}, {"code": "TooManyRequests"})},
        {0: "reset"},
    ],
    ids=["5xx", "429", "connection-reset"],
)
def test_retries_transient_failures(failures: dict[int, Any]) -> None:
    state = _flaky(failures)
    with replay_server(EARTH_SEARCH, state) as (url, _):
        s = settings(url)
        result = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    assert len(result.items) == 4
    first_posts = [r for r in state.requests if r[0] == "POST" and "next" not in r[2]]
    assert len(first_posts) == len(failures) + 1


def test_retries_read_timeout() -> None:
    import time

    def fault(method: str, path: str, count: int) -> Any:
        if method == "POST" and count == 0:
            time.sleep(1.5)  # longer than the client's timeout: the first answer is too late
        return None

    state = ReplayState(fault=fault)
    with replay_server(EARTH_SEARCH, state) as (url, _):
        s = settings(url, timeout_s=0.5)
        result = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    assert len(result.items) == 4
    first_posts = [r for r in state.requests if r[0] == "POST" and "next" not in r[2]]
    assert len(first_posts) == 2


def test_gives_up_with_clear_error() -> None:
    state = ReplayState(fault=lambda m, p, c: (500, {}, {"code": "Boom"}) if m == "POST" else None)
    with replay_server(EARTH_SEARCH, state) as (url, _):
        s = settings(url, max_retries=2)
        with pytest.raises(StacSearchError, match=r"upper-rhine.*2020-03-02"):
            search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    assert sum(1 for r in state.requests if r[0] == "POST") == 3


def test_invalid_item_is_reported_not_fatal() -> None:
    import tests.replay_server as rs

    original = rs.Recorded.load

    def load(self: rs.Recorded, name: str) -> Any:
        doc = original(self, name)
        if name == "search_page.json":
            doc["features"][0]["properties"]["datetime"] = None
            doc["features"][1]["assets"].pop("nir")
        return doc

    rs.Recorded.load = load  # type: ignore[method-assign]
    try:
        with replay_server(EARTH_SEARCH) as (url, _):
            s = settings(url)
            result = search_day(open_client(s), s, dt.date(2020, 3, 2), [AOI], BANDS)
    finally:
        rs.Recorded.load = original  # type: ignore[method-assign]
    reasons = {bad["id"]: bad["reason"] for bad in result.invalid}
    assert len(reasons) == 2
    assert any("nir" in r for r in reasons.values())
    assert any("acquired_at" in r for r in reasons.values())
