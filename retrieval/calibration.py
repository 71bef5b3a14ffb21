"""Answer thresholds calibrated on the FAQ's own phrasings, by cross-validation, at serve time.

Each live entry's phrasings are dealt into k folds; each fold's phrasings are searched in an
index of the others (the scoring in use, a classifier head fitted per fold with the serving
head's decay and choice of words), as themselves (in scope) and with their own entry taken away
(out of scope). The answer threshold and margin are then the pair that answers the most
phrasings right while direct answers reach the target precision (`calibrate`), never below
ANSWER_FLOOR. An entry with one phrasing is never held out (it stays in every fold's index).
Also the calibration that tune-retriever does offline (retrieval.offline.calibrate) uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from retrieval.corpus import FaqEntry
from retrieval.embedder import ProgressCallback
from retrieval.index import FaqIndex
from retrieval.index.state import HeadMemory

log = logging.getLogger(__name__)

# No threshold below this: a cosine this low is noise for any sentence embedder.
FLOOR = 0.2
# No direct answer below this score, whatever the margin: held-out phrasings of the FAQ are
# closer to it than customers' questions are, so what they allow is a lower bound.
ANSWER_FLOOR = 0.5
# Margins tried for the answer band: how far the top entry must lead the second.
MARGINS = tuple(round(m, 2) for m in np.arange(0.0, 0.205, 0.01))
# Folds of the serve-time cross-validation; fewer for large FAQs (each fold fits a head).
FOLDS, LARGE_FOLDS, LARGE_FAQ = 5, 3, 3000
# Out-of-scope questions' share of the traffic the serve-time precision counts.
OOS_SHARE = 0.2
# Bump when the calibration changes: a saved calibration of another version is redone.
VERSION = 1


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
        """The figures, rounded, for JSON."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}

    def settings(self) -> dict[str, float]:
        """These thresholds as the bot's `retrieval` settings."""
        return {"answer_threshold": self.answer, "answer_margin": self.margin,
                "suggest_threshold": self.suggest}


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


# --- serve time: the index's own calibration ------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """An index's calibrated answer threshold and margin, what they give on its own folds, and
    the key of the inputs they were calibrated on (a changed FAQ or setting recalibrates)."""

    answer: float
    margin: float
    precision: float | None  # of direct answers on the folds (out of scope weighted in)
    answered_right: float  # share of held-out phrasings answered directly and right
    samples: int
    key: str
    target: float | None = None  # the target precision it was calibrated for
    scoring: str | None = None  # the scoring it was calibrated with

    def to_dict(self) -> dict[str, Any]:
        """For the index's JSON metadata."""
        return {"answer": self.answer, "margin": self.margin, "precision": self.precision,
                "answered_right": self.answered_right, "samples": self.samples,
                "key": self.key, "target": self.target, "scoring": self.scoring}

    @classmethod
    def from_dict(cls, data: object) -> Calibration | None:
        """A calibration read back from metadata; None when it is not one."""
        try:
            assert isinstance(data, dict)
            made = cls(float(data["answer"]), float(data["margin"]),
                       None if data["precision"] is None else float(data["precision"]),
                       float(data["answered_right"]), int(data["samples"]), str(data["key"]),
                       None if data.get("target") is None else float(data["target"]),
                       None if data.get("scoring") is None else str(data["scoring"]))
        except (AssertionError, KeyError, TypeError, ValueError):
            return None
        return made if 0.0 <= made.answer <= 1.0 and 0.0 <= made.margin <= 1.0 else None


@dataclass(frozen=True)
class Effective:
    """The thresholds the dialogue uses, and where each comes from ("set" in settings,
    "calibrated" on the FAQ, or "default")."""

    answer_threshold: float
    answer_margin: float
    suggest_threshold: float
    source: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """The values and their sources, for diagnostics."""
        return {"answer_threshold": self.answer_threshold, "answer_margin": self.answer_margin,
                "suggest_threshold": self.suggest_threshold, "source": dict(self.source)}


def effective(answer: float, margin: float, suggest: float, explicit: Collection[str],
              calibration: Calibration | None) -> Effective:
    """The thresholds in use: a value set explicitly (`explicit`: the names set in settings)
    wins; else the calibrated one; else the default. The suggest threshold never exceeds the
    answer threshold."""
    source = {"answer_threshold": "default", "answer_margin": "default",
              "suggest_threshold": "set" if "suggest_threshold" in explicit else "default"}
    values = {"answer_threshold": answer, "answer_margin": margin}
    calibrated = {} if calibration is None else {"answer_threshold": calibration.answer,
                                                 "answer_margin": calibration.margin}
    for name in values:
        if name in explicit:
            source[name] = "set"
        elif name in calibrated:
            values[name], source[name] = calibrated[name], "calibrated"
    return Effective(values["answer_threshold"], values["answer_margin"],
                     min(suggest, values["answer_threshold"]), source)


def describe(values: Effective) -> str:
    """One line: each threshold in use and where it comes from."""
    return ", ".join(f"{name} {getattr(values, name):.2f} ({values.source[name]})"
                     for name in ("answer_threshold", "answer_margin", "suggest_threshold"))


def calibration_key(index: FaqIndex, target_precision: float) -> str:
    """What a calibration depends on: the live phrasings and their entries, the embedder, the
    scoring, words and out-of-scope class, and the target."""
    payload = {"version": VERSION, "target": target_precision, "embedder": index.embedder.name,
               "scoring": index.scoring, "lexical": index.lexical,
               "outside": hashlib.sha256("\n".join(index.outside).encode()).hexdigest(),
               "entries": [[e.id, list(e.questions)] for e in index.live_entries()]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def ensure_calibrated(index: FaqIndex, target_precision: float | None = None) -> bool:
    """Calibrate `index` unless its calibration (or the one saved with it) has the same key;
    returns whether it calibrated. The target is the index's own (`target_precision`, set when
    it was configured) unless given. Slow (a head fit per fold): run it off the event loop."""
    target = index.target_precision if target_precision is None else target_precision
    if target is None:
        return False
    index.target_precision = target
    key = calibration_key(index, target)
    for known in (index.calibration, index.saved_calibration):
        if known is not None and known.key == key:
            index.calibration = known
            return False
    index.calibration = cross_validate(index, target, key)
    return True


def cross_validate(index: FaqIndex, target_precision: float, key: str = "") -> Calibration | None:
    """The answer threshold and margin from k-fold cross-validation over each live entry's
    phrasings; None when no entry has two phrasings (nothing to hold out)."""
    entries = index.live_entries()
    texts = [q for entry in entries for q in entry.questions]
    if len(entries) < 2 or all(len(e.questions) < 2 for e in entries):
        return None
    known = _Known(index, texts)
    folds = FOLDS if len(texts) <= LARGE_FAQ else LARGE_FOLDS
    rng = np.random.default_rng(0)
    slots = [rng.permutation(len(e.questions)) % folds for e in entries]
    memory = index.head_memory()
    samples: list[Sample] = []
    for fold in range(folds):
        held: list[tuple[int, str]] = []
        kept = []
        for position, (entry, slot) in enumerate(zip(entries, slots, strict=True)):
            out = [q for q, s in zip(entry.questions, slot, strict=True)
                   if s == fold and len(entry.questions) > 1]
            held += [(position, q) for q in out]
            kept.append(replace(entry, questions=tuple(q for q in entry.questions
                                                       if q not in out)))
        if not held:
            continue
        samples += _fold_samples(index, kept, held, known, memory)
    if not samples:
        return None
    found = calibrate(samples, target_precision, oos_share=OOS_SHARE, max_oos_answered=1.0)
    log.info("calibrated answer threshold %.2f, margin %.2f on %d held-out phrasings "
             "(%d folds; precision %s)", found.answer, found.margin, len(samples), folds,
             found.answer_precision)
    return Calibration(found.answer, found.margin, found.answer_precision,
                       round(found.answered_right, 4), len(samples), key, target_precision,
                       index.scoring)


def _fold_samples(index: FaqIndex, kept: list[FaqEntry], held: list[tuple[int, str]],
                  known: _Known, memory: HeadMemory) -> list[Sample]:
    """Search one fold's held-out phrasings in an index of the entries' other phrasings."""
    sub = FaqIndex.build(kept, known)
    sub.scoring = index.scoring
    if index.scoring == "classifier":
        sub.outside = index.outside
        chose = memory.lexical_chosen
        sub.lexical = index.lexical if chose is None else ("on" if chose else "off")
        # The serving head's decay: each fold fits once, not a search over decays.
        sub.remember(HeadMemory(memory.weight_decay, memory.lexical_chosen, None))
    questions = [q for _, q in held]
    hits = sub.search_vectors(known.embed(questions), 3, questions)
    position = {entry.id: i for i, entry in enumerate(kept)}
    return samples_from_hits([own for own, _ in held],
                             [[(position[h.entry.id], h.score) for h in row] for row in hits])


class _Known:
    """An embedder that returns the index's own vectors for texts it holds (no re-embedding),
    and embeds anything else with the index's embedder."""

    def __init__(self, index: FaqIndex, texts: Sequence[str]) -> None:
        self.name, self.dimension = index.embedder.name, index.embedder.dimension
        self._base = index.embedder
        self._vectors = index.vectors_of(texts) | index.outside_vectors()

    def embed(self, texts: Sequence[str], progress: ProgressCallback | None = None
              ) -> np.ndarray:
        """Embed texts (known ones looked up)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._base.embed(missing), strict=True))
        rows = [self._vectors[t] for t in texts]
        return np.stack(rows).astype(np.float32) if rows else np.zeros(
            (0, self.dimension), np.float32)
