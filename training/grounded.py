"""Grounded fine-tuning examples from a FAQ: the prompts the bot builds when it generates.

For each phrasing of each entry, the entries retrieved for it (by an index that does not hold
that phrasing, so the scores look like a customer's new wording, not an exact match) go into
the prompt exactly as the bot puts them there (`retrieval.prompt.build_prompt`, the same code).
The target is the entry's own answer when the entry made it into the prompt; when it did not
(a wrong entry ranked first), the target is the fallback: the model learns to say it does not
know rather than restate an entry that does not answer the question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex
from retrieval.prompt import Prompt, build_prompt
from training.errors import ConfigError
from training.types import Conversation, Turn


@dataclass(frozen=True)
class GroundedConfig:
    """How the bot builds its prompts (copied from its settings) and how examples are made."""

    system: str = field(metadata={"help": "The rendered system prompt (persona)."})
    fallback: str = field(metadata={"help": "The target when the prompt lacks the right entry."})
    budget: int = field(default=1948, metadata={"help": "Prompt tokens (context - new tokens)."})
    top_k: int = field(default=5, metadata={"help": "retrieval.top_k"})
    suggest_threshold: float = field(default=0.45, metadata={"help": "retrieval.suggest_threshold"})
    prompt_entries: int = field(default=1, metadata={"help": "dialogue.prompt_entries"})
    folds: int = field(default=4, metadata={"help": "Phrasing folds held out in turn."})

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"folds: must be at least 2, got {self.folds}")
        if not self.system.strip() or not self.fallback.strip():
            raise ConfigError("system and fallback: must not be empty")


@dataclass
class GroundedStats:
    """What the examples are made of, for the data report."""

    answer: int = 0  # the right entry was in the prompt: target its answer
    fallback: int = 0  # a wrong entry was: target the fallback
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
    conversations = []
    for fold in range(config.folds):
        held = [(entry, q) for entry in entries if len(entry.questions) >= 2
                for i, q in enumerate(entry.questions) if i % config.folds == fold]
        if not held:
            continue
        # Each entry keeps its other phrasings; the held-out one is searched as a new wording.
        kept = [FaqEntry(e.id, tuple(q for i, q in enumerate(e.questions)
                                     if i % config.folds != fold or len(e.questions) < 2),
                         e.answer, e.tags, e.link) for e in entries]
        index = FaqIndex.build([e for e in kept if e.questions], embedder)
        results = index.search_many([q for _, q in held], config.top_k)
        for (entry, question), hits in zip(held, results, strict=True):
            sources = [h.entry for h in hits if h.score >= config.suggest_threshold]
            sources = sources[:config.prompt_entries]
            if not sources:
                stats.not_asked += 1
                continue
            built = build_prompt(config.system, sources, [], question, count_tokens,
                                 config.budget)
            right = entry.id in built.entry_ids
            stats.answer += right
            stats.fallback += not right
            target = entry.answer if right else config.fallback
            turns = [Turn(m["role"], m["content"], train=False)  # type: ignore[arg-type]
                     for m in built.messages]
            conversations.append(Conversation(
                f"faq:{entry.id}:{entry.questions.index(question)}",
                (*turns, Turn("assistant", target)), source=f"faq entry {entry.id}"))
    return conversations
