"""Concurrent turns: idempotent conversation creation, per-conversation turn locks, status."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from bot.errors import StorageError
from bot.storage import LOCK_CONNECTIONS, ConversationStore
from bot.types import BotReply, ConversationStatus, Decision, UserMessage

pytestmark = pytest.mark.every_database


def turn(conversation_id: str, text: str = "hi") -> tuple[UserMessage, BotReply]:
    return (UserMessage(text, conversation_id=conversation_id),
            BotReply(f"re: {text}", Decision.FALLBACK, conversation_id))


async def test_concurrent_first_turns_of_one_conversation_all_succeed(
        store: ConversationStore) -> None:
    results = await asyncio.gather(*(store.record_turn(*turn("new", f"q{i}")) for i in range(20)),
                                   return_exceptions=True)
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert await store.counts() == {"conversations": 1, "messages": 40}


async def test_status_of_unknown_and_handed_off_conversations(store: ConversationStore) -> None:
    assert await store.conversation_status("nobody") is ConversationStatus.BOT
    assert await store.set_status("nobody", ConversationStatus.HANDOFF) is False
    assert await store.get_conversation("nobody") is None

    await store.record_turn(*turn("c"))
    conversation = await store.get_conversation("c")
    assert conversation is not None
    assert (conversation.status, conversation.status_changed_at) == ("bot", None)

    await store.record_turn(*turn("c", "a human please"), status=ConversationStatus.HANDOFF)
    assert await store.conversation_status("c") is ConversationStatus.HANDOFF
    handed = await store.get_conversation("c")
    assert handed is not None and handed.status_changed_at is not None
    await store.record_turn(*turn("c", "still there?"))  # no status: it stays handed off
    assert await store.conversation_status("c") is ConversationStatus.HANDOFF

    assert await store.set_status("c", ConversationStatus.BOT) is True
    assert await store.conversation_status("c") is ConversationStatus.BOT
    released = await store.get_conversation("c")
    assert released is not None and released.status_changed_at is not None
    assert released.status_changed_at >= handed.status_changed_at
    assert await store.set_status("c", ConversationStatus.BOT) is True  # no change: still found
    again = await store.get_conversation("c")
    assert again is not None and again.status_changed_at == released.status_changed_at


async def test_a_first_turn_can_hand_off_at_once(store: ConversationStore) -> None:
    await store.record_turn(*turn("c", "human"), status=ConversationStatus.HANDOFF)
    assert await store.conversation_status("c") is ConversationStatus.HANDOFF


async def test_the_status_changes_only_with_the_turn(store: ConversationStore) -> None:
    await store.record_turn(*turn("c"))
    async with store._engine.begin() as conn:
        await conn.execute(text("DROP TABLE feedback"))  # they refer to messages
        await conn.execute(text("DROP TABLE originals"))
        await conn.execute(text("DROP TABLE messages"))
    with pytest.raises(StorageError, match="cannot store the turn"):
        await store.record_turn(*turn("c", "human"), status=ConversationStatus.HANDOFF)
    assert await store.conversation_status("c") is ConversationStatus.BOT


async def test_turns_of_one_conversation_take_turns(store: ConversationStore) -> None:
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def handle(conversation_id: str, name: str) -> None:
        async with store.turn_lock(conversation_id):
            inside.append(name)
            overlaps.append(tuple(inside))
            await asyncio.sleep(0.05)
            inside.remove(name)

    await asyncio.gather(*(handle("c", f"c{i}") for i in range(5)), handle("d", "d0"))
    assert all(sum(n.startswith("c") for n in seen) <= 1 for seen in overlaps), overlaps
    assert any(len(seen) == 2 for seen in overlaps), "different conversations ran together"
    assert store._turn_locks == {}, "locks nobody holds or waits on are dropped"


async def test_a_failed_turn_releases_the_lock(store: ConversationStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.turn_lock("c"):
            raise RuntimeError("the turn failed")
    async with asyncio.timeout(5), store.turn_lock("c"):
        pass
    assert store._turn_locks == {}


async def test_postgres_turn_locks_hold_across_processes(postgres_url: str) -> None:
    """A second store has its own pools and sessions, as a second worker process would."""
    store, other = ConversationStore(postgres_url), ConversationStore(postgres_url)
    try:
        async with store.turn_lock("c"):
            waiting = asyncio.create_task(_enter(other, "c"))
            await asyncio.sleep(0.3)
            assert not waiting.done(), "the other worker waits for the turn in progress"
            async with asyncio.timeout(5), other.turn_lock("d"):
                pass  # another conversation is not held up
        async with asyncio.timeout(5):
            await waiting

        # A worker cancelled while waiting must not keep the lock once the server grants it.
        async with store.turn_lock("c"):
            cancelled = asyncio.create_task(_enter(other, "c"))
            await asyncio.sleep(0.3)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        async with asyncio.timeout(5), store.turn_lock("c"):
            pass
    finally:
        await store.close()
        await other.close()


async def test_postgres_turn_locks_take_a_bounded_number_of_connections(
        postgres_url: str) -> None:
    """More conversations at once than lock connections: the rest wait for one, and none
    fails (each lock held on its own connection would run PostgreSQL out of connections once
    several workers each hold dozens)."""
    store = ConversationStore(postgres_url)
    held: list[int] = []

    async def hold(conversation_id: str) -> None:
        async with store.turn_lock(conversation_id):
            assert store._lock_engine is not None
            held.append(store._lock_engine.pool.checkedout())  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)

    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(hold(f"c{i}") for i in range(LOCK_CONNECTIONS + 15)))
    finally:
        await store.close()
    assert len(held) == LOCK_CONNECTIONS + 15
    assert max(held) == LOCK_CONNECTIONS


async def _enter(store: ConversationStore, conversation_id: str) -> None:
    async with store.turn_lock(conversation_id):
        pass
