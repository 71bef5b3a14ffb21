"""The grounded-answer chat prompt: system text, retrieved FAQ entries and history, in budget.

One format for serving and for training: the bot builds its prompts with `build_prompt`, and
`training/grounded.py` builds its fine-tuning examples with the same function, so a model is
trained on exactly the prompts it is later asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol


class FaqEntry(Protocol):
    """What a prompt needs of an FAQ entry (retrieval.corpus.FaqEntry has it)."""

    @property
    def id(self) -> str: ...

    @property
    def answer(self) -> str: ...

ChatMessage = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Prompt = list[ChatMessage]

_SHRINK = 0.8  # texts are cut to 80% per step when even the smallest prompt is over budget
_MIN_CHARS = 40
# One worked example before the real question: small models (SmolLM2-135M) restate the FAQ far
# more faithfully with it (mean grounding 0.52 against 0.24 without, on held-out paraphrases).
_EXAMPLE_ANSWER = ("You can change the delivery address in \"My orders\" as long as the "
                   "order has not shipped yet.")
EXAMPLE: Prompt = [
    {"role": "user", "content": "FAQ:\n- You can change the delivery address in \"My orders\" "
                                "until the order has shipped.\n\nQuestion: I moved, can the "
                                "parcel go to my new place?"},
    {"role": "assistant", "content": _EXAMPLE_ANSWER},
]
# The same example where entries are shown with the phrasing that matched (matched=...).
EXAMPLE_MATCHED: Prompt = [
    {"role": "user", "content": "FAQ:\n- Q: Can I change my delivery address?\n  A: You can "
                                "change the delivery address in \"My orders\" until the order "
                                "has shipped.\n\nQuestion: I moved, can the parcel go to my "
                                "new place?"},
    {"role": "assistant", "content": _EXAMPLE_ANSWER},
]


class PromptTooLong(ValueError):
    """Even the smallest prompt (no history, one shortened entry) is over the token budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        super().__init__(f"the prompt cannot fit in {budget} tokens")


def user_turn(facts: Sequence[tuple[str | None, str]], question: str) -> str:
    """The final user message: the FAQ entries, then the customer's question. Each entry is its
    answer, or with a phrasing the phrasing that matched the question and its answer: that lets
    a small model judge question against question, which is what retrieval matched on."""
    listed = "\n".join(f"- {a}" if q is None else f"- Q: {q}\n  A: {a}" for q, a in facts)
    return f"FAQ:\n{listed}\n\nQuestion: {question}" if facts else question


def prompt_places(scores: Sequence[float], suggest: float, floor: float | None,
                  limit: int) -> list[int]:
    """Which ranked hits go in the prompt (their places in `scores`, best first): the first
    needs `suggest` (it is what makes the bot generate at all); the others `floor`, which may
    be lower (dialogue.prompt_floor; None: `suggest` too). A right entry ranked second below
    the suggest threshold then still reaches the prompt, where the model can compare it with
    the first. At most `limit` places."""
    floor = suggest if floor is None else min(floor, suggest)
    if not scores or scores[0] < suggest:
        return []
    return [0, *(i for i, s in enumerate(scores) if i and s >= floor)][:limit]


@dataclass(frozen=True)
class BuiltPrompt:
    """A prompt that fits, with what went into it."""

    messages: Prompt
    entry_ids: list[str]
    history_messages: int
    tokens: int


def build_prompt(system: str, entries: Sequence[FaqEntry], history: Sequence[ChatMessage],
                 question: str, count_tokens: Callable[[Prompt], int],
                 budget: int, matched: Sequence[str] | None = None) -> BuiltPrompt:
    """Fit the prompt into `budget` tokens. `matched` gives, per entry, the phrasing retrieval
    matched (FaqHit.matched_question), shown with its answer; without it, answers alone
    (dialogue.prompt_phrasings).

    What gives way first: the oldest history, then the lowest-ranked entries (one always stays),
    then the remaining entry's answer and finally the question are shortened.
    """
    entries = list(entries)
    history = list(history)
    answers = {e.id: e.answer for e in entries}
    shown = {} if matched is None else {e.id: matched[i] for i, e in enumerate(entries)}
    example = EXAMPLE if matched is None else EXAMPLE_MATCHED

    def compose() -> Prompt:
        final = user_turn([(shown.get(e.id), answers[e.id]) for e in entries], question)
        return [{"role": "system", "content": system}, *example, *history,
                {"role": "user", "content": final}]

    prompt = compose()
    tokens = count_tokens(prompt)
    while tokens > budget:
        if history:
            history = history[2:] if len(history) > 1 else []  # a user turn and its reply
        elif len(entries) > 1:
            entries.pop()
        elif entries and len(answers[entries[0].id]) > _MIN_CHARS:
            first = entries[0].id
            answers[first] = answers[first][:int(len(answers[first]) * _SHRINK)]
        elif len(question) > _MIN_CHARS:
            question = question[:int(len(question) * _SHRINK)]
        else:
            raise PromptTooLong(budget)
        prompt = compose()
        tokens = count_tokens(prompt)
    return BuiltPrompt(prompt, [e.id for e in entries], len(history), tokens)
