"""The Bot API client settings every process uses: the channel's Application and the web
server's delivery of operator replies (delivery.py) build their bots here."""

from __future__ import annotations

from typing import Any

from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from bot.channels.telegram.retry import RetryingLimiter
from bot.settings import TelegramSettings


def bot_request(settings: TelegramSettings, connections: int) -> HTTPXRequest:
    """Bot API calls (all but getUpdates): `connections` pooled, each bounded by
    telegram.request_timeout_seconds (waiting for a connection included)."""
    timeout = settings.request_timeout_seconds
    return HTTPXRequest(connection_pool_size=connections, pool_timeout=timeout,
                        connect_timeout=timeout, read_timeout=timeout, write_timeout=timeout)


def build_bot(settings: TelegramSettings, token: str, connections: int = 8) -> ExtBot[Any]:
    """A bot with the channel's request timeouts, retries and throttle (bot_request and
    RetryingLimiter.from_settings, as build_application gives its Application)."""
    return ExtBot(token, base_url=settings.base_url, base_file_url=settings.base_file_url,
                  request=bot_request(settings, connections),
                  rate_limiter=RetryingLimiter.from_settings(settings))
