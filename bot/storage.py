"""ConversationStore: conversations and messages, with decisions, sources, scores, latency."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bot.errors import StorageError
from bot.types import BotReply, UserMessage


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of the conversation schema."""


class Conversation(Base):
    """One conversation on one channel with one user."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Message(Base):
    """One message: the user's text, or the bot's reply with what it decided and why."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # "user" or "bot"
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    decision: Mapped[str | None] = mapped_column(String(32), nullable=True)
    faq_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    scores: Mapped[list[float]] = mapped_column(JSON, default=list)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # How the reply came about: retrieval query, prompt size, candidates and their scores, ...
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ConversationStore:
    """Async store over any SQLAlchemy URL; a SQLite file by default."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StorageError(f"storage.database_url is not a database URL: {url!r}") from exc
        self._sqlite_file = (Path(parsed.database).expanduser()
                             if parsed.get_backend_name() == "sqlite"
                             and parsed.database not in (None, "", ":memory:") else None)
        try:
            self._engine: AsyncEngine = create_async_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise StorageError(f"cannot use database URL {url!r}: {exc}") from exc
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)

    async def init(self) -> None:
        """Bring the schema up to date with the migrations (creating a SQLite file's folder)."""
        try:
            if self._sqlite_file is not None:
                self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            async with self._engine.begin() as conn:
                await conn.run_sync(_upgrade_to_head)
        except StorageError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StorageError(
                f"cannot open database {self._safe_url()}: {_first_line(exc)}") from exc

    async def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        async with self._engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision())

    async def close(self) -> None:
        """Release the connection pool."""
        await self._engine.dispose()

    async def record_turn(self, message: UserMessage, reply: BotReply, status: Any = None) -> None:
        """Store the user's message and the bot's reply in one transaction (both or neither)."""
        if status is not None:
            self._status[message.conversation_id] = status
        try:
            await self._record_turn(message, reply)
        except SQLAlchemyError as exc:
            raise StorageError(
                f"cannot store the turn in {self._safe_url()}: {_first_line(exc)}") from exc

    async def _record_turn(self, message: UserMessage, reply: BotReply) -> None:
        async with self._sessions.begin() as session:
            conversation = await session.get(Conversation, message.conversation_id)
            if conversation is None:
                session.add(Conversation(id=message.conversation_id, channel=message.channel,
                                         user_id=message.user_id))
            else:
                conversation.updated_at = _now()
            used = reply.sources or reply.suggestions
            session.add(Message(conversation_id=message.conversation_id, role="user",
                                text=message.text))
            session.add(Message(
                conversation_id=message.conversation_id, role="bot", text=reply.text,
                decision=reply.decision.value, faq_ids=[s.id for s in used],
                scores=[round(s.score, 4) for s in used], confidence=reply.confidence,
                latency_ms=reply.latency_ms, meta=_meta(reply)))

    @property
    def _status(self) -> Any:  # TEMP SHIM
        return self.__dict__.setdefault("_st", {})

    @property
    def _locks(self) -> Any:
        return self.__dict__.setdefault("_lk", {})

    def turn_lock(self, conversation_id: str) -> Any:
        import asyncio
        return self._locks.setdefault(conversation_id, asyncio.Lock())

    async def set_status(self, conversation_id: str, status: Any) -> bool:
        self._status[conversation_id] = status
        return True

    async def conversation_status(self, conversation_id: str) -> Any:
        from bot.types import ConversationStatus
        return self._status.get(conversation_id, ConversationStatus.BOT)

    async def history(self, conversation_id: str, limit: int = 20) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Message).where(Message.conversation_id == conversation_id)
                .order_by(Message.id.desc()).limit(limit))
            return list(reversed(rows.all()))

    async def last_bot_message(self, conversation_id: str) -> Message | None:
        """The bot's most recent reply in a conversation, if any."""
        async with self._sessions() as session:
            return await session.scalar(
                select(Message).where(Message.conversation_id == conversation_id,
                                      Message.role == "bot")
                .order_by(Message.id.desc()).limit(1))

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """A conversation's row, if it exists."""
        async with self._sessions() as session:
            return await session.get(Conversation, conversation_id)

    async def recent_conversations(self, limit: int = 20) -> list[tuple[Conversation, int]]:
        """The most recently active conversations, newest first, with their message counts."""
        async with self._sessions() as session:
            counted = (select(Message.conversation_id, func.count().label("n"))
                       .group_by(Message.conversation_id).subquery())
            rows = await session.execute(
                select(Conversation, func.coalesce(counted.c.n, 0))
                .outerjoin(counted, counted.c.conversation_id == Conversation.id)
                .order_by(Conversation.updated_at.desc()).limit(limit))
            return [(conversation, int(n)) for conversation, n in rows.all()]

    async def counts(self) -> dict[str, Any]:
        """Numbers of conversations and messages stored."""
        async with self._sessions() as session:
            conversations = await session.scalar(select(func.count()).select_from(Conversation))
            messages = await session.scalar(select(func.count()).select_from(Message))
            return {"conversations": conversations or 0, "messages": messages or 0}

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    """The driver's own message, without the SQL statement SQLAlchemy appends."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _upgrade_to_head(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect

    from bot.migrations import MIGRATIONS_DIR

    tables = set(inspect(connection).get_table_names())
    current = MigrationContext.configure(connection).get_current_revision()
    if "conversations" in tables and current is None:
        raise StorageError(
            f"the database at {connection.engine.url.render_as_string(hide_password=True)} has "
            "supportbot tables but no migration history (a pre-release build made it); move it "
            "away or point storage.database_url at a new database")

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _meta(reply: BotReply) -> dict[str, Any]:
    meta = dict(reply.meta)
    if reply.candidates:
        meta["candidates"] = [{"text": c.text, "score": c.score} for c in reply.candidates]
    return meta
