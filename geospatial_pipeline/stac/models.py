"""The fields of a STAC item the pipeline relies on, validated with pydantic.

Items are kept as raw dicts (so the ItemCollection we persist is exactly what the API
sent); `SceneItem` is the validated view used for decisions.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.stac.hrefs import AssetHostPolicy

# Item ids become object-key components and file names. Rather than encode hostile ids
# (which could then collide with, or look like, real ones), an id must already be a safe
# component: ASCII letters, digits, '.', '_' and '-', starting with a letter or digit, at
# most 200 characters (storage.keys leaves such a value unchanged). Earth Search ids all are.
ITEM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class AssetModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    href: str = Field(min_length=1)
    type: str | None = None


class SceneItem(BaseModel):
    """Validated view of one STAC item."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    collection: str | None
    acquired_at: dt.datetime
    geometry: dict[str, Any]
    bbox: list[float]
    platform: str | None
    mgrs_tile: str | None
    cloud_cover: float | None = Field(default=None, ge=0.0, le=100.0)
    processing_baseline: str | None
    boa_offset_applied: bool | None
    generation_time: dt.datetime | None
    created: dt.datetime | None
    updated: dt.datetime | None
    assets: dict[str, AssetModel]

    @field_validator("acquired_at", "generation_time", "created", "updated")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # STAC requires RFC 3339 with an offset; a naive time is read as UTC.
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not ITEM_ID.fullmatch(value):
            raise ValueError(
                "must be 1-200 ASCII letters, digits, '.', '_' or '-', starting with a "
                f"letter or digit (it becomes an object key), got {value!r}"
            )
        return value

    @field_validator("geometry")
    @classmethod
    def _valid_geometry(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            geom = shape(value)
        except Exception as exc:
            raise ValueError(f"geometry is not valid GeoJSON: {exc}") from exc
        if geom.is_empty:
            raise ValueError("geometry is empty")
        # GeoJSON is WGS 84 longitude/latitude; a footprint in projected metres (a UTM
        # easting of 399960) would otherwise be stored and intersected as if it were.
        _check_lonlat(geom.bounds, "coordinates")
        return value

    @field_validator("bbox")
    @classmethod
    def _valid_bbox(cls, value: list[float]) -> list[float]:
        if len(value) not in (4, 6):
            raise ValueError(f"bbox must have 4 or 6 numbers, got {len(value)}")
        half = len(value) // 2
        # Min x may exceed max x for an item across the antimeridian, so only ranges count.
        _check_lonlat((value[0], value[1], value[half], value[half + 1]), "bbox")
        return value

    @property
    def shape(self) -> BaseGeometry:
        return shape(self.geometry)

    @property
    def acquisition_date(self) -> dt.date:
        return self.acquired_at.date()

    @property
    def baseline_tuple(self) -> tuple[int, ...]:
        return baseline_version(self.processing_baseline)


def _check_lonlat(bounds: tuple[float, float, float, float], what: str) -> None:
    minx, miny, maxx, maxy = bounds
    if not all(-180.0 <= x <= 180.0 for x in (minx, maxx)) or not all(
        -90.0 <= y <= 90.0 for y in (miny, maxy)
    ):
        raise ValueError(
            f"{what} outside longitude [-180, 180] / latitude [-90, 90] (bounds "
            f"{[minx, miny, maxx, maxy]}): GeoJSON must be in EPSG:4326, not projected"
        )


def baseline_version(baseline: str | None) -> tuple[int, ...]:
    """'05.00' -> (5, 0); unknown baselines sort first."""
    if not baseline:
        return ()
    try:
        return tuple(int(part) for part in baseline.split("."))
    except ValueError:
        return ()


def _mgrs_tile(props: dict[str, Any]) -> str | None:
    # Earth Search v1 splits the tile into three properties; `grid:code` is "MGRS-32TMT".
    zone, band, square = (
        props.get("mgrs:utm_zone"),
        props.get("mgrs:latitude_band"),
        props.get("mgrs:grid_square"),
    )
    if zone is not None and band and square:
        return f"{int(zone):02d}{band}{square}"
    code = props.get("grid:code")
    if isinstance(code, str) and code.startswith("MGRS-"):
        return code.removeprefix("MGRS-")
    tile = props.get("s2:mgrs_tile")
    return tile if isinstance(tile, str) else None


class ItemValidationError(ValueError):
    def __init__(self, item_id: str, reason: str) -> None:
        super().__init__(f"item {item_id}: {reason}")
        self.item_id = item_id
        self.reason = reason


def validate_item(
    raw: dict[str, Any], required_bands: list[str], hosts: AssetHostPolicy | None = None
) -> SceneItem:
    """Return the validated view of ``raw`` or raise ItemValidationError saying why not.

    With ``hosts``, the href of every required band must be one the pipeline may open.
    """
    item_id = str(raw.get("id") or "<missing id>")
    if raw.get("type") != "Feature":
        raise ItemValidationError(item_id, f"type must be 'Feature', got {raw.get('type')!r}")
    props = raw.get("properties")
    if not isinstance(props, dict):
        raise ItemValidationError(item_id, "properties missing")
    assets = raw.get("assets")
    if not isinstance(assets, dict):
        raise ItemValidationError(item_id, "assets missing")
    missing = [band for band in required_bands if band not in assets]
    if missing:
        raise ItemValidationError(item_id, f"missing band asset(s) {missing}")
    try:
        scene = SceneItem(
            id=raw.get("id"),
            collection=raw.get("collection"),
            acquired_at=props.get("datetime"),
            geometry=raw.get("geometry"),
            bbox=raw.get("bbox"),
            platform=props.get("platform"),
            mgrs_tile=_mgrs_tile(props),
            cloud_cover=props.get("eo:cloud_cover"),
            processing_baseline=props.get("s2:processing_baseline"),
            boa_offset_applied=props.get("earthsearch:boa_offset_applied"),
            generation_time=props.get("s2:generation_time"),
            created=props.get("created"),
            updated=props.get("updated"),
            assets={band: assets[band] for band in required_bands},
        )
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ItemValidationError(item_id, reasons) from None
    if hosts is not None:
        for band in required_bands:
            refusal = hosts.refusal(scene.assets[band].href)
            if refusal is not None:
                raise ItemValidationError(item_id, f"assets.{band}.href: {refusal}")
    return scene
