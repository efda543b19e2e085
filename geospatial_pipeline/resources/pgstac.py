"""The pgstac database the products are published to (and the STAC API serving it)."""

from __future__ import annotations

from dagster import ConfigurableResource, EnvVar
from psycopg.conninfo import make_conninfo
from pydantic import ValidationError

from geospatial_pipeline.config import PublishConfig, default_of, format_errors
from geospatial_pipeline.errors import ConfigError


class PgstacResource(ConfigurableResource):
    """config.PublishConfig in launchpad types. The password comes from the environment
    (``dagster.EnvVar``: the UI shows the variable's name, never its value)."""

    dsn: str = ""
    password: str = ""
    stac_api_url: str | None = default_of(PublishConfig, "stac_api_url")

    @classmethod
    def from_config(cls, config: PublishConfig) -> PgstacResource:
        return cls(
            dsn=config.pgstac or "",
            password=EnvVar(config.pgstac_password_env_var),
            stac_api_url=config.stac_api_url,
        )

    def conninfo(self) -> str:
        """The DSN with the password: for the connection only, never for a message."""
        # Re-checked here: a DSN edited in the launchpad skips the YAML validation.
        try:
            PublishConfig(pgstac=self.dsn or None, stac_api_url=self.stac_api_url)
        except ValidationError as exc:
            # format_errors leaves the input out: a DSN given with its password stays unsaid.
            raise ConfigError(format_errors(exc, "resource 'pgstac'")) from None
        if not self.dsn:
            raise ConfigError("resource 'pgstac': dsn is empty (set publish.pgstac)")
        return make_conninfo(self.dsn, password=self.password) if self.password else self.dsn
