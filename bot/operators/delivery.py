"""Delivering operators' messages (replies, wait notices, typing) to customers: to the web
sockets this process holds, and through a ChatDelivery to channels whose chats no process
holds open (Telegram's, which bot.channels.serve plugs in)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from bot.push import CustomerPush, Frame

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The channel refused the message or could not be reached; it stays stored."""


class ChatDelivery(Protocol):
    """Sends to the chats of a channel that only reacts to its updates (Telegram): the process
    that takes an operator's message sends it to the customer's chat itself."""

    name: str  # the channel, the key of its outcome in to_customer's result

    @property
    def configured(self) -> bool:
        """Whether this server can send (it has the channel's credentials)."""
        ...

    def chat(self, conversation_id: str) -> int | None:
        """The channel's chat of a conversation, None for another channel's."""
        ...

    async def send(self, chat_id: int, text: str) -> int:
        """Send `text`; how many messages it took. DeliveryError when it could not."""
        ...

    async def typing(self, chat_id: int) -> None:
        """Show that someone is writing. DeliveryError when it could not."""
        ...

    async def close(self) -> None:
        """Release the connections."""
        ...


async def typing_to_customer(customers: CustomerPush, telegram: ChatDelivery | None,
                             conversation_id: str, frame: Frame) -> None:
    """Tell the customer an operator is writing: `frame` to their open sockets, the typing
    action to a Telegram chat; a failure only costs the indicator (logged at debug)."""
    await customers.push(conversation_id, frame)
    chat = telegram.chat(conversation_id) if telegram is not None else None
    if chat is not None and telegram is not None and telegram.configured:
        try:
            await telegram.typing(chat)
        except DeliveryError as exc:
            log.debug("typing for %s not shown: %s", conversation_id, exc)


async def to_customer(customers: CustomerPush, telegram: ChatDelivery | None,
                      conversation_id: str, frame: Frame, text: str) -> dict[str, Any]:
    """Deliver a message that is stored already on the customer's channel: `frame` to the
    sockets this process holds for the conversation, `text` to its Telegram chat. What
    happened: `live_sockets`, and for Telegram `telegram` ("sent", or "not sent: why")."""
    result: dict[str, Any] = {"live_sockets": await customers.push(conversation_id, frame)}
    chat = telegram.chat(conversation_id) if telegram is not None else None
    if telegram is not None and chat is not None:
        try:
            await telegram.send(chat, text)
            result[telegram.name] = "sent"
        except DeliveryError as exc:
            log.warning("message to %s not delivered: %s", conversation_id, exc)
            result[telegram.name] = f"not sent: {exc}"
    return result
