"""Error hierarchy: every failure the pipeline raises on purpose derives from PipelineError."""


class PipelineError(Exception):
    """Base class for errors raised by geospatial_pipeline."""


class ConfigError(PipelineError):
    """The pipeline configuration is invalid; the message names the field."""


class StacSearchError(PipelineError):
    """The STAC API could not be searched (after retries) or answered nonsense."""


class RasterError(PipelineError):
    """A raster could not be read, windowed or written."""


class StorageError(PipelineError):
    """Object storage refused an operation or a key is unsafe."""


class WarehouseError(PipelineError):
    """The warehouse refused an operation."""


class LocalServerError(PipelineError):
    """A local helper server (STAC API, S3) failed to start or stop."""
