"""ChatService: runs turns for the web channel, counts them, and drains them at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator

from bot.channels.web.metrics import Metrics
from bot.dialogue import DialogueManager, Event
from bot.types import BotReply, TextEvent, UserMessage


class ShuttingDownError(RuntimeError):
    """The server is shutting down and takes no new turns."""


class ChatService:
    """The dialogue manager as the web channel uses it: every turn counted in the metrics,
    turns in flight tracked so that shutdown waits for them."""

    def __init__(self, manager: DialogueManager, metrics: Metrics) -> None:
        self.manager = manager
        self.metrics = metrics
        self.closing = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Turns running now."""
        return self._in_flight

    async def turn(self, message: UserMessage) -> AsyncGenerator[Event, None]:
        """The core's stream for one message; ShuttingDownError once shutdown has begun."""
        if self.closing:
            raise ShuttingDownError("the server is shutting down")
        self._in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        first: float | None = None
        try:
            async with contextlib.aclosing(self.manager.stream(message)) as events:
                async for event in events:
                    if isinstance(event, TextEvent) and first is None:
                        first = time.perf_counter() - started
                    if isinstance(event, BotReply):
                        self.metrics.turn(event, message.channel, first)
                    yield event
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def drain(self, timeout: float) -> bool:
        """Take no new turns and wait up to `timeout` s for those running; True if all ended."""
        self.closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
