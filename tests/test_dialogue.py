"""DialogueManager on the real embedder and sample FAQ: every decision, and what it stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dialogue import DialogueManager
from bot.settings import Settings
from bot.storage import ConversationStore
from bot.types import Decision, UserMessage
from retrieval.index import FaqIndex

NEAR_MISS = "what's the time limit for sending stuff back"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    store = ConversationStore(f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    await store.init()
    yield store
    await store.close()


def manager(index: FaqIndex, store: ConversationStore, **retrieval: object) -> DialogueManager:
    settings = Settings()
    for key, value in retrieval.items():
        setattr(settings.retrieval, key, value)
    return DialogueManager(index, store, settings.persona, settings.retrieval, settings.dialogue)


def middling(index: FaqIndex, store: ConversationStore, query: str) -> DialogueManager:
    """A manager whose thresholds put `query` between 'suggest' and 'answer'."""
    score = index.search(query, top_k=1)[0].score
    return manager(index, store, answer_threshold=score + 0.05, suggest_threshold=score - 0.15)


async def ask(dm: DialogueManager, text: str, conversation: str = "c") -> object:
    return await dm.handle(UserMessage(text, conversation_id=conversation))


async def test_faq_question_is_answered(sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    reply = await dm.handle(UserMessage("How can I track my order?", conversation_id="c"))
    assert reply.decision is Decision.ANSWER
    assert reply.text.startswith('Open "My orders"')
    assert reply.faq_ids == ["track-order"] and reply.confidence > 0.99
    assert "help.kestrel-outfitters.example" in reply.text


async def test_paraphrase_is_answered(sample_index: FaqIndex, store: ConversationStore) -> None:
    reply = await manager(sample_index, store).handle(
        UserMessage("how do I reset my password", conversation_id="c"))
    assert reply.decision is Decision.ANSWER and reply.faq_ids == ["reset-password"]


async def test_near_miss_asks_did_you_mean_and_a_number_picks(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = middling(sample_index, store, NEAR_MISS)
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.CLARIFY
    assert reply.text.startswith("I'm not quite sure what you mean. Did you mean:")
    offered = reply.suggestions
    assert 2 <= len(offered) <= 3
    assert "return-policy" in [s.id for s in offered]
    assert f"2. {offered[1].question}" in reply.text
    picked = await dm.handle(UserMessage("2", conversation_id="c"))
    assert picked.decision is Decision.ANSWER and picked.faq_ids == [offered[1].id]
    assert picked.confidence == pytest.approx(offered[1].score)


@pytest.mark.parametrize("choice", ["the first one", "#1", "1.", "first"])
async def test_pick_by_ordinal(sample_index: FaqIndex, store: ConversationStore,
                               choice: str) -> None:
    dm = middling(sample_index, store, NEAR_MISS)
    offered = (await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))).suggestions
    reply = await dm.handle(UserMessage(choice, conversation_id="c"))
    assert reply.decision is Decision.ANSWER and reply.faq_ids == [offered[0].id]


async def test_pick_by_text_and_refuse_all(sample_index: FaqIndex,
                                          store: ConversationStore) -> None:
    dm = middling(sample_index, store, NEAR_MISS)
    offered = (await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))).suggestions
    reply = await dm.handle(UserMessage(offered[-1].question.upper(), conversation_id="c"))
    assert reply.decision is Decision.ANSWER and reply.faq_ids == [offered[-1].id]
    await dm.handle(UserMessage(NEAR_MISS, conversation_id="d"))
    refused = await dm.handle(UserMessage("None of these", conversation_id="d"))
    assert refused.decision is Decision.FALLBACK


async def test_number_without_pending_question_is_not_a_pick(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    reply = await manager(sample_index, store).handle(UserMessage("2", conversation_id="c"))
    assert reply.decision is not Decision.ANSWER


async def test_clarify_can_be_switched_off(sample_index: FaqIndex,
                                           store: ConversationStore) -> None:
    dm = middling(sample_index, store, NEAR_MISS)
    dm.dialogue.clarify = False
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.FALLBACK


async def test_unrelated_gets_fallback_then_yes_hands_off(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    reply = await dm.handle(UserMessage("What is the capital of Australia?", conversation_id="c"))
    assert reply.decision is Decision.FALLBACK
    assert "human" in reply.text and reply.faq_ids == []
    assert reply.confidence < dm.retrieval.suggest_threshold
    handoff = await dm.handle(UserMessage("yes please", conversation_id="c"))
    assert handoff.decision is Decision.HANDOFF


@pytest.mark.parametrize("text", ["human", "Can I talk to a real person?", "AGENT please"])
async def test_asking_for_a_human_hands_off(sample_index: FaqIndex, store: ConversationStore,
                                            text: str) -> None:
    reply = await manager(sample_index, store).handle(UserMessage(text, conversation_id="c"))
    assert reply.decision is Decision.HANDOFF


@pytest.mark.parametrize(("text", "fragment"), [("   ", "Please type"), ("x" * 2001, "under 2000")])
async def test_invalid_input(sample_index: FaqIndex, store: ConversationStore, text: str,
                             fragment: str) -> None:
    reply = await manager(sample_index, store).handle(UserMessage(text, conversation_id="c"))
    assert reply.decision is Decision.INVALID and fragment in reply.text


async def test_every_turn_is_stored(sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = middling(sample_index, store, NEAR_MISS)
    for text in ["How can I track my order?", NEAR_MISS, "1", "what's the weather on mars"]:
        await dm.handle(UserMessage(text, conversation_id="c", channel="test", user_id="u"))
    rows = await store.history("c", limit=100)
    assert [r.role for r in rows] == ["user", "bot"] * 4
    bots = [r for r in rows if r.role == "bot"]
    assert [b.decision for b in bots] == ["answer", "clarify", "answer", "fallback"]
    assert bots[0].faq_ids == ["track-order"] and bots[0].scores[0] > 0.99
    assert len(bots[1].faq_ids) == len(bots[1].scores) >= 2
    assert all(b.latency_ms is not None and b.latency_ms > 0 for b in bots)
    assert all(b.confidence is not None for b in bots)
