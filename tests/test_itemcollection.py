"""The persisted ItemCollection keeps every decision of the search, so downstream assets and
the late-scene sensor read back what the run saw."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from geospatial_pipeline.stac.dedupe import Superseded
from geospatial_pipeline.stac.itemcollection import dumps, from_item_collection, to_item_collection
from geospatial_pipeline.stac.search import DayItems


def test_round_trip_keeps_every_decision(real_items: dict[str, dict[str, Any]]) -> None:
    kept = real_items["S2A_32TMT_20200305_1_L2A"]
    day = DayItems(
        day=dt.date(2020, 3, 5),
        items=[kept],
        by_aoi={"lake": [kept["id"]]},
        invalid=[{"id": "bad/id", "reason": "id: not a safe identifier"}],
        superseded=[Superseded("S2A_32TMT_20200305_0_L2A", kept["id"])],
        dropped_over_limit=["S2A_32TNT_20200305_1_L2A"],
        filter_mode="client",
        matched=4,
        seen={kept["id"]: "fingerprint"},
        too_cloudy=[{"id": "S2A_32UMU_20200305_1_L2A", "cloud_cover": 99.7}],
    )
    doc = json.loads(dumps(to_item_collection(day, api_url="http://127.0.0.1:9", collection="c")))
    assert from_item_collection(doc) == day
