"""ConversationStore on a SQLite file and on PostgreSQL: round trips, migrations, bad URLs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errors import InputError, StorageError
from bot.storage import ConversationStore
from bot.types import BotReply, Decision, Source, UserMessage

pytestmark = pytest.mark.every_database  # database_url, store: SQLite and PostgreSQL


async def test_turn_round_trip(store: ConversationStore) -> None:
    message = UserMessage("where is my order?", conversation_id="c1", channel="cli", user_id="u1")
    reply = BotReply("Use tracking.", Decision.ANSWER, "c1",
                     sources=[Source("track-order", "How can I track my order?", 0.8123)],
                     confidence=0.8123, latency_ms=12.5)
    await store.record_turn(message, reply)
    conversation = await store.get_conversation("c1")
    assert conversation is not None
    assert (conversation.channel, conversation.user_id) == ("cli", "u1")
    user, bot = await store.history("c1")
    assert (user.role, user.text, user.decision) == ("user", "where is my order?", None)
    assert (bot.role, bot.text, bot.decision) == ("bot", "Use tracking.", "answer")
    assert bot.faq_ids == ["track-order"] and bot.scores == [0.8123]
    assert bot.confidence == pytest.approx(0.8123) and bot.latency_ms == 12.5
    assert user.created_at <= bot.created_at


async def test_history_order_limit_and_last_bot_message(store: ConversationStore) -> None:
    for i in range(4):
        decision = Decision.CLARIFY if i == 3 else Decision.FALLBACK
        suggestions = [Source("a", "qa", 0.5), Source("b", "qb", 0.4)] if i == 3 else []
        await store.record_turn(UserMessage(f"q{i}", conversation_id="c"),
                                BotReply(f"r{i}", decision, "c", suggestions=suggestions))
    await store.record_turn(UserMessage("other", conversation_id="d"),
                            BotReply("x", Decision.ANSWER, "d"))
    assert [m.text for m in await store.history("c", limit=3)] == ["r2", "q3", "r3"]
    last = await store.last_bot_message("c")
    assert last is not None and last.decision == "clarify" and last.faq_ids == ["a", "b"]
    assert await store.last_bot_message("nobody") is None
    assert await store.counts() == {"conversations": 2, "messages": 10}


async def test_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/bot.db"
    first = ConversationStore(url)
    await first.init()
    await first.record_turn(UserMessage("hi", conversation_id="c"),
                            BotReply("hello", Decision.FALLBACK, "c"))
    await first.close()
    second = ConversationStore(url)
    await second.init()
    assert [m.text for m in await second.history("c")] == ["hi", "hello"]
    await second.close()


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match="not a database URL"):
        ConversationStore("not a url")


async def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = ConversationStore(f"sqlite+aiosqlite:///{blocker}/x.db")
    with pytest.raises(StorageError, match="cannot open database"):
        await store.init()
    await store.close()


async def test_postgres_tests_keep_to_a_schema_of_their_own(postgres_url: str) -> None:
    """The PostgreSQL tests run in their run's schema: the migrations put the tables and
    alembic's version table there, the turn locks work, and `public` is left as it was."""
    from sqlalchemy import text

    tables = ("SELECT table_name FROM information_schema.tables WHERE table_schema = :schema "
              "ORDER BY table_name")
    store = ConversationStore(postgres_url)
    try:
        async with store.engine.connect() as conn:
            schema = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
            public = list((await conn.execute(text(tables), {"schema": "public"})).scalars())
        assert schema.startswith("sb_test_"), schema
        await store.init()
        async with asyncio.timeout(10), store.turn_lock("c"):
            pass
        async with store.engine.connect() as conn:
            ours = set((await conn.execute(text(tables), {"schema": schema})).scalars())
            assert list((await conn.execute(text(tables), {"schema": "public"})).scalars()) \
                == public
            version = (await conn.execute(text(
                f'SELECT version_num FROM "{schema}".alembic_version'))).scalar_one()
        assert {"alembic_version", "conversations", "messages"} <= ours
        assert version == await store.revision() == ConversationStore.head_revision()
    finally:
        await store.close()


async def test_migrations_build_exactly_the_models(store: ConversationStore) -> None:
    """The schema comes from the migrations; they must match the ORM models (no missing one)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bot.storage.models import Base

    assert await store.revision() == ConversationStore.head_revision() == "0009"
    await store.init()  # a second start leaves an up-to-date database alone
    async with store._engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diff == []


async def test_a_database_without_migration_history_is_refused(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from bot.storage.models import Base

    url = f"sqlite+aiosqlite:///{tmp_path}/old.db"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)  # how pre-release builds made the schema
    await engine.dispose()
    store = ConversationStore(url)
    with pytest.raises(StorageError, match="no migration history"):
        await store.init()
    await store.close()


async def test_a_failed_write_is_a_storage_error_and_stores_nothing(
        store: ConversationStore) -> None:
    from sqlalchemy import text

    async with store._engine.begin() as conn:
        await conn.execute(text("DROP TABLE feedback"))  # they refer to messages
        await conn.execute(text("DROP TABLE originals"))
        await conn.execute(text("DROP TABLE messages"))
    with pytest.raises(StorageError, match="cannot store the turn"):
        await store.record_turn(UserMessage("hi", conversation_id="c"),
                                BotReply("hello", Decision.FALLBACK, "c"))
    assert await store.get_conversation("c") is None, "the conversation row was rolled back"


@pytest.mark.parametrize(("url", "suggested"), [
    ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ("postgresql://bot:s3cret@db.example/bot", "postgresql+asyncpg://bot:***@db.example/bot"),
    ("postgres://bot:s3cret@db.example/bot", "postgresql+asyncpg://bot:***@db.example/bot"),
])
def test_a_url_without_an_async_driver_suggests_one(url: str, suggested: str) -> None:
    with pytest.raises(StorageError, match="does not name an async driver") as caught:
        ConversationStore(url)
    assert f"use {suggested}" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_password_is_masked_in_reprs_and_bad_urls() -> None:
    store = ConversationStore("postgresql+asyncpg://bot:s3cret@127.0.0.1:1/bot")
    assert repr(store) == "ConversationStore('postgresql+asyncpg://bot:***@127.0.0.1:1/bot')"
    with pytest.raises(StorageError, match="not a database URL") as caught:
        ConversationStore("postgresql+asyncpg://bot:s3cret@db.example:port/bot")
    assert "s3cret" not in str(caught.value) and "bot:***@" in str(caught.value)


async def test_a_password_is_masked_when_the_server_cannot_be_reached() -> None:
    store = ConversationStore("postgresql+asyncpg://bot:s3cret@127.0.0.1:1/bot")
    with pytest.raises(StorageError, match="cannot open database") as caught:
        await store.init()
    await store.close()
    assert "s3cret" not in str(caught.value) and "bot:***@127.0.0.1:1" in str(caught.value)


async def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    """Each pragma differs from SQLite's (and the driver's: busy_timeout 5000) default."""
    store = ConversationStore(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await store.init()
    async with store._engine.connect() as conn:
        pragmas = {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                   for name in ("journal_mode", "busy_timeout", "foreign_keys")}
    await store.close()
    assert pragmas == {"journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1}


async def test_nul_bytes_are_stored_alike_on_every_backend(store: ConversationStore) -> None:
    """PostgreSQL refuses NUL in text; every backend stores U+FFFD in its place."""
    message = UserMessage("a\x00b", conversation_id="c\x00", channel="cli", user_id="u\x00")
    reply = BotReply("r\x00", Decision.FALLBACK, "c\x00",
                     meta={"query\x00": "q\x00", "nested": ["x\x00"]})
    await store.record_turn(message, reply)
    user, bot = await store.history("c\x00")
    assert (user.text, bot.text) == ("a\ufffdb", "r\ufffd")
    assert bot.meta == {"query\ufffd": "q\ufffd", "nested": ["x\ufffd"]}
    conversation = await store.get_conversation("c\x00")
    assert conversation is not None
    assert (conversation.id, conversation.user_id) == ("c\ufffd", "u\ufffd")


async def test_conversation_ids_up_to_128_characters(store: ConversationStore) -> None:
    longest = "x" * 128
    await store.record_turn(UserMessage("hi", conversation_id=longest),
                            BotReply("hello", Decision.FALLBACK, longest))
    assert [m.text for m in await store.history(longest)] == ["hi", "hello"]
    too_long = "y" * 129
    with pytest.raises(InputError, match="conversation id longer than 128 characters"):
        await store.record_turn(UserMessage("hi", conversation_id=too_long),
                                BotReply("hello", Decision.FALLBACK, too_long))
    for read in (store.history, store.get_conversation, store.conversation_status):
        with pytest.raises(InputError, match="conversation id longer than 128 characters"):
            await read(too_long)
    assert await store.counts() == {"conversations": 1, "messages": 2}


async def test_user_ids_and_channels_are_checked_alike(store: ConversationStore) -> None:
    with pytest.raises(InputError, match="user id longer than 128 characters"):
        await store.record_turn(UserMessage("hi", conversation_id="c", user_id="u" * 129),
                                BotReply("hello", Decision.FALLBACK, "c"))
    with pytest.raises(InputError, match="channel name longer than 32 characters"):
        await store.record_turn(UserMessage("hi", conversation_id="c", channel="c" * 33),
                                BotReply("hello", Decision.FALLBACK, "c"))
    assert await store.counts() == {"conversations": 0, "messages": 0}


async def test_stores_starting_together_migrate_in_turn(database_url: str) -> None:
    stores = [ConversationStore(database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.init() for s in stores))
        assert [await s.revision() for s in stores] == ["0009"] * 4
    finally:
        for s in stores:
            await s.close()


def test_worker_processes_starting_together_migrate_in_turn(database_url: str) -> None:
    """Without a lock, two of four workers found the other's tables half made, on SQLite."""
    script = ("import asyncio, sys\n"
              "from bot.storage import ConversationStore\n"
              "async def main():\n"
              "    store = ConversationStore(sys.argv[1])\n"
              "    try:\n"
              "        await store.init()\n"
              "        print(await store.revision())\n"
              "    finally:\n"
              "        await store.close()\n"
              "asyncio.run(main())\n")
    workers = [subprocess.Popen([sys.executable, "-c", script, database_url], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(4)]
    results = [(w.wait(timeout=120), *w.communicate()) for w in workers]
    assert [(code, out.strip()) for code, out, _ in results] == [(0, "0009")] * 4, results


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+asyncpg://bot:s3cret@db.example/bot", "postgresql+asyncpg://bot:***@db.example/bot"),
    ("sqlite+aiosqlite:///.supportbot/supportbot.db", "sqlite+aiosqlite:///.supportbot/supportbot.db"),
    # URLs that do not parse (a port that is no number): the password is still hidden, "/" in it too
    ("postgresql://bot:pa/ss:wd@db.example:port/bot", "postgresql://bot:***@db.example:port/bot"),
    ("postgresql://bot:s3cret@db.example:x/bot", "postgresql://bot:***@db.example:x/bot"),
])
def test_one_masking_hides_a_database_urls_password(url: str, shown: str) -> None:
    from bot.settings import hide_password
    from bot.storage import mask_url

    assert mask_url is hide_password  # settings, errors and logs mask alike
    assert mask_url(url) == shown


async def test_warm_up_rehearses_a_turn_and_stores_nothing(store: ConversationStore) -> None:
    await store.warm_up()
    counts = await store.counts()
    assert counts["conversations"] == 0 and counts["messages"] == 0, counts
    assert await store.get_conversation("warm-up") is None
    message = UserMessage("hi", conversation_id="c1", channel="cli", user_id="u1")
    assert await store.record_turn(message, BotReply("Hello.", Decision.ANSWER, "c1")) > 0
    assert [m.text for m in await store.history("c1")] == ["hi", "Hello."]
