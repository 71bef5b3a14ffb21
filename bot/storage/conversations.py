"""ConversationStore: conversations and messages, with decisions, sources, scores, latency."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.errors import StorageError
from bot.storage.feedback import FeedbackStore
from bot.storage.locks import TURN_LOCK_S, TurnLocking
from bot.storage.models import (
    CHANNEL_LENGTH,
    CLIENT_ID_LENGTH,
    USER_ID_LENGTH,
    Conversation,
    Message,
    utcnow,
)
from bot.storage.privacy import Privacy
from bot.storage.schema import Migrating
from bot.storage.values import checked, checked_id, clean
from bot.types import BotReply, ConversationStatus, Decision, ReplyMeta, UserMessage

WARM_UP = "warm-up"  # the rehearsed turn's ids and texts (never stored)


class _Rehearsed(Exception):
    """Rolls a rehearsed turn's transaction back (record_turn's `rehearse`)."""


class ConversationStore(TurnLocking, Migrating, FeedbackStore, Privacy):
    """Async store over any SQLAlchemy URL; a SQLite file by default.

    Its jobs live in the classes it joins: the engine and errors (Database), turn locks
    (TurnLocking), the schema (Migrating), ratings (FeedbackStore), texts as written and
    erasure (Privacy); here: conversations, their messages and status.
    """

    def __init__(self, url: str, turn_lock_seconds: float = TURN_LOCK_S, *,
                 original_ttl: timedelta | None = None) -> None:
        super().__init__(url, turn_lock_seconds)
        self.original_ttl = original_ttl  # see Privacy

    async def record_turn(self, message: UserMessage, reply: BotReply,
                          status: ConversationStatus | None = None,
                          verdicts: tuple[list[dict[str, Any]] | None,
                                          list[dict[str, Any]] | None] = (None, None),
                          original: str | None = None, *, rehearse: bool = False) -> int:
        """Store the user's message and the bot's reply in one transaction (both or neither);
        returns the bot message's id. `verdicts`: the safety verdicts of each; `original`: the
        customer's text before redaction, kept for `original_ttl` (not at all when None).

        The first turn of a new conversation creates it, also when two such turns race;
        with `status`, the conversation's status changes in the same transaction. `rehearse`
        rolls the transaction back (see warm_up): nothing is stored.
        """
        self.check_ids(message)
        conversation_id = checked_id(message.conversation_id)
        channel = clean(message.channel)
        user_id = clean(message.user_id)
        used = reply.sources or reply.suggestions
        asked = {"conversation_id": conversation_id, "role": "user", "text": clean(message.text),
                 "decision": None, "faq_ids": [], "scores": [], "confidence": None,
                 "latency_ms": None, "meta": {}, "client_id": clean(message.client_id),
                 "verdicts": clean(verdicts[0])}
        answered = {"conversation_id": conversation_id, "role": "bot",
                    "text": clean(reply.text), "decision": reply.decision.value,
                    "faq_ids": clean([s.id for s in used]),
                    "scores": [round(s.score, 4) for s in used], "confidence": reply.confidence,
                    "latency_ms": reply.latency_ms, "meta": clean(_meta(reply)),
                    "verdicts": clean(verdicts[1])}
        now = utcnow()
        changes: dict[str, Any] = {"updated_at": now}
        if status is not None:
            changes.update(_status_change(status, now))
        try:
            async with self._engine.begin() as conn:
                # A write first: on SQLite the transaction takes the write lock (waiting up to
                # the busy timeout) instead of failing to upgrade a read lock later.
                await self._create_conversation(conn, conversation_id, channel, user_id, now)
                await conn.execute(update(Conversation)
                                   .where(Conversation.id == conversation_id).values(changes))
                asked_id = await conn.scalar(insert(Message).values(asked)
                                             .returning(Message.id))
                await self._keep_original(conn, asked_id, conversation_id, original, now)
                bot_id = await conn.scalar(insert(Message).values(answered)
                                           .returning(Message.id))
                if rehearse:
                    raise _Rehearsed
        except _Rehearsed:
            return 0
        except SQLAlchemyError as exc:
            raise self.error("store the turn", exc) from exc
        assert bot_id is not None
        return int(bot_id)

    async def warm_up(self) -> None:
        """Write a turn in a transaction that is rolled back: the statements are compiled (and
        cached) and the connection has written once before the first customer's turn, which
        took ~2x a later turn's storage time without it (bench/README.md, bench_start.py)."""
        await self.record_turn(UserMessage(WARM_UP, conversation_id=WARM_UP, channel=WARM_UP,
                                           user_id=WARM_UP),
                               BotReply(WARM_UP, Decision.ANSWER, WARM_UP), rehearse=True)

    async def record_held(self, message: UserMessage, meta: dict[str, Any],
                          verdicts: list[dict[str, Any]] | None = None,
                          original: str | None = None) -> int | None:
        """Store a customer's message to a conversation an operator holds (no bot reply);
        its id, or None when the channel re-sent a message (same client id) stored already.
        `original`: as in record_turn."""
        self.check_ids(message)
        conversation_id = checked_id(message.conversation_id)
        client_id = clean(message.client_id)
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                await self._create_conversation(conn, conversation_id, clean(message.channel),
                                                clean(message.user_id), now)
                await conn.execute(update(Conversation)
                                   .where(Conversation.id == conversation_id)
                                   .values(updated_at=now))
                if client_id is not None and await conn.scalar(
                        select(Message.id).where(Message.conversation_id == conversation_id,
                                                 Message.client_id == client_id,
                                                 Message.role == "user").limit(1)) is not None:
                    return None
                stored = await conn.scalar(insert(Message).values(
                    conversation_id=conversation_id, role="user", text=clean(message.text),
                    decision=None, faq_ids=[], scores=[], confidence=None, latency_ms=None,
                    meta=clean(meta), client_id=client_id, verdicts=clean(verdicts),
                    created_at=now).returning(Message.id))
                await self._keep_original(conn, stored, conversation_id, original, now)
        except SQLAlchemyError as exc:
            raise self.error("store the message", exc) from exc
        return int(stored) if stored is not None else None


    async def conversations_of(self, user_id: str, channel: str | None = None) -> list[str]:
        """The ids of a user's conversations (on one channel, or on any)."""
        query = select(Conversation.id).where(Conversation.user_id == clean(user_id))
        if channel is not None:
            query = query.where(Conversation.channel == clean(channel))
        return [str(i) for i in await self._all(query)]

    async def find_reply(self, conversation_id: str, client_id: str) -> Message | None:
        """The bot's reply to the user message the channel sent with `client_id`, if stored."""
        conversation_id = checked_id(conversation_id)
        asked = (select(func.min(Message.id))
                 .where(Message.conversation_id == conversation_id,
                        Message.client_id == clean(client_id), Message.role == "user")
                 .scalar_subquery())
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id,
                                                     Message.role == "bot", Message.id > asked)
                               .order_by(Message.id).limit(1))
        return rows[0] if rows else None


    async def _create_conversation(self, conn: AsyncConnection, conversation_id: str,
                                   channel: str, user_id: str, now: datetime) -> None:
        """Insert the conversation unless it exists; idempotent under concurrent first turns."""
        values = {"id": conversation_id, "channel": channel, "user_id": user_id,
                  "created_at": now, "updated_at": now,
                  "status": ConversationStatus.BOT.value}
        if self._backend in ("sqlite", "postgresql"):
            dialect_insert = sqlite.insert if self._backend == "sqlite" else postgresql.insert
            await conn.execute(dialect_insert(Conversation).values(values)
                               .on_conflict_do_nothing(index_elements=["id"]))
            return
        try:  # other backends: insert in a savepoint, and an existing row is fine
            async with conn.begin_nested():
                await conn.execute(insert(Conversation).values(values))
        except IntegrityError:
            if await conn.scalar(select(Conversation.id)
                                 .where(Conversation.id == conversation_id)) is None:
                raise

    async def conversation_status(self, conversation_id: str) -> ConversationStatus:
        """Who answers the conversation; BOT for an unknown one."""
        conversation_id = checked_id(conversation_id)
        try:
            async with self._engine.connect() as conn:
                value = await conn.scalar(select(Conversation.status)
                                          .where(Conversation.id == conversation_id))
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        if value is None:
            return ConversationStatus.BOT
        try:
            return ConversationStatus(value)
        except ValueError:
            raise StorageError(f"conversation {conversation_id!r} in {self._safe_url()} has an "
                               f"unknown status {value!r}") from None

    async def set_status(self, conversation_id: str, status: ConversationStatus) -> bool:
        """Set who answers the conversation; False when there is no such conversation."""
        conversation_id = checked_id(conversation_id)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(Conversation).where(Conversation.id == conversation_id)
                    .values(_status_change(status, utcnow())))
        except SQLAlchemyError as exc:
            raise self.error(f"set the status of {conversation_id!r}", exc) from exc
        return bool(result.rowcount)

    @staticmethod
    def check_id(conversation_id: str) -> str:
        """The id, or InputError if it is too long to store."""
        return checked_id(conversation_id)

    @staticmethod
    def check_ids(message: UserMessage) -> None:
        """Refuse (InputError) a conversation id, user id or channel name too long to store."""
        checked_id(message.conversation_id)
        checked(message.channel, "channel name", CHANNEL_LENGTH)
        checked(message.user_id, "user id", USER_ID_LENGTH)
        if message.client_id is not None:
            checked(message.client_id, "client message id", CLIENT_ID_LENGTH)


    async def history(self, conversation_id: str, limit: int = 20) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first."""
        conversation_id = checked_id(conversation_id)
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id)
                               .order_by(Message.id.desc()).limit(limit))
        return list(reversed(rows))

    async def last_bot_message(self, conversation_id: str) -> Message | None:
        """The bot's most recent reply in a conversation, if any."""
        conversation_id = checked_id(conversation_id)
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id,
                                                     Message.role == "bot")
                               .order_by(Message.id.desc()).limit(1))
        return rows[0] if rows else None

    async def bot_message(self, conversation_id: str, message_id: int) -> Message | None:
        """One bot message of a conversation, if it is one."""
        conversation_id = checked_id(conversation_id)
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id,
                                                     Message.id == message_id,
                                                     Message.role == "bot"))
        return rows[0] if rows else None

    async def user_message_before(self, conversation_id: str,
                                  message_id: int) -> Message | None:
        """The customer's message just before message `message_id`: what that reply answered."""
        conversation_id = checked_id(conversation_id)
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id,
                                                     Message.role == "user",
                                                     Message.id < message_id)
                               .order_by(Message.id.desc()).limit(1))
        return rows[0] if rows else None

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """A conversation's row, if it exists."""
        conversation_id = checked_id(conversation_id)
        rows = await self._all(select(Conversation).where(Conversation.id == conversation_id))
        return rows[0] if rows else None

    async def recent_conversations(self, limit: int = 20) -> list[tuple[Conversation, int]]:
        """The most recently active conversations, newest first, with their message counts."""
        counted = (select(Message.conversation_id, func.count().label("n"))
                   .group_by(Message.conversation_id).subquery())
        statement = (select(Conversation, func.coalesce(counted.c.n, 0))
                     .outerjoin(counted, counted.c.conversation_id == Conversation.id)
                     .order_by(Conversation.updated_at.desc()).limit(limit))
        try:
            async with self._session() as session:
                rows = await session.execute(statement)
                return [(conversation, int(n)) for conversation, n in rows.all()]
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    async def counts(self) -> dict[str, Any]:
        """Numbers of conversations and messages stored."""
        try:
            async with self._engine.connect() as conn:
                conversations = await conn.scalar(select(func.count()).select_from(Conversation))
                messages = await conn.scalar(select(func.count()).select_from(Message))
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return {"conversations": conversations or 0, "messages": messages or 0}


def _status_change(status: ConversationStatus, now: datetime) -> dict[str, Any]:
    """Column values setting a status; the time changes only when the status does. Only a
    handed-off conversation is held by an operator: any other status clears the claim."""
    values: dict[str, Any] = {"status": status.value,
                              "status_changed_at": case((Conversation.status != status.value,
                                                         now),
                                                        else_=Conversation.status_changed_at)}
    if status is not ConversationStatus.HANDOFF:
        values.update(claimed_by=None, claimed_at=None)
    return values


def _meta(reply: BotReply) -> ReplyMeta:
    """A reply's metadata as stored, with the candidates it offered."""
    meta = reply.meta.copy()
    if reply.candidates:
        meta["candidates"] = [{"text": c.text, "score": c.score} for c in reply.candidates]
    return meta
