"""Bringing the schema up to date: Alembic's migrations, run by one process at a time."""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from typing import Any

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from bot.errors import StorageError
from bot.storage.engine import Database
from bot.storage.locks import lock_key


class Migrating(Database):
    """A database whose schema the migrations bring up to date (init) and report (revision)."""

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
                                       {"key": lock_key("supportbot.migrations")})
                await conn.run_sync(upgrade)
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


def upgrade(connection: Connection, target: str = "head") -> None:
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


def _alembic_config() -> Any:
    from alembic.config import Config

    from bot.storage.migrations import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config
