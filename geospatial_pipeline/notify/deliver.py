"""Delivering alert messages: a generic JSON webhook and Slack (a slack_sdk ``WebClient``,
as dagster-slack's ``SlackResource`` gives it).

A receiver that fails (an HTTP error, a timeout, a refused connection) never raises: the
caller gets a ``Delivery`` saying what went wrong and goes on. One attempt with a bounded
timeout, no retries: an alert is not worth stalling a sensor tick or a run for, and
retries against a receiver that is down would multiply the wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from slack_sdk.errors import SlackClientError
from slack_sdk.web.client import WebClient

from geospatial_pipeline.notify.messages import Message


@dataclass(frozen=True)
class Delivery:
    """The outcome of one message to one receiver. ``error`` never holds the receiver's
    URL or token (a webhook URL carries its own secret)."""

    receiver: str
    ok: bool
    error: str | None = None


def webhook_payload(message: Message) -> dict[str, Any]:
    """The JSON body: ``text`` for receivers that show one string (Mattermost, Rocket.Chat,
    Google Chat), the structured fields for workflows that route on them, and an Adaptive
    Card under ``attachments``, the shape Microsoft Teams Workflows' "post to a channel
    when a webhook request is received" template expects."""
    return {
        "type": "message",
        "event": message.event,
        "title": message.title,
        "text": message.text,
        "link": message.link,
        "fields": dict(message.fields),
        "details": list(message.details),
        "links": dict(message.links),
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": _adaptive_card(message),
            }
        ],
    }


def _adaptive_card(message: Message) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": message.title, "weight": "Bolder", "wrap": True},
        {
            "type": "FactSet",
            "facts": [{"title": k, "value": v} for k, v in message.fields.items()],
        },
        *({"type": "TextBlock", "text": line, "wrap": True} for line in message.details),
    ]
    actions = [
        {"type": "Action.OpenUrl", "title": "Open in Dagster", "url": message.link},
        *(
            {"type": "Action.OpenUrl", "title": f"Open {name}", "url": url}
            for name, url in message.links.items()
        ),
    ]
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }


def post_webhook(url: str, message: Message, *, timeout_s: float) -> Delivery:
    host = urlsplit(url).netloc or "webhook"
    receiver = f"webhook {host}"
    try:
        response = requests.post(url, json=webhook_payload(message), timeout=timeout_s)
    # Not the exceptions' text: it quotes the URL's path and query, where the secret lives.
    except requests.Timeout:
        return Delivery(receiver, ok=False, error=f"no answer within {timeout_s:g} s")
    except requests.ConnectionError:
        return Delivery(receiver, ok=False, error="cannot connect (refused or unreachable)")
    except requests.RequestException as exc:
        return Delivery(receiver, ok=False, error=type(exc).__name__)
    if not response.ok:
        return Delivery(
            receiver,
            ok=False,
            error=f"HTTP {response.status_code}: {response.text[:200]}",
        )
    return Delivery(receiver, ok=True)


def slack_blocks(message: Message) -> list[dict[str, Any]]:
    facts = "\n".join(f"*{k}*: {_escape(v)}" for k, v in message.fields.items())
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(message.title)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": facts[:3000]}},
    ]
    if message.details:
        details = "\n".join(_escape(line) for line in message.details)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": details[:3000]}})
    links = [f"<{message.link}|Open in Dagster>"] + [
        f"<{url}|{name}>" for name, url in message.links.items()
    ]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]})
    return blocks


def _escape(text: str) -> str:
    # Slack's mrkdwn reads these three as markup.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post_slack(client: WebClient, channel: str, message: Message, *, timeout_s: float) -> Delivery:
    receiver = f"slack {channel}"
    # WebClient's defaults: a 30 s timeout and a retry on connection errors.
    client.timeout = int(max(1, round(timeout_s)))
    client.retry_handlers = []
    try:
        client.chat_postMessage(
            channel=channel, text=message.text, blocks=slack_blocks(message), unfurl_links=False
        )
    except SlackClientError as exc:
        # SlackApiError's text is Slack's answer ("channel_not_found", …), never the token.
        return Delivery(receiver, ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    except OSError as exc:
        # slack_sdk speaks urllib: a refused connection or a timeout is an OSError.
        return Delivery(receiver, ok=False, error=f"{type(exc).__name__}: {exc}")
    return Delivery(receiver, ok=True)
