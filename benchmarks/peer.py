"""The peer script: what a competent EO team would write instead of the pipeline.

For one (day, AOI) it produces the pipeline's product layers with the ecosystem's standard
tools: ``pystac_client`` search, one ``odc.stac.load`` (one slice per scene), xarray for
the SCL mask, reflectance, NDVI, NDWI and the NDVI median composite, ``rioxarray``
``to_raster(driver="COG")`` with the pipeline's COG settings, and one pystac Item per
product (``rio_stac``), validated. :func:`run_peer` times each phase; :func:`compare`
checks its layers against the pipeline's, pixel for pixel on the same grid.

What the peer leaves out, as such a script would: the pipeline's duplicate-scene handling,
quarantine of bad items, quality checks and quicklooks. None changes the layers of the
benchmark's well-formed items.

Manual run (credentials for an S3 endpoint from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY):

    .venv/bin/python -m benchmarks.peer --api URL --day 2020-02-19 \
        --aoi-bbox -11.60 24.60 -11.52 24.66 --out /tmp/peer [--s3-endpoint http://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from geospatial_pipeline.config import TransformConfig
from geospatial_pipeline.raster.cog import cog_options
from geospatial_pipeline.raster.encoding import read_physical
from geospatial_pipeline.raster.extract import extract_band_windows
from geospatial_pipeline.raster.grid import unwrap_longitudes, utm_epsg
from geospatial_pipeline.raster.window import DENSIFY_DEGREES
from geospatial_pipeline.stac.publish import COMPOSITE_ID, layer_key

REFLECTANCE = ("red", "green", "blue", "nir")
INDICES = ("ndvi", "ndwi")
COMPOSITE_LAYER = "ndvi_median"
SCL = "scl"
# SCL class 0 is NO_DATA by definition, masked whatever the configured classes say.
SCL_NO_DATA = 0
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
# The pipeline reads its windows on this many threads (extract_band_windows' default):
# the peer's odc-stac pool gets as many.
PIPELINE_READ_THREADS: int = (
    inspect.signature(extract_band_windows).parameters["max_workers"].default
)
PHASES = ("search", "load", "compute", "write", "items")


@dataclass(frozen=True)
class S3Access:
    """An S3-compatible endpoint (SeaweedFS in the tests and benchmarks) and its keys."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@dataclass
class PeerResult:
    """What the peer produced: per product (source item id, or ``composite``) its layers'
    paths (local paths, or s3:// URLs when written to S3), the item documents' paths, the
    grid, and the seconds of each phase."""

    layers: dict[str, dict[str, str]]
    items: dict[str, str]
    crs: str
    transform: Affine
    shape: tuple[int, int]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def grid_crs(aoi: BaseGeometry, transform: TransformConfig) -> str:
    """The pipeline's grid CRS: the configured one, else the UTM zone of the AOI's centroid."""
    if transform.crs is not None:
        return transform.crs
    c = unwrap_longitudes(aoi).centroid
    return f"EPSG:{utm_epsg(c.x, c.y)}"


def anchor_in_pixels(transform: TransformConfig) -> tuple[float, float]:
    """The pipeline's grid anchor (CRS units: pixel edges at anchor + k * resolution) as
    odc-geo's anchor (a fraction of a pixel)."""
    ax, ay = transform.grid_anchor
    return ((ax / transform.resolution) % 1.0, (ay / transform.resolution) % 1.0)


def configure_reads(s3: S3Access | None) -> None:
    """odc-stac's GDAL settings, as benchmarks/run.py configures them."""
    import odc.stac

    if s3 is None:
        odc.stac.configure_rio(cloud_defaults=True)
        return
    scheme, host = s3.endpoint_url.split("://", 1)
    odc.stac.configure_rio(
        cloud_defaults=True,
        aws={
            "aws_access_key_id": s3.access_key,
            "aws_secret_access_key": s3.secret_key,
            "region_name": s3.region,
            "endpoint_url": host,
        },
        AWS_HTTPS="YES" if scheme == "https" else "NO",
        AWS_VIRTUAL_HOSTING="FALSE",
    )


def _scale_offset(item: Any, band: str) -> tuple[float, float]:
    asset = item.assets.get(band)
    bands = (asset.extra_fields.get("raster:bands") if asset is not None else None) or []
    if not bands or "scale" not in bands[0]:
        raise ValueError(f"item {item.id}: asset {band!r} has no raster:bands scale")
    return float(bands[0]["scale"]), float(bands[0].get("offset") or 0.0)


def run_peer(
    api_url: str,
    collection: str,
    day: dt.date | str,
    aoi: BaseGeometry,
    out: str | Path,
    *,
    transform: TransformConfig | None = None,
    threads: int = PIPELINE_READ_THREADS,
    s3: S3Access | None = None,
) -> PeerResult:
    """Search, load, mask, compute and write one (day, AOI)'s products the peer's way.

    ``out`` is a local directory or an ``s3://bucket/prefix`` on ``s3`` (the COGs are then
    written to a local temporary directory and uploaded, as rioxarray cannot write a COG
    straight to S3). ``transform`` is the pipeline's ``transform`` configuration, whose
    grid (resolution, CRS, anchor), SCL classes and resampling the peer uses.
    """
    import odc.stac
    import pystac_client
    import rioxarray  # noqa: F401 - the .rio accessor that writes the COGs
    import xarray as xr
    from odc.geo import xy_
    from odc.geo.geom import Geometry
    from odc.geo.xr import rasterize

    settings = transform or TransformConfig()
    day_text = day.isoformat() if isinstance(day, dt.date) else str(day)
    crs = grid_crs(aoi, settings)
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    client = pystac_client.Client.open(api_url)
    search = client.search(collections=[collection], intersects=mapping(aoi), datetime=day_text)
    items = list(search.items())
    seconds["search"] = time.perf_counter() - clock
    if not items:
        raise ValueError(f"no {collection} item intersects the AOI on {day_text} at {api_url}")

    clock = time.perf_counter()
    configure_reads(s3)
    # The AOI densified as the pipeline densifies it before projecting: odc-geo's default
    # (1 degree) misses the curved edges of a lon/lat box by up to a pixel in UTM
    # (benchmarks/README.md, the odc-stac reader).
    geopolygon = Geometry(aoi, "EPSG:4326").segmented(DENSIFY_DEGREES)
    ds = odc.stac.load(
        items,
        bands=[*REFLECTANCE, SCL],
        geopolygon=geopolygon,
        crs=crs,
        resolution=settings.resolution,
        anchor=xy_(*anchor_in_pixels(settings)),
        # Classes are never interpolated.
        resampling={"*": settings.resampling, SCL: "nearest"},
        groupby="id",  # one slice per scene, in the items' order
        pool=threads,
        chunks=None,
    )
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    geobox = ds.odc.geobox
    # Pixel centres inside the AOI; without coordinates, so it broadcasts by dimension
    # (an inner join on float coordinates could silently drop rows).
    inside = xr.DataArray(
        rasterize(geopolygon.to_crs(crs), geobox, all_touched=False).data, dims=ds[SCL].dims[1:]
    )
    invalid = sorted({SCL_NO_DATA, *settings.invalid_scl_classes})
    scl = ds[SCL]
    valid = inside & ~scl.isin(invalid) & (scl != scl.attrs.get("nodata", SCL_NO_DATA))
    for band in REFLECTANCE:
        valid = valid & (ds[band] != ds[band].attrs.get("nodata", 0))
    # Reflectance = DN * scale + offset from each item's raster:bands, in float32 (what the
    # products store). The pipeline additionally checks the offset the metadata implies
    # against the pixels (raster/reflectance.py); for the benchmark items the metadata is
    # right, so both must agree.
    time_dim = ds[SCL].dims[0]
    layers: dict[str, Any] = {}
    for band in REFLECTANCE:
        pairs = [_scale_offset(item, band) for item in items]
        scale = xr.DataArray(np.array([p[0] for p in pairs], dtype=np.float32), dims=(time_dim,))
        offset = xr.DataArray(np.array([p[1] for p in pairs], dtype=np.float32), dims=(time_dim,))
        layers[band] = (ds[band].astype(np.float32) * scale + offset).where(valid)
    red, green, nir = layers["red"], layers["green"], layers["nir"]
    # As the pipeline defines them: only where both reflectances are non-negative.
    with np.errstate(divide="ignore", invalid="ignore"):
        layers["ndvi"] = ((nir - red) / (nir + red)).where((nir >= 0) & (red >= 0))
        layers["ndwi"] = ((green - nir) / (green + nir)).where((green >= 0) & (nir >= 0))
    composite = layers["ndvi"].median(dim=time_dim, skipna=True)
    seconds["compute"] = time.perf_counter() - clock

    clock = time.perf_counter()
    target = str(out)
    local = Path(tempfile.mkdtemp(prefix="peer-")) if target.startswith("s3://") else Path(out)
    files: dict[str, dict[str, Path]] = {}
    for i, item in enumerate(items):
        files[item.id] = {
            name: _write_cog(layers[name].isel({time_dim: i}), local / item.id / f"{name}.tif")
            for name in (*REFLECTANCE, *INDICES)
        }
    files[COMPOSITE_ID] = {
        COMPOSITE_LAYER: _write_cog(composite, local / COMPOSITE_ID / f"{COMPOSITE_LAYER}.tif")
    }
    paths = _publish(files, local, target, s3)
    seconds["write"] = time.perf_counter() - clock

    clock = time.perf_counter()
    day_start = dt.datetime.combine(dt.date.fromisoformat(day_text), dt.time(), dt.UTC)
    docs = {
        item.id: _product_item(
            f"{item.id}__peer", files[item.id], paths[item.id], item.datetime or day_start
        )
        for item in items
    }
    docs[COMPOSITE_ID] = _product_item(
        f"{day_text}__{COMPOSITE_LAYER}__peer",
        files[COMPOSITE_ID],
        paths[COMPOSITE_ID],
        day_start,
    )
    item_paths = _publish_items(docs, local, target, s3)
    seconds["items"] = time.perf_counter() - clock
    if target.startswith("s3://"):
        shutil.rmtree(local, ignore_errors=True)

    return PeerResult(
        layers=paths,
        items=item_paths,
        crs=crs,
        transform=geobox.affine,
        shape=(int(geobox.shape[0]), int(geobox.shape[1])),
        seconds=seconds,
    )


def _write_cog(layer: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # float32 with NaN nodata, as such a script writes it, in the pipeline's COG layout
    # (tiles, overviews; DEFLATE with the floating-point predictor, the pipeline's
    # products before they became int16 scaled).
    options = cog_options(predictor=3)
    driver = options.pop("driver")
    layer = layer.astype(np.float32).rio.write_nodata(np.nan)
    layer.rio.to_raster(path, driver=driver, dtype="float32", **options)
    return path


def _s3_client(s3: S3Access | None) -> Any:
    import boto3

    if s3 is None:
        return boto3.client("s3")
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
    )


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def _publish(
    files: Mapping[str, Mapping[str, Path]], local: Path, target: str, s3: S3Access | None
) -> dict[str, dict[str, str]]:
    """Where each layer ended up: its local path, or its s3:// URL after the upload."""
    if not target.startswith("s3://"):
        return {p: {n: str(f) for n, f in layers.items()} for p, layers in files.items()}
    client = _s3_client(s3)
    bucket, prefix = _split_s3(target)
    out: dict[str, dict[str, str]] = {}
    for product, layers in files.items():
        for name, path in layers.items():
            key = "/".join(x for x in (prefix, str(path.relative_to(local))) if x)
            client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": COG_MEDIA_TYPE})
            out.setdefault(product, {})[name] = f"s3://{bucket}/{key}"
    return out


def _product_item(
    item_id: str, files: Mapping[str, Path], hrefs: Mapping[str, str], when: dt.datetime
) -> dict[str, Any]:
    """One product's STAC item: geometry and projection from its first layer (rio-stac),
    every layer as an asset; checked against the STAC core schema (offline: the schemas
    pystac ships; extension schemas are published online only)."""
    import pystac
    import pystac.validation
    import rio_stac

    assets = {
        name: pystac.Asset(
            href=hrefs[name],
            media_type=COG_MEDIA_TYPE,
            roles=["data"],
            extra_fields={"raster:bands": [{"data_type": "float32", "nodata": "nan"}]},
        )
        for name in files
    }
    first = next(iter(files.values()))
    item = rio_stac.create_stac_item(
        str(first),
        id=item_id,
        input_datetime=when,
        assets=assets,
        with_proj=True,
    )
    doc: dict[str, Any] = item.to_dict(include_self_link=False)
    pystac.validation.validate_dict({**doc, "stac_extensions": []})
    return doc


def _publish_items(
    docs: Mapping[str, dict[str, Any]], local: Path, target: str, s3: S3Access | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    client = _s3_client(s3) if target.startswith("s3://") else None
    for product, doc in docs.items():
        body = json.dumps(doc, indent=1).encode()
        if client is None:
            path = local / product / "item.json"
            path.write_bytes(body)
            out[product] = str(path)
            continue
        bucket, prefix = _split_s3(target)
        key = "/".join(x for x in (prefix, product, "item.json") if x)
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        out[product] = f"s3://{bucket}/{key}"
    return out


# ------------------------------------------------------------------------------- equality


@dataclass(frozen=True)
class Tolerance:
    """Largest absolute difference allowed per kind of layer, peer (float32) against the
    pipeline's layers read as physical values (int16 x scale + offset, raster.encoding).

    Reflectance, 1e-6: when both sides read the same source pixels (grid on the source
    pixels, or nearest resampling onto it), the pipeline stores the integer DN - offset_dn
    exactly and the peer computes DN * scale + offset in float32: a few float32 ulps
    apart (~1e-7 for reflectance up to 1). Indices, 5e-5 + 1e-6: the pipeline stores NDVI
    and NDWI rounded to steps of 1e-4 (at most half a step off), the peer keeps float32;
    the 1e-6 is the float32 arithmetic both sides differ by beyond that. One step (1e-4)
    off fails. The composite, 1e-4 + 1e-6: the pipeline's median of several scenes is
    taken over their stored values, then rounded to a step again (with one scene per
    day it is that scene's index, within the index tolerance). A peer that resamples
    (bilinear across UTM zones) interpolates the integer DNs and rounds them, where the
    pipeline interpolates in float32: up to 0.5 DN (5e-5 reflectance) plus kernel and
    edge differences; such a comparison needs its own, stated, tolerance and
    ``mask_mismatch`` allowance.
    """

    reflectance: float = 1e-6
    index: float = 5e-5 + 1e-6
    composite: float = 1e-4 + 1e-6
    mask_mismatch: int = 0  # pixels valid on one side only


@dataclass(frozen=True)
class LayerComparison:
    product: str
    layer: str
    valid_pixels: int  # valid on both sides
    mask_mismatches: int
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.mask_mismatches == 0 and self.max_abs_diff <= self.tolerance


@dataclass
class Comparison:
    layers: list[LayerComparison]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def pipeline_layer_paths(
    products: Sequence[Mapping[str, Any]], gdal_path: Any
) -> dict[str, dict[str, str]]:
    """The pipeline's products (the partition's manifest entries, as
    ``stac.publish.partition_products`` returns them) as {product: {layer: path}}, keyed
    like :class:`PeerResult`: the source item id for a scene, ``composite``."""
    out: dict[str, dict[str, str]] = {}
    for product in products:
        pid = str(product["item_id"])
        names = [COMPOSITE_LAYER] if pid == COMPOSITE_ID else [*REFLECTANCE, *INDICES]
        out[pid] = {name: gdal_path(layer_key(product, name)) for name in names}
    return out


def _read(path: str) -> tuple[np.ndarray, Any, Affine]:
    """Physical values, NaN where no data: the peer's float32 as stored, the pipeline's
    int16 with its scale, offset and nodata applied."""
    with rasterio.open(path) as src:
        return read_physical(src), src.crs, src.transform


def compare(
    peer: PeerResult,
    pipeline: Mapping[str, Mapping[str, str]],
    tolerance: Tolerance | None = None,
) -> Comparison:
    """Every layer of every product, peer vs pipeline: same products and layers, same
    grid (CRS, transform, shape: checked first), physical values (each file's scale,
    offset and nodata applied: :func:`_read`), valid masks equal up to
    ``tolerance.mask_mismatch`` pixels, values within the tolerance of their kind.
    Pipeline paths must be readable in the caller's GDAL environment (e.g. /vsis3/ in a
    ``gdal_env``); the peer's local paths or s3:// URLs likewise."""
    tol = tolerance or Tolerance()
    problems: list[str] = []
    results: list[LayerComparison] = []
    if set(peer.layers) != set(pipeline):
        problems.append(
            f"products differ: peer {sorted(peer.layers)} vs pipeline {sorted(pipeline)}"
        )
    for product in sorted(set(peer.layers) & set(pipeline)):
        ours, theirs = peer.layers[product], pipeline[product]
        if set(ours) != set(theirs):
            problems.append(f"{product}: layers differ: peer {sorted(ours)} vs {sorted(theirs)}")
        for name in sorted(set(ours) & set(theirs)):
            got, got_crs, got_transform = _read(_gdal_readable(ours[name]))
            want, want_crs, want_transform = _read(theirs[name])
            where = f"{product}/{name}"
            if got.shape != want.shape or got_transform != want_transform:
                problems.append(
                    f"{where}: grid differs: peer {got.shape} {tuple(got_transform)[:6]} vs "
                    f"pipeline {want.shape} {tuple(want_transform)[:6]}"
                )
                continue
            if got_crs != want_crs:
                problems.append(f"{where}: CRS differs: peer {got_crs} vs pipeline {want_crs}")
                continue
            got_ok, want_ok = np.isfinite(got), np.isfinite(want)
            both = got_ok & want_ok
            diff = np.abs(got[both].astype(np.float64) - want[both].astype(np.float64))
            limit = (
                tol.reflectance
                if name in REFLECTANCE
                else tol.composite
                if name == COMPOSITE_LAYER
                else tol.index
            )
            result = LayerComparison(
                product=product,
                layer=name,
                valid_pixels=int(both.sum()),
                mask_mismatches=int((got_ok != want_ok).sum()),
                max_abs_diff=float(diff.max()) if diff.size else 0.0,
                tolerance=limit,
            )
            results.append(result)
            if result.mask_mismatches > tol.mask_mismatch:
                problems.append(
                    f"{where}: valid masks differ at {result.mask_mismatches} pixels "
                    f"(peer {int(got_ok.sum())} valid, pipeline {int(want_ok.sum())})"
                )
            if result.max_abs_diff > limit:
                problems.append(
                    f"{where}: values differ by up to {result.max_abs_diff:.3g} (> {limit:g})"
                )
    return Comparison(results, problems)


def _gdal_readable(path: str) -> str:
    return "/vsis3/" + path[len("s3://") :] if path.startswith("s3://") else path


# ------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="STAC API URL")
    parser.add_argument("--collection", default="sentinel-2-l2a")
    parser.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    aoi = parser.add_mutually_exclusive_group(required=True)
    aoi.add_argument("--aoi-bbox", type=float, nargs=4, metavar=("W", "S", "E", "N"))
    aoi.add_argument("--aoi-geojson", help="a file holding a GeoJSON Polygon/MultiPolygon")
    parser.add_argument("--out", required=True, help="directory or s3://bucket/prefix")
    parser.add_argument("--resolution", type=float, default=None)
    parser.add_argument("--crs", default=None, help="default: the AOI's UTM zone")
    parser.add_argument("--anchor", type=float, nargs=2, default=None, metavar=("X", "Y"))
    parser.add_argument("--resampling", default=None)
    parser.add_argument("--threads", type=int, default=PIPELINE_READ_THREADS)
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help="S3-compatible endpoint URL; keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    )
    args = parser.parse_args(argv)

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "resolution": args.resolution,
            "crs": args.crs,
            "grid_anchor": args.anchor,
            "resampling": args.resampling,
        }.items()
        if v is not None
    }
    geometry = (
        box(*args.aoi_bbox)
        if args.aoi_bbox
        else shape(json.loads(Path(args.aoi_geojson).read_text()))
    )
    s3 = None
    if args.s3_endpoint:
        s3 = S3Access(
            args.s3_endpoint,
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            os.environ.get("AWS_REGION", "us-east-1"),
        )
    result = run_peer(
        args.api,
        args.collection,
        args.day,
        geometry,
        args.out,
        transform=TransformConfig(**overrides),
        threads=args.threads,
        s3=s3,
    )
    print(
        json.dumps(
            {
                "layers": result.layers,
                "items": result.items,
                "grid": {
                    "crs": result.crs,
                    "shape": list(result.shape),
                    "transform": list(result.transform)[:6],
                },
                "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
                "total_seconds": round(result.total_seconds, 4),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
