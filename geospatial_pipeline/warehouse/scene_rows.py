"""Build scene-metadata rows (one per item x AOI) from items and the band manifest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from geospatial_pipeline.stac.models import SceneItem


def scene_rows(
    day: dt.date,
    by_aoi: Mapping[str, Sequence[str]],
    scenes: Mapping[str, tuple[dict[str, Any], SceneItem]],
    objects: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for aoi in sorted(by_aoi):
        for item_id in sorted(by_aoi[aoi]):
            raw, scene = scenes[item_id]
            band_objects = sorted(
                (
                    {
                        "band": o["band"],
                        "key": o["key"],
                        "url": o["url"],
                        "bytes": o["bytes"],
                        "sha256": o["sha256"],
                    }
                    for o in objects.get((item_id, aoi), [])
                ),
                key=lambda o: o["band"],
            )
            rows.append(
                {
                    "item_id": scene.id,
                    "aoi": aoi,
                    "collection": scene.collection,
                    "acquired_at": scene.acquired_at,
                    "partition_date": day,
                    "mgrs_tile": scene.mgrs_tile,
                    "platform": scene.platform,
                    "cloud_cover": scene.cloud_cover,
                    "processing_baseline": scene.processing_baseline,
                    "boa_offset_applied": scene.boa_offset_applied,
                    "created": scene.created,
                    "updated": scene.updated,
                    "geometry": raw["geometry"],
                    "bbox": raw["bbox"],
                    "band_objects": band_objects,
                    "properties": raw["properties"],
                    "object_count": len(band_objects),
                    "object_bytes": sum(int(o["bytes"]) for o in band_objects),
                }
            )
    return rows
