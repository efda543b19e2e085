"""Late-arriving and reprocessed scenes: which items make an already processed day
incomplete, and which window of the catalog the sensor watches.

An item is *late* when its acquisition day was materialized and the day's run did not see
it, or saw different content, whatever its timestamps: Earth Search's ``updated`` is when
the item was indexed, not when it became searchable, so an item can appear after the day's
search with an ``updated`` older than the materialization (or than the sensor's cursor).
The run's own record of what it saw (``seen`` in the day's persisted ItemCollection, every
item the search returned, superseded and filtered ones included) is the reference. An item
of a day that was never materialized is not late: the day's normal run will pick it up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from geospatial_pipeline.stac.search import content_fingerprint

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
class Watch:
    """What one sensor tick asks the catalog for."""

    first_day: dt.date
    last_day: dt.date
    cursor: dt.datetime
    overlap: dt.timedelta
    server_filter: bool  # the API filters on `updated` itself (query or CQL2 filter)
    bound: str  # where first_day comes from, in words

    @property
    def updated_after(self) -> dt.datetime:
        # Looking again behind the cursor catches items that became searchable after an
        # item with a newer `updated` moved the cursor.
        return max(EPOCH, self.cursor - self.overlap)

    def describe(self) -> str:
        where = "on the server" if self.server_filter else "on the client"
        hours = self.overlap.total_seconds() / 3600
        return (
            f"acquired {self.first_day.isoformat()}..{self.last_day.isoformat()} "
            f"({self.bound}) and updated after {self.updated_after.isoformat()} "
            f"(cursor {self.cursor.isoformat()} minus the {hours:g} h overlap, "
            f"filtered {where})"
        )


def watch_window(
    *,
    today: dt.date,
    start_date: dt.date,
    cursor: dt.datetime,
    overlap: dt.timedelta,
    server_filter: bool,
    lookback_days: int | None,
    unfiltered_lookback_days: int,
) -> Watch:
    """Every partition day where the API filters on ``updated`` (a tick then downloads only
    what changed); a bounded lookback where it cannot (a tick downloads every item of the
    watched days) or where the configuration asks for one."""
    if lookback_days is not None:
        first = max(start_date, today - dt.timedelta(days=lookback_days))
        bound = f"lookback of late_data.lookback_days={lookback_days}"
    elif server_filter:
        first = start_date
        bound = "every partition day from partitions.start_date"
    else:
        first = max(start_date, today - dt.timedelta(days=unfiltered_lookback_days))
        bound = (
            f"lookback of late_data.unfiltered_lookback_days={unfiltered_lookback_days}: "
            "the API declares neither the query nor the filter extension, so it cannot "
            "filter on `updated` and older days are not watched"
        )
    return Watch(first, today, cursor, overlap, server_filter, bound)


@dataclass(frozen=True)
class LateItem:
    item_id: str
    partition: dt.date
    updated: dt.datetime
    fingerprint: str
    reason: str
    item: dict[str, Any]

    def record(self, detected_at: dt.datetime) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "intended_partition": self.partition.isoformat(),
            "arrived_at": self.updated.isoformat(),
            "detected_at": detected_at.isoformat(),
            "fingerprint": self.fingerprint,
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
    first_day: dt.date,
    last_day: dt.date,
    quarantined: Callable[[dt.date], Mapping[str, str]] | None = None,
) -> Judgement:
    """``seen(day)`` maps every item id the day's latest run saw to its content
    fingerprint; it is only asked for days that were materialized. ``quarantined(day)``
    maps the items that run saw but could not land to the reason: they are late until a
    run lands them (one re-run per content, by the run key)."""
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
        processed = materialized_at(day)
        if processed is None:
            not_late.append({"id": item_id, "why": f"{day} not materialized yet"})
            continue
        fingerprint = content_fingerprint(item)
        used = seen(day)
        held = quarantined(day) if quarantined else {}
        if used.get(item_id) == fingerprint and item_id not in held:
            # Also covers a superseded twin the run saw and deduped away.
            not_late.append({"id": item_id, "why": f"seen unchanged by the run of {day}"})
            continue
        run = f"the run of {day} (materialized at {processed.isoformat()})"
        if item_id in held:
            reason = f"quarantined by {run} ({held[item_id]})"
        elif item_id in used:
            reason = f"content differs from the version {run} saw"
        else:
            reason = f"not among the {len(used)} item(s) {run} saw"
        reason += f"; indexed at {updated.isoformat()}"
        late.append(LateItem(item_id, day, updated, fingerprint, reason, item))
    return Judgement(sorted(late, key=lambda i: (i.partition, i.item_id)), not_late)


def run_key(partition: dt.date, items: Sequence[LateItem]) -> str:
    """Same day and same late items (ids and content) -> same key: Dagster launches it
    once however often the overlap window brings them back. A new item, even one whose
    ``updated`` ties an earlier one's, gives a new key."""
    newest = max(i.updated for i in items).astimezone(dt.UTC)
    digest = hashlib.sha256(
        "\n".join(sorted(f"{i.item_id}={i.fingerprint}" for i in items)).encode("utf-8")
    ).hexdigest()[:16]
    return f"late-scenes:{partition.isoformat()}:{newest.isoformat()}:{digest}"
