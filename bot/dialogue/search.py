"""Retrieval for a turn: the message, or a short follow-up joined with the previous question."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.intents import FOLLOW_UP, simple
from bot.storage import Message
from retrieval.index import FaqHit, FaqIndex

# A short message that starts like a follow-up or points back ("and how long does that take?")
# is also searched together with the previous question; that wins if it scores clearly higher.
FOLLOW_UP_MAX_WORDS = 10
FOLLOW_UP_GAIN = 0.05


@dataclass(frozen=True)
class Retrieved:
    """The hits of a turn's search and the query that found them."""

    hits: list[FaqHit]
    query: str


def retrieve(index: FaqIndex, top_k: int, text: str, history: list[Message],
             vectors: dict[str, Any] | None = None) -> Retrieved:
    """Search the message; a short follow-up is also searched with the previous question.
    `vectors` may hold the message's embedding already (the input guards made it)."""
    previous = next((m.text for m in reversed(history) if m.role == "user"), None)
    known = (vectors or {}).get(text)  # the guards' embedding of the message, if they ran
    if (previous is None or len(text.split()) > FOLLOW_UP_MAX_WORDS
            or not FOLLOW_UP.search(simple(text))):
        if known is not None:
            return Retrieved(index.search_vectors(known.reshape(1, -1), top_k, [text])[0], text)
        return Retrieved(index.search(text, top_k), text)
    alone = (index.search(text, top_k) if known is None else
             index.search_vectors(known.reshape(1, -1), top_k, [text])[0])
    if alone and alone[0].score + FOLLOW_UP_GAIN > 1.0:
        # Scores are at most 1: nothing joined could win by the gain, so it is not embedded
        # (an FAQ question that merely says "it" costs one embedding, not two).
        return Retrieved(alone, text)
    combined = f"{previous} {text}"
    joined = index.search(combined, top_k)
    if joined and (not alone or joined[0].score >= alone[0].score + FOLLOW_UP_GAIN):
        return Retrieved(joined, combined)
    return Retrieved(alone, text)
