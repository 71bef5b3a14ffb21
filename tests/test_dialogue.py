"""DialogueManager on the real embedder and sample FAQ: every decision, and what it stores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.dialogue import DialogueManager
from bot.errors import InputError
from bot.generation.batching import BatchingGenerator
from bot.generation.transformers_generator import TransformersGenerator
from bot.intents import Intents
from bot.runtime import generator_factory
from bot.settings import Settings
from bot.storage import ConversationStore
from bot.types import ConversationStatus, Decision, TextEvent, UserMessage
from retrieval.index import FaqIndex
from tests.dialogue_support import (
    FAITHFUL,
    NEAR_MISS,
    collect,
    generating,
    into_generated_band,
    manager,
)
from tests.fakes import ScriptedGenerator

pytestmark = pytest.mark.timeout(120)

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
    # a bare number with nothing offered is an unrelated message, not a pick (nor an error)
    assert reply.decision is Decision.FALLBACK


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


async def test_over_long_input_is_stored_as_a_bounded_prefix(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    await manager(sample_index, store).handle(UserMessage("y" * 500_000, conversation_id="c"))
    user, bot = await store.history("c")
    assert user.text == "y" * 2000 and bot.meta["input_chars"] == 500_000


async def test_a_channels_handoff_command_hands_off_without_keywords(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    dm.intents = Intents([])  # the company turned the keywords off; the command still works
    reply = await dm.handle(UserMessage("/human", conversation_id="c", channel="telegram"))
    assert reply.decision is Decision.HANDOFF
    assert await store.conversation_status("c") is ConversationStatus.HANDOFF


@pytest.mark.parametrize("text", ["I don't want a human", "no human please",
                                  "is this a human or a bot?", "are you a real person?",
                                  "I do not want to talk to an agent"])
async def test_refusing_or_asking_about_a_human_does_not_hand_off(
        sample_index: FaqIndex, store: ConversationStore, text: str) -> None:
    reply = await manager(sample_index, store).handle(UserMessage(text, conversation_id="c"))
    # the bot keeps the conversation and answers (an errored turn fails here)
    assert reply.decision is Decision.ANSWER
    assert await store.conversation_status("c") is ConversationStatus.BOT


async def test_refusing_a_human_is_acknowledged(sample_index: FaqIndex,
                                                store: ConversationStore) -> None:
    reply = await manager(sample_index, store).handle(
        UserMessage("I dont want a human", conversation_id="c"))
    assert reply.meta["intent"] == "no-human" and "keep helping you" in reply.text


async def test_identity_question_gets_an_honest_answer(sample_index: FaqIndex,
                                                       store: ConversationStore) -> None:
    reply = await manager(sample_index, store).handle(
        UserMessage("is this a human or a bot?", conversation_id="c"))
    assert "virtual assistant" in reply.text and reply.meta["intent"] == "identity"


@pytest.mark.parametrize(("text", "identity"), [
    ("is this a human or a bot?", True), ("are you a real person", True),
    ("am I talking to a person?", True), ("who am i talking to", True), ("are you human", True),
    ("is this automated", True), ("what are you", True),
    # Questions that start the same way but ask about something else (they were answered with
    # the identity reply before: found by `supportbot eval dialogue` on data/faq_eval.yaml).
    ("is it possible to return an engraved water bottle", False),
    ("is this email from you or a scam", False), ("are you open on sunday", False),
    ("is it going to snow in the Alps next week", False)])
def test_identity_is_a_question_about_the_bot(text: str, identity: bool) -> None:
    from bot.intents import simple

    assert Intents(["human", "agent"]).asks_identity(simple(text)) is identity


@pytest.mark.parametrize(("text", "wanted"), [
    ("human", True), ("AGENT please", True), ("a human now", True), ("No, I want a human", True),
    ("Can I talk to a real person?", True), ("is there an agent I could chat with", True),
    ("put me through to an operator", True), ("I need a human for my refund", True),
    # The keyword names a thing, or the message refuses one: no handoff.
    ("how many bones are in the human body", False), ("is the agent fee refundable", False),
    ("I don't want a human", False), ("no human please", False)])
def test_asking_for_a_human_needs_a_request(text: str, wanted: bool) -> None:
    intents = Intents(["human", "agent", "real person", "operator"])
    assert intents.wants_human(text) is wanted


async def test_after_a_handoff_the_bot_waits_for_the_human(sample_index: FaqIndex,
                                                           store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    handoff = await dm.handle(UserMessage("No, I want a human", conversation_id="c"))
    assert handoff.decision is Decision.HANDOFF
    assert await store.conversation_status("c") is ConversationStatus.HANDOFF
    reply = await dm.handle(UserMessage("How can I track my order?", conversation_id="c"))
    assert reply.decision is Decision.WAITING and "colleague" in reply.text
    assert await store.set_status("c", ConversationStatus.BOT)
    reply = await dm.handle(UserMessage("How can I track my order?", conversation_id="c"))
    assert reply.decision is Decision.ANSWER, "released back to the bot"


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


# --- the generated branch ---------------------------------------------------------------------

INVENTED = "Call us on 0800 123 456 and we will collect it for free."
SECOND = ("Drop the parcel off at any carrier drop-off point within 14 days of registering the "
          "return.")


async def test_a_prompt_floor_puts_the_runner_up_in_the_prompt(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    """dialogue.prompt_floor: entries after the first need only the floor, so the model sees a
    runner-up below the suggest threshold (which may be the right entry) next to the first."""
    hits = sample_index.search(NEAR_MISS, top_k=5)
    assert hits[0].score > hits[1].score > hits[2].score
    for floor, shown in [(None, [hits[0].entry.id]),
                         (hits[1].score - 0.001, [hits[0].entry.id, hits[1].entry.id])]:
        dm = generating(sample_index, store, ScriptedGenerator(FAITHFUL), prompt_entries=3,
                        prompt_floor=floor)
        # The runner-up below the suggest threshold, the first above it.
        dm.retrieval.suggest_threshold = (hits[0].score + hits[1].score) / 2
        _, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id=f"c{floor}"))
        assert reply.decision is Decision.GENERATE and reply.meta["prompt_entries"] == shown


async def test_middle_band_generates_a_grounded_answer(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    loads: list[int] = []
    scripted = ScriptedGenerator(f"{FAITHFUL} {SECOND}")
    dm = generating(sample_index, store, scripted, loads=loads)
    first = await dm.handle(UserMessage("How can I track my order?", conversation_id="c"))
    assert first.decision is Decision.ANSWER and loads == [], "FAQ answers never load the model"
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert loads == [1] and dm.generator_loaded
    assert reply.decision is Decision.GENERATE
    assert pieces == [FAITHFUL, " " + SECOND], "released sentence by sentence"
    assert reply.text == FAITHFUL + " " + SECOND
    assert reply.sources and reply.sources[0].id == "how-to-return"
    assert reply.meta["prompt_tokens"] > 0 and reply.meta["history_messages"] == 2
    assert [c["supported"] for c in reply.meta["checks"]] == [True, True]
    await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert loads == [1], "loaded once"
    stored = (await store.history("c"))[3]
    assert stored.decision == "generate" and stored.text == reply.text
    assert stored.faq_ids == ["how-to-return"]
    assert stored.meta["retrieval_query"] == NEAR_MISS


async def test_an_unsupported_sentence_never_reaches_the_customer(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    scripted = ScriptedGenerator(f"{FAITHFUL} {INVENTED} {SECOND}", seconds_per_token=0.005)
    dm = generating(sample_index, store, scripted)
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert pieces == [FAITHFUL] and reply.text == FAITHFUL
    assert reply.decision is Decision.GENERATE
    assert "0800" not in "".join(pieces) and reply.meta["held_back"]
    produced = scripted.tokens[0]
    assert produced < len(f"{FAITHFUL} {INVENTED} {SECOND}".split()), "generation was stopped"
    stored = await store.last_bot_message("c")
    assert stored is not None and stored.text == FAITHFUL, "stored exactly what was shown"


async def test_an_unsupported_first_sentence_gives_did_you_mean(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = generating(sample_index, store, ScriptedGenerator(f"{INVENTED} {FAITHFUL}"))
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.CLARIFY and reply.suggestions
    assert pieces == [reply.text] and "0800" not in reply.text
    assert reply.meta["rejected"].startswith("grounding")
    assert reply.candidates and "0800" in reply.candidates[0].text, "kept for review, not shown"


@pytest.mark.parametrize("release", ["sentence", "answer"])
async def test_release_modes_show_the_same_checked_text(
        sample_index: FaqIndex, store: ConversationStore, release: str) -> None:
    dm = generating(sample_index, store, ScriptedGenerator(f"{FAITHFUL} {SECOND} And then"),
                    release=release)
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert "".join(pieces) == reply.text == f"{FAITHFUL} {SECOND}", "cut-off tail dropped"
    assert len(pieces) == (2 if release == "sentence" else 1)
    assert reply.meta["cut_off"] == "And then"


async def test_consumer_leaving_stops_generation_and_stores_what_was_shown(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    words = f"{FAITHFUL} {SECOND} " * 3
    scripted = ScriptedGenerator(words.strip(), seconds_per_token=0.01)
    dm = generating(sample_index, store, scripted, min_grounding=0.0)
    stream = dm.stream(UserMessage(NEAR_MISS, conversation_id="c"))
    first = await anext(stream)
    assert isinstance(first, TextEvent) and first.text == FAITHFUL
    await stream.aclose()  # the client went away
    steps_at_close = scripted.steps
    await asyncio.sleep(0.2)
    assert scripted.tokens and scripted.steps - steps_at_close <= 1, \
        "the model stopped within one token step of the consumer leaving"
    assert scripted.tokens[0] < len(words.split())
    stored = await store.last_bot_message("c")
    assert stored is not None and stored.text == FAITHFUL and stored.meta["interrupted"]


async def test_a_failing_token_sink_stops_the_turn(sample_index: FaqIndex,
                                                   store: ConversationStore) -> None:
    scripted = ScriptedGenerator(f"{FAITHFUL} {SECOND} " * 5, seconds_per_token=0.01)
    dm = generating(sample_index, store, scripted, min_grounding=0.0)

    def sink(text: str) -> None:
        raise ConnectionError("client gone")

    with pytest.raises(ConnectionError):
        await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"), on_token=sink)
    steps_at_failure = scripted.steps
    await asyncio.sleep(0.2)
    assert scripted.steps - steps_at_failure <= 1, "generation stopped"
    assert scripted.tokens[0] < len(f"{FAITHFUL} {SECOND} ".split()) * 5


async def test_generation_failure_inside_a_turn_is_an_apology_and_the_chat_goes_on(
        sample_index: FaqIndex, store: ConversationStore,
        caplog: pytest.LogCaptureFixture) -> None:
    scripted = ScriptedGenerator(FAITHFUL, fail=RuntimeError("CUDA out of memory"))
    dm = generating(sample_index, store, scripted)
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.ERROR and "went wrong" in reply.text
    assert pieces == [reply.text] and "out of memory" in reply.meta["error"]
    assert "turn failed" in caplog.text
    rows = await store.history("c")
    assert [(r.role, r.decision) for r in rows] == [("user", None), ("bot", "error")]
    scripted.fail = None
    _, again = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert again.decision is Decision.GENERATE, "the conversation goes on"


async def test_a_storage_failure_is_an_apology_not_a_crash(
        sample_index: FaqIndex, tmp_path: Path) -> None:
    broken = ConversationStore(f"sqlite+aiosqlite:///{tmp_path}/broken.db")
    await broken.init()
    async with broken._engine.begin() as conn:  # the database loses its tables under the bot
        await conn.exec_driver_sql("DROP TABLE feedback")  # it refers to messages
        await conn.exec_driver_sql("DROP TABLE messages")
    try:
        dm = manager(sample_index, broken)
        for text in ["How can I track my order?", "what's the weather like"]:
            reply = await dm.handle(UserMessage(text, conversation_id="c"))
            assert reply.decision is Decision.ERROR and "went wrong" in reply.text
            assert "no such table" in reply.meta["error"]
            assert "cannot store the turn" in reply.meta["storage_error"]
    finally:
        await broken.close()


async def test_concurrent_conversations_share_a_batch(sample_index: FaqIndex,
                                                      store: ConversationStore) -> None:
    scripted = ScriptedGenerator(lambda q: f"{FAITHFUL}", seconds_per_token=0.02)
    dm = generating(sample_index, store, BatchingGenerator(scripted, max_batch=8, window_s=0.3))
    replies = await asyncio.gather(*(dm.handle(UserMessage(NEAR_MISS, conversation_id=f"c{i}"))
                                     for i in range(8)))
    assert [r.decision for r in replies] == [Decision.GENERATE] * 8
    assert [r.conversation_id for r in replies] == [f"c{i}" for i in range(8)]
    assert scripted.batches == [8], "eight conversations, one forward pass per step"
    dm.close()


async def test_turns_of_one_conversation_run_in_order(sample_index: FaqIndex,
                                                      store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    texts = [f"How can I track my order? ({i})" for i in range(6)]
    await asyncio.gather(*(dm.handle(UserMessage(t, conversation_id="new")) for t in texts))
    rows = await store.history("new", limit=100)
    assert [r.role for r in rows] == ["user", "bot"] * 6, "each turn stored whole, in turn"


async def test_candidates_are_ranked_and_the_best_is_checked(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    answers = iter([INVENTED, FAITHFUL, "Returns are easy."])

    class Candidates(ScriptedGenerator):
        def generate(self, prompts, params, on_text=None, should_stop=None):  # type: ignore[no-untyped-def]
            return [[next(answers) for _ in range(params.n)] for _ in prompts]

    dm = generating(sample_index, store, Candidates(""))
    dm.generation.n = 3
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    scores = [c.score for c in reply.candidates]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert reply.decision is Decision.GENERATE and reply.text == FAITHFUL


async def test_follow_up_uses_the_previous_question(sample_index: FaqIndex,
                                                    store: ConversationStore) -> None:
    dm = manager(sample_index, store)
    await dm.handle(UserMessage("How do I return an item?", conversation_id="c"))
    reply = await dm.handle(UserMessage("and how long does that take?", conversation_id="c"))
    assert reply.meta["retrieval_query"] == "How do I return an item? and how long does that take?"
    fresh = await dm.handle(UserMessage("what is the capital of australia", conversation_id="c"))
    assert fresh.meta["retrieval_query"] == "what is the capital of australia"


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir: Path) -> TransformersGenerator:
    return TransformersGenerator.load(str(tiny_model_dir), device="cpu")


async def test_the_real_stream_path_on_a_tiny_model(
        sample_index: FaqIndex, store: ConversationStore,
        tiny_generator: TransformersGenerator) -> None:
    dm = generating(sample_index, store, tiny_generator, min_grounding=0.0)
    pieces, reply = await collect(dm, UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision in (Decision.GENERATE, Decision.CLARIFY)
    assert "".join(pieces) == reply.text
    assert reply.meta["generated"], "the model wrote something"
    stored = await store.last_bot_message("c")
    assert stored is not None and stored.text == reply.text
    dm.close()


async def test_a_model_that_cannot_load_degrades_to_did_you_mean(
        sample_index: FaqIndex, store: ConversationStore, tmp_path: Path) -> None:
    settings = into_generated_band(Settings(), sample_index)
    settings.model.base_model = str(tmp_path / "no-such-model")
    dm = DialogueManager(sample_index, store, settings.persona, settings.retrieval,
                         settings.dialogue, settings.model.generation,
                         generator_factory(settings.model))
    reply = await dm.handle(UserMessage(NEAR_MISS, conversation_id="c"))
    assert reply.decision is Decision.CLARIFY and reply.suggestions
    assert "cannot load model" in reply.meta["generation_error"]
    stored = await store.last_bot_message("c")
    assert stored is not None and "cannot load model" in stored.meta["generation_error"]


async def test_an_over_long_conversation_id_is_refused_before_the_turn(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    with pytest.raises(InputError, match="conversation id longer than 128"):
        await manager(sample_index, store).handle(UserMessage("hi", conversation_id="c" * 129))
    assert await store.counts() == {"conversations": 0, "messages": 0}


async def test_an_unreachable_database_is_an_apology(sample_index: FaqIndex,
                                                     tmp_path: Path) -> None:
    store = ConversationStore(f"sqlite+aiosqlite:///{tmp_path}/gone.db")
    await store.init()
    (tmp_path / "gone.db").unlink()
    (tmp_path / "gone.db").mkdir()  # the file is now a folder: nothing can be read or written
    await store.close()
    try:
        reply = await manager(sample_index, store).handle(
            UserMessage("How can I track my order?", conversation_id="c"))
        assert reply.decision is Decision.ERROR and "storage_error" in reply.meta
    finally:
        await store.close()
