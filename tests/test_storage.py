"""ConversationStore on a SQLite file and on PostgreSQL: round trips, migrations, bad URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.errors import StorageError
from bot.storage import ConversationStore
from bot.types import BotReply, Decision, Source, UserMessage

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")


async def _empty_postgres(url: str) -> None:
    """Drop everything in the test database's public schema."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The same tests on a SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/sub/dir/bot.db"
    else:
        if not POSTGRES_URL:
            if os.environ.get("REQUIRE_POSTGRES"):
                pytest.fail("REQUIRE_POSTGRES is set but TEST_POSTGRES_URL is not")
            pytest.skip("set TEST_POSTGRES_URL (bash .ci/postgres.sh prints one) to run this")
        url = POSTGRES_URL
        await _empty_postgres(url)
    store = ConversationStore(url)
    await store.init()
    yield store
    await store.close()


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


async def test_migrations_build_exactly_the_models(store: ConversationStore) -> None:
    """The schema comes from the migrations; they must match the ORM models (no missing one)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bot.storage import Base

    assert await store.revision() == "0001"
    await store.init()  # a second start leaves an up-to-date database alone
    async with store._engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diff == []


async def test_a_database_without_migration_history_is_refused(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from bot.storage import Base

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
        await conn.execute(text("DROP TABLE messages"))
    with pytest.raises(StorageError, match="cannot store the turn"):
        await store.record_turn(UserMessage("hi", conversation_id="c"),
                                BotReply("hello", Decision.FALLBACK, "c"))
    assert await store.get_conversation("c") is None, "the conversation row was rolled back"
