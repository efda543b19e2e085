"""Late-arriving and reprocessed scenes: which newly indexed items make a processed day
incomplete.

An item is *late* when its acquisition day's partition was materialized before the item's
``updated`` time, or when it was indexed more than the grace period after the end of its
day. An item the day's search already saw with the same content (a re-publication with a
new ``updated`` stamp) is never late.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from geospatial_pipeline.stac.search import content_fingerprint, day_window

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def item_updated(item: Mapping[str, Any]) -> dt.datetime | None:
    props = item.get("properties", {})
    return parse_time(props.get("updated") or props.get("created"))


def item_day(item: Mapping[str, Any]) -> dt.date | None:
    acquired = parse_time(item.get("properties", {}).get("datetime"))
    return acquired.astimezone(dt.UTC).date() if acquired else None


@dataclass(frozen=True)
class LateItem:
    item_id: str
    partition: dt.date
    updated: dt.datetime
    reason: str
    item: dict[str, Any]

    def record(self, detected_at: dt.datetime) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "intended_partition": self.partition.isoformat(),
            "arrived_at": self.updated.isoformat(),
            "detected_at": detected_at.isoformat(),
            "reason": self.reason,
            "item": self.item,
        }


@dataclass(frozen=True)
class Judgement:
    late: list[LateItem]
    not_late: list[dict[str, str]]  # {"id", "why"} for the sensor's metadata/logs


def judge(
    items: Iterable[dict[str, Any]],
    *,
    materialized_at: Callable[[dt.date], dt.datetime | None],
    seen: Callable[[dt.date], Mapping[str, str]],
    grace: dt.timedelta,
    first_day: dt.date,
    last_day: dt.date,
) -> Judgement:
    late: list[LateItem] = []
    not_late: list[dict[str, str]] = []
    for item in items:
        item_id = str(item.get("id"))
        day, updated = item_day(item), item_updated(item)
        if day is None or updated is None:
            not_late.append({"id": item_id, "why": "no datetime or updated time"})
            continue
        if not first_day <= day <= last_day:
            not_late.append({"id": item_id, "why": f"day {day} outside the partitions"})
            continue
        if seen(day).get(item_id) == content_fingerprint(item):
            not_late.append({"id": item_id, "why": "unchanged re-publication"})
            continue
        processed = materialized_at(day)
        _, day_end = day_window(day)
        if processed is not None and processed < updated:
            reason = (
                f"indexed at {updated.isoformat()}, after its partition {day} was "
                f"materialized at {processed.isoformat()}"
            )
        elif updated - day_end > grace:
            hours = (updated - day_end).total_seconds() / 3600
            reason = (
                f"indexed {hours:.1f} h after the end of {day} "
                f"(grace period {grace.total_seconds() / 3600:g} h)"
            )
        else:
            not_late.append({"id": item_id, "why": "within the grace period"})
            continue
        late.append(LateItem(item_id, day, updated, reason, item))
    return Judgement(sorted(late, key=lambda i: (i.partition, i.item_id)), not_late)


def run_key(partition: dt.date, newest_update: dt.datetime) -> str:
    """Same partition and same newest arrival -> same key: Dagster launches it once."""
    return f"late-scenes:{partition.isoformat()}:{newest_update.astimezone(dt.UTC).isoformat()}"
