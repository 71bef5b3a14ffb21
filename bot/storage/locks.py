"""Turn locks: the turns of one conversation run one at a time, across worker processes too."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.errors import ConversationBusyError
from bot.storage.engine import Database
from bot.storage.values import checked_id

# Connections of one process holding turn locks on PostgreSQL: turns running at once (more
# wait up to LOCK_WAIT_S for one). With the query pool's 15, a process opens at most 35.
LOCK_CONNECTIONS = 20
LOCK_WAIT_S = 300
TURN_LOCK_S = 60.0  # storage.turn_lock_seconds' default


class TurnLocking(Database):
    """A database that orders the turns of each conversation (see turn_lock)."""

    def __init__(self, url: str, turn_lock_seconds: float = TURN_LOCK_S) -> None:
        super().__init__(url)
        self.turn_lock_seconds = turn_lock_seconds  # the longest wait for a turn lock
        self._lock_engine: AsyncEngine | None = None  # PostgreSQL advisory locks, made on use
        self._turn_locks: dict[str, _TurnLock] = {}

    async def close(self) -> None:
        """Release the connection pools."""
        await super().close()
        if self._lock_engine is not None:
            await self._lock_engine.dispose()

    def turn_lock(self, conversation_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while handling a turn: turns of one conversation run one at a time.

        Within a process an asyncio.Lock per conversation orders the turns (dropped once
        nobody holds or waits on it). On PostgreSQL a session advisory lock, keyed by a stable
        64-bit hash of the id and held on a dedicated connection, orders them across worker
        processes too. SQLite gets the in-process lock only: run several workers on PostgreSQL.
        Waiting for both is bounded by `turn_lock_seconds`: then ConversationBusyError.
        """
        return self._turn_lock(checked_id(conversation_id))

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
        key = lock_key(conversation_id)
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


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock (Python's hash() changes per process)."""
    digest = hashlib.blake2b(f"supportbot.turn:{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)
