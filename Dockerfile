# syntax=docker/dockerfile:1
# The geospatial_pipeline code location: the Dagster gRPC code server on port 3030. The
# same image runs the Kubernetes run and step pods (the chart hands it to the run launcher).
#
# rasterio, pyproj, shapely and numpy come as manylinux wheels that bundle GDAL/PROJ/GEOS:
# no system GDAL, no compiler (tests/test_deploy_image.py checks the lock's wheels).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# NUMBA_CACHE_DIR: the transform's compiled kernels (geospatial_pipeline/raster/kernels.py)
# go to numba's on-disk cache on the pods' writable /tmp (the root filesystem is read-only
# there): a pod compiles them on its first scene (~10 s on 2 cores), later processes in
# the same pod load them (~0.3 s). Without a writable cache they compile per process.

# A fixed non-root uid/gid, which the Helm values' securityContext names (runAsUser 10001).
RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
    && python -m venv /opt/venv \
    && mkdir -p /opt/dagster/app "$DAGSTER_HOME" \
    && chown -R 10001:10001 /opt/dagster

WORKDIR /opt/dagster/app

# Layer 1, dependencies: only the hash-pinned runtime lock (the project's dependencies
# without the dev/local extras, at the same versions as requirements.lock), so this layer
# is rebuilt when the lock changes and not on every source edit. --require-hashes refuses
# anything not pinned.
COPY requirements-runtime.lock ./
RUN pip install --require-hashes --no-deps -r requirements-runtime.lock

# Layer 2, the source: the package itself, without touching the locked dependencies
# (setuptools comes from the lock, so no build isolation and no unpinned download).
COPY pyproject.toml README.md ./
COPY geospatial_pipeline ./geospatial_pipeline
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build geospatial_pipeline.egg-info

USER 10001:10001

EXPOSE 3030

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "3030"]

# CMD, not ENTRYPOINT: Kubernetes replaces it with the chart's args (the same server for
# the code location, `dagster api execute_run`/`execute_step` for run and step pods).
CMD ["dagster", "api", "grpc", "-m", "geospatial_pipeline.definitions", "-h", "0.0.0.0", "-p", "3030"]
