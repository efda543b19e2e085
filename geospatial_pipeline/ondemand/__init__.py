"""On-demand AOIs: the registry of named areas in the object store (``aois/{name}.geojson``)
that every pod and the sensor daemon read alike, as the source of the dynamic "aoi"
partition dimension. Plain functions, no Dagster import."""
