"""Updates of one chat one after another, in order; different chats at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

# python-telegram-bot takes its own semaphore before ours is asked; set that one so high that it
# never waits, or a chat with a backlog could hold every slot while its updates wait in line.
_UNBOUNDED = 1 << 20


class ChatOrderedProcessor(BaseUpdateProcessor):
    """At most `limit` updates at once; a chat's updates wait for the one before them.

    python-telegram-bot starts one task per update in arrival order, and each takes its chat's
    lock (first come, first served) before any other await, so a chat's order is kept.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(_UNBOUNDED)
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._chats: dict[int | None, tuple[asyncio.Lock, int]] = {}
        self.running = 0
        self.peak = 0  # most updates handled at the same moment (for metrics and tests)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Wait for the chat's turn, then for a free slot, then handle the update."""
        chat = update.effective_chat.id if isinstance(update, Update) and \
            update.effective_chat is not None else None
        lock, users = self._chats.get(chat) or (asyncio.Lock(), 0)
        self._chats[chat] = (lock, users + 1)
        try:
            async with lock, self._slots:
                self.running += 1
                self.peak = max(self.peak, self.running)
                try:
                    await coroutine
                finally:
                    self.running -= 1
        finally:
            lock, users = self._chats[chat]
            if users == 1:
                del self._chats[chat]  # no one else waits for this chat: forget its lock
            else:
                self._chats[chat] = (lock, users - 1)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""
