"""Frames for customers' web sockets held by other server processes, through PostgreSQL.

With `supportbot serve --workers N` (or several servers on one database), a customer's socket
is on one worker and the operator's reply may arrive on another. Each process LISTENs on one
PostgreSQL channel; a frame pushed to a conversation goes to this process's sockets and, with
NOTIFY, to every other process, which pushes it to its own. NOTIFY delivers once a transaction
commits, in order, to every listener, and a payload has at most 8000 bytes: a larger frame goes
as numbered parts in one transaction and is put together on arrival.

A listener that loses its connection reconnects (every `RETRY_S`); frames sent meanwhile reach
the customer with the conversation's history when their page reconnects, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)
CHANNEL = "supportbot_customer_frames"
PART_CHARS = 1800  # at most 4 bytes each in UTF-8, with the envelope well under 8000 bytes
RETRY_S = 2.0
RETRY_WARN_S = 60.0  # while LISTEN stays down, a warning this often (not at every retry)
Deliver = Callable[[str, dict[str, Any]], Coroutine[Any, Any, int]]


class PostgresRelay:
    """Publishes frames to the other processes and delivers theirs to this one's sockets."""

    def __init__(self, url: str, deliver: Deliver, publisher: AsyncEngine) -> None:
        self.origin = f"{os.getpid()}-{secrets.token_hex(4)}"  # our own NOTIFYs come back too
        self._url = url
        self._deliver = deliver
        self._publisher = publisher  # the store's engine: a pooled connection per publish
        self._listener_engine: AsyncEngine | None = None
        self._connection: AsyncConnection | None = None
        self._raw: Any = None  # the asyncpg connection LISTENing
        self._parts: dict[str, list[str | None]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.received = 0  # frames from other processes, delivered here (tests, metrics)

    async def start(self) -> None:
        """LISTEN (StorageError-free: a failure is logged and retried in the background)."""
        self._listener_engine = create_async_engine(self._url, poolclass=NullPool)
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self._listen()
        if self._raw is None:
            log.warning("relay: cannot LISTEN yet; retrying every %.0f s", RETRY_S)
        self._watch = asyncio.create_task(self._keep_listening(), name="relay-listen")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._close_listener()
        if self._listener_engine is not None:
            await self._listener_engine.dispose()

    async def publish(self, conversation_id: str, frame: dict[str, Any]) -> bool:
        """NOTIFY the other processes; False (logged) if the database did not take it."""
        body = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        parts = [body[i:i + PART_CHARS] for i in range(0, len(body), PART_CHARS)] or [""]
        key = secrets.token_hex(6)
        try:
            async with self._publisher.begin() as conn:
                for number, part in enumerate(parts):
                    envelope = {"o": self.origin, "c": conversation_id, "k": key,
                                "i": number, "n": len(parts), "p": part}
                    await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {
                        "channel": CHANNEL,
                        "payload": json.dumps(envelope, ensure_ascii=False,
                                              separators=(",", ":"))})
        except SQLAlchemyError as exc:
            log.warning("relay: frame for %s not sent to other workers: %s", conversation_id,
                        exc)
            return False
        return True

    # --- listening ---------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._listener_engine is not None
        connection = await self._listener_engine.connect()
        try:
            raw: Any = (await connection.get_raw_connection()).driver_connection
            await raw.add_listener(CHANNEL, self._notified)
        except BaseException:
            await connection.close()
            raise
        self._connection, self._raw = connection, raw

    async def _keep_listening(self) -> None:
        """Reconnect a lost LISTEN connection: a warning when it is lost and at its first
        failed retry (frames from other workers miss this one's sockets meanwhile), then one
        every RETRY_WARN_S while it stays down."""
        failed_since: float | None = None
        warned = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RETRY_S)
            if self._raw is not None and not self._raw.is_closed():
                continue
            if self._raw is not None:
                log.warning("relay: the LISTEN connection was lost; frames pushed by other "
                            "workers miss this one's sockets until it is back")
            await self._close_listener()
            try:
                await self._listen()
                log.warning("relay: listening again")  # after a warning that it was not
                failed_since = None
            except (SQLAlchemyError, OSError) as exc:
                now = loop.time()
                if failed_since is None or now - warned >= RETRY_WARN_S:
                    log.warning("relay: still cannot LISTEN (retrying every %.0f s): %s",
                                RETRY_S, exc)
                    warned = now
                failed_since = failed_since or now

    async def _close_listener(self) -> None:
        connection, self._connection, self._raw = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a connection that is gone already
                await connection.close()

    def _notified(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        """asyncpg's callback, on the event loop: put parts together, deliver whole frames."""
        try:
            envelope = json.loads(payload)
            if envelope["o"] == self.origin:
                return
            parts = self._parts.setdefault(envelope["k"], [None] * int(envelope["n"]))
            parts[int(envelope["i"])] = envelope["p"]
            if any(part is None for part in parts):
                return
            del self._parts[envelope["k"]]
            frame = json.loads("".join(p for p in parts if p is not None))
            conversation_id = str(envelope["c"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            log.warning("relay: unreadable notification ignored: %s", exc)
            return
        if len(self._parts) > 1000:  # parts whose rest never came (cannot happen; bounded)
            self._parts.clear()
        self.received += 1
        task: asyncio.Task[int] = asyncio.get_running_loop().create_task(
            self._deliver(conversation_id, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
