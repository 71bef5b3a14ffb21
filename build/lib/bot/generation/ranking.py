"""Rank generated candidates by how well the retrieved FAQ entries support them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder

_WORD = re.compile(r"[a-z][a-z'-]{3,}")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_STOP_WORDS = (
    "about after again also because been before being below between both could does doing down "
    "during each from further have having here into itself just more most other over same "
    "should some such than that their them then there these they this those through under "
    "until very were what when where which while with would your yours you'll we'll i'll "
    "can't don't won't it's")
_STOP = frozenset(_STOP_WORDS.split())
SEMANTIC_WEIGHT = 0.6
LEXICAL_WEIGHT = 0.4
UNSUPPORTED_NUMBER_PENALTY = 0.15


def grounding_scores(candidates: Sequence[str], sources: Sequence[FaqEntry],
                     embedder: Embedder) -> list[float]:
    """Score in [0, 1] per candidate: meaning close to a source answer, words found in the
    sources, and no numbers (prices, days) that the sources do not contain."""
    if not candidates:
        return []
    source_text = " ".join(f"{e.question} {e.answer}" for e in sources).lower()
    source_words = set(_WORD.findall(source_text))
    source_numbers = set(_NUMBER.findall(source_text))
    answers = [e.answer for e in sources]
    vectors = embedder.embed([*candidates, *answers]) if answers else None
    scores = []
    for i, text in enumerate(candidates):
        if not text.strip():
            scores.append(0.0)
            continue
        semantic = 0.0
        if vectors is not None:
            semantic = float(np.max(vectors[len(candidates):] @ vectors[i]))
        words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
        lexical = sum(w in source_words for w in words) / len(words) if words else 0.0
        numbers = _NUMBER.findall(text)
        unsupported = sum(n not in source_numbers for n in numbers)
        score = (SEMANTIC_WEIGHT * max(semantic, 0.0) + LEXICAL_WEIGHT * lexical
                 - UNSUPPORTED_NUMBER_PENALTY * unsupported)
        scores.append(round(min(max(score, 0.0), 1.0), 4))
    return scores
