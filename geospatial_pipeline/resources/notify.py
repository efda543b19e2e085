"""The alerts resource: where messages go (a JSON webhook, Slack through dagster-slack)
and which events send one. Built from ``notifications`` in the configuration; the webhook
URL and the Slack token are ``EnvVar`` references, read from the environment only."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from dagster import ConfigurableResource, EnvVar, get_dagster_logger
from dagster_slack import SlackResource

from geospatial_pipeline.config import NotificationsConfig, default_of
from geospatial_pipeline.errors import ConfigError
from geospatial_pipeline.notify import Delivery, Message, post_slack, post_webhook


class NotifierResource(ConfigurableResource):
    """Sends alert messages; a receiver that fails is logged as a warning, never raised."""

    ui_base_url: str = default_of(NotificationsConfig, "ui_base_url")
    events: list[str] = default_of(NotificationsConfig, "events")
    timeout_s: float = default_of(NotificationsConfig, "timeout_s")
    # Wired from EnvVar only (the URL carries the webhook's secret).
    webhook_url: str | None = None
    slack: SlackResource | None = None
    slack_channel: str | None = default_of(NotificationsConfig, "slack_channel")

    @classmethod
    def from_config(cls, config: NotificationsConfig) -> NotifierResource:
        return cls(
            ui_base_url=config.ui_base_url,
            events=list(config.events),
            timeout_s=config.timeout_s,
            webhook_url=EnvVar(config.webhook_url_env_var) if config.webhook_url_env_var else None,
            slack=SlackResource(token=EnvVar(config.slack_token_env_var))
            if config.slack_token_env_var
            else None,
            slack_channel=config.slack_channel,
        )

    def sends(self, event: str) -> bool:
        return event in self.events and (self.webhook_url is not None or self.slack is not None)

    def send(self, message: Message, log: logging.Logger | None = None) -> list[Delivery]:
        """Deliver ``message`` to every receiver (none when its event is not chosen)."""
        if not self.sends(message.event):
            return []
        deliveries = []
        if self.webhook_url:
            deliveries.append(post_webhook(self.webhook_url, message, timeout_s=self.timeout_s))
        if self.slack is not None and self.slack_channel:
            deliveries.append(
                post_slack(
                    self.slack.get_client(), self.slack_channel, message, timeout_s=self.timeout_s
                )
            )
        log = log or get_dagster_logger()
        for delivery in deliveries:
            if delivery.ok:
                log.info("alert %r sent to %s", message.title, delivery.receiver)
            else:
                log.warning(
                    "alert %r not delivered to %s: %s; going on without it",
                    message.title,
                    delivery.receiver,
                    delivery.error,
                )
        return deliveries


def require_notification_secrets(
    config: NotificationsConfig, environ: Mapping[str, str] | None = None
) -> None:
    """Fail while the code location loads, naming the variable, when a receiver's variable
    is unset: later, resolving it would fail every sensor that sends alerts."""
    env = os.environ if environ is None else environ
    for field, name in (
        ("webhook_url_env_var", config.webhook_url_env_var),
        ("slack_token_env_var", config.slack_token_env_var),
    ):
        if name is not None and not env.get(name):
            raise ConfigError(
                f"notifications.{field}: environment variable {name} is not set (alert "
                "receivers' URLs and tokens are read from the environment, never the file)"
            )
    url = env.get(config.webhook_url_env_var) if config.webhook_url_env_var else None
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"notifications.webhook_url_env_var: {config.webhook_url_env_var} must hold an "
            "http(s) URL"
        )
