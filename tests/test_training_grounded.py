"""Grounded FAQ examples: the bot's own prompt for each held-out phrasing, and the right target."""

from __future__ import annotations

import pytest

from bot.generation.prompt import build_prompt as bot_prompt
from bot.settings import Settings
from bot.shared.prompt import EXAMPLE, EXAMPLE_MATCHED, Prompt
from retrieval.corpus import FaqEntry
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex
from training.errors import ConfigError
from training.grounded import GroundedConfig, GroundedStats, grounded_conversations


def chars(prompt: Prompt) -> int:
    """A stand-in token count: characters / 4."""
    return sum(len(m["content"]) for m in prompt) // 4


@pytest.mark.parametrize("prompt_entries", [1, 2])
def test_each_held_out_phrasing_gets_the_bots_prompt_and_the_right_target(
        minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry],
        prompt_entries: int) -> None:
    settings = Settings()
    persona = settings.persona
    config = GroundedConfig(system=persona.render(persona.system_prompt),
                            fallback=persona.render(persona.fallback_text), budget=2000,
                            prompt_entries=prompt_entries)
    stats = GroundedStats()
    made = grounded_conversations(sample_entries, minilm, config, chars, stats)
    by_id = {e.id: e for e in sample_entries}
    phrasings = sum(len(e.questions) for e in sample_entries if len(e.questions) >= 2)
    assert stats.answer + stats.fallback + stats.not_asked == phrasings
    assert len(made) == stats.answer + stats.fallback and stats.answer > stats.fallback > 0
    seen = set()
    for conversation in made:
        _, entry_id, number = conversation.split_key.split(":")
        entry = by_id[entry_id]
        question = entry.questions[int(number)]
        *prompt, target = conversation.turns
        assert [t.train for t in conversation.turns] == [False] * len(prompt) + [True]
        messages = [{"role": t.role, "content": t.content} for t in prompt]
        assert messages[1:3] == EXAMPLE_MATCHED
        # Exactly what the bot builds for the same retrieved entries and matched phrasings
        # (the same function).
        shown = [by_id[line] for line in _entry_ids(messages[-1]["content"], sample_entries)]
        matched = _matched(messages[-1]["content"])
        assert 1 <= len(shown) <= prompt_entries
        assert messages == bot_prompt(persona, shown, [], question, chars, 2000,
                                      matched).messages
        for shown_entry, phrasing in zip(shown, matched, strict=True):
            assert phrasing in shown_entry.questions and phrasing != question, \
                "each entry is shown with one of its other phrasings, never the held-out one"
        if entry in shown:
            assert target.content == entry.answer
        else:
            assert target.content == config.fallback
        seen.add(conversation.id)
    assert len(seen) == len(made), "one example per phrasing"


def test_without_phrasings_the_prompt_has_answers_alone(
        minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry]) -> None:
    """dialogue.prompt_phrasings: false, for adapters trained before phrasings were shown."""
    config = GroundedConfig(system="s", fallback="I am not sure.", budget=4000, phrasings=False)
    made = grounded_conversations(sample_entries[:12], minilm, config, chars)
    assert made
    by_answer = {e.answer for e in sample_entries}
    for conversation in made:
        messages = [{"role": t.role, "content": t.content} for t in conversation.turns[:-1]]
        assert messages[1:3] == EXAMPLE
        assert all(fact.removeprefix("- ") in by_answer
                   for fact in _facts(messages[-1]["content"]))


def _facts(final: str) -> list[str]:
    return final.split("\n\nQuestion: ")[0].removeprefix("FAQ:\n").split("\n")


def _entry_ids(final: str, entries: list[FaqEntry]) -> list[str]:
    answers = [f.removeprefix("  A: ") for f in _facts(final) if f.startswith("  A: ")]
    return [next(e.id for e in entries if e.answer == a) for a in answers]


def _matched(final: str) -> list[str]:
    return [f.removeprefix("- Q: ") for f in _facts(final) if f.startswith("- Q: ")]


def test_the_held_out_phrasing_is_not_in_the_index_it_is_searched_in(
        minilm: SentenceTransformerEmbedder) -> None:
    """Searched in an index that held it, a phrasing would find its own entry at 1.0, and
    every target would be an answer: nothing like a customer's new wording."""
    reset = FaqEntry("reset", ("reset my password please", "a blue whale sings"),
                     "Click Forgot password.")
    login = FaqEntry("login", ("reset my password please now", "sign-in page broken"),
                     "Try another browser.")
    config = GroundedConfig(system="s", fallback="I am not sure.", budget=4000,
                            suggest_threshold=-1.0, folds=2)
    made = {c.id: c.turns[-1].content for c in grounded_conversations(
        [reset, login], minilm, config, chars)}
    assert FaqIndex.build([reset, login], minilm).search("reset my password please")[0] \
        .entry.id == "reset", "with the phrasing itself in the index, its own entry wins"
    assert made["faq:reset:0"] == "I am not sure.", "held out, the other entry ranks first"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("folds", 1, "folds: must be at least 2"),
    ("system", " ", "must not be empty"),
])
def test_bad_config_names_the_field(field: str, value: object, message: str) -> None:
    values: dict[str, object] = {"system": "s", "fallback": "f", field: value}
    with pytest.raises(ConfigError, match=message):
        GroundedConfig(**values)  # type: ignore[arg-type]


def test_rotations_move_the_right_entry_and_negatives_leave_it_out(
        minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry]) -> None:
    config = GroundedConfig(system="s", fallback="I am not sure.", budget=4000,
                            prompt_entries=3, rotations=3, negatives=True)
    stats = GroundedStats()
    made = grounded_conversations(sample_entries, minilm, config, chars, stats)
    by_id = {e.id: e for e in sample_entries}
    groups: dict[str, list[tuple[str, list[str], str]]] = {}
    for c in made:
        groups.setdefault(c.split_key, []).append(
            (c.id, _entry_ids(c.turns[-2].content, sample_entries), c.turns[-1].content))
    assert stats.rotated > stats.answer and stats.negative > 0
    assert len(made) == stats.answer + stats.rotated + stats.fallback + stats.negative
    for key, variants in groups.items():
        right = by_id[key.split(":")[1]]
        answers = [ids for _, ids, target in variants if target == right.answer]
        places = [ids.index(right.id) for ids in answers]
        assert len(places) == len(set(places)), "each rotation puts the entry somewhere new"
        for variant_id, ids, target in variants:
            if variant_id.endswith("#without"):
                assert right.id not in ids and target == "I am not sure."


def test_negatives_use_the_best_wrong_entries_even_below_the_suggest_threshold(
        minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry]) -> None:
    """A classifier's softmax rarely puts a second entry above the suggest threshold; the
    negatives still show the model the nearest entry that does not answer the question."""
    config = GroundedConfig(system="s", fallback="I am not sure.", budget=4000,
                            scoring="classifier", prompt_entries=1, negatives=True)
    stats = GroundedStats()
    made = grounded_conversations(sample_entries, minilm, config, chars, stats)
    assert stats.negative == stats.answer, "every answered phrasing has its negative"
    without = [c for c in made if c.id.endswith("#without")]
    assert len(without) == stats.negative
    for c in without:
        right = c.split_key.split(":")[1]
        assert right not in _entry_ids(c.turns[-2].content, sample_entries)
        assert c.turns[-1].content == "I am not sure."


def test_a_prompt_floor_shows_the_runner_up_the_bot_would_show(
        minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry]) -> None:
    """dialogue.prompt_floor: a second entry below the suggest threshold reaches the prompt, so
    a right entry ranked second becomes an answer example instead of a fallback one."""
    def make(floor: float | None) -> tuple[list[list[str]], GroundedStats]:
        config = GroundedConfig(system="s", fallback="I am not sure.", budget=4000,
                                scoring="classifier", prompt_entries=2, prompt_floor=floor)
        stats = GroundedStats()
        made = grounded_conversations(sample_entries, minilm, config, chars, stats)
        return [_entry_ids(c.turns[-2].content, sample_entries) for c in made], stats

    without, before = make(None)
    floored, after = make(0.1)
    assert sum(len(ids) == 2 for ids in floored) > 2 * sum(len(ids) == 2 for ids in without)
    assert after.answer > before.answer and after.fallback < before.fallback
    assert after.answer + after.fallback == before.answer + before.fallback
