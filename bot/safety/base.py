"""The Guard interface: `check(text, context) -> Verdict`, and the context guards share."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Embed = Callable[[str], np.ndarray]  # one text -> its unit-length sentence embedding
Patterns = list[tuple[str, re.Pattern[str]]]  # (family or category, pattern), tried in order


def first_match(texts: list[str], patterns: Patterns) -> tuple[str, str] | None:
    """(name, matched text) of the first pattern found in any of the texts, in order."""
    for text in texts:
        for name, pattern in patterns:
            found = pattern.search(text)
            if found:
                return name, found.group()[:80]
    return None


@dataclass(frozen=True)
class Verdict:
    """One guard's finding: allowed or not, why, how sure, and the text with PII redacted."""

    guard: str
    allowed: bool
    reason: str = ""
    score: float = 0.0
    redacted_text: str | None = None  # set by guards that rewrite the text (PII)
    category: str = ""  # what kind of block: "self-harm", "weapons", "rate", ...
    ms: float = 0.0  # how long the check took

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as stored with the message."""
        data: dict[str, Any] = {"guard": self.guard, "allowed": self.allowed,
                                "score": round(self.score, 4), "reason": self.reason}
        if self.category:
            data["category"] = self.category
        data["ms"] = round(self.ms, 2)
        return data


@dataclass
class GuardContext:
    """What the guards of one check share: who asks, the folded text, cached embeddings."""

    user_id: str = "local"
    conversation_id: str = ""
    channel: str = ""
    text: str = ""  # the cleaned customer text (set by the normaliser)
    folded: str = ""  # the text with homoglyphs, leetspeak and spacing folded: for detectors
    question: str = ""  # output guards: the customer's message this answer replies to
    allowed_values: frozenset[str] = frozenset()  # output guards: PII the answer may contain
    now: float | None = None  # rate limits: time of the message (None: the clock)
    embed: Embed | None = None  # the sentence embedder, if a guard needs one
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # text -> embedding, shared

    def vector(self, text: str) -> np.ndarray | None:
        """The text's embedding, computed once per check (and shared with retrieval).

        Folding that changed only the case embeds the cleaned text instead (the bundled
        MiniLM is uncased), so that retrieval can reuse the vector.
        """
        if self.embed is None:
            return None
        if self.text and text == self.text.lower():
            text = self.text
        if text not in self.vectors:
            self.vectors[text] = self.embed(text)
        return self.vectors[text]


class Guard(Protocol):
    """A check on a message (input) or a generated sentence (output)."""

    name: str

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Allowed or blocked, with a reason and a score in [0, 1]."""
        ...
