"""A job comparing, for a date range, what the catalog holds over the AOIs with what the
pipeline stored — gaps in both directions, per day (metadata and a warehouse table)."""

import datetime as dt
from typing import Any

from dagster import Config, MetadataValue, OpExecutionContext, Output, job, op
from pydantic import field_validator

from geospatial_pipeline.assets.preview import markdown_table
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.stac.search import AoiQuery, open_client, search_day
from geospatial_pipeline.warehouse.tables import CATALOG_RECONCILIATION, SCENE_METADATA

MAX_DAYS = 366


class ReconcileConfig(Config):
    start_date: str
    end_date: str

    @field_validator("start_date", "end_date")
    @classmethod
    def _iso(cls, value: str) -> str:
        dt.date.fromisoformat(value)
        return value


def reconcile_day(
    catalog_by_aoi: dict[str, list[str]], stored_by_aoi: dict[str, list[str]]
) -> list[dict[str, Any]]:
    out = []
    for aoi in sorted(set(catalog_by_aoi) | set(stored_by_aoi)):
        catalog, stored = set(catalog_by_aoi.get(aoi, [])), set(stored_by_aoi.get(aoi, []))
        out.append(
            {
                "aoi": aoi,
                "catalog_items": len(catalog),
                "stored_items": len(stored),
                "missing": sorted(catalog - stored),
                "extra": sorted(stored - catalog),
            }
        )
    return out


@op(description="Search the catalog day by day and compare with the warehouse's rows.")
def reconcile_catalog_op(
    context: OpExecutionContext,
    config: ReconcileConfig,
    stac: StacSearchResource,
    scope: ScopeResource,
    warehouse: WarehouseResource,
) -> Output[dict[str, Any]]:
    start, end = dt.date.fromisoformat(config.start_date), dt.date.fromisoformat(config.end_date)
    if end < start or (end - start).days >= MAX_DAYS:
        raise ValueError(
            f"date range {start}..{end}: end must follow start, at most {MAX_DAYS} days"
        )
    settings = stac.settings()
    client = open_client(settings)
    queries = [AoiQuery(a.name, a.geojson, a.bbox) for a in scope.aoi_configs()]
    checked_at = dt.datetime.now(dt.UTC)
    report: list[dict[str, Any]] = []
    day = start
    while day <= end:
        found = search_day(client, settings, day, queries, scope.bands)
        stored: dict[str, list[str]] = {}
        for row in warehouse.fetch_partition(SCENE_METADATA, day):
            stored.setdefault(row["aoi"], []).append(row["item_id"])
        rows = [
            {"day": day, "checked_at": checked_at, **r} for r in reconcile_day(found.by_aoi, stored)
        ]
        warehouse.replace_partition(CATALOG_RECONCILIATION, day, rows)
        report.extend(rows)
        day += dt.timedelta(days=1)
    gaps = [r for r in report if r["missing"] or r["extra"]]
    for r in gaps:
        context.log.warning(
            "%s %s: %d missing, %d extra", r["day"], r["aoi"], len(r["missing"]), len(r["extra"])
        )
    summary = {
        "days": (end - start).days + 1,
        "days_with_gaps": len({r["day"] for r in gaps}),
        "missing": sum(len(r["missing"]) for r in report),
        "extra": sum(len(r["extra"]) for r in report),
    }
    return Output(
        summary,
        metadata={
            **summary,
            "table": CATALOG_RECONCILIATION.name,
            "gaps": MetadataValue.md(
                markdown_table(
                    [
                        {
                            "day": r["day"].isoformat(),
                            "aoi": r["aoi"],
                            "catalog": r["catalog_items"],
                            "stored": r["stored_items"],
                            "missing": ", ".join(r["missing"]),
                            "extra": ", ".join(r["extra"]),
                        }
                        for r in gaps
                    ],
                    limit=100,
                )
            ),
        },
    )


@job(
    name="reconcile_catalog",
    description="Compare catalog and stored scenes for a date range (run config: "
    "ops.reconcile_catalog_op.config.start_date / end_date).",
)
def reconcile_catalog_job() -> None:
    reconcile_catalog_op()
