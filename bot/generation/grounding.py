"""Sentence-by-sentence grounding: does the FAQ support each sentence of a generated answer?"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.generation.claims import (
    CODE,
    CURRENCIES,
    EMAIL,
    NEGATIONS,
    PHONE,
    POLARITY,
    PROFANITY,
    QUOTED,
    SCOPE_END,
    STOP,
    STRAIGHT,
    UNITS,
    URL,
    claim_words,
    clauses,
    negated,
    negated_words,
    norm,
    quantities,
    split_sentences,
    unnegated,
)
from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder

__all__ = ["GroundingChecker", "SentenceCheck", "split_sentences"]

# Weights of the soft score: closest FAQ clause by meaning, and share of content words found in
# the FAQ. Tuned on the "tune" split of data/grounding_dev.jsonl (bench/bench_grounding.py).
SEMANTIC_WEIGHT = 0.6
LEXICAL_WEIGHT = 0.4
# A sentence further from the customer's question than this (cosine) answers something else.
MIN_RELEVANCE = 0.2
# Content words taken from the customer's message that the FAQ entry does not have: "Yes, you
# can pay with bitcoin", "... the code 'Bomb Making Kit'". Any such word fails the sentence.
MAX_ECHOED = 0

# --- the checker -------------------------------------------------------------------------------


def _content(text: str) -> list[str]:
    """Words that carry the claim: not stop words, longer than three letters."""
    return [w for w in claim_words(text) if w not in STOP and len(w) > 3]


def _support(similarity: float, words: list[str], prepared: Sequence[_Source]) -> float:
    """Soft support in [0, 1]: closest FAQ unit by meaning, share of words found in the FAQ."""
    known = frozenset().union(*(s.words for s in prepared))
    lexical = sum(w in known for w in words) / len(words) if words else 0.5
    score = SEMANTIC_WEIGHT * max(similarity, 0.0) + LEXICAL_WEIGHT * lexical
    return round(min(max(score, 0.0), 1.0), 4)


def _basis(piece: str, vector: np.ndarray, prepared: Sequence[_Source]) -> str:
    """The FAQ clause a piece of a sentence restates: most shared words, then closest meaning."""
    words = set(_content(piece)) - POLARITY
    best, key = "", (-1, -1.0)
    for src in prepared:
        sims = src.vectors @ vector
        for j in src.finest:
            candidate = (len(words & set(claim_words(src.units[j]))), float(sims[j]))
            if candidate > key:
                best, key = src.units[j], candidate
    return best


@dataclass(frozen=True)
class SentenceCheck:
    """One sentence's verdict: support score, whether it may be shown, and why not."""

    text: str
    score: float
    supported: bool
    reason: str


@dataclass(frozen=True)
class _Source:
    """One FAQ entry prepared for checking: its answer's sentences and clauses, embedded."""

    units: list[str]
    vectors: np.ndarray
    negated: list[bool]
    text: str
    words: frozenset[str]
    quantities: frozenset[tuple[str, str]]
    negated_only: frozenset[str]  # words the answer only uses under a negation
    finest: list[int]  # units that are not cut further: clauses, or sentences without any


class GroundingChecker:
    """Checks generated sentences against the FAQ entries that were in the prompt."""

    def __init__(self, embedder: Embedder, min_score: float) -> None:
        self.embedder = embedder
        self.min_score = min_score
        self._cache: dict[tuple[str, str], _Source] = {}

    def _source(self, entry: FaqEntry) -> _Source:
        key = (entry.id, entry.answer)
        if key not in self._cache:
            sentences = split_sentences(entry.answer)
            pieces = {s: [c for c in clauses(s) if c != s] for s in sentences}
            units = [*sentences, *[c for s in sentences for c in pieces[s]]]
            finest = [i for i, u in enumerate(units) if not pieces.get(u)]
            text = norm(" ".join([entry.answer, entry.link or ""]))
            words = frozenset(claim_words(" ".join([entry.answer, *entry.questions])))
            scoped = negated_words(entry.answer)
            free = {w for part in SCOPE_END.split(entry.answer) for w in unnegated(part)}
            self._cache[key] = _Source(units, self.embedder.embed(units),
                                       [negated(u) for u in units], text, words,
                                       frozenset(quantities(entry.answer)),
                                       frozenset(scoped - free), finest)
        return self._cache[key]

    def check_answer(self, text: str, sources: Sequence[FaqEntry],
                     question: str = "") -> list[SentenceCheck]:
        """Every sentence of the text, in order (split with split_sentences)."""
        return [self.check_sentence(s, sources, question) for s in split_sentences(text)]

    def check_sentence(self, sentence: str, sources: Sequence[FaqEntry], question: str = "",
                       min_score: float | None = None) -> SentenceCheck:
        """Score one sentence; hard failures (facts not in the FAQ, flipped polarity) fail it.

        `min_score` overrides the checker's own, so one checker (and its cache of embedded FAQ
        sentences) can serve callers with different thresholds.
        """
        min_score = self.min_score if min_score is None else min_score
        prepared = [self._source(e) for e in sources]
        if not sentence.strip() or not prepared:
            return SentenceCheck(sentence, 0.0, False, "no FAQ entry to check against"
                                 if sentence.strip() else "empty sentence")
        parts = [c for c in clauses(sentence, extra=True) if c != sentence.strip()]
        vectors = self.embedder.embed([sentence, *parts, *([question] if question else [])])
        vector = vectors[0]
        relevance = float(vectors[-1] @ vector) if question else 1.0
        words = _content(sentence)
        best_sim, best_unit = -1.0, ""
        for src in prepared:
            sims = src.vectors @ vector
            i = int(np.argmax(sims))
            if float(sims[i]) > best_sim:
                best_sim, best_unit = float(sims[i]), src.units[i]
        # Each clause is compared with the FAQ clause about the same things (most shared words)
        # for its polarity words: "express delivery is free" rests on "express delivery costs".
        pieces = list(zip(parts, vectors[1:1 + len(parts)], strict=True)) or [(sentence, vector)]
        bases = [(piece, _basis(piece, piece_vector, prepared)) for piece, piece_vector in pieces]
        score = _support(best_sim, words, prepared)
        weakest = ""
        for part, part_vector in zip(parts, vectors[1:1 + len(parts)], strict=True):
            sim = max(float(np.max(src.vectors @ part_vector)) for src in prepared)
            part_score = _support(sim, _content(part), prepared)
            if part_score < score:
                score, weakest = part_score, part
        reason = self._hard_failure(sentence, prepared, best_unit, bases, question)
        if not reason and relevance < MIN_RELEVANCE:
            reason = f"does not address the question (relevance {relevance:.2f})"
        if not reason and score < min_score:
            where = f" in '{weakest}'" if weakest else ""
            reason = f"unsupported{where} ({score:.2f} < {min_score:.2f})"
        return SentenceCheck(sentence, score, not reason, reason)

    def _hard_failure(self, sentence: str, prepared: list[_Source], best_unit: str,
                      bases: list[tuple[str, str]], question: str) -> str:
        """The first fact or polarity in the sentence that the FAQ does not have, or ''."""
        sentence = sentence.translate(STRAIGHT)
        text = " ".join(s.text for s in prepared)
        digits = re.sub(r"\D", "", text)
        for email in EMAIL.findall(sentence):
            if email.lower().rstrip(".") not in text:
                return f"email {email} not in the FAQ"
        without_emails = EMAIL.sub(" ", sentence)
        for url in URL.findall(without_emails):
            if url.lower().rstrip(".,)") not in text:
                return f"link {url.rstrip('.,)')} not in the FAQ"
        for phone in PHONE.findall(without_emails):
            number = re.sub(r"\D", "", phone)
            if len(number) >= 7 and number not in digits:
                return f"phone number {phone.strip()} not in the FAQ"
        for groups in QUOTED.findall(sentence):
            quoted = norm(next(g for g in groups if g)).strip(" .,!?")
            if quoted and quoted not in text:
                return f"quoted '{quoted}' not in the FAQ"
        upper = " ".join(s.text for s in prepared).upper()
        for code in CODE.findall(without_emails):
            if code not in upper and code.lower() not in {"faq"} | {u for u in UNITS}:
                return f"code '{code}' not in the FAQ"
        known = frozenset().union(*(s.quantities for s in prepared))
        numbers = {n for n, _ in known}
        for number, unit in sorted(quantities(without_emails)):
            if number not in numbers:
                return f"number {number} not in the FAQ"
            if unit and (number, unit) not in known:
                kind = "amount" if unit in CURRENCIES else "quantity"
                return f"{kind} '{number} {unit}' not in the FAQ"
        own = set(claim_words(sentence))
        entry_words = set().union(*(s.words for s in prepared))
        for piece, basis_unit in bases:
            basis = set(claim_words(basis_unit))
            for word in [w for w in claim_words(piece) if w in POLARITY]:
                if word not in basis and not (word in entry_words and word in {"all", "any"}):
                    return f"'{word}' not in the FAQ sentence it restates"
        if negated(sentence) != negated(best_unit):
            if negated(sentence):
                cue = next(w for w in claim_words(sentence) if w in NEGATIONS)
                return f"negation '{cue}' not in the FAQ"
            return "drops the FAQ's negation"
        if not negated(sentence):
            denied = sorted(own & frozenset().union(*(s.negated_only for s in prepared)))
            if denied:
                return f"the FAQ says not for '{denied[0]}'"
        for match in PROFANITY.finditer(sentence):
            if match.group().lower() not in text:
                return f"repeats '{match.group()}' (not in the FAQ)"
        echoed = sorted(w for w in own & set(claim_words(question))
                        if w not in entry_words and w not in STOP and len(w) > 3)
        if len(echoed) >= MAX_ECHOED + 1:
            return f"repeats the customer's '{echoed[0]}' (not in the FAQ)"
        return ""
