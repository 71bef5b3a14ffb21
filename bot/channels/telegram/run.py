"""Run the Telegram channel on its own (what `supportbot telegram` does once the index is open)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from bot.channels.telegram.service import TelegramService
from bot.generation.base import Generator
from bot.runtime import open_runtime
from bot.settings import Settings
from retrieval.index import FaqIndex

log = logging.getLogger(__name__)


async def run(settings: Settings, index: FaqIndex, generator: Callable[[], Generator],
              on_ready: Callable[[TelegramService], None] | None = None,
              stop: asyncio.Event | None = None) -> None:
    """Serve Telegram until SIGINT / SIGTERM (or `stop`); updates in flight finish (within
    telegram.drain_seconds) and are stored before it returns."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    runtime = await open_runtime(settings, index, generator)
    try:
        service = TelegramService(settings, runtime.manager)
        await service.start()
        try:
            if on_ready is not None:
                on_ready(service)
            await stop.wait()
            log.info("telegram: stopping; updates in flight finish first")
        finally:
            await service.stop()
    finally:
        await runtime.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
