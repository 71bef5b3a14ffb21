"""PostgreSQL for the tests: a schema of this test run's own, named in the database URL.

The tests never touch the `public` schema of TEST_POSTGRES_URL: each run creates a schema
`sb_test_<random>`, empties it before each test that asks for PostgreSQL, and drops it at the end
of the run, so runs can share a server (and one that holds other data).

The schema travels in the URL, so everything that opens the database from `database_url` (the
store, its migrations and version table, the turn-lock connections, the relay, worker processes)
works in it: asyncpg takes a `dsn` keyword, SQLAlchemy's asyncpg dialect passes URL query
parameters on as keywords, and asyncpg turns a DSN's unknown query parameters (here
`search_path`) into server settings of each connection.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import quote

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

# The server the PostgreSQL tests run on (`bash .ci/postgres.sh` starts one and prints its URL).
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
SCHEMA_PREFIX = "sb_test_"


def new_schema_name() -> str:
    """A schema name no other test run uses."""
    return f"{SCHEMA_PREFIX}{secrets.token_hex(6)}"


def in_schema(url: str, schema: str) -> str:
    """`url` with every connection's search_path set to `schema` alone (tables, alembic's
    version table and lookups all go there, never to `public`)."""
    if not schema.isidentifier():
        raise ValueError(f"not a plain schema name: {schema!r}")
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() != "asyncpg":
        raise ValueError(f"TEST_POSTGRES_URL must be postgresql+asyncpg://..., not {parsed!r}")
    dsn = f"postgresql:///?search_path={quote(schema)}"
    return parsed.update_query_dict({"dsn": dsn}).render_as_string(hide_password=False)


async def _run(url: str, *statements: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def empty_schema(url: str, schema: str) -> None:
    """Drop `schema` with everything in it and create it again, empty."""
    await _run(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', f'CREATE SCHEMA "{schema}"')


def drop_schema(url: str, schema: str) -> None:
    """Drop `schema` with everything in it (from outside any event loop)."""
    asyncio.run(_run(url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
