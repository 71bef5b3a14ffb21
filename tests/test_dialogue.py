"""DialogueManager on the real embedder and sample FAQ: every decision, and what it stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.dialogue import DialogueManager
from bot.generation.transformers_generator import TransformersGenerator
from bot.runtime import generator_factory
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
    dm.dialogue.middle = "fallback"
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


# --- the generated branch, on a tiny random model ------------------------------------------


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir: Path) -> TransformersGenerator:
    return TransformersGenerator.load(str(tiny_model_dir), device="cpu")


def generating(index: FaqIndex, store: ConversationStore, generator: TransformersGenerator,
               min_grounding: float, loads: list[int] | None = None) -> DialogueManager:
    """A manager whose thresholds put NEAR_MISS in the generated band."""
    settings = Settings()
    score = index.search(NEAR_MISS, top_k=1)[0].score
    settings.retrieval.answer_threshold = score + 0.05
    settings.retrieval.suggest_threshold = score - 0.15
    settings.dialogue.min_grounding = min_grounding
    settings.model.generation.max_new_tokens = 16

    def factory() -> TransformersGenerator:
        if loads is not None:
            loads.append(1)
        return generator

    return DialogueManager(index, store, settings.persona, settings.retrieval, settings.dialogue,
                           settings.model.generation, factory)


async def test_middle_band_generates_a_grounded_answer(
        sample_index: FaqIndex, store: ConversationStore,
        tiny_generator: TransformersGenerator) -> None:
    loads: list[int] = []
    dm = generating(sample_index, store, tiny_generator, min_grounding=0.0, loads=loads)
    first = await dm.handle(UserMessage("How can I track my order?", conversation_id="c"))
    assert first.decision is Decision.ANSWER and loads == [], "FAQ answers never load the model"
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert loads == [1] and dm.generator_loaded
    assert reply.decision is Decision.GENERATE
    assert reply.text == reply.candidates[0].text and reply.confidence == reply.candidates[0].score
    assert reply.sources and reply.sources[0].id == sample_index.search(NEAR_MISS)[0].entry.id
    assert reply.meta["prompt_tokens"] > 0 and reply.meta["history_messages"] == 2
    await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert loads == [1], "loaded once"
    stored = (await store.history("c"))[3]
    assert stored.decision == "generate" and stored.faq_ids == [s.id for s in reply.sources]
    assert stored.meta["candidates"][0]["text"] == reply.text
    assert stored.meta["retrieval_query"] == NEAR_MISS


async def test_ungrounded_generation_falls_back_to_did_you_mean(
        sample_index: FaqIndex, store: ConversationStore,
        tiny_generator: TransformersGenerator) -> None:
    dm = generating(sample_index, store, tiny_generator, min_grounding=0.99)
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.CLARIFY and reply.suggestions
    assert reply.meta["rejected"].startswith("grounding")
    assert len(reply.candidates) == 1, "the rejected candidate is kept for review"


async def test_streaming_sends_pieces_as_they_come(
        sample_index: FaqIndex, store: ConversationStore,
        tiny_generator: TransformersGenerator) -> None:
    dm = generating(sample_index, store, tiny_generator, min_grounding=0.0)
    pieces: list[str] = []
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"), on_token=pieces.append)
    assert pieces, "the text arrived through the sink (word by word for real text)"
    assert "".join(pieces).strip().startswith(reply.text)


async def test_candidates_are_ranked(sample_index: FaqIndex, store: ConversationStore,
                                     tiny_generator: TransformersGenerator) -> None:
    dm = generating(sample_index, store, tiny_generator, min_grounding=0.0)
    dm.generation.n = 3
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    scores = [c.score for c in reply.candidates]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


async def test_follow_up_uses_the_previous_question(sample_index: FaqIndex,
                                                    store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    await dm.handle(UserMessage("How do I return an item?", conversation_id="c"))
    reply = await dm.handle(UserMessage("and how long does that take?", conversation_id="c"))
    assert reply.meta["retrieval_query"] == "How do I return an item? and how long does that take?"
    fresh = await dm.handle(UserMessage("what is the capital of australia", conversation_id="c"))
    assert fresh.meta["retrieval_query"] == "what is the capital of australia"


async def test_a_model_that_cannot_load_degrades_to_did_you_mean(
        sample_index: FaqIndex, store: ConversationStore, tmp_path: Path) -> None:
    settings = Settings()
    score = sample_index.search(NEAR_MISS, top_k=1)[0].score
    settings.retrieval.answer_threshold = score + 0.05
    settings.retrieval.suggest_threshold = score - 0.15
    settings.model.base_model = str(tmp_path / "no-such-model")
    dm = DialogueManager(sample_index, store, settings.persona, settings.retrieval,
                         settings.dialogue, settings.model.generation,
                         generator_factory(settings.model))
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.CLARIFY and reply.suggestions
    assert "cannot load model" in reply.meta["generation_error"]
    stored = await store.last_bot_message("c")
    assert stored is not None and "cannot load model" in stored.meta["generation_error"]
