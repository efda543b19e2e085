"""Benchmark: the codec of the raw band windows band_rasters stores (and three steps read).

``.venv/bin/python -m benchmarks.raw_windows [--repetitions N]`` (~20 s; its last line is
a JSON object). See the "Raw band windows" section of benchmarks/README.md.

The five band windows of one full-size scene of the realistic data (S2A_30TYN_20240615,
``benchmarks/realistic.py``) under the 20 km AOI of the window-read benchmark's centre
(2077 x 2070 px at 10 m, SCL 1039 x 1035 px at 20 m), read once with ``read_aoi_window``,
then encoded with ``encode_cog`` (``cog_options``: 512-px tiles, overviews, predictor
2, one thread) under each codec, and decoded back from the bytes. Median of N,
options interleaved per repetition, one process, ``GDAL_CACHEMAX`` 256 MB. Checked: every
output a valid COG, decoded equal to the window, the same bytes in every repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import rasterio
from rasterio.io import MemoryFile

from benchmarks import data, realistic
from geospatial_pipeline.raster.cog import (
    RAW_COMPRESS,
    RAW_LEVEL,
    WindowData,
    encode_cog,
    read_aoi_window,
    validate_cog_bytes,
)
from geospatial_pipeline.raster.extract import CATEGORICAL_BANDS

REPETITIONS = 5
# (label, compress, level): GDAL's DEFLATE default (6) was the windows' codec before.
OPTIONS = (("DEFLATE-6", "DEFLATE", None), ("DEFLATE-1", "DEFLATE", 1), ("ZSTD-1", "ZSTD", 1))
DEFAULT = f"{RAW_COMPRESS}-{RAW_LEVEL}"


def encode(window: WindowData, band: str, compress: str, level: int | None) -> bytes:
    return encode_cog(window, categorical=band in CATEGORICAL_BANDS, compress=compress, level=level)


def decode(blob: bytes) -> np.ndarray:
    with MemoryFile(blob) as mem, mem.open() as src:
        return src.read()


def run(repetitions: int = REPETITIONS) -> dict[str, Any]:
    dataset = data.realistic(realistic.prepare(quiet=True))
    item = dataset.item
    aoi = next(a for a in dataset.aois if a.name == "20km").geometry()
    load_before = os.getloadavg()
    with rasterio.Env(GDAL_CACHEMAX=256 * 1024 * 1024):
        windows = {}
        for band, path in dataset.files.items():
            window = read_aoi_window(str(path), aoi)
            if window is None:
                raise RuntimeError(f"{band}: the AOI misses {path}")
            windows[band] = window
        pixels_mb = sum(w.array.nbytes for w in windows.values()) / 1e6
        times: dict[str, dict[str, list[float]]] = {
            label: {"encode": [], "decode": []} for label, _, _ in OPTIONS
        }
        sizes: dict[str, int] = {}
        digests: dict[str, set[int]] = {label: set() for label, _, _ in OPTIONS}
        for rep in range(repetitions):
            order = OPTIONS[rep % len(OPTIONS) :] + OPTIONS[: rep % len(OPTIONS)]
            for label, compress, level in order:
                start = time.perf_counter()
                blobs = {b: encode(w, b, compress, level) for b, w in windows.items()}
                times[label]["encode"].append(time.perf_counter() - start)
                start = time.perf_counter()
                decoded = {b: decode(blob) for b, blob in blobs.items()}
                times[label]["decode"].append(time.perf_counter() - start)
                sizes[label] = sum(len(b) for b in blobs.values())
                digests[label].add(hash(tuple(blobs.values())))
                for band, blob in blobs.items():
                    if not np.array_equal(decoded[band], windows[band].array):
                        raise AssertionError(f"{label} {band}: decoded pixels differ")
                    if rep == 0 and not validate_cog_bytes(blob).valid:
                        raise AssertionError(f"{label} {band}: not a valid COG")
    if any(len(d) != 1 for d in digests.values()):
        raise AssertionError("an option wrote different bytes in different repetitions")
    rows = {
        label: {
            "mb": sizes[label] / 1e6,
            "encode_s": statistics.median(times[label]["encode"]),
            "decode_s": statistics.median(times[label]["decode"]),
        }
        for label, _, _ in OPTIONS
    }
    print(
        f"Raw band windows: 5 windows of {item['id']} under the 20 km AOI "
        f"({pixels_mb:.1f} MB of pixels), median of {repetitions}; nproc={os.cpu_count()}, "
        f"GDAL {rasterio.__gdal_version__}, Python {platform.python_version()}, load "
        f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"{'codec (p2)':<12} {'MB':>7} {'encode s':>9} {'decode s':>9}")
    for label, row in rows.items():
        mark = " (default)" if label == DEFAULT else ""
        print(
            f"{label:<12} {row['mb']:>7.2f} {row['encode_s']:>9.3f} {row['decode_s']:>9.3f}{mark}"
        )
    former, default = rows["DEFLATE-6"], rows[DEFAULT]
    summary = {
        "raw_windows_default": DEFAULT,
        "raw_windows_bytes_vs_deflate": round(default["mb"] / former["mb"], 3),
        "raw_windows_encode_speedup": round(former["encode_s"] / default["encode_s"], 2),
        "raw_windows_decode_speedup": round(former["decode_s"] / default["decode_s"], 2),
        "raw_windows": {k: {m: round(v, 4) for m, v in r.items()} for k, r in rows.items()},
    }
    print(json.dumps(summary, separators=(",", ":")))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    args = parser.parse_args(argv)
    if args.repetitions < 1:
        parser.error("--repetitions must be >= 1")
    run(args.repetitions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
