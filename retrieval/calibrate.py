"""Answer and suggest thresholds calibrated on the FAQ's own held-out phrasings.

Each held-out phrasing is searched in an index of the other phrasings twice over: as itself (an
in-scope question: is its top entry right, and how sure?) and with its own entry taken away (an
out-of-scope question: a question about something the FAQ does not cover scores like this). The
answer threshold is the lowest score at which direct answers reach the target precision, with
out-of-scope questions weighted as `oos_share` of the traffic; the suggest threshold keeps the
'Did you mean' band for in-scope questions and sends most out-of-scope ones to the fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder
from retrieval.index import FaqIndex

# No threshold below this: a cosine this low is noise for any sentence embedder.
FLOOR = 0.2


@dataclass(frozen=True)
class Sample:
    """One held-out phrasing: its top score, whether the top entry is its own, and the top
    score once its own entry is gone (how an out-of-scope question would score)."""

    top: float
    right: bool
    oos_top: float


@dataclass(frozen=True)
class Thresholds:
    """Calibrated thresholds and what they give on the held-out phrasings."""

    answer: float
    suggest: float
    answer_precision: float | None  # weighted by oos_share
    answered_right: float  # share of in-scope held-out phrasings answered directly and right
    oos_answered: float  # share of the simulated out-of-scope questions answered directly
    oos_fallback: float  # share of them that get the fallback (below the suggest threshold)
    samples: int

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def calibrate(samples: Sequence[Sample], target_precision: float = 0.95,
              oos_share: float = 0.2, suggest_recall: float = 0.95) -> Thresholds:
    """The answer and suggest thresholds for these samples.

    Answer: the lowest (0.01 steps) above which the weighted precision stays >= target_precision
    at every step (1.0 when it never does). Suggest: the score under which only
    1 - suggest_recall of the in-scope phrasings with a right top entry fall, but not below
    FLOOR nor above the answer threshold."""
    if not samples:
        raise ValueError("calibration needs held-out phrasings: the FAQ has too few")
    top = np.array([s.top for s in samples])
    right = np.array([s.right for s in samples])
    oos = np.array([s.oos_top for s in samples])
    n = len(samples)

    def weighted(t: float) -> tuple[float | None, float, float]:
        inside_right = float((right & (top >= t)).sum()) / n
        inside_wrong = float((~right & (top >= t)).sum()) / n
        outside = float((oos >= t).sum()) / n
        answered = (1 - oos_share) * (inside_right + inside_wrong) + oos_share * outside
        precision = (1 - oos_share) * inside_right / answered if answered else None
        return precision, inside_right, outside

    answer = 1.0  # from the top down, as long as precision holds (it is noisy, not monotone)
    for t in np.round(np.arange(1.0, FLOOR - 1e-9, -0.01), 2):
        precision, _, _ = weighted(float(t))
        if precision is not None and precision < target_precision:
            break
        answer = float(t)
    rights = np.sort(top[right])
    suggest = float(np.quantile(rights, 1 - suggest_recall)) if len(rights) else answer
    suggest = round(min(max(suggest, FLOOR), answer), 2)
    precision, answered_right, oos_answered = weighted(answer)
    return Thresholds(answer, suggest, precision, answered_right, oos_answered,
                      float((oos < suggest).sum()) / n, n)


def samples_from_hits(gold: Sequence[int], ranked: Sequence[Sequence[tuple[int, float]]]
                      ) -> list[Sample]:
    """Samples from each held-out phrasing's ranked (entry position, score) hits."""
    samples = []
    for own, hits in zip(gold, ranked, strict=True):
        if not hits:
            continue
        others = [score for entry, score in hits if entry != own]
        samples.append(Sample(hits[0][1], hits[0][0] == own, others[0] if others else -1.0))
    return samples


def held_out_samples(entries: Sequence[FaqEntry], tune: Sequence[Sequence[str]],
                     held_out: Sequence[tuple[int, str]], embedder: Embedder,
                     scoring: str) -> list[Sample]:
    """Search each held-out phrasing in an index of the entries' other (tuning) phrasings."""
    kept = [replace(entry, questions=tuple(texts)) for entry, texts in zip(entries, tune,
                                                                           strict=True)]
    index = FaqIndex.build(kept, embedder, scoring=scoring)
    position = {entry.id: i for i, entry in enumerate(kept)}
    hits = index.search_many([text for _, text in held_out], top_k=2)
    return samples_from_hits([own for own, _ in held_out],
                             [[(position[h.entry.id], h.score) for h in row] for row in hits])
