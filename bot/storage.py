"""ConversationStore: conversations and messages, with decisions, sources, scores, latency."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, case, delete, event, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)

from bot.errors import ConversationBusyError, InputError, StorageError
from bot.models import (
    CHANNEL_LENGTH,
    CLIENT_ID_LENGTH,
    COMMENT_LENGTH,
    ID_LENGTH,
    USER_ID_LENGTH,
    Base,
    Conversation,
    FaqAddition,
    Feedback,
    Message,
    OperatorAction,
    Original,
    utcnow,
)
from bot.settings import hide_password as mask_url  # one masking for settings, logs, errors
from bot.types import BotReply, ConversationStatus, ReplyMeta, UserMessage

__all__ = ["Base", "Conversation", "ConversationStore", "Feedback", "Message", "mask_url"]
RATINGS = ("up", "down")

# How long a SQLite writer waits for another one before failing. 5 s lost turns (database is
# locked) with 50 busy conversations on 2 loaded cores: a customer would rather wait.
BUSY_TIMEOUT_MS = 30000
# The async driver to suggest for a URL that names a synchronous one (or none).
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                 "postgres": "postgresql+asyncpg"}
# Connections of one process holding turn locks on PostgreSQL: turns running at once (more
# wait up to LOCK_WAIT_S for one). With the query pool's 15, a process opens at most 35.
LOCK_CONNECTIONS = 20
LOCK_WAIT_S = 300
TURN_LOCK_S = 60.0  # storage.turn_lock_seconds' default
NUL_REPLACEMENT = "\ufffd"  # PostgreSQL cannot store NUL in text; every backend stores this


class ConversationStore:
    """Async store over any SQLAlchemy URL; a SQLite file by default."""

    def __init__(self, url: str, turn_lock_seconds: float = TURN_LOCK_S, *,
                 original_ttl: timedelta | None = None) -> None:
        self.url = url
        self.turn_lock_seconds = turn_lock_seconds  # the longest wait for a turn lock
        # How long a customer's text as written is kept for the operator holding the
        # conversation (storage.original_text_hours); None: never stored.
        self.original_ttl = original_ttl
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
            raise StorageError(
                f"storage.database_url is not a database URL: {mask_url(url)!r}") from exc
        self._backend = parsed.get_backend_name()
        self._password = parsed.password if isinstance(parsed.password, str) else None
        self._sqlite_file = (Path(parsed.database).expanduser()
                             if self._backend == "sqlite"
                             and parsed.database not in (None, "", ":memory:") else None)
        self._engine: AsyncEngine = self._create_engine(parsed)
        if self._backend == "sqlite":
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        self._lock_engine: AsyncEngine | None = None  # PostgreSQL advisory locks, made on use
        self._turn_locks: dict[str, _TurnLock] = {}

    def __repr__(self) -> str:
        return f"ConversationStore({self._safe_url()!r})"

    @property
    def backend(self) -> str:
        """The database's kind: "sqlite", "postgresql", ..."""
        return self._backend

    @property
    def engine(self) -> AsyncEngine:
        """The engine, for stores of other tables in this database (bot/operators/store.py)."""
        return self._engine

    def error(self, doing: str, exc: BaseException) -> StorageError:
        """A StorageError saying what failed, the URL's password masked."""
        return StorageError(f"cannot {doing} in {self._safe_url()}: "
                            f"{self._scrub(_first_line(exc))}")

    def _create_engine(self, parsed: URL) -> AsyncEngine:
        try:
            return create_async_engine(parsed)
        except (SQLAlchemyError, ImportError) as exc:
            suggested = ASYNC_DRIVERS.get(self._backend)
            if suggested and parsed.drivername != suggested:
                better = parsed.set(drivername=suggested).render_as_string(hide_password=True)
                raise StorageError(
                    f"storage.database_url {self._safe_url()} does not name an async driver: "
                    f"use {better}") from exc
            raise StorageError(f"cannot use storage.database_url {self._safe_url()}: "
                               f"{self._scrub(_first_line(exc))}") from exc

    async def init(self) -> None:
        """Bring the schema up to date with the migrations (creating a SQLite file's folder)."""
        try:
            await self._probe_sqlite_file(create=True)
            async with _migration_lock(), self._engine.connect() as conn:
                if self._backend == "sqlite":
                    # Batch migrations copy tables that others reference: no FK checks while
                    # they run, and the connection is thrown away after so none runs without.
                    await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                    # The write lock first: another process starting now waits, then sees the
                    # migrated schema (without it both would create the tables).
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                if self._backend == "postgresql":  # the same for workers on PostgreSQL
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": _lock_key("supportbot.migrations")})
                await conn.run_sync(_upgrade)
                await conn.commit()
                if self._backend == "sqlite":
                    await conn.invalidate()
        except BaseException as exc:
            await self._engine.dispose()
            if isinstance(exc, (SQLAlchemyError, OSError, sqlite3.Error)):
                raise self._open_error(exc) from exc
            raise

    async def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        if self._sqlite_file is not None and not self._sqlite_file.exists():
            return None
        try:
            await self._probe_sqlite_file(create=False)
            async with self._engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision())
        except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
            raise self._open_error(exc) from exc

    @staticmethod
    def head_revision() -> str | None:
        """The newest revision the migrations know."""
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    async def ping(self) -> None:
        """Raise StorageError unless the database answers a trivial query."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    async def close(self) -> None:
        """Release the connection pools."""
        await self._engine.dispose()
        if self._lock_engine is not None:
            await self._lock_engine.dispose()

    async def record_turn(self, message: UserMessage, reply: BotReply,
                          status: ConversationStatus | None = None,
                          verdicts: tuple[list[dict[str, Any]] | None,
                                          list[dict[str, Any]] | None] = (None, None),
                          original: str | None = None) -> int:
        """Store the user's message and the bot's reply in one transaction (both or neither);
        returns the bot message's id. `verdicts`: the safety verdicts of each; `original`: the
        customer's text before redaction, kept for `original_ttl` (not at all when None).

        The first turn of a new conversation creates it, also when two such turns race;
        with `status`, the conversation's status changes in the same transaction.
        """
        self.check_ids(message)
        conversation_id = _checked_id(message.conversation_id)
        channel = _clean(message.channel)
        user_id = _clean(message.user_id)
        used = reply.sources or reply.suggestions
        asked = {"conversation_id": conversation_id, "role": "user", "text": _clean(message.text),
                 "decision": None, "faq_ids": [], "scores": [], "confidence": None,
                 "latency_ms": None, "meta": {}, "client_id": _clean(message.client_id),
                 "verdicts": _clean(verdicts[0])}
        answered = {"conversation_id": conversation_id, "role": "bot",
                    "text": _clean(reply.text), "decision": reply.decision.value,
                    "faq_ids": _clean([s.id for s in used]),
                    "scores": [round(s.score, 4) for s in used], "confidence": reply.confidence,
                    "latency_ms": reply.latency_ms, "meta": _clean(_meta(reply)),
                    "verdicts": _clean(verdicts[1])}
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
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot store the turn in {self._safe_url()}: "
                               f"{self._scrub(_first_line(exc))}") from exc
        assert bot_id is not None
        return int(bot_id)

    async def record_held(self, message: UserMessage, meta: dict[str, Any],
                          verdicts: list[dict[str, Any]] | None = None,
                          original: str | None = None) -> int | None:
        """Store a customer's message to a conversation an operator holds (no bot reply);
        its id, or None when the channel re-sent a message (same client id) stored already.
        `original`: as in record_turn."""
        self.check_ids(message)
        conversation_id = _checked_id(message.conversation_id)
        client_id = _clean(message.client_id)
        now = utcnow()
        try:
            async with self._engine.begin() as conn:
                await self._create_conversation(conn, conversation_id, _clean(message.channel),
                                                _clean(message.user_id), now)
                await conn.execute(update(Conversation)
                                   .where(Conversation.id == conversation_id)
                                   .values(updated_at=now))
                if client_id is not None and await conn.scalar(
                        select(Message.id).where(Message.conversation_id == conversation_id,
                                                 Message.client_id == client_id,
                                                 Message.role == "user").limit(1)) is not None:
                    return None
                stored = await conn.scalar(insert(Message).values(
                    conversation_id=conversation_id, role="user", text=_clean(message.text),
                    decision=None, faq_ids=[], scores=[], confidence=None, latency_ms=None,
                    meta=_clean(meta), client_id=client_id, verdicts=_clean(verdicts),
                    created_at=now).returning(Message.id))
                await self._keep_original(conn, stored, conversation_id, original, now)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot store the message in {self._safe_url()}: "
                               f"{self._scrub(_first_line(exc))}") from exc
        return int(stored) if stored is not None else None

    async def _keep_original(self, conn: AsyncConnection, message_id: int | None,
                             conversation_id: str, original: str | None,
                             now: datetime) -> None:
        """Keep a customer's text as written next to its redacted message, until it expires."""
        if original is None or message_id is None or self.original_ttl is None:
            return
        await conn.execute(insert(Original).values(
            message_id=message_id, conversation_id=conversation_id, text=_clean(original),
            expires_at=now + self.original_ttl))

    async def originals(self, conversation_id: str,
                        now: datetime | None = None) -> dict[int, str]:
        """The customer's texts as written in a conversation, by message id, not yet expired."""
        conversation_id = _checked_id(conversation_id)
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(Original.message_id, Original.text).where(
                    Original.conversation_id == conversation_id,
                    Original.expires_at > (now or utcnow())))).all()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return {int(message_id): str(text) for message_id, text in rows}

    async def purge_originals(self, now: datetime | None = None) -> int:
        """Delete the texts as written whose time is up; how many."""
        try:
            async with self._engine.begin() as conn:
                done = await conn.execute(delete(Original)
                                          .where(Original.expires_at <= (now or utcnow())))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot purge texts as written in {self._safe_url()}: "
                               f"{self._scrub(_first_line(exc))}") from exc
        return int(done.rowcount or 0)

    async def forget(self, conversation_ids: list[str]) -> dict[str, int]:
        """Delete conversations and everything stored of them (a customer's erasure request):
        texts as written, ratings, messages, operators' actions on them; FAQ phrasings
        operators learnt from them stay (they are the company's FAQ now, and were stored
        redacted) but lose the link. How many rows of each kind went."""
        ids = [_checked_id(i) for i in conversation_ids]
        counts: dict[str, int] = {}
        try:
            async with self._engine.begin() as conn:
                for name, table, column in (
                        ("originals", Original, Original.conversation_id),
                        ("feedback", Feedback, Feedback.conversation_id),
                        ("messages", Message, Message.conversation_id),
                        ("operator_actions", OperatorAction, OperatorAction.conversation_id),
                        ("conversations", Conversation, Conversation.id)):
                    done = await conn.execute(delete(table).where(column.in_(ids)))
                    counts[name] = int(done.rowcount or 0)
                await conn.execute(update(FaqAddition).where(FaqAddition.conversation_id
                                                             .in_(ids))
                                   .values(conversation_id=None, message_id=None))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot delete conversations in {self._safe_url()}: "
                               f"{self._scrub(_first_line(exc))}") from exc
        return counts

    async def conversations_of(self, user_id: str, channel: str | None = None) -> list[str]:
        """The ids of a user's conversations (on one channel, or on any)."""
        query = select(Conversation.id).where(Conversation.user_id == _clean(user_id))
        if channel is not None:
            query = query.where(Conversation.channel == _clean(channel))
        return [str(i) for i in await self._all(query)]

    async def find_reply(self, conversation_id: str, client_id: str) -> Message | None:
        """The bot's reply to the user message the channel sent with `client_id`, if stored."""
        conversation_id = _checked_id(conversation_id)
        asked = (select(func.min(Message.id))
                 .where(Message.conversation_id == conversation_id,
                        Message.client_id == _clean(client_id), Message.role == "user")
                 .scalar_subquery())
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id,
                                                     Message.role == "bot", Message.id > asked)
                               .order_by(Message.id).limit(1))
        return rows[0] if rows else None

    async def record_feedback(self, conversation_id: str, message_id: int, rating: str,
                              comment: str | None = None) -> bool:
        """Store a rating ("up" or "down") of a bot message of this conversation; the latest
        rating of a message replaces the earlier one. False when there is no such bot message.
        """
        conversation_id = _checked_id(conversation_id)
        if rating not in RATINGS:
            raise InputError(f"rating must be one of {', '.join(RATINGS)}, not {rating!r}")
        if comment is not None and len(comment) > COMMENT_LENGTH:
            raise InputError(f"feedback comment longer than {COMMENT_LENGTH} characters")
        now = utcnow()
        values = {"message_id": message_id, "conversation_id": conversation_id,
                  "rating": rating, "comment": _clean(comment), "created_at": now,
                  "updated_at": now}
        try:
            async with self._engine.begin() as conn:
                found = await conn.scalar(select(Message.id).where(
                    Message.id == message_id, Message.conversation_id == conversation_id,
                    Message.role == "bot"))
                if found is None:
                    return False
                changed = await conn.execute(
                    update(Feedback).where(Feedback.message_id == message_id)
                    .values(rating=rating, comment=values["comment"], updated_at=now))
                if not changed.rowcount:
                    await conn.execute(insert(Feedback).values(values))
        except IntegrityError:  # a rating of the same message raced this one: store this one
            return await self.record_feedback(conversation_id, message_id, rating, comment)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot store feedback in {self._safe_url()}: "
                               f"{self._scrub(_first_line(exc))}") from exc
        return True

    async def transcript(self, conversation_id: str,
                         limit: int = 1000) -> list[tuple[Message, str | None]]:
        """The last `limit` messages of a conversation, oldest first, each with its rating."""
        conversation_id = _checked_id(conversation_id)
        statement = (select(Message, Feedback.rating)
                     .outerjoin(Feedback, Feedback.message_id == Message.id)
                     .where(Message.conversation_id == conversation_id)
                     .order_by(Message.id.desc()).limit(limit))
        try:
            async with self._session() as session:
                rows = (await session.execute(statement)).all()
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc
        return [(message, rating) for message, rating in reversed(rows)]

    async def rated_conversations(self, rating: str = "up") -> list[str]:
        """Ids of the conversations with at least one bot message rated `rating`, oldest first."""
        statement = (select(Feedback.conversation_id).where(Feedback.rating == rating)
                     .group_by(Feedback.conversation_id)
                     .order_by(func.min(Feedback.message_id)))
        try:
            async with self._session() as session:
                return list((await session.scalars(statement)).all())
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

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
        conversation_id = _checked_id(conversation_id)
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
        conversation_id = _checked_id(conversation_id)
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(Conversation).where(Conversation.id == conversation_id)
                    .values(_status_change(status, utcnow())))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot set the status of {conversation_id!r} in "
                               f"{self._safe_url()}: {self._scrub(_first_line(exc))}") from exc
        return bool(result.rowcount)

    @staticmethod
    def check_id(conversation_id: str) -> str:
        """The id, or InputError if it is too long to store."""
        return _checked_id(conversation_id)

    @staticmethod
    def check_ids(message: UserMessage) -> None:
        """Refuse (InputError) a conversation id, user id or channel name too long to store."""
        _checked_id(message.conversation_id)
        _checked(message.channel, "channel name", CHANNEL_LENGTH)
        _checked(message.user_id, "user id", USER_ID_LENGTH)
        if message.client_id is not None:
            _checked(message.client_id, "client message id", CLIENT_ID_LENGTH)

    def turn_lock(self, conversation_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while handling a turn: turns of one conversation run one at a time.

        Within a process an asyncio.Lock per conversation orders the turns (dropped once
        nobody holds or waits on it). On PostgreSQL a session advisory lock, keyed by a stable
        64-bit hash of the id and held on a dedicated connection, orders them across worker
        processes too. SQLite gets the in-process lock only: run several workers on PostgreSQL.
        Waiting for both is bounded by `turn_lock_seconds`: then ConversationBusyError.
        """
        return self._turn_lock(_checked_id(conversation_id))

    @contextlib.asynccontextmanager
    async def _turn_lock(self, conversation_id: str) -> AsyncIterator[None]:
        entry = self._turn_locks.get(conversation_id)
        if entry is None:  # no await between the look-up and the count: no other task runs
            entry = self._turn_locks[conversation_id] = _TurnLock()
        entry.users += 1
        deadline = asyncio.get_running_loop().time() + self.turn_lock_seconds
        try:
            await self._until(deadline, conversation_id, entry.lock.acquire())
            try:
                if self._backend != "postgresql":
                    yield
                    return
                async with self._advisory_lock(conversation_id, deadline):
                    yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._turn_locks[conversation_id]

    async def _until(self, deadline: float, conversation_id: str,
                     waiting: Awaitable[Any]) -> Any:
        """`waiting`, or ConversationBusyError once the turn lock's deadline has passed."""
        try:
            async with asyncio.timeout_at(deadline):
                return await waiting
        except TimeoutError:
            raise ConversationBusyError(
                f"conversation {conversation_id[:128]!r} is busy: its previous turn still ran "
                f"after {self.turn_lock_seconds:g} s (storage.turn_lock_seconds)") from None

    @contextlib.asynccontextmanager
    async def _advisory_lock(self, conversation_id: str,
                             deadline: float) -> AsyncIterator[None]:
        if self._lock_engine is None:
            # Its own pool, so turns holding locks never starve the turns' writes of connections;
            # bounded, so that many conversations at once (times the workers) cannot take all of
            # PostgreSQL's connections (100 by default): turns beyond it wait for one.
            self._lock_engine = create_async_engine(
                self._engine.url, pool_size=5, max_overflow=LOCK_CONNECTIONS - 5,
                pool_timeout=LOCK_WAIT_S)
        key = _lock_key(conversation_id)
        try:
            conn = await self._until(deadline, conversation_id, self._lock_engine.connect())
        except SQLAlchemyError as exc:
            raise self._open_error(exc) from exc
        try:
            # Cancelled at the deadline, the session ends (_advisory), releasing a late grant.
            await self._until(deadline, conversation_id,
                              _advisory(conn, "pg_advisory_lock", key))
            try:
                yield
            finally:
                await _advisory(conn, "pg_advisory_unlock", key)
        finally:
            await conn.close()

    async def history(self, conversation_id: str, limit: int = 20) -> list[Message]:
        """The last `limit` messages of a conversation, oldest first."""
        conversation_id = _checked_id(conversation_id)
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id)
                               .order_by(Message.id.desc()).limit(limit))
        return list(reversed(rows))

    async def last_bot_message(self, conversation_id: str) -> Message | None:
        """The bot's most recent reply in a conversation, if any."""
        conversation_id = _checked_id(conversation_id)
        rows = await self._all(select(Message).where(Message.conversation_id == conversation_id,
                                                     Message.role == "bot")
                               .order_by(Message.id.desc()).limit(1))
        return rows[0] if rows else None

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """A conversation's row, if it exists."""
        conversation_id = _checked_id(conversation_id)
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

    async def _all(self, statement: Any) -> list[Any]:
        try:
            async with self._session() as session:
                return list((await session.scalars(statement)).all())
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    def _session(self) -> AsyncSession:
        return AsyncSession(self._engine, expire_on_commit=False)

    async def _probe_sqlite_file(self, create: bool) -> None:
        """Open a SQLite file with the plain driver first, so failing to open it is an error.

        A failed aiosqlite connect leaves its worker thread to report to an event loop that
        asyncio.run may already have closed: an "Event loop is closed" traceback after the
        error message. Probing with sqlite3 means aiosqlite only ever opens files that open.
        """
        if self._sqlite_file is None:
            return
        if create and not str(self._sqlite_file).startswith("file:"):  # not a SQLite URI
            _private_file(self._sqlite_file)
        elif create:
            self._sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        args, kwargs = self._engine.sync_engine.dialect.create_connect_args(self._engine.url)
        connect: Any = sqlite3.connect  # the same arguments aiosqlite hands to it
        await asyncio.to_thread(lambda: connect(*args, **kwargs).close())

    def _open_error(self, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        return StorageError(f"cannot open database {self._safe_url()}: "
                            f"{self._scrub(_first_line(exc))}")

    def _read_error(self, exc: BaseException) -> StorageError:
        return StorageError(f"cannot read from {self._safe_url()}: "
                            f"{self._scrub(_first_line(exc))}")

    def _safe_url(self) -> str:
        return mask_url(self.url)

    def _scrub(self, message: str) -> str:
        """A driver's message with the URL's password masked, should it quote it."""
        return message.replace(self._password, "***") if self._password else message


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary())


def _migration_lock() -> asyncio.Lock:
    """This loop's lock around migrations: Alembic keeps its context in module globals, so two
    stores of one process must not migrate at the same time."""
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


@dataclass
class _TurnLock:
    """A conversation's in-process turn lock and how many tasks hold or wait on it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


async def _advisory(conn: AsyncConnection, function: str, key: int) -> None:
    """Take or release a session advisory lock on `conn`.

    If that is cancelled or fails (say, while waiting), the server may still grant the lock, so
    the session is ended (which releases it) rather than the connection pooled.
    """
    try:
        await conn.execute(text(f"SELECT {function}(:key)"), {"key": key})
        await conn.commit()
    except BaseException:
        await conn.invalidate()
        raise


def _checked(value: str, what: str, limit: int) -> str:
    """A key with NULs replaced, refused (on every backend alike) when it is too long."""
    value = _clean(value)
    if len(value) > limit:
        raise InputError(f"{what} longer than {limit} characters: {value[:40]!r}...")
    return value


def _checked_id(conversation_id: str) -> str:
    return _checked(conversation_id, "conversation id", ID_LENGTH)


def _clean(value: Any) -> Any:
    """Strings (also inside lists and dicts, keys too) with NUL replaced, which PostgreSQL
    cannot store, so that every backend stores the same."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


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


def _lock_key(conversation_id: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock (Python's hash() changes per process)."""
    digest = hashlib.blake2b(f"supportbot.turn:{conversation_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: WAL (readers do not block the writer), a busy timeout (writers
    wait for each other instead of failing) and enforced foreign keys."""
    cursor = dbapi_connection.cursor()
    # The timeout first: switching a new file to WAL needs the lock another starting process
    # may hold, and without it that waited 5 s at most (one of four workers failed once in CI).
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _private_file(path: Path) -> None:
    """Create a SQLite file's missing folders 0700 and the file itself 0600, as the web secret
    is (it holds conversations and password hashes); SQLite gives its -wal and -shm files the
    database file's mode. Existing folders and files keep theirs."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)  # whatever the umask
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _first_line(exc: BaseException) -> str:
    """The driver's own message, without the SQL statement SQLAlchemy appends."""
    return (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]


def _alembic_config() -> Any:
    from alembic.config import Config

    from bot.migrations import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade(connection: Connection, target: str = "head") -> None:
    """Run the migrations up to `target` on a sync connection (inside run_sync)."""
    from alembic import command
    from sqlalchemy import inspect

    tables = set(inspect(connection).get_table_names())
    current = MigrationContext.configure(connection).get_current_revision()
    if "conversations" in tables and current is None:
        raise StorageError(
            f"the database at {connection.engine.url.render_as_string(hide_password=True)} has "
            "supportbot tables but no migration history (a pre-release build made it); move it "
            "away or point storage.database_url at a new database")
    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, target)


def _meta(reply: BotReply) -> ReplyMeta:
    """The reply's meta as stored: with its generated candidates."""
    meta = reply.meta.copy()
    if reply.candidates:
        meta["candidates"] = [{"text": c.text, "score": c.score} for c in reply.candidates]
    return meta
