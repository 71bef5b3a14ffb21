"""Rank generated candidates by how well the retrieved FAQ entries support them."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from bot.generation.grounding import GroundingChecker
from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder

# One checker per embedder, so the FAQ answers' sentence embeddings are computed once.
_CHECKERS: weakref.WeakKeyDictionary[Embedder, GroundingChecker] = weakref.WeakKeyDictionary()


def checker_for(embedder: Embedder) -> GroundingChecker:
    """The shared GroundingChecker of an embedder (a fresh one if it cannot be weakly keyed)."""
    try:
        checker = _CHECKERS.get(embedder)
        if checker is None:
            checker = _CHECKERS[embedder] = GroundingChecker(embedder, min_score=0.0)
        return checker
    except TypeError:
        return GroundingChecker(embedder, min_score=0.0)


def grounding_scores(candidates: Sequence[str], sources: Sequence[FaqEntry],
                     embedder: Embedder, question: str = "") -> list[float]:
    """Score in [0, 1] per candidate: its weakest sentence's support (bot.generation.grounding),
    and 0 when any sentence states a fact or polarity the sources do not have."""
    checker = checker_for(embedder)
    scores = []
    for text in candidates:
        checks = checker.check_answer(text, sources, question) if text.strip() else []
        if not checks or any(c.reason for c in checks):
            scores.append(0.0)
            continue
        scores.append(round(min(c.score for c in checks), 4))
    return scores
