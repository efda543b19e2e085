"""The code location's configuration (``GEOSPATIAL_PIPELINE_CONFIG``), read once at import.

Assets are module-level definitions, so what they are declared with must be known before
``defs`` is built: the partitions (partitions.py) and the storage and warehouse kinds the
UI shows. ``build_defs`` refuses a configuration whose partitions differ from these.
"""

from __future__ import annotations

from geospatial_pipeline.config import load_config

LOCATION_CONFIG = load_config()
STORAGE_KIND = "s3" if LOCATION_CONFIG.storage.is_s3 else "filesystem"
WAREHOUSE_KIND = LOCATION_CONFIG.warehouse.kind
