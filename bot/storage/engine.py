"""The database connection: URL checks, the async engine, SQLite's settings and file, errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from bot.errors import StorageError
from bot.settings import hide_password as mask_url  # one masking for settings, logs, errors

# How long a SQLite writer waits for another one before failing. 5 s lost turns (database is
# locked) with 50 busy conversations on 2 loaded cores: a customer would rather wait.
BUSY_TIMEOUT_MS = 30000
# The async driver to suggest for a URL that names a synchronous one (or none).
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg",
                 "postgres": "postgresql+asyncpg"}


class Database:
    """An async engine over any SQLAlchemy URL, and errors that name it, its password masked."""

    def __init__(self, url: str) -> None:
        self.url = url
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._safe_url()!r})"

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
                            f"{self._scrub(first_line(exc))}")

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
                               f"{self._scrub(first_line(exc))}") from exc

    async def ping(self) -> None:
        """Raise StorageError unless the database answers a trivial query."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise self._read_error(exc) from exc

    async def close(self) -> None:
        """Release the connection pool."""
        await self._engine.dispose()

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
                            f"{self._scrub(first_line(exc))}")

    def _read_error(self, exc: BaseException) -> StorageError:
        return StorageError(f"cannot read from {self._safe_url()}: "
                            f"{self._scrub(first_line(exc))}")

    def _safe_url(self) -> str:
        return mask_url(self.url)

    def _scrub(self, message: str) -> str:
        """A driver's message with the URL's password masked, should it quote it."""
        return message.replace(self._password, "***") if self._password else message


def first_line(exc: BaseException) -> str:
    """The driver's own message, without the SQL statement SQLAlchemy appends."""
    return (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]


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
