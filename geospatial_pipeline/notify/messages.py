"""Alert messages: what happened, where (partition), why, and a link into the Dagster UI.

Plain functions of plain data, so every message can be built and checked without a run.
Receivers (a JSON webhook, Slack) render the same ``Message`` (notify/deliver.py).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlencode

from geospatial_pipeline.layout import Partition
from geospatial_pipeline.ondemand.requests import RequestStatus
from geospatial_pipeline.stac.late import LateItem

Event = Literal["run_failed", "quality_gate", "late_scenes", "request_ended"]

# A message stays readable in a chat window: longer lists end with "… and N more".
MAX_LINES = 20


@dataclass(frozen=True)
class Message:
    """One alert. ``fields`` are short facts (partition, reason, …) in display order;
    ``link`` is the page to open; ``details`` are extra lines (one per partition, …)."""

    event: Event
    title: str
    link: str
    fields: Mapping[str, str]
    details: tuple[str, ...] = ()
    links: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The message as plain text (chat fallbacks, logs)."""
        lines = [self.title, *(f"{k}: {v}" for k, v in self.fields.items()), *self.details]
        others = [f"{name}: {url}" for name, url in self.links.items()]
        return "\n".join([*lines, self.link, *others])


def run_url(ui_base_url: str, run_id: str) -> str:
    return f"{ui_base_url}/runs/{run_id}"


def asset_url(
    ui_base_url: str,
    asset_path: Sequence[str],
    *,
    view: str | None = None,
    partition: str | None = None,
) -> str:
    url = f"{ui_base_url}/assets/{'/'.join(quote(p, safe='') for p in asset_path)}"
    query = {k: v for k, v in (("view", view), ("partition", partition)) if v}
    return f"{url}?{urlencode(query)}" if query else url


def runs_tagged_url(ui_base_url: str, key: str, value: str) -> str:
    """The UI's run list filtered on one tag."""
    return f"{ui_base_url}/runs?{urlencode({'q[]': f'tag:{key}={value}'})}"


def partition_label(part: Partition) -> str:
    # Written as the UI and the CLI spell the partition key (Dagster orders the
    # dimensions by name: aoi before date), so it can be pasted into either.
    return f"{part.aoi}|{part.day.isoformat()}"


def _capped(lines: Sequence[str]) -> tuple[str, ...]:
    if len(lines) <= MAX_LINES:
        return tuple(lines)
    return (*lines[:MAX_LINES], f"… and {len(lines) - MAX_LINES} more")


def run_failed(
    *,
    ui_base_url: str,
    run_id: str,
    job_name: str,
    partition: str | None,
    reason: str,
    failed_steps: Sequence[str] = (),
) -> Message:
    fields = {
        "job": job_name,
        "partition": partition or "(none)",
        "reason": reason,
        **({"failed steps": ", ".join(failed_steps)} if failed_steps else {}),
        "run": run_id,
    }
    return Message(
        event="run_failed",
        title=f"Run failed: {job_name}" + (f" for {partition}" if partition else ""),
        link=run_url(ui_base_url, run_id),
        fields=fields,
    )


def quality_gate(
    *,
    ui_base_url: str,
    run_id: str,
    asset_path: Sequence[str],
    check_name: str,
    partition: str | None,
    check_description: str | None,
    reason: str | None,
) -> Message:
    """A blocking check failed: the partition stopped at ``asset_path``, nothing downstream
    of it was materialized."""
    asset = "/".join(asset_path)
    fields = {
        "check": check_name,
        "asset": asset,
        "partition": partition or "(none)",
        "check description": check_description or "(none)",
        "reason": reason or "the check failed",
    }
    return Message(
        event="quality_gate",
        title=f"Quality gate stopped {partition or asset}: {check_name} failed on {asset}",
        link=asset_url(ui_base_url, asset_path, view="checks"),
        fields=fields,
        links={"run": run_url(ui_base_url, run_id)},
    )


def late_scenes(
    *,
    ui_base_url: str,
    lates: Sequence[LateItem],
    asset_path: Sequence[str],
    trigger_tag: tuple[str, str],
) -> Message:
    """One summary of a sensor tick's late items: a line per partition (its items and why
    they are late), linked to the runs the sensor requested for them."""
    if not lates:
        raise ValueError("late_scenes: no late item to report")
    by_part: dict[Partition, list[LateItem]] = defaultdict(list)
    for late in lates:
        by_part[late.part].append(late)
    items = sorted({late.item_id for late in lates})
    days = sorted({late.part.day for late in lates})
    lines = []
    for part, found in sorted(by_part.items()):
        reasons = "; ".join(sorted({late.reason for late in found}))
        ids = ", ".join(sorted({late.item_id for late in found}))
        lines.append(f"{partition_label(part)}: {ids} ({reasons})")
    return Message(
        event="late_scenes",
        title=(f"{len(items)} late scene(s) for {len(by_part)} partition(s); re-runs requested"),
        link=runs_tagged_url(ui_base_url, *trigger_tag),
        fields={
            "partitions": ", ".join(partition_label(p) for p in sorted(by_part)[:MAX_LINES])
            + ("…" if len(by_part) > MAX_LINES else ""),
            "days": _day_span(days),
            "reason": "items the partitions' runs did not see",
        },
        details=_capped(lines),
        links={"asset": asset_url(ui_base_url, asset_path, view="partitions")},
    )


def _day_span(days: Sequence[dt.date]) -> str:
    first, last = days[0].isoformat(), days[-1].isoformat()
    return first if first == last else f"{first} … {last} ({len(days)} days)"


def request_ended(*, ui_base_url: str, status: RequestStatus, request_tag: str) -> Message:
    """A request whose every day has ended: complete (all succeeded) or failed."""
    if status.state not in ("complete", "failed"):
        raise ValueError(
            f"request_ended: request {status.request_id} is {status.state!r}, not ended"
        )
    failed = [d for d in status.partitions if d.state == "failed"]
    labels = [partition_label(Partition(d.date, d.aoi)) for d in status.partitions]
    days = sorted(d.date for d in status.partitions)
    reason = (
        f"{len(failed)} of {len(status.partitions)} day(s) failed"
        if failed
        else f"all {len(status.partitions)} day(s) succeeded"
    )
    details = [
        f"{partition_label(Partition(d.date, d.aoi))}: failed, run "
        + (run_url(ui_base_url, d.run_id) if d.run_id else "(none)")
        for d in failed
    ]
    products = sum(len(d.stac_items) for d in status.partitions)
    return Message(
        event="request_ended",
        title=f"Imagery request {status.request_id} {status.state}",
        link=runs_tagged_url(ui_base_url, request_tag, status.request_id),
        fields={
            "request": status.request_id,
            "aoi": status.aoi or "(unknown)",
            "partitions": labels[0] if len(labels) == 1 else f"{len(labels)} days",
            "days": _day_span(days) if days else "(none)",
            "reason": reason,
            "products": str(products),
        },
        details=_capped(details),
    )
