"""Pipeline configuration: one YAML file, validated by pydantic before anything runs.

The file's path comes from ``GEOSPATIAL_PIPELINE_CONFIG``; without it the packaged
``default_config.yaml`` is used. Secrets never live in the file: they are read from the
environment (``SNOWFLAKE_PASSWORD``; AWS credentials through the usual AWS chain).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.stac.hrefs import check_allowed_hosts

CONFIG_ENV_VAR = "GEOSPATIAL_PIPELINE_CONFIG"
SNOWFLAKE_PASSWORD_ENV_VAR = "SNOWFLAKE_PASSWORD"  # noqa: S105 - the variable's name, not a secret
# Key-pair authentication, used instead of the password when the key is set (PEM, or its
# base64); the passphrase only for an encrypted key. Names of variables, not secrets.
SNOWFLAKE_PRIVATE_KEY_ENV_VAR = "SNOWFLAKE_PRIVATE_KEY"
SNOWFLAKE_PRIVATE_KEY_PASSWORD_ENV_VAR = "SNOWFLAKE_PRIVATE_KEY_PASSWORD"  # noqa: S105
EARTH_SEARCH_V1 = "https://earth-search.aws.element84.com/v1"

# Data asset keys per known collection (Earth Search v1). Unknown collections accept any
# band name here; the search then checks the collection's `item_assets`.
KNOWN_COLLECTION_BANDS: dict[str, frozenset[str]] = {
    "sentinel-2-l2a": frozenset(
        {
            "coastal",
            "blue",
            "green",
            "red",
            "rededge1",
            "rededge2",
            "rededge3",
            "nir",
            "nir08",
            "nir09",
            "swir16",
            "swir22",
            "scl",
            "aot",
            "wvp",
            "visual",
            "cloud",
            "snow",
        }
    ),
}
DEFAULT_BANDS = ("red", "green", "blue", "nir", "scl")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_of(model: type[BaseModel], field: str) -> Any:
    """The default of ``model.field``: what a resource or settings class mirroring a config
    field uses, so each default is written once, here in the config models."""
    return model.model_fields[field].get_default(call_default_factory=True)


class StacConfig(_Strict):
    api_url: str = EARTH_SEARCH_V1
    collection: str = "sentinel-2-l2a"
    max_cloud_cover: float = Field(default=100.0, ge=0.0, le=100.0)
    max_items_per_day: int = Field(default=200, ge=1, le=10_000)
    page_size: int = Field(default=100, ge=1, le=10_000)
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0, le=20)
    # Where asset hrefs may point (see stac.hrefs): "s3://bucket", "host.name",
    # "http://host:port", "file://" (loopback API only). None: the catalog's data hosts.
    allowed_asset_hosts: list[str] | None = None

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("allowed_asset_hosts")
    @classmethod
    def _asset_hosts(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # api_url is validated first (field order); when it failed, it has its own error.
        api_url = info.data.get("api_url")
        return check_allowed_hosts(value, api_url) if api_url else value


def _check_geometry(geom: BaseGeometry) -> BaseGeometry:
    if geom.is_empty:
        raise ValueError("geometry is empty")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180.0 <= minx <= 180.0 and -180.0 <= maxx <= 180.0):
        raise ValueError(f"longitude out of range [-180, 180]: bounds {geom.bounds}")
    if not (-90.0 <= miny <= 90.0 and -90.0 <= maxy <= 90.0):
        raise ValueError(f"latitude out of range [-90, 90]: bounds {geom.bounds}")
    if not geom.is_valid:
        raise ValueError(f"geometry is invalid ({explain_validity(geom)})")
    if geom.area == 0:
        raise ValueError("geometry has zero area")
    return geom


def _check_no_antimeridian_jump(geom: BaseGeometry) -> None:
    # A ring drawn straight across 180° (179.5 -> -179.5) is, read as lon/lat, a polygon
    # around the rest of the globe; RFC 7946 asks for it cut at 180° instead.
    for polygon in getattr(geom, "geoms", [geom]):
        for ring in (polygon.exterior, *polygon.interiors):
            lons = [x for x, *_ in ring.coords]
            for a, b in pairwise(lons):
                if abs(b - a) > 180.0:
                    raise ValueError(
                        f"geometry has an edge from longitude {a} to {b}, which would go "
                        "the long way round the globe; an AOI crossing the antimeridian must "
                        "be a MultiPolygon cut at 180° (RFC 7946 §3.1.9)"
                    )


def _antimeridian_bbox_parts(bbox: Any) -> list[list[float]] | None:
    """The two halves of a bbox crossing the antimeridian (STAC's west > east), or None.

    West > east is read that way only for a span of at most 180° of longitude: beyond that
    it is far likelier swapped corners, which the bbox check then reports as inverted."""
    if not (
        isinstance(bbox, list | tuple)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
    ):
        return None
    west, south, east, north = (float(v) for v in bbox)
    if not (-180.0 <= east < west <= 180.0 and south < north and east + 360.0 - west <= 180.0):
        return None
    halves = [[west, south, 180.0, north], [-180.0, south, east, north]]
    return [h for h in halves if h[2] > h[0]]


class AoiConfig(_Strict):
    """A named area of interest, as a GeoJSON Polygon/MultiPolygon or a bbox, in EPSG:4326."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    geometry: dict[str, Any] | None = None
    bbox: tuple[float, float, float, float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _antimeridian_bbox(cls, data: Any) -> Any:
        # A bbox crossing 180° is carried as the equivalent RFC 7946 MultiPolygon: every
        # consumer (grid, windows, search) then sees one shape, and the search sends it as
        # `intersects`, which every API reads alike (not all handle west > east bboxes).
        if not isinstance(data, dict) or data.get("geometry") is not None:
            return data
        halves = _antimeridian_bbox_parts(data.get("bbox"))
        if halves is None:
            return data
        coordinates = [[[[w, s], [e, s], [e, n], [w, n], [w, s]]] for w, s, e, n in halves]
        return {
            **{k: v for k, v in data.items() if k != "bbox"},
            "geometry": {"type": "MultiPolygon", "coordinates": coordinates},
        }

    @model_validator(mode="after")
    def _one_shape(self) -> AoiConfig:
        if (self.geometry is None) == (self.bbox is None):
            raise ValueError("give exactly one of 'geometry' or 'bbox'")
        if self.bbox is not None:
            minx, miny, maxx, maxy = self.bbox
            if minx >= maxx or miny >= maxy:
                raise ValueError(
                    f"bbox is inverted or empty: {list(self.bbox)} "
                    "(expected [min_lon, min_lat, max_lon, max_lat]; west > east is read "
                    "as crossing the antimeridian only for spans up to 180° of longitude)"
                )
            _check_geometry(box(*self.bbox))
        else:
            assert self.geometry is not None
            gtype = self.geometry.get("type")
            if gtype not in ("Polygon", "MultiPolygon"):
                raise ValueError(f"geometry type must be Polygon or MultiPolygon, got {gtype!r}")
            try:
                geom = shape(self.geometry)
            except Exception as exc:
                raise ValueError(f"geometry is not valid GeoJSON: {exc}") from exc
            _check_no_antimeridian_jump(geom)
            _check_geometry(geom)
        return self

    @property
    def shape(self) -> BaseGeometry:
        if self.bbox is not None:
            return box(*self.bbox)
        return shape(self.geometry)

    @property
    def geojson(self) -> dict[str, Any]:
        return dict(mapping(self.shape))


def check_unique_aoi_names(aois: list[AoiConfig]) -> list[AoiConfig]:
    seen: set[str] = set()
    for aoi in aois:
        if aoi.name in seen:
            raise ValueError(f"duplicate AOI name {aoi.name!r}")
        seen.add(aoi.name)
    return aois


# Dagster's documentation recommends at most this many partitions per asset.
DEFAULT_MAX_PARTITIONS = 100_000


class ScopeConfig(_Strict):
    """What every partition fetches: the named AOIs and the band asset keys (the top of
    the YAML file; also what the ``scope`` resource re-validates after launchpad edits)."""

    aois: list[AoiConfig] = Field(min_length=1)
    bands: list[str] = Field(default_factory=lambda: list(DEFAULT_BANDS), min_length=1)

    @field_validator("aois")
    @classmethod
    def _unique_names(cls, aois: list[AoiConfig]) -> list[AoiConfig]:
        return check_unique_aoi_names(aois)


class PartitionsConfig(_Strict):
    start_date: dt.date
    # The last day (included) of a finite project; None: up to the latest complete day.
    end_date: dt.date | None = None
    max_partitions: int = Field(default=DEFAULT_MAX_PARTITIONS, ge=1)
    # A backfill runs up to this many days of one AOI per run (benchmarks/README.md,
    # "Dagster overhead"); 1: one run per partition.
    backfill_partitions_per_run: int = Field(default=10, ge=1, le=366)

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _calendar_day(cls, value: Any) -> Any:
        # Partitions are UTC days. A date-time names an instant, whose UTC day may not be
        # the date written in it ("2024-01-01T00:00:00+05:00" is 2023-12-31 in UTC), and
        # pydantic would silently keep the written date: ask for the day itself.
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return value
        hint = ""
        instant = value if isinstance(value, dt.datetime) else None
        if isinstance(value, str):
            try:
                instant = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                instant = None
        if instant is not None and instant.tzinfo is not None:
            hint = f"; that instant lies in the UTC day {instant.astimezone(dt.UTC).date()}"
        raise ValueError(
            "expected a calendar day YYYY-MM-DD (partitions are UTC days), got "
            f"{instant.isoformat() if instant is not None else repr(value)}{hint}"
        )

    @field_validator("start_date")
    @classmethod
    def _not_future(cls, value: dt.date) -> dt.date:
        today = dt.datetime.now(dt.UTC).date()
        if value > today:
            raise ValueError(f"start date {value} is in the future (today is {today} UTC)")
        return value

    @field_validator("end_date")
    @classmethod
    def _after_start(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value < start:
            raise ValueError(f"end date {value} is before partitions.start_date {start}")
        return value

    def day_count(self, today: dt.date | None = None) -> int:
        """Daily partitions per AOI: through end_date when set, else every complete UTC
        day so far (the count then grows by one a day)."""
        if self.end_date is not None:
            return (self.end_date - self.start_date).days + 1
        today = today or dt.datetime.now(dt.UTC).date()
        return max(0, (today - self.start_date).days)


def storage_url(value: str) -> str:
    """A valid object store URL (``s3://bucket/prefix`` or a directory), normalised;
    ValueError says why not. Shared by the config and the resource (launchpad edits)."""
    if not value.strip() or value.strip() == "file://":
        # An empty path resolves to the working directory, which would become the store.
        raise ValueError("is empty: use s3://bucket/prefix or a directory path")
    if "://" in value and not value.startswith(("s3://", "file://")):
        raise ValueError(f"unsupported scheme in {value!r}: use s3://bucket/prefix or a path")
    if value.startswith("s3://") and not value[5:].split("/", 1)[0]:
        raise ValueError("s3 url has no bucket: expected s3://bucket/prefix")
    return value.rstrip("/") if value not in ("/", "s3://") else value


class StorageConfig(_Strict):
    url: str
    endpoint_url: str | None = None
    region: str = "us-east-1"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        return storage_url(value)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")


class DuckDBWarehouseConfig(_Strict):
    kind: Literal["duckdb"]
    path: str


class SnowflakeWarehouseConfig(_Strict):
    kind: Literal["snowflake"]
    account: str
    user: str
    database: str
    schema_name: str = Field(alias="schema")
    warehouse: str
    role: str | None = None
    password_env_var: str = SNOWFLAKE_PASSWORD_ENV_VAR


class TransformConfig(_Strict):
    """Analysis-ready products: one grid per AOI, cloud/shadow mask from SCL, indices."""

    enabled: bool = True
    resolution: float = Field(default=10.0, gt=0, le=1000)
    crs: str | None = None  # default: the UTM zone of each AOI's centroid
    grid_anchor: tuple[float, float] = (0.0, 0.0)
    invalid_scl_classes: list[int] = Field(default_factory=lambda: [0, 1, 3, 8, 9, 10])
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"
    min_valid_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    max_negative_reflectance_share: float = Field(default=0.01, ge=0.0, le=1.0)
    # AOI grids larger than this are processed strip by strip (memory bounded by a strip
    # of about a quarter of this); smaller ones as whole arrays (~60 B per pixel at peak).
    block_pixels: int = Field(default=8_000_000, ge=1024)
    # The warning check aoi_has_usable_scenes flags an AOI with no usable scene (one with
    # valid pixels) on any of its last N materialized days.
    max_days_without_usable_scene: int = Field(default=10, ge=1, le=366)

    @field_validator("crs")
    @classmethod
    def _epsg(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            crs = CRS.from_user_input(value)
        except CRSError as exc:
            raise ValueError(f"unknown CRS {value!r}: {exc}") from None
        epsg = crs.to_epsg()
        if epsg is None:
            raise ValueError(f"CRS {value!r} has no EPSG code")
        from geospatial_pipeline.raster.grid import metric_crs_problem

        problem = metric_crs_problem(crs)
        if problem:
            raise ValueError(f"{problem}, or leave transform.crs unset for each AOI's UTM zone")
        return f"EPSG:{epsg}"

    @field_validator("invalid_scl_classes")
    @classmethod
    def _scl_range(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if not 0 <= v <= 11]
        if bad:
            raise ValueError(f"SCL classes are 0..11, got {bad}")
        return sorted(set(value))


class LateDataConfig(_Strict):
    """The late-scene sensor: which acquisition days it watches and how far behind its
    cursor it looks again. An item is late when its day was materialized without it (or
    with other content), whatever its timestamps (see stac/late.py)."""

    # None: every partition day where the API filters on `updated` on the server, else
    # the last `unfiltered_lookback_days`. A number bounds the watch in both cases.
    lookback_days: int | None = Field(default=None, ge=1, le=36500)
    unfiltered_lookback_days: int = Field(default=30, ge=1, le=36500)
    # Earth Search's `updated` is not when an item became searchable: re-read this much
    # behind the cursor every tick (repeats are recognised, never recorded twice).
    cursor_overlap_hours: float = Field(default=72.0, ge=0)
    minimum_interval_seconds: int = Field(default=3600, ge=30)

    @model_validator(mode="before")
    @classmethod
    def _removed_grace_period(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grace_period_hours" in data:
            raise ValueError(
                "grace_period_hours is no longer used: an item is late when its "
                "day was materialized without it, whatever its timestamps; remove the key"
            )
        return data


class ScheduleConfig(_Strict):
    """The daily schedule materializes the latest complete UTC day, ``delay_hours`` after
    its end (Earth Search indexes most scenes within hours)."""

    enabled: bool = True
    delay_hours: int = Field(default=6, ge=0, le=23)


class RequestsConfig(_Strict):
    """Imagery requests (requests/incoming/ in the object store, the CLI, the UI job): how
    long one may be and how many runs the request sensor launches per tick (the rest go
    out on later ticks)."""

    max_days: int = Field(default=366, ge=1, le=36600)
    max_run_requests_per_tick: int = Field(default=200, ge=1, le=10000)
    minimum_interval_seconds: int = Field(default=30, ge=5)


PGSTAC_PASSWORD_ENV_VAR = "PGSTAC_PASSWORD"  # noqa: S105 - the variable's name, not a secret


class PublishConfig(_Strict):
    """Products in a STAC API: each partition's product items upserted into pgstac (served
    by stac-fastapi-pgstac, e.g. an eoAPI deployment). Unset ``pgstac``: the static
    catalog in the object store only."""

    # libpq DSN without the password, e.g. "postgresql://user@host:5432/db".
    pgstac: str | None = None
    # Read at run time; may be empty (trust or .pgpass authentication) but must be set.
    pgstac_password_env_var: str = PGSTAC_PASSWORD_ENV_VAR
    # The API serving that database, for links in the run metadata.
    stac_api_url: str | None = None

    @field_validator("pgstac")
    @classmethod
    def _dsn_without_password(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(value)
        except Exception as exc:
            # psycopg's message quotes the DSN, which may hold a password.
            raise ValueError(f"is not a PostgreSQL DSN ({type(exc).__name__})") from None
        if "password" in parts:
            raise ValueError(
                "holds a password: give the DSN without it and the password in the "
                "environment variable named by publish.pgstac_password_env_var"
            )
        return value

    @field_validator("stac_api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value


WarehouseConfig = Annotated[
    DuckDBWarehouseConfig | SnowflakeWarehouseConfig, Field(discriminator="kind")
]


class MapsConfig(_Strict):
    """A map of every product: with ``titiler_url`` set (a TiTiler serving its ``/stac``
    endpoints and able to read the object store), product items get ``tilejson``, ``xyz``
    and map-page links built from their render settings (stac/render.py)."""

    titiler_url: str | None = None

    @field_validator("titiler_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value


NotificationEvent = Literal["run_failed", "quality_gate", "late_scenes", "request_ended"]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "run_failed",
    "quality_gate",
    "late_scenes",
    "request_ended",
)
_ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class NotificationsConfig(_Strict):
    """Alerts (alerts.py, notify/): where they go and which events send one. Receivers are
    named by environment variables (webhook URLs and Slack tokens are secrets): none set,
    no alert is sent and no alert sensor runs."""

    # The Dagster UI the messages link to (runs, assets).
    ui_base_url: str = "http://127.0.0.1:3000"
    # A generic JSON webhook (Teams Workflows, Mattermost and others): its URL's variable.
    webhook_url_env_var: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    # Slack through dagster-slack: the bot token's variable and the channel to post to.
    slack_token_env_var: str | None = Field(default=None, pattern=_ENV_VAR_NAME)
    slack_channel: str | None = None
    events: list[NotificationEvent] = Field(default_factory=lambda: list(NOTIFICATION_EVENTS))
    # Per delivery attempt; a receiver that does not answer in time is skipped (no retry).
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("ui_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _slack_pair(self) -> NotificationsConfig:
        if (self.slack_token_env_var is None) != (self.slack_channel is None):
            raise ValueError("give both slack_token_env_var and slack_channel, or neither")
        return self

    @property
    def has_receiver(self) -> bool:
        return self.webhook_url_env_var is not None or self.slack_token_env_var is not None

    def sends(self, event: NotificationEvent) -> bool:
        """Whether ``event`` sends a message: chosen in ``events`` and a receiver set."""
        return self.has_receiver and event in self.events


class PipelineConfig(ScopeConfig):
    stac: StacConfig = StacConfig()
    partitions: PartitionsConfig
    storage: StorageConfig
    warehouse: WarehouseConfig
    transform: TransformConfig = TransformConfig()
    late_data: LateDataConfig = LateDataConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    requests: RequestsConfig = RequestsConfig()
    publish: PublishConfig = PublishConfig()
    maps: MapsConfig = MapsConfig()
    notifications: NotificationsConfig = NotificationsConfig()

    @model_validator(mode="after")
    def _bands_exist(self) -> PipelineConfig:
        if len(set(self.bands)) != len(self.bands):
            raise ValueError("bands: duplicate band names")
        known = KNOWN_COLLECTION_BANDS.get(self.stac.collection)
        if known is not None:
            unknown = sorted(set(self.bands) - known)
            if unknown:
                raise ValueError(
                    f"bands: unknown band(s) {unknown} for collection {self.stac.collection!r}; "
                    f"known: {sorted(known)}"
                )
        if self.transform.enabled:
            needed = sorted({"red", "green", "nir", "scl"} - set(self.bands))
            if needed:
                raise ValueError(
                    f"bands: the transform needs {needed} (or set transform.enabled: false)"
                )
        return self

    @model_validator(mode="after")
    def _partition_count(self) -> PipelineConfig:
        days = self.partitions.day_count()
        count = days * len(self.aois)
        limit = self.partitions.max_partitions
        if count > limit:
            raise ValueError(
                f"partitions.max_partitions: {days:,} days x {len(self.aois)} AOIs = "
                f"{count:,} partitions per asset, {count - limit:,} over the limit of "
                f"{limit:,}; group many small fields into one MultiPolygon AOI, or bound "
                "the days (a later partitions.start_date, a partitions.end_date)"
            )
        return self

    def aoi(self, name: str) -> AoiConfig:
        for aoi in self.aois:
            if aoi.name == name:
                return aoi
        raise KeyError(name)


def format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid pipeline configuration in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        # Whole-document checks name their field at the start of the message themselves.
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> PipelineConfig:
    """Validate a parsed YAML/JSON document; raise ConfigError naming every bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid pipeline configuration in {source}: expected a mapping")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> PipelineConfig:
    """Load the configuration from ``path``, ``$GEOSPATIAL_PIPELINE_CONFIG`` or the default."""
    chosen = path or os.environ.get(CONFIG_ENV_VAR)
    if chosen:
        source = str(chosen)
        try:
            text = Path(chosen).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read pipeline configuration {source}: {exc}") from None
    else:
        source = "default_config.yaml"
        text = resources.files("geospatial_pipeline").joinpath(source).read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"pipeline configuration {source} is not valid YAML: {exc}") from None
    return parse_config(data, source)


def require_secrets(config: PipelineConfig, environ: dict[str, str] | None = None) -> None:
    """Fail early, naming the variable, when a secret the configuration needs is unset."""
    env = os.environ if environ is None else environ
    wh = config.warehouse
    if (
        isinstance(wh, SnowflakeWarehouseConfig)
        and not env.get(wh.password_env_var)
        and not env.get(SNOWFLAKE_PRIVATE_KEY_ENV_VAR)
    ):
        raise ConfigError(
            f"warehouse.password_env_var: environment variable {wh.password_env_var} is not set "
            f"(nor {SNOWFLAKE_PRIVATE_KEY_ENV_VAR} for key-pair authentication; Snowflake "
            "credentials are read from the environment, never from the file)"
        )
    publish = config.publish
    if publish.pgstac and publish.pgstac_password_env_var not in env:
        raise ConfigError(
            f"publish.pgstac_password_env_var: environment variable "
            f"{publish.pgstac_password_env_var} is not set (the pgstac password is read from "
            "the environment, never from the file; set it empty for trust or .pgpass "
            "authentication)"
        )
