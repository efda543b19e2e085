"""Benchmark: ``transform_raw`` (decoded bands in, layers out) on a 20 km x 20 km AOI at
10 m, against a memory-bandwidth bound measured in the same run; decoding timed apart;
peak RSS.

Run by ``make bench`` (``benchmarks/run.py`` calls :func:`run`) or alone with
``.venv/bin/python -m benchmarks.transform [--repetitions N]``. See benchmarks/README.md.

1. Inputs: the sample catalog (``generate_sample_catalog``) of one real tile (31TCJ) on
   2024-06-15, baseline 05.10 (+1000 DN in the pixels), cut to the AOI's windows exactly
   as ingestion stores them (``read_aoi_window`` + ``encode_cog``): four 10 m uint16 band
   COGs and one 20 m SCL COG, local files. Cached under ``.data/bench-transform/``.
2. Every repetition runs in a fresh interpreter. Start-up is measured apart: imports, and
   loading the compiled kernels from numba's cache (``warm_up_kernels``; an unmeasured
   child first fills the cache). Then the first ``read_scene`` (decode) and the first
   ``transform_raw`` are timed (cold GDAL/PROJ state, fresh outputs; the OS page cache
   holds the files for every run alike), then peak RSS (VmHWM, see :func:`_rss_mb`), a
   second decode + transform (warm), the COG encoding of the six layers (first run only,
   reported separately), and the copy bound. The inputs are generated in a child too.
3. Memory-bandwidth bound: one numpy copy pass (``np.copyto`` into pre-faulted arrays) over
   the same input arrays (the five bands as decoded) and output arrays (six float32 layers
   and the validity mask), median of several passes, in the same process.
   ``transform_vs_memory_bound`` = median over the runs of cold transform / copy time.
4. One extra fresh process runs decode + transform under cProfile: where the time goes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO / ".data" / "bench-transform"
CACHE_VERSION = 1  # bump when the inputs below change

AOI_KM = 20.0
RESOLUTION = 10.0
DAY = dt.date(2024, 6, 15)
EPSG = 32631
CENTRE_UTM = (355_000.0, 4_845_000.0)  # well inside tile 31TCJ (Toulouse), one tile only
BANDS = ("red", "green", "blue", "nir", "scl")
LAYERS = ("red", "green", "blue", "nir", "ndvi", "ndwi")
REPETITIONS = 9
COPY_PASSES = 7
TARGET_VS_MEMORY_BOUND = 3.0
CHILD_TIMEOUT_S = 300
PROFILE_TOP = 14


def aoi_geometry() -> Any:
    """A 20 km x 20 km square in EPSG:32631, as a lon/lat polygon (edges densified)."""
    from pyproj import Transformer
    from shapely import transform as shp_transform
    from shapely.geometry import box

    x, y = CENTRE_UTM
    half = AOI_KM * 500
    square = box(x - half, y - half, x + half, y + half).segmentize(100.0)
    to_ll = Transformer.from_crs(EPSG, 4326, always_xy=True)
    return shp_transform(square, to_ll.transform, interleaved=False)


# --------------------------------------------------------------------------- inputs


def _cache_key() -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "day": DAY.isoformat(),
        "centre": list(CENTRE_UTM),
        "aoi_km": AOI_KM,
        "bands": list(BANDS),
    }


def prepare_inputs(cache: Path = CACHE_DIR) -> dict[str, Any]:
    """The AOI window COGs of one sample scene (made once, then reused)."""
    manifest_path = cache / "inputs.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") == _cache_key() and all(
            Path(p).is_file() for p in manifest["paths"].values()
        ):
            manifest["prepared_s"] = 0.0
            return dict(manifest)

    from geospatial_pipeline.local.sample_catalog import generate_sample_catalog
    from geospatial_pipeline.raster.cog import encode_cog, read_aoi_window
    from geospatial_pipeline.raster.scene import scene_meta

    start = time.monotonic()
    aoi = aoi_geometry()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-transform-") as tmp:
        catalog = generate_sample_catalog(Path(tmp), DAY, aoi.bounds)
        items = [it for it in catalog.items if it["id"].endswith("_0_L2A")]
        if len(items) != 1:
            raise RuntimeError(f"expected one first-processing item, got {len(items)}")
        item = items[0]
        paths: dict[str, str] = {}
        shapes: dict[str, list[int]] = {}
        for band in BANDS:
            data = read_aoi_window(item["assets"][band]["href"], aoi)
            if data is None:
                raise RuntimeError(f"AOI outside the {band} raster")
            path = cache / f"{band}.tif"
            path.write_bytes(encode_cog(data, categorical=band == "scl"))
            paths[band] = str(path)
            shapes[band] = list(data.shape)
    meta = scene_meta(item)
    manifest = {
        "key": _cache_key(),
        "item_id": item["id"],
        "meta": {
            "baseline": meta.baseline,
            "boa_offset_applied": meta.boa_offset_applied,
            "raster_offset": meta.raster_offset,
            "scale": meta.scale,
        },
        "paths": paths,
        "shapes": shapes,
        "bytes": {b: Path(p).stat().st_size for b, p in paths.items()},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    manifest["prepared_s"] = round(time.monotonic() - start, 1)
    return manifest


# --------------------------------------------------------------------------- child


def _rss_mb() -> float:
    """Peak RSS of this process, MB (MiB).

    VmHWM where /proc exists: ``ru_maxrss`` survives fork + exec, so a fresh interpreter
    reports its parent's RSS at fork time until it exceeds it (measured: a child of a
    2.5 GB parent reports 2.5 GB before doing anything). Elsewhere ``ru_maxrss`` (KiB on
    Linux).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up_kernels(band_dtype: Any) -> int:
    """Compile the kernels for bands of ``band_dtype``, or load them from numba's on-disk
    cache; returns how many kernel signatures missed the cache (were compiled)."""
    import numpy as np

    from geospatial_pipeline.raster.kernels import (
        HIST_BINS,
        LAYERS,
        N_COUNTS,
        polygon_spans,
        scene_pass,
        spans_to_mask,
    )

    dtype = np.dtype(band_dtype)
    band = np.ones((2, 2), dtype=dtype)
    nodata = dtype.type(np.nan if dtype.kind == "f" else 0)
    spans = polygon_spans(
        np.array([0.0, 2.0, 0.0]), np.array([0.0, 0.0, 2.0]), np.array([0, 3]), 2, 2
    )
    spans_to_mask(*spans, np.zeros((2, 2), dtype=np.uint8))
    scene_pass(
        band,
        band,
        band,
        band,
        True,
        np.zeros((4, 2), dtype=np.int64),
        (nodata, nodata, nodata, nodata),
        np.ones((1, 1), dtype=np.uint8),
        np.zeros(2, dtype=np.int64),
        2,
        np.zeros(256, dtype=np.uint8),
        spans,
        np.float32(0),
        np.float32(1),
        dtype.type(1),
        True,
        True,
        np.empty((len(LAYERS), 2, 2), dtype=np.float32),
        np.empty((2, 2), dtype=bool),
        np.zeros(HIST_BINS, dtype=np.int64),
        np.zeros(N_COUNTS, dtype=np.int64),
    )
    return sum(len(f.stats.cache_misses) for f in (scene_pass, polygon_spans, spans_to_mask))


def child(manifest_path: Path, profile: bool, encode: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process; returns the figures."""
    t_import = time.perf_counter()
    import numpy as np

    from geospatial_pipeline.raster.grid import aoi_grid
    from geospatial_pipeline.raster.scene import (
        SceneMeta,
        TransformSettings,
        encode_layer,
        read_scene,
        transform_raw,
    )

    import_s = time.perf_counter() - t_import
    # The compiled kernels: loaded from numba's on-disk cache (compiled on a miss), once
    # per process. Measured apart, like the imports: it is not per scene.
    t0 = time.perf_counter()
    jit_misses = warm_up_kernels(np.uint16)
    jit_s = time.perf_counter() - t0
    manifest = json.loads(manifest_path.read_text())
    paths = manifest["paths"]
    meta = SceneMeta(**manifest["meta"])
    settings = TransformSettings(resolution=RESOLUTION)
    aoi = aoi_geometry()
    grid = aoi_grid(aoi, RESOLUTION)
    rss_before = _rss_mb()

    if profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        t0 = time.perf_counter()
        profiler.enable()
        transform_raw(read_scene(paths, grid), aoi, grid, meta, settings)
        profiler.disable()
        total = time.perf_counter() - t0
        table: dict[Any, Any] = pstats.Stats(profiler, stream=io.StringIO()).stats  # type: ignore[attr-defined]
        rows = []
        for (file, line, name), (_cc, ncalls, tt, ct, _callers) in table.items():
            where = f"{Path(file).name}:{line}" if line else file
            rows.append(
                {"function": f"{name} ({where})", "calls": ncalls, "tottime": tt, "cumtime": ct}
            )
        rows.sort(key=lambda r: r["tottime"], reverse=True)
        return {"profile_total_s": total, "profile": rows[:PROFILE_TOP]}

    # Cold: first decode and first transform in this process (GDAL, PROJ and the page
    # tables start cold; the outputs are fresh allocations).
    t0 = time.perf_counter()
    raw = read_scene(paths, grid)
    t1, c1 = time.perf_counter(), time.process_time()
    scene = transform_raw(raw, aoi, grid, meta, settings)
    t2, c2 = time.perf_counter(), time.process_time()
    decode_s, transform_s = t1 - t0, t2 - t1
    transform_cpu_s = c2 - c1
    rss_peak = _rss_mb()
    decision = scene.decision.offset_dn, scene.decision.decided_by
    valid_fraction = scene.stats["valid_pixel_fraction"]
    del scene, raw

    t0 = time.perf_counter()
    raw = read_scene(paths, grid)
    t1 = time.perf_counter()
    scene = transform_raw(raw, aoi, grid, meta, settings)
    t2 = time.perf_counter()
    warm_decode_s, warm_transform_s = t1 - t0, t2 - t1

    encode_s = encoded = None
    if encode:  # seconds per run: measured in one run only
        t0 = time.perf_counter()
        encoded = sum(len(encode_layer(scene.layers[name], grid)) for name in LAYERS)
        encode_s = time.perf_counter() - t0

    # The copy bound: the same inputs (as decoded) and outputs, one np.copyto pass each.
    inputs = [raw.arrays[band] for band in BANDS]
    outputs = [scene.layers[name] for name in LAYERS] + [scene.valid]
    arrays = inputs + outputs
    targets = [np.empty_like(a) for a in arrays]
    for dst, src in zip(targets, arrays, strict=True):  # fault the pages in once
        np.copyto(dst, src)
    copy_runs = []
    for _ in range(COPY_PASSES):
        t0 = time.perf_counter()
        for dst, src in zip(targets, arrays, strict=True):
            np.copyto(dst, src)
        copy_runs.append(time.perf_counter() - t0)
    return {
        "import_s": import_s,
        "jit_s": jit_s,
        "jit_misses": jit_misses,
        "decode_s": decode_s,
        "transform_s": transform_s,
        "transform_cpu_s": transform_cpu_s,
        "warm_decode_s": warm_decode_s,
        "warm_transform_s": warm_transform_s,
        "encode_s": encode_s,
        "encoded_bytes": encoded,
        "copy_s": statistics.median(copy_runs),
        "copy_runs_s": copy_runs,
        "in_bytes": sum(a.nbytes for a in inputs),
        "out_bytes": sum(a.nbytes for a in outputs),
        "in_shapes": {b: list(a.shape) for b, a in zip(BANDS, inputs, strict=True)},
        "grid": [grid.height, grid.width, grid.crs],
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_peak,
        "offset_dn": decision[0],
        "decided_by": decision[1],
        "valid_fraction": valid_fraction,
    }


def run_child(
    manifest_path: Path | None, profile: bool = False, encode: bool = False, prepare: bool = False
) -> dict[str, Any]:
    """Run :func:`child` (or :func:`prepare_inputs`) in a new interpreter; its figures are
    its last stdout line."""
    cmd = [sys.executable, "-m", "benchmarks.transform"]
    if prepare:
        cmd.append("--prepare")
    if manifest_path is not None:
        cmd += ["--child", str(manifest_path)]
    if profile:
        cmd.append("--profile")
    if encode:
        cmd.append("--encode")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"transform child failed ({proc.returncode}):\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- parent


def measure(repetitions: int = REPETITIONS) -> dict[str, Any]:
    """Prepare the inputs, run the repetitions and the profile; return all figures."""
    t_start = time.monotonic()
    # In a child too: generating the sample scene takes GBs this process would keep.
    prepared = run_child(None, prepare=True)
    manifest_path = CACHE_DIR / "inputs.json"
    manifest = {**json.loads(manifest_path.read_text()), "prepared_s": prepared["prepared_s"]}
    for path in manifest["paths"].values():  # same page-cache state for every run
        Path(path).read_bytes()
    # One unmeasured child first: it compiles the kernels if numba's on-disk cache is
    # empty or stale, so every measured child loads them the same way.
    run_child(manifest_path)
    runs = [run_child(manifest_path, encode=i == 0) for i in range(repetitions)]
    profile = run_child(manifest_path, profile=True)
    height, width, crs = runs[0]["grid"]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    copy = med("copy_s")
    return {
        "manifest": manifest,
        "runs": runs,
        "profile": profile,
        "grid": (height, width, crs),
        "mpix": height * width / 1e6,
        "transform_s": med("transform_s"),
        "decode_s": med("decode_s"),
        "end_to_end_s": statistics.median(r["decode_s"] + r["transform_s"] for r in runs),
        "warm_transform_s": med("warm_transform_s"),
        "warm_decode_s": med("warm_decode_s"),
        "import_s": med("import_s"),
        "jit_s": med("jit_s"),
        "jit_misses": max(r["jit_misses"] for r in runs),
        "encode_s": runs[0]["encode_s"],
        "copy_s": copy,
        # Side by side: each run's transform over the same run's copy bound, median.
        "ratio": statistics.median(r["transform_s"] / r["copy_s"] for r in runs),
        "end_to_end_ratio": statistics.median(
            (r["decode_s"] + r["transform_s"]) / r["copy_s"] for r in runs
        ),
        "rss_peak_mb": max(r["rss_peak_mb"] for r in runs),
        "rss_before_mb": med("rss_before_mb"),
        "wall_s": time.monotonic() - t_start,
        "repetitions": repetitions,
    }


def summary_keys(m: dict[str, Any]) -> dict[str, Any]:
    """The figures that go into ``make bench``'s JSON line."""
    return {
        "transform_mpix_per_s": round(m["mpix"] / m["transform_s"], 3),
        "transform_vs_memory_bound": round(m["ratio"], 2),
        "transform_peak_rss_mb": round(m["rss_peak_mb"], 1),
        "transform_decode_ms": round(m["decode_s"] * 1000, 1),
        "transform_with_decode_vs_memory_bound": round(m["end_to_end_ratio"], 2),
    }


def print_report(m: dict[str, Any]) -> None:
    import numba
    import numpy
    import rasterio

    r0 = m["runs"][0]
    height, width, crs = m["grid"]
    manifest = m["manifest"]
    gbytes = (r0["in_bytes"] + r0["out_bytes"]) / 1e9
    print()
    print("Transform: one scene onto a 20 km x 20 km AOI grid at 10 m vs a memory-bandwidth bound")
    print("=" * 88)
    conditions = {
        "input": (
            f"sample scene {manifest['item_id']} (baseline {manifest['meta']['baseline']}, "
            f"+1000 DN in the pixels), AOI window COGs as ingestion writes them: "
            + ", ".join(f"{b} {'x'.join(map(str, manifest['shapes'][b][1:]))}" for b in BANDS)
            + f" ({sum(manifest['bytes'].values()) / 1e6:.1f} MB, local files, page cache warm)"
        ),
        "output grid": f"{height} x {width} px = {m['mpix']:.2f} Mpx, {crs}, 10 m, bilinear",
        "transform (timed)": (
            "transform_raw(): decoded band arrays in, layers out: place on the grid, AOI "
            "mask, SCL mask, offset evidence + decision, reflectance, NDVI/NDWI, statistics"
        ),
        "decode (timed apart)": "read_scene(): open + DEFLATE-decode the 5 COGs",
        "not timed": "COG encoding (reported below, first run only), upload",
        "threads": "1 (numba kernels serial; GDAL decode in the caller; numpy copy)",
        "repetitions": (
            f"{m['repetitions']}, each in a fresh interpreter, first decode and first "
            "transform there (cold), median"
        ),
        "memory bound": (
            f"np.copyto of the 5 decoded input arrays ({r0['in_bytes'] / 1e6:.0f} MB) and "
            f"the 7 output arrays ({r0['out_bytes'] / 1e6:.0f} MB) into pre-faulted arrays, "
            f"median of {COPY_PASSES} passes per run; ratio = median over runs of that "
            "run's transform / that run's copy"
        ),
        "machine": (
            f"nproc={os.cpu_count()}, {platform.machine()}, Python "
            f"{platform.python_version()}, numpy {numpy.__version__}, numba "
            f"{numba.__version__}, GDAL {rasterio.__gdal_version__}"
        ),
        "benchmark wall time": (
            f"{m['wall_s']:.0f} s (inputs prepared in {manifest['prepared_s']:.0f} s; 0 = cached)"
        ),
    }
    for key, value in conditions.items():
        print(f"{key:<21} {value}")
    print()

    def row(label: str, key: str, digits: int = 0, note: str = "") -> None:
        values = [f"{r[key] * 1000:.{digits}f}" for r in m["runs"]]
        median = statistics.median(r[key] for r in m["runs"]) * 1000
        print(f"{label:<24} {' '.join(values):<38} median {median:8.1f}{note}")

    print(f"{'':<24} {'per run, in run order':<38} {'':>6} {'ms':>8}")
    row("transform cold", "transform_s", 1)
    row("  its CPU time", "transform_cpu_s", 1)
    row("transform warm", "warm_transform_s", 1)
    row(
        "copy bound",
        "copy_s",
        1,
        f"  ({2 * gbytes / m['copy_s']:.1f} GB/s read+write)",
    )
    row("decode cold", "decode_s")
    row("decode warm", "warm_decode_s")
    row("per process: imports", "import_s")
    row(
        "per process: kernels",
        "jit_s",
        note=f"  (from numba's cache; {m['jit_misses']} cache misses)",
    )
    print(
        f"{'COG encode 6 layers':<24} {'(first run only)':<38} {'':>6} {m['encode_s'] * 1000:8.1f}"
        f"  ({r0['encoded_bytes'] / 1e6:.1f} MB; not in the transform time)"
    )
    print(
        f"throughput {m['mpix'] / m['transform_s']:.1f} Mpx/s cold, "
        f"{m['mpix'] / m['warm_transform_s']:.1f} Mpx/s warm; transform / copy bound = "
        f"{m['ratio']:.2f} cold, {m['warm_transform_s'] / m['copy_s']:.2f} warm; with the "
        f"decode: {m['end_to_end_ratio']:.1f} ({m['mpix'] / m['end_to_end_s']:.1f} Mpx/s)"
    )
    print(
        f"peak RSS {m['rss_peak_mb']:.0f} MB (interpreter + libraries before the call: "
        f"{m['rss_before_mb']:.0f} MB; offset decision {r0['offset_dn']} DN by "
        f"{r0['decided_by']}, valid fraction {r0['valid_fraction']:.3f})"
    )
    prof = m["profile"]
    print()
    print(
        f"Where the time goes (cProfile, one cold decode + transform, "
        f"{prof['profile_total_s'] * 1000:.0f} ms with profiler overhead; top by own time):"
    )
    print(f"  {'own ms':>8} {'cum ms':>8} {'calls':>6}  function")
    for entry in prof["profile"]:
        print(
            f"  {entry['tottime'] * 1000:8.1f} {entry['cumtime'] * 1000:8.1f} "
            f"{entry['calls']:>6}  {entry['function']}"
        )
    print()
    ok = m["ratio"] <= TARGET_VS_MEMORY_BOUND
    print(
        f"target: transform_vs_memory_bound {m['ratio']:.2f} <= {TARGET_VS_MEMORY_BOUND} "
        f"{'MET' if ok else 'NOT MET'} (decode excluded; with it: {m['end_to_end_ratio']:.1f})"
    )


def run(repetitions: int = REPETITIONS) -> dict[str, Any]:
    """Measure, print the report, return the JSON keys (what ``benchmarks.run`` calls)."""
    m = measure(repetitions)
    print_report(m)
    return summary_keys(m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--encode", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        print(json.dumps({"prepared_s": prepare_inputs()["prepared_s"]}))
        return 0
    if args.child is not None:
        print(json.dumps(child(args.child, args.profile, args.encode)))
        return 0
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    print(json.dumps(run(args.repetitions), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
