"""Answer and suggest thresholds calibrated on the FAQ's own held-out phrasings.

Each held-out phrasing is searched in an index of the other phrasings twice over: as itself (an
in-scope question: is its top entry right, and how sure?) and with its own entry taken away (an
out-of-scope question: a question about something the FAQ does not cover scores like this). The
answer threshold is the lowest score at which direct answers reach the target precision, with
out-of-scope questions weighted as `oos_share` of the traffic; the suggest threshold keeps the
'Did you mean' band for in-scope questions and sends most out-of-scope ones to the fallback.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex

# No threshold below this: a cosine this low is noise for any sentence embedder.
FLOOR = 0.2
# No direct answer below this score, whatever the margin: held-out phrasings of the FAQ are
# closer to it than customers' questions are, so what they allow is a lower bound.
ANSWER_FLOOR = 0.5


# Margins tried for the answer band: how far the top entry must lead the second.
MARGINS = tuple(round(m, 2) for m in np.arange(0.0, 0.205, 0.01))


@dataclass(frozen=True)
class Sample:
    """One held-out phrasing: its top score, whether the top entry is its own, the lead over the
    second entry, and the top score and lead once its own entry is gone (how an out-of-scope
    question would score)."""

    top: float
    right: bool
    oos_top: float
    margin: float = 1.0
    oos_margin: float = 1.0


@dataclass(frozen=True)
class Thresholds:
    """Calibrated thresholds and what they give on the held-out phrasings."""

    answer: float
    suggest: float
    margin: float
    answer_precision: float | None  # weighted by oos_share
    answered_right: float  # share of in-scope held-out phrasings answered directly and right
    oos_answered: float  # share of the simulated out-of-scope questions answered directly
    oos_fallback: float  # share of them that get the fallback (below the suggest threshold)
    samples: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}

    def settings(self) -> dict[str, float]:
        """These thresholds as the bot's `retrieval` settings."""
        return {"answer_threshold": self.answer, "answer_margin": self.margin,
                "suggest_threshold": self.suggest}


def best_scoring(calibrations: Mapping[str, Thresholds]) -> str:
    """The scoring whose thresholds answer most held-out phrasings right (nearest on ties)."""
    return max(calibrations, key=lambda s: (calibrations[s].answered_right, s == "nearest"))


def calibrate(samples: Sequence[Sample], target_precision: float = 0.95,
              oos_share: float = 0.2, suggest_recall: float = 0.98,
              margins: Sequence[float] = MARGINS,
              outside: Sequence[tuple[float, float]] = (),
              max_oos_answered: float = 0.03) -> Thresholds:
    """The answer and suggest thresholds and the answer margin for these samples.

    For each margin, the answer threshold is the lowest (0.01 steps) above which the weighted
    precision stays >= target_precision at every step (1.0 when it never does); the margin (and
    its threshold) that answers most phrasings right wins, the smallest on ties. Suggest: the
    score under which only 1 - suggest_recall of the in-scope phrasings with a right top entry
    fall, but not below FLOOR nor above the answer threshold.

    A threshold (and margin) must also answer at most `max_oos_answered` of the out-of-scope
    questions, and the answer threshold is never below ANSWER_FLOOR. Out-of-scope traffic is
    simulated by the samples' scores without their own entry and, when
    given, by real out-of-scope questions' (top score, lead) pairs (`outside`), half each.
    """
    if not samples:
        raise ValueError("calibration needs held-out phrasings: the FAQ has too few")
    top = np.array([s.top for s in samples])
    right = np.array([s.right for s in samples])
    lead = np.array([s.margin for s in samples])
    oos = np.array([s.oos_top for s in samples])
    oos_lead = np.array([s.oos_margin for s in samples])
    n = len(samples)
    real = np.array(list(outside), dtype=float).reshape(-1, 2)

    def weighted(t: float, m: float) -> tuple[float | None, float, float]:
        inside = (top >= t) & (lead >= m - 1e-9)
        inside_right = float((right & inside).sum()) / n
        inside_wrong = float((~right & inside).sum()) / n
        outside = float(((oos >= t) & (oos_lead >= m - 1e-9)).sum()) / n
        if len(real):
            outside = (outside + float(((real[:, 0] >= t) & (real[:, 1] >= m - 1e-9)).mean())) / 2
        answered = (1 - oos_share) * (inside_right + inside_wrong) + oos_share * outside
        precision = (1 - oos_share) * inside_right / answered if answered else None
        return precision, inside_right, outside

    best = (-1.0, 1.0, 0.0)  # (answered right, threshold, margin)
    for m in margins:
        answer = 1.0  # from the top down, as long as precision holds (it is noisy, not monotone)
        for t in np.round(np.arange(1.0, ANSWER_FLOOR - 1e-9, -0.01), 2):
            precision, _, oos_answered = weighted(float(t), m)
            if (precision is not None and precision < target_precision) or \
                    oos_answered > max_oos_answered + 1e-12:
                break
            answer = float(t)
        answered_right = weighted(answer, m)[1]
        if answered_right > best[0] + 1e-12:
            best = (answered_right, answer, float(m))
    _, answer, margin = best
    rights = np.sort(top[right])
    suggest = float(np.quantile(rights, 1 - suggest_recall)) if len(rights) else answer
    suggest = round(min(max(suggest, FLOOR), answer), 2)
    precision, answered_right, oos_answered = weighted(answer, margin)
    return Thresholds(answer, suggest, margin, precision, answered_right, oos_answered,
                      float((oos < suggest).sum()) / n, n)


def samples_from_hits(gold: Sequence[int], ranked: Sequence[Sequence[tuple[int, float]]]
                      ) -> list[Sample]:
    """Samples from each held-out phrasing's ranked (entry position, score) hits (3 are enough:
    the top two with and without the phrasing's own entry)."""
    samples = []
    for own, hits in zip(gold, ranked, strict=True):
        if not hits:
            continue
        scores = [score for _, score in hits]
        others = [score for entry, score in hits if entry != own]
        samples.append(Sample(
            scores[0], hits[0][0] == own, others[0] if others else -1.0,
            scores[0] - scores[1] if len(scores) > 1 else 1.0,
            others[0] - others[1] if len(others) > 1 else 1.0))
    return samples


def held_out_samples(entries: Sequence[FaqEntry], tune: Sequence[Sequence[str]],
                     held_out: Sequence[tuple[int, str]], embedder: Embedder,
                     scorings: Sequence[str], outside: Sequence[str] = (),
                     learnt: Sequence[str] = (), lexical: str = "off"
                     ) -> dict[str, tuple[list[Sample], list[tuple[float, float]]]]:
    """Search each held-out phrasing, and each out-of-scope question, in an index of the
    entries' other (tuning) phrasings, under each scoring: the samples, and the questions'
    (top score, lead). Everything is embedded once; the scoring is a search-time choice.

    `learnt` are the out-of-scope questions the classifier scoring learns as a class
    (retrieval.out_of_scope). A question it learnt would score too low to calibrate on, so the
    out-of-scope questions are searched in two halves, each by a head that learnt the others.
    `lexical`: whether that head weighs the words too (retrieval.lexical), as it will serve.
    """
    kept = [replace(entry, questions=tuple(texts)) for entry, texts in zip(entries, tune,
                                                                           strict=True)]
    index = FaqIndex.build(kept, embedder)
    index.lexical = lexical
    position = {entry.id: i for i, entry in enumerate(kept)}
    phrasings = embedder.embed([text for _, text in held_out])
    questions = embedder.embed(list(outside))
    found = {}
    for scoring in scorings:
        index.scoring = scoring
        index.outside = learnt if scoring == "classifier" else ()
        hits = index.search_vectors(phrasings, 3, [text for _, text in held_out])
        samples = samples_from_hits([own for own, _ in held_out], [
            [(position[h.entry.id], h.score) for h in row] for row in hits])
        if not index.outside:
            rows = index.search_vectors(questions, 2, outside)
        else:
            rows = []
            for half in (0, 1):
                unseen = set(outside[half::2])
                twin = index.copy()
                # Questions taken away: the twin's head is fitted from scratch (the setter),
                # never refitted from one that saw them.
                twin.outside = tuple(q for q in index.outside if q not in unseen)
                rows += twin.search_vectors(questions[half::2], 2, outside[half::2])
        leads = [(row[0].score, row[0].score - row[1].score if len(row) > 1 else 1.0)
                 for row in rows if row]
        found[scoring] = (samples, leads)
    return found
