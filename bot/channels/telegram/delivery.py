"""Operator replies to Telegram customers, sent through the Bot API by the web server: the
Telegram channel's ChatDelivery (bot/operators/delivery.py), which bot.channels.serve gives
the web app.

A web customer's socket is held by the web server, so an operator's reply is pushed to it
there. A Telegram customer's chat is held by nobody: whichever process runs `supportbot
telegram` only reacts to updates. So the process that takes the operator's reply sends it to
the chat itself, with the same token, and says whether that worked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.channels.telegram.handlers import CHANNEL
from bot.channels.telegram.text import split_text
from bot.operators.delivery import DeliveryError
from bot.settings import TelegramSettings

if TYPE_CHECKING:
    from telegram import Bot

log = logging.getLogger(__name__)


def telegram_chat(conversation_id: str) -> int | None:
    """The Telegram chat of a conversation id (`telegram:<chat>:<user>:<epoch>`), else None."""
    parts = conversation_id.split(":")
    if len(parts) != 4 or parts[0] != CHANNEL:
        return None
    try:
        return int(parts[1])
    except ValueError:
        return None


class TelegramDelivery:
    """Sends text to Telegram chats with the configured bot (initialised at the first send)."""

    name = CHANNEL

    def __init__(self, settings: TelegramSettings) -> None:
        self.settings = settings
        self._bot: Bot | None = None
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        """Whether this server has the bot token (without it, sending fails)."""
        return self.settings.token is not None

    def chat(self, conversation_id: str) -> int | None:
        """The Telegram chat of a conversation, None for another channel's."""
        return telegram_chat(conversation_id)

    async def send(self, chat_id: int, text: str) -> int:
        """Send `text` (split at Telegram's length limit); how many messages were sent."""
        from telegram.error import TelegramError

        try:
            bot = await self._started()
            for part in split_text(text):
                await bot.send_message(chat_id=chat_id, text=part)
        except TelegramError as exc:
            raise DeliveryError(f"Telegram did not take the reply: {exc}") from exc
        return len(split_text(text))

    async def typing(self, chat_id: int) -> None:
        """Show "typing..." in the chat (Telegram keeps it about 5 s)."""
        from telegram.constants import ChatAction
        from telegram.error import TelegramError

        try:
            bot = await self._started()
            await bot.send_chat_action(chat_id=chat_id, action=ChatAction.TYPING)
        except TelegramError as exc:
            raise DeliveryError(f"Telegram did not take the typing action: {exc}") \
                from exc

    async def close(self) -> None:
        """Release the bot's HTTP connections."""
        if self._bot is not None:
            await self._bot.shutdown()
            self._bot = None

    def build(self) -> Bot:
        """The bot, with the Telegram channel's request timeouts, retries and throttle."""
        from bot.channels.telegram.client import build_bot

        if self.settings.token is None:
            raise DeliveryError("telegram.token is not set on this server, so "
                                        "replies to Telegram customers cannot be sent")
        return build_bot(self.settings, self.settings.token.get_secret_value())

    async def _started(self) -> Bot:
        async with self._lock:
            if self._bot is None:
                bot = self.build()
                await bot.initialize()
                self._bot = bot
            return self._bot
