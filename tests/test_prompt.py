"""Prompt building within a token budget, counted by a real (tiny) tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import GenerationError
from bot.generation.prompt import EXAMPLE, EXAMPLE_MATCHED, build_prompt
from bot.generation.transformers_generator import TransformersGenerator
from bot.settings import PersonaSettings
from bot.shared.prompt import prompt_places
from retrieval.corpus import FaqEntry

ENTRIES = [FaqEntry(f"e{i}", (f"question {i}?",), f"Answer number {i}. " * 8) for i in range(3)]
HISTORY = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 10}
           for i in range(6)]


@pytest.fixture(scope="module")
def count(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return TransformersGenerator.load(str(tiny_model_dir), device="cpu").count_tokens


def test_everything_fits_in_a_large_budget(count) -> None:  # type: ignore[no-untyped-def]
    built = build_prompt(PersonaSettings(), ENTRIES, HISTORY, "Where is it?", count, 10_000)
    roles = [m["role"] for m in built.messages]
    assert roles[0] == "system" and built.messages[1:3] == EXAMPLE
    assert built.messages[3:-1] == HISTORY
    final = built.messages[-1]["content"]
    assert final.startswith("FAQ:\n- Answer number 0.") and final.endswith("Question: Where is it?")
    assert built.entry_ids == ["e0", "e1", "e2"] and built.history_messages == 6
    assert built.tokens == count(built.messages)
    assert "Kes" in built.messages[0]["content"], "persona fields are filled in"


def test_each_entry_is_shown_with_the_phrasing_that_matched(count) -> None:  # type: ignore[no-untyped-def]
    entries = [FaqEntry("pw", ("How do I reset my password?", "forgot my password"),
                        "Click Forgot password."),
               FaqEntry("ship", ("Where is my order?", "track my parcel"), "See My orders.")]
    built = build_prompt(PersonaSettings(), entries, [], "lost my pw", count, 10_000,
                         ["forgot my password", "track my parcel"])
    assert built.messages[-1]["content"] == (
        "FAQ:\n- Q: forgot my password\n  A: Click Forgot password.\n"
        "- Q: track my parcel\n  A: See My orders.\n\nQuestion: lost my pw")
    assert built.messages[1:3] == EXAMPLE_MATCHED, "the worked example in the same format"
    alone = build_prompt(PersonaSettings(), entries, [], "lost my pw", count, 10_000)
    assert alone.messages[-1]["content"] == (
        "FAQ:\n- Click Forgot password.\n- See My orders.\n\nQuestion: lost my pw"), \
        "without matched phrasings (dialogue.prompt_phrasings: false), answers alone"
    assert alone.messages[1:3] == EXAMPLE


def test_oldest_history_goes_first_then_entries(count) -> None:  # type: ignore[no-untyped-def]
    full = build_prompt(PersonaSettings(), ENTRIES, HISTORY, "Where is it?", count, 10_000)
    budget = full.tokens - 20
    built = build_prompt(PersonaSettings(), ENTRIES, HISTORY, "Where is it?", count, budget)
    assert built.tokens <= budget
    assert built.entry_ids == ["e0", "e1", "e2"], "entries stay while history can give way"
    assert 0 < built.history_messages < 6
    assert built.messages[-1 - built.history_messages:-1] == HISTORY[-built.history_messages:]
    no_history = build_prompt(PersonaSettings(), ENTRIES, [], "Where is it?", count, 10_000)
    tighter = no_history.tokens - 10
    built = build_prompt(PersonaSettings(), ENTRIES, HISTORY, "Where is it?", count, tighter)
    assert built.history_messages == 0 and built.entry_ids == ["e0", "e1"]
    assert built.tokens <= tighter


def test_last_entry_and_question_are_shortened(count) -> None:  # type: ignore[no-untyped-def]
    one = build_prompt(PersonaSettings(), ENTRIES[:1], [], "Where is it? " * 20, count, 10_000)
    budget = one.tokens - 40
    built = build_prompt(PersonaSettings(), ENTRIES, HISTORY, "Where is it? " * 20, count, budget)
    assert built.tokens <= budget and built.entry_ids == ["e0"]
    with pytest.raises(GenerationError, match="cannot fit in 50 tokens"):
        build_prompt(PersonaSettings(), ENTRIES, HISTORY, "Where is it?", count, 50)


@pytest.mark.parametrize(("scores", "floor", "limit", "places"), [
    ([0.6, 0.5, 0.3, 0.1], None, 3, [0, 1]),  # no floor: every entry needs the suggest threshold
    ([0.6, 0.5, 0.3, 0.1], 0.2, 3, [0, 1, 2]),  # runners-up down to the floor
    ([0.6, 0.5, 0.3, 0.1], 0.2, 2, [0, 1]),  # at most `limit`
    ([0.6, 0.1, 0.05], 0.2, 3, [0]),
    ([0.4, 0.3], 0.2, 3, []),  # the first below suggest: the bot does not generate at all
    ([], 0.2, 3, []),
    ([0.6, 0.5, 0.44], 0.9, 3, [0, 1]),  # a floor above suggest counts as suggest
])
def test_prompt_places_first_at_suggest_the_others_at_the_floor(
        scores: list[float], floor: float | None, limit: int, places: list[int]) -> None:
    assert prompt_places(scores, 0.45, floor, limit) == places
