"""Inline keyboards under the bot's answers, and the callback data their buttons carry."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.types import BotReply, Decision

THUMBS = {"up": "👍", "down": "👎"}
_BUTTON_CHARS = 200  # a longer label is cut (and its button then picks by number)
# Decisions whose reply is worth rating (not a command-like or waiting message).
_RATED = {Decision.ANSWER, Decision.GENERATE, Decision.FALLBACK}


@dataclass(frozen=True)
class Pick:
    """A 'Did you mean' button: the asker's user id and the suggestion's number (from 1)."""

    user_id: int
    number: int

    def encode(self) -> str:
        """Callback data (Telegram allows 64 bytes)."""
        return f"p:{self.user_id}:{self.number}"


@dataclass(frozen=True)
class Rating:
    """A thumbs button: the asker, their conversation's epoch, the stored bot message, up/down."""

    user_id: int
    epoch: int
    message_id: int
    rating: str

    def encode(self) -> str:
        """Callback data (Telegram allows 64 bytes)."""
        return f"f:{self.user_id}:{self.epoch}:{self.message_id}:{self.rating[0]}"


def decode(data: str) -> Pick | Rating | None:
    """The button behind callback data; None for data this bot did not make."""
    parts = data.split(":")
    try:
        if parts[0] == "p" and len(parts) == 3:
            return Pick(int(parts[1]), int(parts[2]))
        if parts[0] == "f" and len(parts) == 5 and parts[4] in ("u", "d"):
            rating = "up" if parts[4] == "u" else "down"
            return Rating(int(parts[1]), int(parts[2]), int(parts[3]), rating)
    except ValueError:
        return None
    return None


def reply_markup(reply: BotReply, user_id: int, epoch: int) -> InlineKeyboardMarkup | None:
    """Suggestions as buttons that pick them, sources as links (unless the text has the link
    already), and thumbs up / down on a stored answer."""
    rows: list[list[InlineKeyboardButton]] = []
    for number, suggestion in enumerate(reply.suggestions, start=1):
        rows.append([InlineKeyboardButton(_label(f"{number}. {suggestion.question}"),
                                          callback_data=Pick(user_id, number).encode())])
    for source in reply.sources:
        if source.link and source.link not in reply.text:
            rows.append([InlineKeyboardButton(_label(f"📄 {source.question}"), url=source.link)])
    if reply.message_id is not None and reply.decision in _RATED:
        rows.append([InlineKeyboardButton(
            THUMBS[rating], callback_data=Rating(user_id, epoch, reply.message_id,
                                                 rating).encode())
            for rating in ("up", "down")])
    return InlineKeyboardMarkup(rows) if rows else None


def picked_question(markup: InlineKeyboardMarkup | None, data: str) -> str | None:
    """The whole question on the button with this callback data (None if cut or not found)."""
    for row in markup.inline_keyboard if markup is not None else ():
        for button in row:
            if button.callback_data == data and not button.text.endswith("…"):
                return button.text.partition(". ")[2] or None
    return None


def _label(text: str) -> str:
    return text if len(text) <= _BUTTON_CHARS else text[:_BUTTON_CHARS - 1].rstrip() + "…"
