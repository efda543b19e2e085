"""A job comparing, for a date range, what the catalog holds over each registered AOI with
what the pipeline stored — gaps in both directions, per (date, AOI) (metadata and a
warehouse table whose rows are replaced per (date, AOI))."""

import datetime as dt
from typing import Any

from dagster import Config, MetadataValue, OpExecutionContext, Output, job, op
from pydantic import field_validator

from geospatial_pipeline.assets.preview import markdown_table
from geospatial_pipeline.config import RequestsConfig, default_of
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.resources.stac import ScopeResource, StacSearchResource
from geospatial_pipeline.resources.storage import ObjectStoreResource
from geospatial_pipeline.resources.warehouse import WarehouseResource
from geospatial_pipeline.stac.search import AoiQuery, open_client, search_day
from geospatial_pipeline.warehouse.tables import CATALOG_RECONCILIATION, SCENE_METADATA

# The same bound as an imagery request: one search per day and AOI.
MAX_DAYS = default_of(RequestsConfig, "max_days")


class ReconcileConfig(Config):
    start_date: str
    end_date: str
    # Empty: every registered AOI active on the day.
    aois: list[str] = []

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


@op(
    description="Search the catalog per day and AOI and compare with the warehouse's rows "
    "of that (date, AOI)."
)
def reconcile_catalog_op(
    context: OpExecutionContext,
    config: ReconcileConfig,
    stac: StacSearchResource,
    scope: ScopeResource,
    object_store: ObjectStoreResource,
    warehouse: WarehouseResource,
) -> Output[dict[str, Any]]:
    start, end = dt.date.fromisoformat(config.start_date), dt.date.fromisoformat(config.end_date)
    if end < start or (end - start).days >= MAX_DAYS:
        raise ValueError(
            f"date range {start}..{end}: end must follow start, at most {MAX_DAYS} days"
        )
    settings = stac.settings()
    client = open_client(settings)
    store = object_store.store()
    records = (
        [registry.load(store, name) for name in config.aois]
        if config.aois
        else registry.load_all(store)
    )
    checked_at = dt.datetime.now(dt.UTC)
    report: list[dict[str, Any]] = []
    day = start
    while day <= end:
        for record in (r for r in records if r.active_on(day)):
            aoi = record.config()
            query = AoiQuery(aoi.name, aoi.geojson, aoi.bbox)
            found = search_day(client, settings, day, [query], scope.bands)
            stored = {
                aoi.name: [
                    row["item_id"]
                    for row in warehouse.fetch_partition(SCENE_METADATA, (day, aoi.name))
                ]
            }
            rows = [
                {"day": day, "checked_at": checked_at, **r}
                for r in reconcile_day({aoi.name: found.by_aoi.get(aoi.name, [])}, stored)
            ]
            warehouse.replace_partition(CATALOG_RECONCILIATION, (day, aoi.name), rows)
            report.extend(rows)
        day += dt.timedelta(days=1)
    gaps = [r for r in report if r["missing"] or r["extra"]]
    for r in gaps:
        context.log.warning(
            "%s %s: %d missing, %d extra", r["day"], r["aoi"], len(r["missing"]), len(r["extra"])
        )
    summary = {
        "days": (end - start).days + 1,
        "partitions_checked": len(report),
        "partitions_with_gaps": len(gaps),
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
    description="Compare catalog and stored scenes per (date, AOI) for a date range (run "
    "config: ops.reconcile_catalog_op.config.start_date / end_date / aois).",
)
def reconcile_catalog_job() -> None:
    reconcile_catalog_op()
