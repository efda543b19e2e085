"""The day's items as a GeoJSON FeatureCollection (a STAC ItemCollection), persisted so a
run can be reproduced and downstream assets read exactly what the search saw."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from geospatial_pipeline.stac.dedupe import Superseded
from geospatial_pipeline.stac.search import DayItems

# Foreign member (allowed by GeoJSON) carrying what the search decided.
MEMBER = "geospatial_pipeline"


def to_item_collection(day: DayItems, *, api_url: str, collection: str) -> dict[str, Any]:
    return {
        "type": "FeatureCollection",
        "features": day.items,
        MEMBER: {
            "day": day.day.isoformat(),
            "api_url": api_url,
            "collection": collection,
            "filter_mode": day.filter_mode,
            "matched": day.matched,
            "by_aoi": day.by_aoi,
            "invalid": day.invalid,
            "superseded": [
                {"item_id": s.item_id, "superseded_by": s.superseded_by} for s in day.superseded
            ],
            "dropped_over_limit": day.dropped_over_limit,
            # Winners of the dedupe that the cloud filter then removed: their older twins
            # must not come back, and the late sensor must know the run saw them.
            "too_cloudy": day.too_cloudy,
            # Everything the search returned, kept or not, so the late-scene sensor can
            # tell a re-publication of a seen item from a new one.
            "seen": day.seen,
        },
    }


def dumps(doc: dict[str, Any]) -> bytes:
    # Sorted keys: the same search result gives byte-identical objects across runs.
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def from_item_collection(doc: dict[str, Any]) -> DayItems:
    meta = doc[MEMBER]
    return DayItems(
        day=dt.date.fromisoformat(meta["day"]),
        items=list(doc["features"]),
        by_aoi={k: list(v) for k, v in meta["by_aoi"].items()},
        invalid=list(meta["invalid"]),
        superseded=[Superseded(s["item_id"], s["superseded_by"]) for s in meta["superseded"]],
        dropped_over_limit=list(meta["dropped_over_limit"]),
        filter_mode=meta["filter_mode"],
        matched=int(meta["matched"]),
        seen=dict(meta.get("seen", {})),
        too_cloudy=list(meta.get("too_cloudy", [])),
    )
