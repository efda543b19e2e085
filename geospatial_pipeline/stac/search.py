"""Search one UTC day of a STAC API for the scenes over the configured AOIs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from geospatial_pipeline.config import StacConfig
from geospatial_pipeline.errors import StacSearchError
from geospatial_pipeline.stac.dedupe import Superseded, dedupe_scenes
from geospatial_pipeline.stac.hrefs import AssetHostPolicy
from geospatial_pipeline.stac.models import ItemValidationError, SceneItem, validate_item

log = logging.getLogger(__name__)

FilterMode = Literal["query", "filter", "client"]

# Conformance classes that make server-side filtering trustworthy. An API that does not
# declare them may silently ignore the parameter (rustac does), so we never send it then.
# (Only the search for updated items uses them: a day's cloud filter always runs on the
# client, after the dedupe; see search_day.)
QUERY_CONFORMANCE = ("https://api.stacspec.org/v1.0.0/item-search#query",)
FILTER_CONFORMANCE = (
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "https://api.stacspec.org/v1.0.0/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
)
RETRY_STATUSES = (429, 500, 502, 503, 504)


class SearchSettings(StacConfig):
    """The ``stac`` configuration as the search functions read it: every field, default and
    check is StacConfig's; only the retry backoff (not configurable) is added."""

    backoff_s: float = 0.5

    def asset_hosts(self) -> AssetHostPolicy:
        return AssetHostPolicy.for_catalog(self.api_url, self.allowed_asset_hosts)


@dataclass(frozen=True)
class AoiQuery:
    name: str
    geometry: dict[str, Any]  # GeoJSON in EPSG:4326
    bbox: tuple[float, float, float, float] | None = None  # set when the AOI is a plain bbox


@dataclass
class DayItems:
    """What one day's search found, after validation and dedupe."""

    day: dt.date
    items: list[dict[str, Any]]  # raw item dicts, kept items only, sorted by id
    by_aoi: dict[str, list[str]]  # AOI name -> ids of kept items intersecting it
    invalid: list[dict[str, str]] = field(default_factory=list)
    superseded: list[Superseded] = field(default_factory=list)
    dropped_over_limit: list[str] = field(default_factory=list)
    # Where the cloud filter ran; always "client" for a day's search (see search_day).
    filter_mode: FilterMode = "client"
    matched: int = 0  # items returned by the API before any filtering
    seen: dict[str, str] = field(default_factory=dict)  # every returned id -> fingerprint
    # Kept by the dedupe, then above stac.max_cloud_cover: {"id", "cloud_cover"}.
    too_cloudy: list[dict[str, Any]] = field(default_factory=list)

    def scenes(self, bands: Sequence[str]) -> dict[str, SceneItem]:
        return {raw["id"]: validate_item(raw, list(bands)) for raw in self.items}


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC day."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _datetime_param(day: dt.date) -> str:
    start, end = day_window(day)
    # STAC datetime intervals are closed; stop one microsecond before midnight so an item
    # acquired exactly at 00:00:00 of the next day belongs to that day only.
    last = end - dt.timedelta(microseconds=1)
    return f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')}/{last.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def build_retry(max_retries: int, backoff_s: float) -> Retry:
    return Retry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=max_retries,
        backoff_factor=backoff_s,
        status_forcelist=RETRY_STATUSES,
        # Searches are POSTs; they are read-only, so retrying them is safe.
        allowed_methods=frozenset({"GET", "POST", "HEAD"}),
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def open_client(settings: SearchSettings) -> Client:
    stac_io = StacApiIO(
        timeout=settings.timeout_s,
        max_retries=build_retry(settings.max_retries, settings.backoff_s),
    )
    try:
        return Client.open(settings.api_url, stac_io=stac_io, timeout=settings.timeout_s)
    except APIError as exc:
        raise StacSearchError(f"cannot open STAC API {settings.api_url}: {exc}") from exc


def filter_mode(client: Client) -> FilterMode:
    conforms = set(client.get_conforms_to())
    if conforms.intersection(QUERY_CONFORMANCE):
        return "query"
    if conforms.intersection(FILTER_CONFORMANCE):
        return "filter"
    return "client"


def _base_params(settings: SearchSettings, aoi: AoiQuery, interval: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "collections": [settings.collection],
        "datetime": interval,
        "limit": settings.page_size,
        "method": "POST",
    }
    if aoi.bbox is not None:
        params["bbox"] = list(aoi.bbox)
    else:
        params["intersects"] = aoi.geometry
    return params


def _search_aoi(
    client: Client, settings: SearchSettings, day: dt.date, aoi: AoiQuery
) -> list[dict[str, Any]]:
    # No cloud filter here, even where the API could apply it: the server would drop a
    # reprocessed item that is now too cloudy and return the older processing it
    # replaces, which the dedupe would then keep. A day's result set is small.
    params = _base_params(settings, aoi, _datetime_param(day))
    try:
        search = client.search(**params)
        return [page_item for page in search.pages_as_dicts() for page_item in page["features"]]
    except APIError as exc:
        raise StacSearchError(
            f"STAC search failed for AOI {aoi.name!r} on {day} at {settings.api_url}: {exc}"
        ) from exc


def search_day(
    client: Client,
    settings: SearchSettings,
    day: dt.date,
    aois: Sequence[AoiQuery],
    bands: Sequence[str],
) -> DayItems:
    """Search every AOI for ``day``, validate, dedupe, filter cloud cover, cap.

    Items whose required band hrefs are not allowed (``settings.allowed_asset_hosts``) are
    invalid items: they are reported and never opened.
    """
    start, end = day_window(day)
    hosts = settings.asset_hosts()
    raw_by_id: dict[str, dict[str, Any]] = {}
    aoi_hits: dict[str, set[str]] = {aoi.name: set() for aoi in aois}
    matched = 0
    for aoi in aois:
        found = _search_aoi(client, settings, day, aoi)
        matched += len(found)
        for raw in found:
            item_id = str(raw.get("id"))
            raw_by_id.setdefault(item_id, raw)
            aoi_hits[aoi.name].add(item_id)
        log.info("AOI %s on %s: %d item(s)", aoi.name, day, len(found))

    valid: list[SceneItem] = []
    invalid: list[dict[str, str]] = []
    for item_id in sorted(raw_by_id):
        raw = raw_by_id[item_id]
        try:
            scene = validate_item(raw, list(bands), hosts)
        except ItemValidationError as exc:
            invalid.append({"id": exc.item_id, "reason": exc.reason})
            continue
        if settings.collection and scene.collection not in (None, settings.collection):
            invalid.append({"id": scene.id, "reason": f"collection is {scene.collection!r}"})
            continue
        # The API's interval handling is not trusted at the day edges.
        if not (start <= scene.acquired_at < end):
            continue
        valid.append(scene)

    # Dedupe before the cloud filter: a newer processing that is now too cloudy must not
    # let the older one it replaces back in.
    winners, superseded = dedupe_scenes(valid)
    kept = [
        s for s in winners if s.cloud_cover is None or s.cloud_cover <= settings.max_cloud_cover
    ]
    clear = {s.id for s in kept}
    too_cloudy = [{"id": s.id, "cloud_cover": s.cloud_cover} for s in winners if s.id not in clear]
    dropped: list[str] = []
    if len(kept) > settings.max_items_per_day:
        # Keep the clearest scenes; the rest are reported, never silently lost.
        ordered = sorted(
            kept, key=lambda s: (s.cloud_cover if s.cloud_cover is not None else 100.0, s.id)
        )
        dropped = sorted(s.id for s in ordered[settings.max_items_per_day :])
        kept = [s for s in kept if s.id not in set(dropped)]
    kept_ids = {s.id for s in kept}
    return DayItems(
        day=day,
        items=[raw_by_id[item_id] for item_id in sorted(kept_ids)],
        by_aoi={name: sorted(ids & kept_ids) for name, ids in aoi_hits.items()},
        invalid=invalid,
        superseded=superseded,
        dropped_over_limit=dropped,
        filter_mode="client",
        matched=matched,
        seen={item_id: content_fingerprint(raw) for item_id, raw in sorted(raw_by_id.items())},
        too_cloudy=too_cloudy,
    )


def content_fingerprint(item: dict[str, Any]) -> str:
    """Hash of an item's content, ignoring when and where it was (re)published: the
    ``updated`` time and the API links."""
    content = {k: v for k, v in item.items() if k != "links"}
    content["properties"] = {k: v for k, v in item.get("properties", {}).items() if k != "updated"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def search_updated_since(
    client: Client,
    settings: SearchSettings,
    aois: Sequence[AoiQuery],
    first_day: dt.date,
    last_day: dt.date,
    since: dt.datetime,
) -> list[tuple[dict[str, Any], list[str]]]:
    """Items acquired in [first_day, last_day] over the AOIs and indexed after ``since``,
    each with the names of the AOIs whose search returned it (the partitions it belongs
    to).

    The ``updated`` filter goes to the server only where the API declares the query or
    filter extension, and is always applied on the client too.
    """
    mode = filter_mode(client)
    start, _ = day_window(first_day)
    _, end = day_window(last_day)
    last = end - dt.timedelta(microseconds=1)
    stamp = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    found: dict[str, dict[str, Any]] = {}
    aois_of: dict[str, set[str]] = {}
    for aoi in aois:
        interval = (
            f"{start.strftime('%Y-%m-%dT%H:%M:%SZ')}/{last.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
        )
        params = _base_params(settings, aoi, interval)
        if mode == "query":
            params["query"] = {"updated": {"gt": stamp}}
        elif mode == "filter":
            params["filter"] = {"op": ">", "args": [{"property": "updated"}, {"timestamp": stamp}]}
            params["filter_lang"] = "cql2-json"
        try:
            pages = client.search(**params).pages_as_dicts()
            for page in pages:
                for raw in page["features"]:
                    found.setdefault(str(raw.get("id")), raw)
                    aois_of.setdefault(str(raw.get("id")), set()).add(aoi.name)
        except APIError as exc:
            raise StacSearchError(
                f"STAC search for updates failed for AOI {aoi.name!r} at {settings.api_url}: {exc}"
            ) from exc
    out = []
    for item_id in sorted(found):
        raw = found[item_id]
        props = raw.get("properties") or {}
        stamp_value = props.get("updated") or props.get("created")
        if not stamp_value:
            continue
        updated = dt.datetime.fromisoformat(str(stamp_value).replace("Z", "+00:00"))
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=dt.UTC)
        if updated > since:
            out.append((raw, sorted(aois_of[item_id])))
    return out
