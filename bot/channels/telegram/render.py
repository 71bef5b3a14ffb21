"""Shows one turn in a chat: "typing..." while it works, verified text as it comes (by editing
one message, within Telegram's edit limits), long answers split, buttons on the last message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from telegram import Bot, InlineKeyboardMarkup, LinkPreviewOptions, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError

from bot.channels.telegram.text import split_text
from bot.dialogue import Event
from bot.types import BotReply, TextEvent

log = logging.getLogger(__name__)
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)  # FAQ links stay links, not big cards
TYPING_EVERY = 4.5  # Telegram shows "typing..." for 5 s after each sendChatAction
MarkupFor = Callable[[BotReply], InlineKeyboardMarkup | None]


class TurnRenderer:
    """Renders one turn's events into one chat (and, over 4096 characters, several messages).

    With `stream`, text is shown at most every `interval` seconds by editing the message, the
    first time one interval after the turn began (so a quick answer goes out once, complete);
    without, the answer is sent once the turn has ended.
    """

    def __init__(self, bot: Bot, chat_id: int, markup_for: MarkupFor, *, stream: bool,
                 interval: float, reply_to: int | None = None) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.markup_for = markup_for
        self.stream = stream
        self.interval = interval
        self.reply_to = reply_to
        self.text = ""
        self.shown: list[tuple[int, str]] = []  # (message id, text) of the messages sent
        self.edits = 0
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()

    async def show(self, events: AsyncIterator[Event]) -> BotReply | None:
        """Show the turn; the final reply (None if the stream ended without one)."""
        reply: BotReply | None = None
        typing = asyncio.create_task(self._typing())
        flusher = asyncio.create_task(self._flush_loop()) if self.stream else None
        try:
            async for event in events:
                if isinstance(event, TextEvent):
                    self.text += event.text
                    self._dirty.set()
                elif isinstance(event, BotReply):
                    reply = event
                # a StatusEvent (an action's call runs): the chat shows "typing" meanwhile
        finally:
            for task in (flusher, typing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if reply is not None and reply.meta.get("duplicate") and not self.shown:
            # Telegram delivered the update again: it was answered before, not again now.
            log.info("chat %s: update delivered again, its answer was sent before",
                     self.chat_id)
            return reply
        text = reply.text if reply is not None else self.text
        markup = self.markup_for(reply) if reply is not None else None
        async with self._lock:
            await self._show(text, markup)
        return reply

    async def _typing(self) -> None:
        """Keep "typing..." showing until the turn ends."""
        while True:
            try:
                await self.bot.send_chat_action(self.chat_id, ChatAction.TYPING)
            except TelegramError as exc:  # cosmetic: never worth failing a turn for
                log.debug("chat %s: typing action failed: %s", self.chat_id, exc)
            await asyncio.sleep(TYPING_EVERY)

    async def _flush_loop(self) -> None:
        await asyncio.sleep(self.interval)
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # Shielded: stopping the loop must not cut a send short (its message would be lost
            # track of and sent twice); the final show waits for it on the lock.
            await asyncio.shield(self._locked_show(self.text))
            await asyncio.sleep(self.interval)

    async def _locked_show(self, text: str) -> None:
        async with self._lock:
            try:
                await self._show(text, None)
            except TelegramError as exc:  # retried already; the final show tries once more
                log.warning("chat %s: showing the answer so far failed: %s", self.chat_id, exc)

    async def _show(self, text: str, markup: InlineKeyboardMarkup | None) -> None:
        """Make the chat show `text` (split as needed), editing what is shown already."""
        pieces = split_text(text)
        for i, piece in enumerate(pieces):
            last = markup if i == len(pieces) - 1 else None
            if i >= len(self.shown):
                sent = await self.bot.send_message(
                    self.chat_id, piece, reply_markup=last, link_preview_options=_NO_PREVIEW,
                    reply_parameters=ReplyParameters(self.reply_to,
                                                     allow_sending_without_reply=True)
                    if self.reply_to is not None and i == 0 else None)
                self.shown.append((sent.message_id, piece))
            elif self.shown[i][1] != piece or last is not None:
                await self._edit(self.shown[i][0], piece, last)
                self.shown[i] = (self.shown[i][0], piece)

    async def _edit(self, message_id: int, text: str,
                    markup: InlineKeyboardMarkup | None) -> None:
        self.edits += 1
        try:
            await self.bot.edit_message_text(text, self.chat_id, message_id, reply_markup=markup,
                                             link_preview_options=_NO_PREVIEW)
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
