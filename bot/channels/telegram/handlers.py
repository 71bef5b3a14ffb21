"""The Telegram channel's handlers: commands, text, other media, and the buttons it shows."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from telegram import Chat, Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.ext import (
    Application,
    CallbackContext,
    CallbackQueryHandler,
    CommandHandler,
    ExtBot,
    MessageHandler,
    filters,
)

from bot.channels.telegram.markup import Rating, decode, picked_question, reply_markup
from bot.channels.telegram.render import TurnRenderer
from bot.dialogue import DialogueManager, Event
from bot.errors import InputError, StorageError
from bot.settings import Settings
from bot.types import BotReply, UserMessage

log = logging.getLogger(__name__)
Context = CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]
TurnFn = Callable[[UserMessage], AsyncGenerator[Event, None]]
CHANNEL = "telegram"
# Updates the bot asks Telegram for (others, like channel posts, never reach it).
ALLOWED_UPDATES = [Update.MESSAGE, Update.EDITED_MESSAGE, Update.CALLBACK_QUERY]
# Messages that are something other than text: answered politely when addressed to the bot.
_NOT_TEXT = (filters.PHOTO | filters.Sticker.ALL | filters.VOICE | filters.AUDIO
             | filters.Document.ALL | filters.VIDEO | filters.VIDEO_NOTE | filters.ANIMATION
             | filters.LOCATION | filters.CONTACT | filters.POLL | filters.Dice.ALL)


class TelegramChannel:
    """Turns Telegram updates into UserMessages (one conversation per chat and user) and shows
    the core's stream; /start greets, /help helps, /reset starts over, /human hands off."""

    def __init__(self, settings: Settings, manager: DialogueManager,
                 turn: TurnFn | None = None) -> None:
        self.settings = settings
        self.tg = settings.telegram
        self.persona = settings.persona
        self.manager = manager
        self.turn: TurnFn = turn or manager.stream

    def register(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Add the handlers and the error hook to the application."""
        app.add_handler(CommandHandler("start", self.start))
        app.add_handler(CommandHandler("help", self.help))
        app.add_handler(CommandHandler("reset", self.reset))
        app.add_handler(CommandHandler("human", self.human))
        app.add_handler(CallbackQueryHandler(self.button))
        text = filters.TEXT & ~filters.COMMAND
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & text, self.text))
        if self.tg.answer_edited:
            app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE & text, self.text))
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & _NOT_TEXT, self.not_text))
        # An unknown command in a private chat gets the help text (in a group, it may well be
        # another bot's).
        app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.COMMAND
                                       & filters.ChatType.PRIVATE, self.help))
        app.add_error_handler(self.error)

    # --- commands ---------------------------------------------------------------------------

    async def start(self, update: Update, context: Context) -> None:
        """/start: the persona's greeting."""
        await self._say(update, self.persona.render(self.persona.greeting))

    async def help(self, update: Update, context: Context) -> None:
        """/help: what the bot does and its commands."""
        await self._say(update, self.persona.render(self.tg.help_text))

    async def reset(self, update: Update, context: Context) -> None:
        """/reset: a new conversation for this chat and user."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        epochs = _epochs(context)
        # A time stamp, not a counter: a reset never reuses an old conversation, even when
        # the state file was lost.
        epochs[message.chat_id] = max(int(time.time()), epochs.get(message.chat_id, 0) + 1)
        await self._say(update, self.persona.render(self.tg.reset_text))

    async def human(self, update: Update, context: Context) -> None:
        """/human: through the core, which hands off on this command (stored as typed)."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        await self._turn(context, message.chat, user.id, "/human", f"m{message.message_id}",
                         message)

    # --- messages ---------------------------------------------------------------------------

    async def text(self, update: Update, context: Context) -> None:
        """A text message: through the core (in groups, only when addressed to the bot)."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or message.text is None:
            return
        if not _addressed(message, context.bot):
            return
        client_id = f"m{message.message_id}"
        if message.edit_date is not None:  # an edit (when answered) is a message of its own
            client_id += f"e{int(message.edit_date.timestamp())}"
        await self._turn(context, message.chat, user.id, _without_mention(message, context.bot),
                         client_id, message)

    async def not_text(self, update: Update, context: Context) -> None:
        """A photo, sticker, voice message, file...: the bot reads text only, and says so."""
        message = update.effective_message
        if message is not None and _addressed(message, context.bot):
            await self._say(update, self.persona.render(self.tg.text_only_text))

    # --- buttons ----------------------------------------------------------------------------

    async def button(self, update: Update, context: Context) -> None:
        """A press on a suggestion (asks it) or on a thumb (stores the rating)."""
        query, user = update.callback_query, update.effective_user
        if query is None or user is None:
            return
        pressed = decode(query.data or "")
        message = query.message if isinstance(query.message, Message) else None
        if pressed is None or message is None:
            await query.answer()
            return
        if pressed.user_id != user.id:
            await query.answer(self.persona.render(self.tg.not_yours_text))
            return
        if isinstance(pressed, Rating):
            await query.answer(await self._rate(message.chat_id, pressed))
            return
        await query.answer()
        question = picked_question(message.reply_markup, query.data or "")
        await self._turn(context, message.chat, user.id, question or str(pressed.number),
                         f"q{query.id}", None)

    async def _rate(self, chat_id: int, rating: Rating) -> str:
        conversation = conversation_id(chat_id, rating.user_id, rating.epoch)
        try:
            # the rater is the learning source, as for their messages (UserMessage.sender)
            stored = await self.manager.feedback(conversation, rating.message_id, rating.rating,
                                                 source=f"{CHANNEL}:{rating.user_id}",
                                                 channel=CHANNEL)
        except (InputError, StorageError) as exc:
            log.error("rating not stored in conversation %s: %s", conversation, exc)
            return self.persona.render(self.persona.error_text)
        if not stored:
            log.warning("rating of unknown message %s in %s", rating.message_id, conversation)
        return self.persona.render(self.tg.feedback_text)

    # --- the turn ---------------------------------------------------------------------------

    async def _turn(self, context: Context, chat: Chat, user_id: int, text: str,
                    client_id: str, message: Message | None) -> BotReply | None:
        """One message through the core's stream, shown in the chat."""
        epoch = _epochs(context).get(chat.id, 0)
        turn = UserMessage(text, conversation_id(chat.id, user_id, epoch), channel=CHANNEL,
                           user_id=str(user_id), client_id=client_id)
        private = chat.type == ChatType.PRIVATE
        renderer = TurnRenderer(
            context.bot, chat.id, lambda reply: reply_markup(reply, user_id, epoch),
            stream=self.tg.stream_edits,
            interval=self.tg.edit_interval_seconds if private
            else self.tg.group_edit_interval_seconds,
            reply_to=None if private or message is None else message.message_id)
        async with contextlib.aclosing(self.turn(turn)) as events:
            return await renderer.show(events)

    async def _say(self, update: Update, text: str) -> None:
        message = update.effective_message
        if message is not None:
            await message.reply_text(text, do_quote=message.chat.type != ChatType.PRIVATE)

    async def error(self, update: object, context: Context) -> None:
        """Log a failed update; the bot goes on with the next one."""
        where = f"update {update.update_id}" if isinstance(update, Update) else "the bot"
        log.error("%s failed: %s: %s", where, type(context.error).__name__, context.error,
                  exc_info=context.error)


def conversation_id(chat_id: int, user_id: int, epoch: int) -> str:
    """The conversation of a user in a chat since their last /reset (epoch 0: never reset)."""
    return f"{CHANNEL}:{chat_id}:{user_id}:{epoch}"


def _epochs(context: Context) -> dict[int, int]:
    """This user's /reset time stamps by chat (kept in the state file, if there is one)."""
    data = context.user_data if context.user_data is not None else {}
    epochs: dict[int, int] = data.setdefault("epochs", {})
    return epochs


def _addressed(message: Message, bot: ExtBot[None]) -> bool:
    """In a private chat always; in a group when the bot is mentioned or replied to."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot.id:
        return True
    return any(_mentions_bot(entity, text, bot) for entity, text in _entities(message))


def _entities(message: Message) -> list[tuple[MessageEntity, str]]:
    if message.text is not None:
        return list(message.parse_entities().items())
    return list(message.parse_caption_entities().items())


def _mentions_bot(entity: MessageEntity, text: str, bot: ExtBot[None]) -> bool:
    if entity.type == MessageEntity.MENTION:
        return text.lstrip("@").casefold() == (bot.username or "").casefold()
    return entity.type == MessageEntity.TEXT_MENTION and entity.user is not None \
        and entity.user.id == bot.id


def _without_mention(message: Message, bot: ExtBot[None]) -> str:
    """The message's text without @mentions of the bot."""
    text = message.text or ""
    for entity, mention in sorted(_entities(message), key=lambda e: -e[0].offset):
        if entity.type == MessageEntity.MENTION and _mentions_bot(entity, mention, bot):
            start = len(text.encode("utf-16-le")[:entity.offset * 2].decode("utf-16-le"))
            text = text[:start] + text[start + len(mention):]
    return " ".join(text.split())
