"""Keep one item per real acquisition when a catalog holds several processings of it.

Rule (documented in the README): items of the same platform and MGRS tile whose
acquisition times are within ``SAME_ACQUISITION`` of each other are one scene; the newest
processing wins, ordered by

1. processing baseline (``s2:processing_baseline``, compared as a version: 05.00 > 02.14),
2. then ESA's product generation time (``s2:generation_time``),
3. then Earth Search's ``updated`` time,
4. then the item id (the ``_1_`` sequence sorts after ``_0_``), so the choice is total.

Items with no platform or tile cannot be matched and are always kept.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from geospatial_pipeline.stac.models import SceneItem

# Two processings of one datatake differ by milliseconds (10:27:44.563 vs .564 in the real
# recordings); distinct passes over the same tile are ~100 minutes apart at least.
SAME_ACQUISITION = dt.timedelta(seconds=60)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Superseded:
    item_id: str
    superseded_by: str


def _rank(item: SceneItem) -> tuple[tuple[int, ...], dt.datetime, dt.datetime, str]:
    return (
        item.baseline_tuple,
        item.generation_time or _EPOCH,
        item.updated or _EPOCH,
        item.id,
    )


def dedupe_scenes(items: list[SceneItem]) -> tuple[list[SceneItem], list[Superseded]]:
    """Return (kept items in input order, superseded items with their winner)."""
    groups: dict[tuple[str, str], list[SceneItem]] = defaultdict(list)
    unmatched: list[SceneItem] = []
    for item in items:
        if item.platform and item.mgrs_tile:
            groups[(item.platform.lower(), item.mgrs_tile)].append(item)
        else:
            unmatched.append(item)

    winners: set[str] = {item.id for item in unmatched}
    superseded: list[Superseded] = []
    for members in groups.values():
        members.sort(key=lambda it: it.acquired_at)
        clusters: list[list[SceneItem]] = []
        for item in members:
            if clusters and item.acquired_at - clusters[-1][-1].acquired_at <= SAME_ACQUISITION:
                clusters[-1].append(item)
            else:
                clusters.append([item])
        for cluster in clusters:
            best = max(cluster, key=_rank)
            winners.add(best.id)
            superseded.extend(
                Superseded(other.id, best.id) for other in cluster if other.id != best.id
            )
    kept = [item for item in items if item.id in winners]
    return kept, sorted(superseded, key=lambda s: s.item_id)
