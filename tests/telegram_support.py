"""Helpers for the Telegram tests: settings pointing the channel at the fake Bot API server
(tests/telegram_server.py) and the runtime with the channel started."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bot.channels.telegram import TelegramService
from bot.runtime import open_runtime
from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.telegram_server import TOKEN, FakeBotApi
from tests.web_support import web_settings

# Telegram user ids (in private chats also the chat ids).
ALICE, BOB = 1001, 1002


def tg_settings(tmp_path: Path, api: FakeBotApi, index: FaqIndex | None = None,
                generate: bool = False, **telegram: Any) -> Settings:
    """Web-test settings (SQLite in tmp_path) with the Telegram channel on the test server."""
    settings = web_settings(tmp_path, index, generate=generate)
    values: dict[str, Any] = {
        "token": TOKEN, "base_url": api.base_url, "base_file_url": api.base_url,
        "state_file": tmp_path / "telegram-state.pickle", "poll_timeout_seconds": 1,
        "edit_interval_seconds": 0.3, "retry_backoff_seconds": 0.1, **telegram}
    for key, value in sorted(values.items(), key=lambda kv: kv[0] == "mode"):  # mode last
        setattr(settings.telegram, key, value)
    return settings


@contextlib.asynccontextmanager
async def telegram_bot(settings: Settings, index: FaqIndex,
                       generator: Callable[[], Any] | None = None
                       ) -> AsyncIterator[TelegramService]:
    """The runtime and the Telegram channel, started (getMe, polling) and stopped after."""
    runtime = await open_runtime(settings, index, generator)
    try:
        async with TelegramService(settings, runtime.manager) as service:
            yield service
    finally:
        await runtime.close()
