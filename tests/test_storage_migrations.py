"""Revision 0002 on a database that 0001 made and that holds conversations, on both backends."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import DateTime, TextClause, bindparam, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage import ConversationStore, upgrade
from bot.types import BotReply, ConversationStatus, Decision, UserMessage

pytestmark = pytest.mark.every_database  # database_url: SQLite, and PostgreSQL when configured

NOW = {"now": datetime(2026, 1, 1, 10, tzinfo=timezone.utc)}


def sql(statement: str) -> TextClause:
    """Raw SQL whose :now is a timestamp, bound the way each backend takes one."""
    return text(statement).bindparams(bindparam("now", type_=DateTime(timezone=True)))


async def _database_at_0001(url: str) -> None:
    """A database as 0001 left it, with one conversation of two messages."""
    if url.startswith("sqlite"):
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: upgrade(sync, "0001"))
        await conn.execute(sql(
            "INSERT INTO conversations (id, channel, user_id, created_at, updated_at) "
            "VALUES ('old', 'web', 'u1', :now, :now)"), NOW)
        for role in ("user", "bot"):
            await conn.execute(sql(
                "INSERT INTO messages (conversation_id, role, text, created_at, faq_ids, scores,"
                " meta) VALUES ('old', :role, :said, :now, '[]', '[]', '{}')"),
                {"role": role, "said": role, **NOW})
    await engine.dispose()


async def test_upgrade_from_0001_keeps_conversations_with_the_bot(database_url: str) -> None:
    await _database_at_0001(database_url)
    store = ConversationStore(database_url)
    try:
        assert await store.revision() == "0001"
        await store.init()
        assert await store.revision() == "0009" == store.head_revision()
        assert await store.conversation_status("old") is ConversationStatus.BOT
        assert [m.text for m in await store.history("old")] == ["user", "bot"]
        long_id = "z" * 128  # over 0001's 64 characters
        await store.record_turn(UserMessage("hi", conversation_id=long_id),
                                BotReply("hello", Decision.FALLBACK, long_id),
                                status=ConversationStatus.HANDOFF)
        assert await store.conversation_status(long_id) is ConversationStatus.HANDOFF
        assert await store.counts() == {"conversations": 2, "messages": 4}
    finally:
        await store.close()


async def test_foreign_keys_hold_after_a_migration(database_url: str) -> None:
    """SQLite migrates with foreign keys off; no connection may keep them off afterwards."""
    await _database_at_0001(database_url)
    store = ConversationStore(database_url)
    await store.init()
    try:
        async with store._engine.connect() as conn:
            try:
                await conn.execute(sql(
                    "INSERT INTO messages (conversation_id, role, text, created_at, faq_ids,"
                    " scores, meta) VALUES ('nobody', 'user', 'x', :now, '[]', '[]', '{}')"), NOW)
            except IntegrityError:
                refused = True
            else:
                refused = False
            await conn.rollback()
        assert refused, "a message of no conversation is refused"
    finally:
        await store.close()
