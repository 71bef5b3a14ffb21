"""Grounded fine-tuning examples from a FAQ: the prompts the bot builds when it generates.

For each phrasing of each entry, the entries retrieved for it (by an index that does not hold
that phrasing, so the scores look like a customer's new wording, not an exact match) go into
the prompt exactly as the bot puts them there (`bot.shared.prompt.build_prompt`, the same code).
The target is the entry's own answer when the entry made it into the prompt; when it did not
(a wrong entry ranked first), the target is the fallback: the model learns to say it does not
know rather than restate an entry that does not answer the question.

Two augmentations keep the model from learning "copy the first entry" (which in the middle band,
where the first entry is often the wrong one, is a confident wrong answer): `rotations` moves
the right entry to other places among the prompt's entries, and `negatives` adds the same
question with the right entry left out (target: the fallback).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ConfigDict, Field, field_validator

from bot.shared.prompt import Prompt, build_prompt, prompt_places
from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex
from training.checked import CheckedConfig
from training.types import Conversation, Turn


class GroundedConfig(CheckedConfig):
    """How the bot builds its prompts (copied from its settings) and how examples are made."""

    model_config = ConfigDict(frozen=True, strict=False)  # made by code from checked settings

    system: str = Field(description="The rendered system prompt (persona).")
    fallback: str = Field(description="The target when the prompt lacks the right entry.")
    budget: int = Field(1948, description="Prompt tokens (context - new tokens).")
    top_k: int = Field(5, ge=1, description="retrieval.top_k")
    suggest_threshold: float = Field(0.45, description="retrieval.suggest_threshold")
    scoring: str = Field("nearest", description="retrieval.scoring")
    lexical: str = Field("auto", description="retrieval.lexical")
    outside: tuple[str, ...] = Field((), description="The classifier's out-of-scope questions "
                                     "(retrieval.out_of_scope).")
    prompt_entries: int = Field(1, ge=1, description="dialogue.prompt_entries")
    prompt_floor: float | None = Field(None, description="dialogue.prompt_floor")
    phrasings: bool = Field(True, description="dialogue.prompt_phrasings")
    folds: int = Field(4, ge=2, description="Phrasing folds held out in turn.")
    rotations: int = Field(1, ge=1, description="Examples per phrasing with the right entry at "
                           "different places in the prompt (1: only where retrieval ranked it).")
    negatives: bool = Field(False, description="Also each question with its entry left out of "
                            "the prompt, target the fallback.")
    seed: int = Field(0, description="Seeds the places rotations choose.")

    @field_validator("system", "fallback")
    @classmethod
    def _not_empty(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be empty")
        return text


@dataclass
class GroundedStats:
    """What the examples are made of, for the data report."""

    answer: int = 0  # the right entry was in the prompt: target its answer
    fallback: int = 0  # only wrong entries were: target the fallback
    rotated: int = 0  # extra answer examples with the right entry moved
    negative: int = 0  # extra fallback examples with the right entry left out
    not_asked: int = 0  # nothing reached suggest_threshold: the bot would not generate
    single_phrasing: int = 0  # entries with one phrasing cannot be held out

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def grounded_conversations(entries: Sequence[FaqEntry], embedder: Embedder,
                           config: GroundedConfig, count_tokens: Callable[[Prompt], int],
                           stats: GroundedStats | None = None) -> list[Conversation]:
    """One conversation per held-out phrasing: the bot's prompt, then the target answer."""
    stats = stats if stats is not None else GroundedStats()
    stats.single_phrasing += sum(1 for e in entries if len(e.questions) < 2)
    conversations: list[Conversation] = []
    rng = random.Random(config.seed)
    for fold in range(config.folds):
        held = [(entry, q) for entry in entries if len(entry.questions) >= 2
                for i, q in enumerate(entry.questions) if i % config.folds == fold]
        if not held:
            continue
        # Each entry keeps its other phrasings; the held-out one is searched as a new wording.
        kept = [FaqEntry(e.id, tuple(q for i, q in enumerate(e.questions)
                                     if i % config.folds != fold or len(e.questions) < 2),
                         e.answer, e.tags, e.link) for e in entries]
        index = FaqIndex.build([e for e in kept if e.questions], embedder,
                               scoring=config.scoring)
        if config.scoring == "classifier":
            index.outside = config.outside
            index.lexical = config.lexical
        results = index.search_many([q for _, q in held], config.top_k)
        for (entry, question), hits in zip(held, results, strict=True):
            shown = [hits[i].entry for i in prompt_places(
                [h.score for h in hits], config.suggest_threshold, config.prompt_floor,
                config.prompt_entries)]
            if not shown:
                stats.not_asked += 1
                continue
            matched = {h.entry.id: h.matched_question for h in hits}
            name = f"faq:{entry.id}:{entry.questions.index(question)}"
            ids = [e.id for e in shown]
            if entry.id not in ids:
                stats.fallback += 1
                conversations.append(example(name, shown, question, config.fallback, config,
                                             count_tokens, matched))
                continue
            stats.answer += 1
            right = shown[ids.index(entry.id)]
            others = [e for e in shown if e.id != entry.id]
            places = [ids.index(entry.id)]
            spare = [p for p in range(len(shown)) if p != places[0]]
            places += rng.sample(spare, min(len(spare), config.rotations - 1))
            for variant, place in enumerate(places):
                order = [*others[:place], right, *others[place:]]
                stats.rotated += variant > 0
                conversations.append(example(name, order, question, entry.answer, config,
                                             count_tokens, matched,
                                             f"#{variant}" if variant else ""))
            # The hardest negatives: the best-scored other entries, above the suggest
            # threshold or not (a classifier's softmax rarely puts a second entry above it).
            wrong = [h.entry for h in hits if h.entry.id != entry.id][:config.prompt_entries]
            if config.negatives and wrong:
                stats.negative += 1
                conversations.append(example(name, wrong, question, config.fallback, config,
                                             count_tokens, matched, "#without"))
    return conversations


def example(name: str, entries: list[FaqEntry], question: str, target: str,
            config: GroundedConfig, count_tokens: Callable[[Prompt], int],
            matched: dict[str, str], variant: str = "") -> Conversation:
    """The bot's prompt for `question` with these entries (each shown with the phrasing that
    matched it, as the bot shows them), then the target as the reply. Variants of one phrasing
    share a group, so the train / eval split keeps them together."""
    built = build_prompt(config.system, entries, [], question, count_tokens, config.budget,
                         [matched[e.id] for e in entries] if config.phrasings else None)
    turns = [Turn(m["role"], m["content"], train=False)  # type: ignore[arg-type]
             for m in built.messages]
    return Conversation(name + variant, (*turns, Turn("assistant", target)), source=name,
                        group=name)
