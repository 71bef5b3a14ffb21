"""Abuse and toxicity: alt-profanity-check's bundled model (TF-IDF + linear SVM), a threshold.

The input guard scores both the customer's text and its folded copy (so "f u c k" and
homoglyph spellings count); the output guard does the same for every generated sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.safety.base import GuardContext, Verdict

Scorer = Callable[[list[str]], list[float]]

# Swearing aimed at someone (the bot, staff, "you") is abuse; swearing about a broken jacket in
# a question is a frustrated customer, who gets an answer.
_AIMED = re.compile(r"\b(?:you|u|ur|your|you'?re|yourself|ya|y'?all|bot|staff|agent|"
                    r"people there|employees?)\b")
_ASKS = re.compile(r"\b(?:how (?:do|can|long|much)|where(?:'s| is| are)|when (?:will|do|can|is)|"
                   r"why (?:is|was|did|has|hasn't|isn't)|i (?:want|need|would like|'d like) to|"
                   r"can i|could i|can you|could you|please|refund|return|cancel|order|"
                   r"deliver|parcel|package|account|charged?)\b")


def profanity_scorer() -> Scorer:
    """alt-profanity-check's probability that each text is offensive (loads its model once)."""
    from profanity_check import predict_prob

    def score(texts: list[str]) -> list[float]:
        return [float(p) for p in predict_prob(texts)]

    return score


class AbuseGuard:
    """Blocks abusive or toxic text whose offensive probability reaches the threshold; the
    `allow` words (mild swearing) are left out before scoring."""

    def __init__(self, scorer: Scorer, threshold: float, name: str = "abuse",
                 allow: list[str] | None = None, frustration: bool = False) -> None:
        self.scorer = scorer
        self.threshold = threshold
        self.name = name
        self.frustration = frustration
        words = sorted((re.escape(w.lower()) for w in allow or [] if w.strip()), key=len,
                       reverse=True)
        self._allow = re.compile(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)") if words else None

    def check(self, text: str, context: GuardContext) -> Verdict:
        """The higher of the text's and the folded text's probabilities against the threshold."""
        texts = [text.lower()]
        if context.folded and context.folded != texts[0]:
            texts.append(context.folded)
        if self._allow is not None:
            texts = [" ".join(self._allow.sub(" ", t).split()) or "." for t in texts]
        score = max(self.scorer(texts))
        folded = texts[-1]
        if score >= self.threshold and self.frustration and _ASKS.search(folded) and not (
                _AIMED.search(folded)):
            return Verdict(self.name, True, "frustration: swearing not aimed at anyone, in a "
                           "request", score)
        if score >= self.threshold:
            return Verdict(self.name, False, f"offensive {score:.2f}", score, category="abuse")
        return Verdict(self.name, True, "", score)
