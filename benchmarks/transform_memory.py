"""Peak memory of the transform for a large AOI: whole arrays vs strip by strip.

    .venv/bin/python -m benchmarks.transform_memory [--tiles 3] [--block-rows 500]

Builds a large 10 m scene by tiling the 20 km benchmark inputs (`make bench` makes them)
`--tiles` x `--tiles` times, then runs `transform_scene` (+ COG encoding of the six
layers) and `transform_scene_blocked` each in a fresh process and prints peak RSS
(VmHWM) and wall time. Same inputs, one thread, GDAL_CACHEMAX 256 MB (the pipeline's).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.transform import CACHE_DIR, prepare_inputs

CHILD = r"""
import json, sys, time, tempfile, pathlib
import rasterio
from pyproj import Transformer
from shapely import transform as shp
from shapely.geometry import box
from geospatial_pipeline.raster.grid import aoi_grid
from geospatial_pipeline.raster.scene import (
    SceneMeta, TransformSettings, encode_layer, transform_scene, transform_scene_blocked)

def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) / 1024

m = json.load(open(sys.argv[1]))
x0, y0, x1, y1 = m['bounds']
square = box(x0 + 1000, y0 + 1000, x1 - 1000, y1 - 1000).segmentize(100.0)
to_ll = Transformer.from_crs(m['epsg'], 4326, always_xy=True)
aoi = shp(square, to_ll.transform, interleaved=False)
settings = TransformSettings(crs=f"EPSG:{m['epsg']}")
grid = aoi_grid(aoi, 10.0, settings.crs)
meta = SceneMeta(**m['meta'])
before = hwm()
start = time.perf_counter()
with rasterio.Env(GDAL_CACHEMAX=256 * 1024 * 1024):
    if sys.argv[2] == 'whole':
        layers = transform_scene(m['paths'], aoi, grid, meta, settings).layers
        sizes = [len(encode_layer(a, grid)) for a in layers.values()]
    else:
        with tempfile.TemporaryDirectory() as work:
            transform_scene_blocked(m['paths'], aoi, grid, meta, settings,
                                    block_rows=int(sys.argv[3]), workdir=pathlib.Path(work))
print(json.dumps({'mpx': grid.width * grid.height / 1e6, 'seconds': time.perf_counter() - start,
                  'peak_rss_mb': hwm(), 'before_mb': before}))
"""


def build_inputs(tiles: int, out: Path) -> Path:
    import numpy as np
    import rasterio

    from geospatial_pipeline.raster.cog import WindowData, encode_cog
    from geospatial_pipeline.raster.window import PixelWindow

    manifest = prepare_inputs(CACHE_DIR)
    paths: dict[str, str] = {}
    bounds = None
    for band, path in manifest["paths"].items():
        with rasterio.open(path) as src:
            array = np.tile(src.read(1), (tiles, tiles))
            transform, crs, nodata, epsg = (
                src.transform,
                src.crs.to_wkt(),
                src.nodata,
                src.crs.to_epsg(),
            )
        data = WindowData(
            array[None],
            crs,
            epsg,
            transform,
            nodata,
            PixelWindow(0, 0, array.shape[1], array.shape[0]),
            array.shape,
        )
        target = out / f"{band}.tif"
        target.write_bytes(encode_cog(data, categorical=band == "scl"))
        paths[band] = str(target)
        if band == "red":
            h, w = array.shape
            bounds = (
                transform.c,
                transform.f + transform.e * h,
                transform.c + transform.a * w,
                transform.f,
            )
    meta = manifest["meta"]
    doc = {
        "paths": paths,
        "bounds": bounds,
        "epsg": epsg,
        "meta": {
            "baseline": meta["baseline"],
            "boa_offset_applied": meta["boa_offset_applied"],
            "raster_offset": meta["raster_offset"],
            "scale": meta["scale"],
        },
    }
    (out / "inputs.json").write_text(json.dumps(doc))
    return out / "inputs.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiles", type=int, default=3)
    parser.add_argument("--block-rows", type=int, default=500)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-transform-memory-") as tmp:
        inputs = build_inputs(args.tiles, Path(tmp))
        results = {}
        for mode in ("whole", "blocked"):
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(inputs), mode, str(args.block_rows)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    mpx = results["whole"]["mpx"]
    print(f"AOI grid {mpx:.1f} Mpx at 10 m; strips of {args.block_rows} rows; fresh process each")
    for mode, r in results.items():
        print(
            f"  {mode:8s} peak RSS {r['peak_rss_mb']:7.0f} MB "
            f"(before the call {r['before_mb']:.0f} MB)   {r['seconds']:6.1f} s"
        )
    print(
        json.dumps(
            {
                "large_aoi_mpx": round(mpx, 1),
                "whole_peak_rss_mb": round(results["whole"]["peak_rss_mb"]),
                "blocked_peak_rss_mb": round(results["blocked"]["peak_rss_mb"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
