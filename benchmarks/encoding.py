"""Benchmark: how the product layers are stored: codec and level, predictor, GDAL's
multi-threaded compression and data type (float32 vs int16 scaled), in bytes and time.

Run alone with ``.venv/bin/python -m benchmarks.encoding [--repetitions N]``; see the
"Product encoding" section of benchmarks/README.md.

1. Layers: the six product layers (red, green, blue, nir, ndvi, ndwi; float32, NaN nodata)
   of one scene on a 20 km x 20 km AOI at 10 m (2002 x 2002 px), made by the project's own
   transform (``read_scene`` + ``transform_raw``) from the inputs benchmarks/transform.py
   generates and caches under ``.data/bench-transform/``.
2. Every option encodes every layer as the products are encoded (:func:`encode`: the body
   of ``geospatial_pipeline.raster.scene.encode_layer`` with ``cog_options`` and the
   option's data type, codec, level, predictor and threads; checked byte-identical to
   ``encode_layer`` for the default, the products' storage since the switch). int16
   options first quantise the layer (``raster.encoding.quantise``: ``round(v / scale)``,
   nodata -32768) and write scale/offset into the GeoTIFF as well. ``former``: the
   products' storage before (float32, NaN nodata, DEFLATE-6, floating-point predictor).
3. Per option, median of N repetitions, the options interleaved in each repetition (load
   noise spreads over all of them alike); each encode writes a fresh ``MemoryFile``:
   encode time (quantisation included), a full decode of every layer from its bytes, and
   the read-back of the 20 km AOI window with ``read_aoi_window`` from a file. Checked per
   option: every layer a valid COG (``validate_cog_bytes``), the same bytes in every
   repetition, float32 decoded bit-identical, int16 decoded x scale + offset within half a
   quantisation step of the float32 layer and nodata exactly where the float is NaN.
4. Readers (``--readers``, on by default): the int16 default through ``odc.stac.load``
   (does it apply ``raster:bands`` scale/offset?) and through the local TiTiler (a tile
   with ``unscale``, and the item's NDVI render against the former float32 item's).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.transform import AOI_KM, CACHE_DIR, LAYERS, RESOLUTION, aoi_geometry, prepare_inputs
from geospatial_pipeline.raster import encoding

REPETITIONS = 5
CODECS: tuple[tuple[str, int], ...] = (("DEFLATE", 1), ("DEFLATE", 6), ("ZSTD", 1), ("ZSTD", 9))
THREADS = (1, 2)
MAX_LOAD_1MIN = 0.7
LOAD_WAIT_S = 600
TILE_ZOOM = 14  # ~6.9 m pixels here: full resolution, no overview between the readers


@dataclass(frozen=True)
class Option:
    dtype: str  # "float32" | "int16"
    compress: str
    level: int | None
    predictor: int  # 1 none, 2 horizontal (integers), 3 floating point
    threads: int

    @property
    def name(self) -> str:
        level = f"-{self.level}" if self.level is not None else ""
        return f"{self.dtype} {self.compress}{level} p{self.predictor} t{self.threads}"

    def creation_options(self) -> dict[str, Any]:
        from geospatial_pipeline.raster.cog import cog_options

        options = {**cog_options(predictor=self.predictor), "compress": self.compress}
        options["num_threads"] = str(self.threads)
        if self.level is not None:
            options["level"] = self.level
        if self.compress.startswith("LERC"):
            options["max_z_error"] = 0  # lossless
        return options


# What the products used before (cog_options(predictor=3): DEFLATE at GDAL's default
# level 6, float32, NaN nodata).
FORMER = Option("float32", "DEFLATE", 6, 3, 1)
# The products' storage (raster/encoding.py; benchmarks/README.md "Product encoding" says
# why), checked to be encode_layer's bytes in every run.
DEFAULT = Option(encoding.DTYPE, encoding.COMPRESS, encoding.LEVEL, encoding.PREDICTOR, threads=1)


def options_grid() -> list[Option]:
    out = []
    for dtype, predictors in (("float32", (1, 3)), ("int16", (1, 2))):
        for compress, level in CODECS:
            for predictor in predictors:
                for threads in THREADS:
                    out.append(Option(dtype, compress, level, predictor, threads))
    # LERC (lossless here) has its own predictor-like coding: no TIFF predictor.
    for threads in THREADS:
        out.append(Option("float32", "LERC_ZSTD", 9, 1, threads))
    # Uncompressed: what the COG driver costs without any codec (copy, overviews, layout).
    out += [Option(dtype, "NONE", None, 1, 1) for dtype in ("float32", "int16")]
    return out


# --------------------------------------------------------------------------- encoding


def encode(layer: np.ndarray, grid: Any, option: Option) -> bytes:
    """``encode_layer``'s body with ``option``'s storage."""
    from rasterio.io import MemoryFile

    height, width = layer.shape
    if option.dtype == "int16":
        data, nodata = encoding.quantise(layer), float(encoding.NODATA)
    else:
        data, nodata = layer.astype(np.float32, copy=False), float("nan")
    with MemoryFile() as mem:
        with mem.open(
            width=width,
            height=height,
            count=1,
            dtype=option.dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
            **option.creation_options(),
        ) as dst:
            dst.write(data, 1)
            if option.dtype == "int16":
                # In the file too: GDAL clients (TiTiler's unscale, rioxarray) read it there.
                encoding.set_scale(dst)
        return bytes(mem.read())


def decode(blob: bytes) -> np.ndarray:
    from rasterio.io import MemoryFile

    with MemoryFile(blob) as mem, mem.open() as src:
        return src.read(1)


def check_roundtrip(layer: np.ndarray, decoded: np.ndarray, option: Option) -> dict[str, Any]:
    """float32: bit-identical. int16: within half a step where the layer is finite and in
    range, nodata exactly where it is NaN."""
    finite = np.isfinite(layer)
    if option.dtype == "float32":
        same = np.array_equal(decoded.view(np.uint32), layer.view(np.uint32))
        return {"ok": bool(same), "max_err": 0.0 if same else math.inf, "clipped": 0}
    nodata_ok = bool(np.array_equal(decoded == encoding.NODATA, ~finite))
    values = decoded[finite].astype(np.float64) * encoding.SCALE + encoding.OFFSET
    expected = layer[finite].astype(np.float64)
    representable = np.abs(expected - encoding.OFFSET) <= encoding.STORED_MAX * encoding.SCALE
    err = np.abs(values - expected)[representable]
    max_err = float(err.max()) if err.size else 0.0
    # Half a step, plus float64 rounding of the products above.
    ok = nodata_ok and max_err <= encoding.SCALE / 2 * (1 + 1e-9)
    return {"ok": ok, "max_err": max_err, "clipped": int((~representable).sum())}


# --------------------------------------------------------------------------- measuring


@dataclass
class Scene:
    layers: dict[str, np.ndarray]
    grid: Any
    aoi: Any


def product_layers() -> Scene:
    """The six layers as the pipeline makes them, from the cached transform inputs."""
    from geospatial_pipeline.raster.grid import aoi_grid
    from geospatial_pipeline.raster.scene import (
        SceneMeta,
        TransformSettings,
        read_scene,
        transform_raw,
    )

    manifest = prepare_inputs(CACHE_DIR)
    aoi = aoi_geometry()
    grid = aoi_grid(aoi, RESOLUTION)
    raw = read_scene(manifest["paths"], grid)
    scene = transform_raw(
        raw, aoi, grid, SceneMeta(**manifest["meta"]), TransformSettings(resolution=RESOLUTION)
    )
    layers = {name: np.ascontiguousarray(scene.layers[name]) for name in LAYERS}
    return Scene(layers, grid, aoi)


def wait_for_quiet(max_load: float = MAX_LOAD_1MIN, timeout_s: float = LOAD_WAIT_S) -> float:
    """Wait (up to ``timeout_s``) for the 1-minute load to fall below ``max_load``; return
    the load measured at the start."""
    deadline = time.monotonic() + timeout_s
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def measure(scene: Scene, options: list[Option], repetitions: int) -> dict[Option, dict[str, Any]]:
    from geospatial_pipeline.raster.cog import read_aoi_window, validate_cog_bytes

    names = list(scene.layers)
    encode_s: dict[Option, list[float]] = {o: [] for o in options}
    digests: dict[Option, set[str]] = {o: set() for o in options}
    blobs: dict[Option, dict[str, bytes]] = {}
    for _ in range(repetitions):
        for option in options:  # interleaved: load noise spreads over every option
            t0 = time.perf_counter()
            out = {name: encode(scene.layers[name], scene.grid, option) for name in names}
            encode_s[option].append(time.perf_counter() - t0)
            digests[option].add(hashlib.sha256(b"".join(out.values())).hexdigest())
            blobs[option] = out
            del out

    results: dict[Option, dict[str, Any]] = {}
    decode_s: dict[Option, list[float]] = {o: [] for o in options}
    window_s: dict[Option, list[float]] = {o: [] for o in options}
    with tempfile.TemporaryDirectory(prefix="bench-encoding-") as tmp:
        paths: dict[Option, dict[str, str]] = {}
        for i, option in enumerate(options):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            paths[option] = {}
            for name, blob in blobs[option].items():
                (folder / f"{name}.tif").write_bytes(blob)
                paths[option][name] = str(folder / f"{name}.tif")
        for _ in range(repetitions):
            for option in options:
                t0 = time.perf_counter()
                for blob in blobs[option].values():
                    decode(blob)
                decode_s[option].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for path in paths[option].values():
                    if read_aoi_window(path, scene.aoi) is None:
                        raise RuntimeError(f"{path}: AOI outside its own product")
                window_s[option].append(time.perf_counter() - t0)

    for option in options:
        checks = [check_roundtrip(scene.layers[n], decode(blobs[option][n]), option) for n in names]
        validations = [validate_cog_bytes(b) for b in blobs[option].values()]
        results[option] = {
            "bytes": sum(len(b) for b in blobs[option].values()),
            "layer_bytes": {n: len(b) for n, b in blobs[option].items()},
            "encode_s": statistics.median(encode_s[option]),
            "encode_runs_s": encode_s[option],
            "decode_s": statistics.median(decode_s[option]),
            "window_s": statistics.median(window_s[option]),
            "deterministic": len(digests[option]) == 1,
            "sha256": sorted(digests[option])[0],
            "valid_cog": all(v.valid for v in validations),
            "cog_errors": sorted({e for v in validations for e in v.errors}),
            "roundtrip_ok": all(c["ok"] for c in checks),
            "max_err": max(c["max_err"] for c in checks),
            "clipped": sum(c["clipped"] for c in checks),
        }
    return results


def check_default_is_encode_layer(scene: Scene) -> bool:
    """The benchmark's writer with the default option gives encode_layer's bytes: the
    figures are the products' storage."""
    from geospatial_pipeline.raster.scene import encode_layer

    return all(
        encode(layer, scene.grid, DEFAULT) == encode_layer(layer, scene.grid)
        for layer in scene.layers.values()
    )


# --------------------------------------------------------------------------- readers


def _item(
    scene: Scene, folder: Path, option: Option, names: tuple[str, ...]
) -> tuple[Path, dict[str, Any]]:
    """The product item (``product_item``) of ``names`` encoded with ``option`` in
    ``folder``: the products' raster:bands for the default, float32 ones for ``former``."""
    from geospatial_pipeline.stac.products import LayerObject, product_item

    folder.mkdir(parents=True, exist_ok=True)
    objects = []
    for name in names:
        blob = encode(scene.layers[name], scene.grid, option)
        (folder / f"{name}.tif").write_bytes(blob)
        digest = hashlib.sha256(blob).hexdigest()
        objects.append(LayerObject(name, f"{name}.tif", len(blob), digest))
    item = product_item(
        item_id=f"bench-{option.dtype}",
        item_key="item.json",
        acquired="2024-06-15T10:56:21Z",
        grid=scene.grid,
        layers=objects,
        source_hrefs=[],
        processing_datetime="2024-06-15T12:00:00Z",
        software_version="bench",
        lineage="benchmarks.encoding",
        extra_properties={},
    )
    if option.dtype == "float32":
        for asset in item["assets"].values():
            band = asset["raster:bands"][0]
            for key in ("scale", "offset"):
                band.pop(key, None)
            band.update(data_type="float32", nodata="nan")
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path, item


def check_odc_stac(scene: Scene, f32_item: Path, i16_item: Path) -> dict[str, Any]:
    """odc.stac.load of the int16 item: is raster:bands scale/offset applied? Then the
    scale applied from the item, against the float32 item loaded the same way."""
    import odc.stac
    import pystac

    def load(path: Path, **kwargs: Any) -> Any:
        item = pystac.Item.from_file(str(path))
        item.make_asset_hrefs_absolute()
        return odc.stac.load([item], bands=["red", "ndvi"], chunks=None, **kwargs), item

    f32, _ = load(f32_item)
    i16, item = load(i16_item)
    out: dict[str, Any] = {"odc_stac_version": odc.stac.__version__}
    for band in ("red", "ndvi"):
        raw = i16[band].values[0]
        rb = item.assets[band].extra_fields["raster:bands"][0]
        expected_int = encoding.quantise(scene.layers[band])
        # Applied by hand from the item's raster:bands: what a consumer has to write.
        scaled = np.where(raw == rb["nodata"], np.nan, raw * rb["scale"] + rb["offset"])
        reference = f32[band].values[0]
        finite = np.isfinite(reference)
        out[band] = {
            "dtype": str(i16[band].dtype),
            "attrs": {k: v for k, v in i16[band].attrs.items() if k in ("nodata", "units")},
            "values_are_stored_integers": bool(np.array_equal(raw, expected_int)),
            "scale_applied_by_odc_stac": bool(
                np.allclose(raw[finite], reference[finite], atol=encoding.SCALE)
            ),
            "by_hand_max_err": float(np.abs(scaled[finite] - reference[finite]).max()),
            "by_hand_nodata_same": bool(np.array_equal(np.isnan(scaled), ~finite)),
        }
    # dtype="float32" converts and turns nodata into NaN, but still does not scale.
    as_float, _ = load(i16_item, dtype="float32")
    ndvi = as_float["ndvi"].values[0]
    out["dtype_float32"] = {
        "nan_where_nodata": bool(
            np.array_equal(np.isnan(ndvi), ~np.isfinite(scene.layers["ndvi"]))
        ),
        "max_abs_value": float(np.nanmax(np.abs(ndvi))),
    }
    return out


def _tile(scene: Scene) -> Any:
    import morecantile

    lon, lat = scene.aoi.centroid.x, scene.aoi.centroid.y
    return morecantile.tms.get("WebMercatorQuad").tile(lon, lat, TILE_ZOOM)


def _png_rgba(content: bytes) -> np.ndarray:
    import warnings

    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a tile PNG has none
        with MemoryFile(content) as mem, mem.open() as src:
            return src.read()


def check_titiler(scene: Scene, f32_item: Path, i16_item: Path) -> dict[str, Any]:
    """The local TiTiler: an NDVI tile of the int16 COG with and without ``unscale``
    against the float32 COG's; then the item's NDVI render (the project's render
    settings) of both items as PNGs."""
    import requests

    from geospatial_pipeline.local.titiler import TiTilerServer
    from geospatial_pipeline.stac.render import RENDERS, render_query

    tile = _tile(scene)
    out: dict[str, Any] = {"tile": [tile.z, tile.x, tile.y]}
    with TiTilerServer() as titiler, requests.Session() as http:
        http.trust_env = False  # loopback
        base = f"{titiler.url}/cog/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.npy"

        def npy(url: Path, **params: str) -> np.ndarray:
            r = http.get(base, params={"url": str(url), **params}, timeout=60)
            r.raise_for_status()
            return np.load(io.BytesIO(r.content))

        ref = npy(f32_item.parent / "ndvi.tif")
        ref_data, ref_mask = ref[0], ref[1] > 0
        for label, params in (("unscale", {"unscale": "true"}), ("raw", {})):
            got = npy(i16_item.parent / "ndvi.tif", **params)
            data, mask = got[0], got[1] > 0
            both = mask & ref_mask
            out[f"tile_{label}"] = {
                "dtype": str(data.dtype),
                "mask_same": bool(np.array_equal(mask, ref_mask)),
                "valid_pixels": int(both.sum()),
                "max_err": float(np.abs(data[both].astype(np.float64) - ref_data[both]).max()),
            }

        def png(item: Path, extra: list[tuple[str, str]]) -> np.ndarray:
            # The project's render without its unscale=true, so both variants are drawn.
            query = [q for q in render_query(str(item), RENDERS["ndvi"]) if q[0] != "unscale"]
            query += extra
            r = http.get(
                f"{titiler.url}/stac/tiles/WebMercatorQuad/{tile.z}/{tile.x}/{tile.y}.png",
                params=query,
                timeout=60,
            )
            r.raise_for_status()
            return _png_rgba(r.content)

        reference = png(f32_item, []).astype(np.int16)
        for label, extra in (("render_unscale", [("unscale", "true")]), ("render_as_is", [])):
            rgba = png(i16_item, extra).astype(np.int16)
            diff = np.abs(rgba - reference).max(axis=0)
            out[label] = {
                "alpha_same": bool(np.array_equal(rgba[3], reference[3])),
                "pixels_identical": float((diff == 0).mean()),
                "max_channel_diff": int(diff.max()),
            }
    return out


def check_readers(scene: Scene) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-encoding-items-") as tmp:
        names = ("red", "green", "blue", "nir", "ndvi")
        f32_item, _ = _item(scene, Path(tmp) / "float32", FORMER, names)
        i16_item, _ = _item(scene, Path(tmp) / "int16", DEFAULT, names)
        return {
            "odc_stac": check_odc_stac(scene, f32_item, i16_item),
            "titiler": check_titiler(scene, f32_item, i16_item),
        }


# --------------------------------------------------------------------------- report


def conditions(scene: Scene, load_before: tuple[float, float, float]) -> dict[str, Any]:
    import rasterio

    shapes = {n: list(a.shape) for n, a in scene.layers.items()}
    return {
        "machine": f"nproc={os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}",
        "versions": f"GDAL {rasterio.__gdal_version__}, rasterio {rasterio.__version__}, "
        f"numpy {np.__version__}",
        "load average (1/5/15)": f"before {_load(load_before)}; after {_load(os.getloadavg())}",
        "layers": f"{len(shapes)} x {shapes[LAYERS[0]]} float32 ({AOI_KM:.0f} km AOI at "
        f"{RESOLUTION:.0f} m), {_raw_mb(scene):.1f} MB uncompressed",
        "valid pixels": {
            n: round(float(np.isfinite(a).mean()), 3) for n, a in scene.layers.items()
        },
    }


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def _raw_mb(scene: Scene) -> float:
    return sum(a.nbytes for a in scene.layers.values()) / 1e6


def print_report(
    scene: Scene,
    results: dict[Option, dict[str, Any]],
    cond: dict[str, Any],
    same_as_product: bool,
    readers: dict[str, Any] | None,
) -> None:
    base = results[FORMER]
    raw_mb = _raw_mb(scene)
    print("Product encoding: six layers of one scene, 20 km AOI at 10 m")
    for key, value in cond.items():
        print(f"  {key}: {value}")
    print(f"  benchmark writer == encode_layer for the default: {same_as_product}")
    print()
    header = (
        f"  {'option':<28} {'MB':>6} {'vs old':>6} {'encode s':>8} {'MB/s':>6} "
        f"{'decode s':>8} {'window s':>8}  checks"
    )
    print(header)
    for option, r in sorted(results.items(), key=lambda kv: kv[1]["bytes"]):
        checks = []
        if not r["valid_cog"]:
            checks.append(f"INVALID COG {r['cog_errors']}")
        if not r["roundtrip_ok"]:
            checks.append(f"ROUNDTRIP FAILED max_err={r['max_err']:.2e}")
        if not r["deterministic"]:
            checks.append("bytes differ between runs")
        if r["clipped"]:
            checks.append(f"{r['clipped']} px clipped")
        mark = "*" if option == DEFAULT else ("=" if option == FORMER else " ")
        print(
            f"{mark} {option.name:<28} {r['bytes'] / 1e6:6.1f} {r['bytes'] / base['bytes']:6.2f} "
            f"{r['encode_s']:8.2f} {raw_mb / r['encode_s']:6.1f} {r['decode_s']:8.3f} "
            f"{r['window_s']:8.3f}  {'; '.join(checks) or 'ok'}"
        )
    print("  * the products' storage (default), = the former one; MB/s = float32 MB / encode s")
    d = results[DEFAULT]
    print()
    print("Per layer, MB (former -> default):")
    for name in scene.layers:
        print(
            f"  {name:<5} {base['layer_bytes'][name] / 1e6:6.2f} -> "
            f"{d['layer_bytes'][name] / 1e6:6.2f}"
        )
    if readers is not None:
        print()
        print("Readers of the int16 default:")
        print(json.dumps(readers, indent=2))


def summary(
    scene: Scene,
    results: dict[Option, dict[str, Any]],
    load: float,
    readers: dict[str, Any] | None,
) -> dict[str, Any]:
    d, c = results[DEFAULT], results[FORMER]
    raw_mb = _raw_mb(scene)
    out: dict[str, Any] = {
        "encode_default": DEFAULT.name,
        "encode_mb_per_s": round(raw_mb / d["encode_s"], 1),
        "encode_s": round(d["encode_s"], 3),
        "encode_bytes": d["bytes"],
        "encode_former": FORMER.name,
        "encode_former_mb_per_s": round(raw_mb / c["encode_s"], 1),
        "encode_former_s": round(c["encode_s"], 3),
        "encode_former_bytes": c["bytes"],
        "encode_bytes_vs_former": round(d["bytes"] / c["bytes"], 3),
        # Compare between runs: the same layers give the same bytes.
        "encode_default_sha256": d["sha256"],
        "encode_all_checks_ok": all(r["valid_cog"] and r["roundtrip_ok"] for r in results.values()),
        "encode_load_1min": round(load, 2),
    }
    if readers is not None:
        t = readers["titiler"]
        out["encode_titiler_unscale_max_err"] = t["tile_unscale"]["max_err"]
        out["encode_odc_stac_applies_scale"] = readers["odc_stac"]["ndvi"][
            "scale_applied_by_odc_stac"
        ]
    return out


@contextlib.contextmanager
def _gdal_env() -> Iterator[None]:
    import rasterio

    # As the pipeline's workers run: a bounded block cache (each open decodes its tiles).
    with rasterio.Env(GDAL_CACHEMAX=256):
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    parser.add_argument("--no-readers", action="store_true", help="skip odc-stac / TiTiler")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet load")
    parser.add_argument(
        "--only",
        choices=("all", "candidates"),
        default="all",
        help="the grid, or the default and the former storage",
    )
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    scene = product_layers()
    options = options_grid() if args.only == "all" else [FORMER, DEFAULT]
    with _gdal_env():
        same = check_default_is_encode_layer(scene)
        if not same:
            raise SystemExit("the benchmark's writer no longer gives encode_layer's bytes")
        load = os.getloadavg()[0] if args.no_wait else wait_for_quiet()
        load_before = os.getloadavg()
        results = measure(scene, options, args.repetitions)
        cond = conditions(scene, load_before)
        readers = None if args.no_readers else check_readers(scene)
    print_report(scene, results, cond, same, readers)
    print(json.dumps(summary(scene, results, load, readers), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
