"""The score bands of the dialogue policy: answer, suggest ('Did you mean') or fall back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Band(str, Enum):
    """Where a query's top score falls between the two thresholds."""

    ANSWER = "answer"  # top score >= answer threshold: the top entry answers directly
    SUGGEST = "suggest"  # suggest <= top < answer: the middle band (clarify / generate / fallback)
    FALLBACK = "fallback"  # no hit, or top < suggest threshold: treated as out of scope


@dataclass(frozen=True)
class BandDecision:
    """A band, the top score (0.0 without hits) and the positions of the entries to offer."""

    band: Band
    top: float
    offered: tuple[int, ...] = ()


def suggestions(scores: Sequence[float], suggest_threshold: float,
                max_suggestions: int) -> tuple[int, ...]:
    """Positions of the hits a 'Did you mean' offers: at or above the suggest threshold, in
    ranked order, at most `max_suggestions` of them."""
    kept = [i for i, score in enumerate(scores) if score >= suggest_threshold]
    return tuple(kept[:max_suggestions])


def decide(scores: Sequence[float], answer_threshold: float, suggest_threshold: float,
           max_suggestions: int = 3, answer_margin: float = 0.0) -> BandDecision:
    """The band of one query from its ranked hits' scores (best first); thresholds inclusive.

    A direct answer also needs the top entry `answer_margin` ahead of the second: two entries
    that score alike are offered as 'Did you mean' instead. `offered` is filled for the SUGGEST
    band only; ANSWER answers with position 0.
    """
    if not len(scores):
        return BandDecision(Band.FALLBACK, 0.0)
    top = float(scores[0])
    margin = top - float(scores[1]) if len(scores) > 1 else float("inf")
    if top >= answer_threshold and margin >= answer_margin - 1e-9:
        return BandDecision(Band.ANSWER, top)
    if top >= suggest_threshold:
        return BandDecision(Band.SUGGEST, top,
                            suggestions(scores, suggest_threshold, max_suggestions))
    return BandDecision(Band.FALLBACK, top)
