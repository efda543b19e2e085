"""What every door to the registry shares: syncing the configuration's AOIs and accepting
a request, as plain functions over the object store (the Dagster sensors and the CLI call
these, so the three doors are one code path)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from geospatial_pipeline.config import AoiConfig, PartitionsConfig
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.ondemand import registry
from geospatial_pipeline.ondemand.requests import ImageryRequest, RequestRejected
from geospatial_pipeline.storage.object_store import ObjectStore


def sync_config_aois(
    store: ObjectStore,
    aois: Sequence[AoiConfig],
    partitions: PartitionsConfig,
    *,
    now: dt.datetime,
) -> list[registry.Registration]:
    """Register the configuration's AOIs (first day ``partitions.start_date``, origin
    ``config``). Idempotent: a registered AOI with the same geometry is left as it is; one
    whose geometry changed in the file is refused (AoiConflict) rather than redrawn under
    the data already produced for it."""
    known = {r.name for r in registry.load_all(store)}
    new = [a for a in aois if a.name not in known]
    for i, aoi in enumerate(new, start=1):
        registry.check_partition_budget(
            aoi_count=len(known) + i, partitions=partitions, adding=aoi.name
        )
    return [
        registry.register(
            store,
            registry.new_record(
                aoi, first_day=partitions.start_date, origin=registry.CONFIG_ORIGIN, now=now
            ),
        )
        for aoi in aois
    ]


@dataclass(frozen=True)
class Acceptance:
    request: ImageryRequest
    record: registry.AoiRecord
    new_aoi: bool

    @property
    def days(self) -> list[dt.date]:
        return self.request.days()


def accept(
    store: ObjectStore,
    request: ImageryRequest,
    *,
    partitions: PartitionsConfig,
    registered: Collection[str],
    now: dt.datetime,
) -> Acceptance:
    """Check a valid request against the registry and the partitions and register its AOI
    when it is new. Raises RequestRejected (field-named errors) before writing anything."""
    errors: list[str] = []
    if request.start_date < partitions.start_date:
        errors.append(
            f"start_date: {request.start_date} is before partitions.start_date "
            f"{partitions.start_date}"
        )
    if partitions.end_date is not None and request.end_date > partitions.end_date:
        errors.append(
            f"end_date: {request.end_date} is after partitions.end_date {partitions.end_date}"
        )
    wanted = request.aoi.as_aoi_config()
    stored = registry.find(store, request.aoi.name)
    if stored is None and wanted is None:
        try:
            registry.load(store, request.aoi.name)  # its error lists the registered names
        except registry.UnknownAoi as exc:
            errors.append(f"aoi.name: {exc}; give a geometry or bbox to register it")
    if stored is not None:
        if stored.retired_on is not None and request.end_date >= stored.retired_on:
            errors.append(
                f"aoi.name: AOI {stored.name!r} was retired on {stored.retired_on} "
                "(un-retire it, or request another name)"
            )
        elif wanted is not None and not registry.same_geometry(stored.geometry, wanted.geojson):
            errors.append(
                f"aoi.geometry: AOI {stored.name!r} is registered (origin {stored.origin}, "
                f"first day {stored.first_day}) with another geometry; a name's geometry "
                "never changes: use a new name for the new area"
            )
    if stored is None and wanted is not None and not errors:
        try:
            registry.check_partition_budget(
                aoi_count=len(set(registered) | {wanted.name}),
                partitions=partitions,
                adding=wanted.name,
            )
        except ConfigError as exc:
            errors.append(f"aoi.name: {exc}")
    if errors:
        raise RequestRejected(errors)
    if stored is not None:
        return Acceptance(request, stored, new_aoi=False)
    assert wanted is not None
    origin = f"{registry.REQUEST_ORIGIN_PREFIX}{request.request_id}"
    record = registry.new_record(wanted, first_day=partitions.start_date, origin=origin, now=now)
    try:
        registration = registry.register(store, record)
    except registry.AoiConflict as exc:
        raise RequestRejected([f"aoi.geometry: {exc}"]) from None
    return Acceptance(request, registration.record, new_aoi=registration.created)
