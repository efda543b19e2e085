"""The peer script (benchmarks/peer.py: odc-stac + xarray + rioxarray + pystac) produces
the same layers as the pipeline for the real 29RKH partition.

The pipeline is materialized as tests/test_e2e_transform.py does it (grid on the decimated
100 m source pixels, nearest resampling), against the same rustac STAC API and SeaweedFS;
the peer then runs on the same API, S3 and AOIs, and every layer is compared pixel for
pixel on the same grid.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio

from benchmarks.peer import (
    COMPOSITE_LAYER,
    INDICES,
    PHASES,
    REFLECTANCE,
    PeerResult,
    S3Access,
    compare,
    pipeline_layer_paths,
    run_peer,
)
from geospatial_pipeline.layout import Partition
from geospatial_pipeline.raster.cog import gdal_env, validate_cog_path
from geospatial_pipeline.raster.encoding import read_physical
from geospatial_pipeline.raster.grid import Grid, aoi_mask
from geospatial_pipeline.raster.scene import encode_layer
from geospatial_pipeline.stac.publish import COMPOSITE_ID, partition_products
from tests.test_e2e import DAY, ITEM, object_store_resource, pipeline_config, s3_env
from tests.test_e2e_transform import (  # noqa: F401 - stac_api is a fixture
    ALL_CHECKS,
    run_partition,
    stac_api,
)

COLLECTION = "sentinel-2-l2a"
BUCKET = "dest-peer"
PEER_BUCKET = "peer-out"
# As tests/test_e2e_transform.py configures it: the grid on the source files' pixels.
TRANSFORM = {
    "resolution": 100,
    "crs": "EPSG:32629",
    "grid_anchor": [80, 20],  # the source files' pixel edges (x=199980, y=2800020)
    "resampling": "nearest",
}


@pytest.fixture(scope="module")
def runs(s3_server: Any, stac_api: str, tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: F811
    """The pipeline's partitions of both AOIs, then the peer's products of each: the
    first AOI written to a local directory, the second to S3."""
    s3_server.create_bucket(BUCKET)
    s3_server.create_bucket(PEER_BUCKET)
    db = tmp_path_factory.mktemp("wh") / "w.duckdb"
    config = pipeline_config(
        stac_api, s3_server, BUCKET, {"kind": "duckdb", "path": str(db)}, transform=TRANSFORM
    )
    with s3_env(s3_server):
        run_partition(config, ALL_CHECKS)
    access = S3Access(
        s3_server.endpoint_url, s3_server.access_key, s3_server.secret_key, s3_server.region
    )
    local = tmp_path_factory.mktemp("peer")
    peers: dict[str, PeerResult] = {}
    for i, aoi in enumerate(config.aois):
        out = str(local / aoi.name) if i == 0 else f"s3://{PEER_BUCKET}/peer/{aoi.name}"
        peers[aoi.name] = run_peer(
            stac_api, COLLECTION, DAY, aoi.shape, out, transform=config.transform, s3=access
        )
    return {"config": config, "peers": peers, "store": object_store_resource(s3_server, BUCKET)}


def _pipeline_paths(store_res: Any, aoi: str) -> dict[str, dict[str, str]]:
    store = store_res.store()
    products = partition_products(store, COLLECTION, Partition(dt.date.fromisoformat(DAY), aoi))
    return pipeline_layer_paths(products, store.gdal_path)


def test_peer_layers_equal_the_pipeline_products(runs: dict[str, Any]) -> None:
    store_res = runs["store"]
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        for aoi in (a.name for a in runs["config"].aois):
            peer = runs["peers"][aoi]
            assert set(peer.seconds) == set(PHASES), aoi
            pipeline = _pipeline_paths(store_res, aoi)
            assert set(pipeline) == {ITEM, COMPOSITE_ID}, aoi
            result = compare(peer, pipeline)
            assert result.problems == [], (aoi, result.problems)
            # Every layer was compared, each with valid pixels and (NDVI/NDWI aside, which
            # lose nothing here) the same number on both sides.
            assert sorted((c.product, c.layer) for c in result.layers) == sorted(
                [(ITEM, n) for n in (*REFLECTANCE, *INDICES)] + [(COMPOSITE_ID, COMPOSITE_LAYER)]
            ), aoi
            assert all(c.valid_pixels > 0 for c in result.layers), aoi
            # The masks are not trivial: some grid pixels are masked on both sides (outside
            # the AOI polygon, or clouds in the wadi AOI).
            grid_pixels = peer.shape[0] * peer.shape[1]
            assert all(c.valid_pixels < grid_pixels for c in result.layers), aoi


def test_wadi_mask_holds_scl_clouds(runs: dict[str, Any]) -> None:
    """The wadi AOI covers a cloud field: the peer masks SCL classes inside the AOI, and
    the pipeline agrees on exactly those pixels (the comparison above); here the masked
    share inside the AOI is shown to be real, not an artefact of an empty window."""
    peer = runs["peers"]["wadi"]
    store_res = runs["store"]
    red_path = "/vsis3/" + peer.layers[ITEM]["red"][len("s3://") :]
    with (
        gdal_env(store_res.gdal_options(), store_res.gdal_session()),
        rasterio.open(red_path) as src,
    ):
        red = src.read(1)

    grid = Grid(peer.crs, peer.transform, peer.shape[1], peer.shape[0])
    inside = aoi_mask(runs["config"].aoi("wadi").shape, grid)
    masked_inside = inside & ~np.isfinite(red)
    assert 0 < masked_inside.sum() < inside.sum()


def test_compare_reports_a_different_layer(runs: dict[str, Any]) -> None:
    """The check can fail: a pipeline layer swapped for another is reported, by name."""
    store_res = runs["store"]
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        pipeline = _pipeline_paths(store_res, "dunes")
        swapped = {**pipeline, ITEM: {**pipeline[ITEM], "red": pipeline[ITEM]["nir"]}}
        problems = compare(runs["peers"]["dunes"], swapped).problems
        assert problems and all(p.startswith(f"{ITEM}/red:") for p in problems), problems
        missing = {ITEM: pipeline[ITEM]}
        assert any(
            "products differ" in p for p in compare(runs["peers"]["dunes"], missing).problems
        )


def test_compare_fails_one_quantisation_step_off(runs: dict[str, Any], tmp_path: Path) -> None:
    """The index tolerance (half a step of the int16 encoding, raster/encoding.py) is
    tight: the pipeline's NDVI one step (1e-4) higher is reported; and the stored integers
    read without their scale would be far off."""
    store_res = runs["store"]
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        pipeline = _pipeline_paths(store_res, "dunes")
        with rasterio.open(pipeline[ITEM]["ndvi"]) as src:
            ndvi = read_physical(src)
            grid = Grid(src.crs.to_string(), src.transform, src.width, src.height)
            stored = src.read(1)
    shifted = tmp_path / "ndvi.tif"
    shifted.write_bytes(encode_layer(ndvi + np.float32(1e-4), grid))
    moved = {**pipeline, ITEM: {**pipeline[ITEM], "ndvi": str(shifted)}}
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        problems = compare(runs["peers"]["dunes"], moved).problems
    assert len(problems) == 1 and problems[0].startswith(f"{ITEM}/ndvi: values differ"), problems
    valid = stored != -32768
    assert np.abs(stored[valid]).max() > 100  # integers, not NDVI: unscaled reads fail


def test_peer_items_are_valid_stac(runs: dict[str, Any], s3_server: Any) -> None:
    for aoi, peer in runs["peers"].items():
        assert set(peer.items) == {ITEM, COMPOSITE_ID}, aoi
        for product, location in peer.items.items():
            if location.startswith("s3://"):
                bucket, key = location[len("s3://") :].split("/", 1)
                body = s3_server.boto3_client().get_object(Bucket=bucket, Key=key)["Body"]
                doc = json.loads(body.read())
            else:
                doc = json.loads(Path(location).read_text())
            item = pystac.Item.from_dict(doc)
            assert set(item.assets) == set(peer.layers[product]), (aoi, product)
            assert {a.href for a in item.assets.values()} == set(peer.layers[product].values())
            assert doc["properties"]["proj:shape"] == list(peer.shape), (aoi, product)


def test_peer_cogs_are_float32_the_pipeline_int16(runs: dict[str, Any]) -> None:
    """The peer writes float32 as such a script would (NaN nodata, DEFLATE with the
    floating-point predictor, the pipeline's 512 px COG layout); the pipeline's layers are
    int16 scaled, ZSTD, horizontal predictor, so the comparison above really compares
    physical values across the two encodings."""
    for path in runs["peers"]["dunes"].layers[ITEM].values():
        assert validate_cog_path(path).valid, path
        with rasterio.open(path) as src:
            assert src.dtypes == ("float32",) and np.isnan(src.nodata), path
            assert src.compression is not None and src.compression.name == "deflate", path
            assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "3", path
            assert src.block_shapes[0] == (512, 512) or src.block_shapes[0] == src.shape, path
    store_res = runs["store"]
    with gdal_env(store_res.gdal_options(), store_res.gdal_session()):
        for path in _pipeline_paths(store_res, "dunes")[ITEM].values():
            with rasterio.open(path) as src:
                assert src.dtypes == ("int16",) and src.nodata == -32768, path
                assert (src.scales, src.offsets) == ((1e-4,), (0.0,)), path
                assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD", path
                assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2", path
