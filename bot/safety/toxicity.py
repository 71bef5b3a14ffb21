"""Abuse and toxicity: alt-profanity-check's bundled model (TF-IDF + linear SVM), a threshold.

The input guard scores both the customer's text and its folded copy (so "f u c k" and
homoglyph spellings count); the output guard does the same for every generated sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

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
    """alt-profanity-check's probability that each text is offensive (loads its model once).

    Its model is 5 linear SVMs, each with a sigmoid calibration, averaged: scikit-learn's
    `predict_proba` spends ~3.5 ms a call checking and wrapping that (a fifth of an FAQ turn's
    CPU), so the same sums run here as one sparse product. `linear_profanity` checks the model
    has that shape; anything else goes through scikit-learn as before.
    """
    from profanity_check import profanity_check as bundled

    vectorizer, model = bundled.vectorizer, bundled.model
    linear = linear_profanity(model)

    def score(texts: list[str]) -> list[float]:
        features = vectorizer.transform(texts)
        if linear is None:
            return [float(p) for p in model.predict_proba(features)[:, 1]]
        return [float(p) for p in linear(features)]

    return score


def linear_profanity(model: Any) -> Callable[[Any], np.ndarray] | None:
    """The calibrated linear SVMs' averaged probability of the offensive class as a function of
    the TF-IDF features, or None if `model` is not binary sigmoid-calibrated linear SVMs."""
    from scipy.special import expit
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import LinearSVC

    parts = getattr(model, "calibrated_classifiers_", None)
    if not isinstance(model, CalibratedClassifierCV) or not parts or any(
            part.method != "sigmoid" or len(part.classes) != 2 or len(part.calibrators) != 1
            or not isinstance(part.estimator, LinearSVC) for part in parts):
        return None
    weights = np.vstack([part.estimator.coef_[0] for part in parts]).T  # features x parts
    intercepts = np.array([part.estimator.intercept_[0] for part in parts])
    slopes = np.array([part.calibrators[0].a_ for part in parts])
    offsets = np.array([part.calibrators[0].b_ for part in parts])

    def probability(features: Any) -> np.ndarray:
        decisions = np.asarray(features @ weights) + intercepts  # texts x parts
        return np.asarray(expit(-(slopes * decisions + offsets)).mean(axis=1))

    return probability


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
