"""The dialogue manager on SQLite and on a real PostgreSQL server: concurrency and handoff."""

from __future__ import annotations

import asyncio

import pytest

from bot.generation.batching import BatchingGenerator
from bot.storage import ConversationStore
from bot.types import ConversationStatus, Decision, TextEvent, UserMessage
from retrieval.index import FaqIndex
from tests.dialogue_support import FAITHFUL, NEAR_MISS, generating, manager
from tests.fakes import ScriptedGenerator

# `store`: on a SQLite file, and on PostgreSQL when configured.
pytestmark = [pytest.mark.timeout(120), pytest.mark.every_database]


async def test_concurrent_first_turns_of_one_conversation(sample_index: FaqIndex,
                                                          store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    replies = await asyncio.gather(*(dm.handle(UserMessage(
        f"How can I track my order? ({i})", conversation_id="same")) for i in range(8)))
    assert all(r.decision is Decision.ANSWER for r in replies)
    rows = await store.history("same", limit=100)
    assert [r.role for r in rows] == ["user", "bot"] * 8, "turns stored whole, one after another"


async def test_concurrent_conversations_generate_in_one_batch(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    scripted = ScriptedGenerator(FAITHFUL, seconds_per_token=0.02)
    # The window is a deadline, not a wait: the batch starts as soon as the eighth turn is in.
    dm = generating(sample_index, store, BatchingGenerator(scripted, max_batch=8, window_s=60))
    replies = await asyncio.gather(*(dm.handle(UserMessage(NEAR_MISS, conversation_id=f"c{i}"))
                                     for i in range(8)))
    assert [r.text for r in replies] == [FAITHFUL] * 8
    assert scripted.batches == [8]
    assert (await store.counts())["messages"] == 16
    dm.close()


async def test_interrupted_stream_stores_what_was_shown_and_frees_the_lock(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    scripted = ScriptedGenerator(f"{FAITHFUL} " * 6, seconds_per_token=0.01)
    dm = generating(sample_index, store, scripted, min_grounding=0.0)
    stream = dm.stream(UserMessage(NEAR_MISS, conversation_id="c"))
    first = await anext(stream)
    assert isinstance(first, TextEvent)
    await stream.aclose()
    stored = await store.last_bot_message("c")
    assert stored is not None and stored.text == first.text and stored.meta["interrupted"]
    reply = await asyncio.wait_for(dm.handle(UserMessage("human", conversation_id="c")), 30)
    assert reply.decision is Decision.HANDOFF, "the conversation's lock was released"
    assert await store.conversation_status("c") is ConversationStatus.HANDOFF
    dm.close()
