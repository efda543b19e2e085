"""Alerts without Dagster: messages (what, where, why, a link into the UI) and their
delivery to a JSON webhook or Slack. alerts.py and the sensors decide when to send."""

from geospatial_pipeline.notify.deliver import (
    Delivery,
    post_slack,
    post_webhook,
    slack_blocks,
    webhook_payload,
)
from geospatial_pipeline.notify.messages import (
    Event,
    Message,
    asset_url,
    late_scenes,
    partition_label,
    quality_gate,
    request_ended,
    run_failed,
    run_url,
    runs_tagged_url,
)

__all__ = [
    "Delivery",
    "Event",
    "Message",
    "asset_url",
    "late_scenes",
    "partition_label",
    "post_slack",
    "post_webhook",
    "quality_gate",
    "request_ended",
    "run_failed",
    "run_url",
    "runs_tagged_url",
    "slack_blocks",
    "webhook_payload",
]
