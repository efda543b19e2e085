"""Late-arriving and reprocessed scenes: which items make an already processed
(date, AOI) partition incomplete, and which window of the catalog the sensor watches.

An item is *late* for an AOI it intersects when the (acquisition day, AOI) partition was
materialized and that partition's run did not see it, or saw different content, whatever
its timestamps: Earth Search's ``updated`` is when
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

from geospatial_pipeline.layout import Partition
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
    """One item late for one (day, AOI) partition."""

    item_id: str
    part: Partition
    updated: dt.datetime
    fingerprint: str
    reason: str
    item: dict[str, Any]

    @property
    def partition(self) -> dt.date:
        """The intended partition day (``late_data/{day}/``)."""
        return self.part.day


def late_record(lates: Sequence[LateItem], detected_at: dt.datetime) -> dict[str, Any]:
    """The record of one late item under late_data/{day}/{item}.json: the item and every
    AOI partition it is late for."""
    first = lates[0]
    return {
        "item_id": first.item_id,
        "intended_partition": first.partition.isoformat(),
        "aois": sorted({late.part.aoi for late in lates}),
        "arrived_at": first.updated.isoformat(),
        "detected_at": detected_at.isoformat(),
        "fingerprint": first.fingerprint,
        "reasons": {late.part.aoi: late.reason for late in lates},
        "item": first.item,
    }


@dataclass(frozen=True)
class Judgement:
    late: list[LateItem]
    not_late: list[dict[str, str]]  # {"id", "why"} for the sensor's metadata/logs


def judge(
    items: Iterable[tuple[dict[str, Any], Sequence[str]]],
    *,
    materialized_at: Callable[[Partition], dt.datetime | None],
    seen: Callable[[Partition], Mapping[str, str]],
    first_day: dt.date,
    last_day: dt.date,
    quarantined: Callable[[Partition], Mapping[str, str]] | None = None,
) -> Judgement:
    """``items`` pairs each item with the AOIs it intersects. ``seen(part)`` maps every
    item id the partition's latest run saw to its content fingerprint; it is only asked
    for partitions that were materialized. ``quarantined(part)`` maps the items that run
    saw but could not land to the reason: they are late until a run lands them (one re-run
    per content, by the run key)."""
    late: list[LateItem] = []
    not_late: list[dict[str, str]] = []
    for item, aois in items:
        item_id = str(item.get("id"))
        day, updated = item_day(item), item_updated(item)
        if day is None or updated is None:
            not_late.append({"id": item_id, "why": "no datetime or updated time"})
            continue
        if not first_day <= day <= last_day:
            not_late.append({"id": item_id, "why": f"day {day} outside the partitions"})
            continue
        fingerprint = content_fingerprint(item)
        for aoi in sorted(set(aois)):
            part = Partition(day, aoi)
            processed = materialized_at(part)
            if processed is None:
                not_late.append({"id": item_id, "why": f"{part} not materialized yet"})
                continue
            used = seen(part)
            held = quarantined(part) if quarantined else {}
            if used.get(item_id) == fingerprint and item_id not in held:
                # Also covers a superseded twin the run saw and deduped away.
                not_late.append({"id": item_id, "why": f"seen unchanged by the run of {part}"})
                continue
            run = f"the run of {part} (materialized at {processed.isoformat()})"
            if item_id in held:
                reason = f"quarantined by {run} ({held[item_id]})"
            elif item_id in used:
                reason = f"content differs from the version {run} saw"
            else:
                reason = f"not among the {len(used)} item(s) {run} saw"
            reason += f"; indexed at {updated.isoformat()}"
            late.append(LateItem(item_id, part, updated, fingerprint, reason, item))
    return Judgement(sorted(late, key=lambda i: (i.part, i.item_id)), not_late)


def run_key(part: Partition, items: Sequence[LateItem]) -> str:
    """Same (day, AOI) and same late items (ids and content) -> same key: Dagster launches
    it once however often the overlap window brings them back. A new item, even one whose
    ``updated`` ties an earlier one's, gives a new key."""
    newest = max(i.updated for i in items).astimezone(dt.UTC)
    digest = hashlib.sha256(
        "\n".join(sorted(f"{i.item_id}={i.fingerprint}" for i in items)).encode("utf-8")
    ).hexdigest()[:16]
    return f"late-scenes:{part.day.isoformat()}:{part.aoi}:{newest.isoformat()}:{digest}"
