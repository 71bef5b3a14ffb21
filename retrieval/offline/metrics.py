"""Answer-quality metrics over ranked results: ranking, decision mix, out of scope, sweep.

Definitions (the report and README use these words):
- in scope: a query with a gold FAQ entry; out of scope (OOS): a query without one.
- answered: the ANSWER band (top score >= answer threshold); the top entry is the answer.
- rejected: the FALLBACK band (no hit, or top score < suggest threshold). A "Did you mean"
  (SUGGEST band) is neither answered nor rejected.
- in_scope_accuracy: in-scope queries whose top entry is right and that are not rejected.
- predicted out of scope: not answered directly (SUGGEST or FALLBACK); oos_precision,
  oos_recall and oos_f1 score that prediction against the OOS label.
- answer precision: answered in-scope queries with the right entry / all answered queries
  (an answered OOS query counts as a wrong answer).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.bands import Band, BandDecision, decide

# Entries retrieved per query for hit@k and MRR (MRR@10: 0 for a gold entry ranked below).
RANK_DEPTH = 10
# The sweep's criterion for direct answers: as many right answers as possible at this precision.
MIN_ANSWER_PRECISION = 0.95


@dataclass(frozen=True)
class Ranked:
    """One query's result: the gold entry (None: out of scope), the ranked entry ids and scores
    the bot sees (its top_k), and optionally a deeper ranking for hit@k and MRR."""

    gold: str | None
    ids: tuple[str, ...]
    scores: tuple[float, ...]
    text: str = ""
    deep_ids: tuple[str, ...] | None = None

    @property
    def rank(self) -> int | None:
        """1-based position of the gold entry in the (deep) ranking, None if absent."""
        ids = self.ids if self.deep_ids is None else self.deep_ids
        return ids.index(self.gold) + 1 if self.gold in ids else None

    @property
    def right(self) -> bool:
        """Whether the top entry is the gold one."""
        return bool(self.ids) and self.ids[0] == self.gold


@dataclass(frozen=True)
class Policy:
    """The dialogue policy's retrieval knobs, as the bot uses them."""

    answer_threshold: float
    suggest_threshold: float
    max_suggestions: int = 3
    top_k: int = 5
    answer_margin: float = 0.0

    def band(self, row: Ranked) -> BandDecision:
        """The band the bot would choose for this result (it sees only the top_k entries)."""
        return decide(row.scores[:self.top_k], self.answer_threshold, self.suggest_threshold,
                      self.max_suggestions, self.answer_margin)


def _share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _oos_precision(kept_out: int, predicted: int, n_oos: int) -> float | None:
    """None without OOS queries; 0.0 when there are some but none is predicted out of scope."""
    if not n_oos:
        return None
    return _share(kept_out, predicted) if predicted else 0.0


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0


def ranking_metrics(rows: Sequence[Ranked]) -> dict[str, Any]:
    """top1, hit@3, hit@5 and MRR@10 over the in-scope rows (None without any)."""
    ranks = [row.rank for row in rows if row.gold is not None]
    n = len(ranks)
    return {"top1": _share(sum(r == 1 for r in ranks), n),
            "hit@3": _share(sum(r is not None and r <= 3 for r in ranks), n),
            "hit@5": _share(sum(r is not None and r <= 5 for r in ranks), n),
            "mrr": round(sum(1 / r for r in ranks if r is not None and r <= RANK_DEPTH) / n, 4)
            if n else None}


def decision_mix(rows: Sequence[Ranked], policy: Policy) -> dict[str, dict[str, int]]:
    """Counts per outcome: in scope answered right / wrong, 'Did you mean' offering the right
    entry or not, fallback; out of scope answered, offered, fallback."""
    inside = dict.fromkeys(("answered_right", "answered_wrong", "suggested_right",
                            "suggested_wrong", "fallback"), 0)
    outside = dict.fromkeys(("answered", "suggested", "fallback"), 0)
    for row in rows:
        decision = policy.band(row)
        if row.gold is None:
            outside[{Band.ANSWER: "answered", Band.SUGGEST: "suggested",
                     Band.FALLBACK: "fallback"}[decision.band]] += 1
        elif decision.band is Band.ANSWER:
            inside["answered_right" if row.right else "answered_wrong"] += 1
        elif decision.band is Band.SUGGEST:
            offered = {row.ids[i] for i in decision.offered}
            inside["suggested_right" if row.gold in offered else "suggested_wrong"] += 1
        else:
            inside["fallback"] += 1
    return {"in_scope": inside, "out_of_scope": outside}


def scope_metrics(rows: Sequence[Ranked], policy: Policy) -> dict[str, Any]:
    """in_scope_accuracy, answer precision and the out-of-scope precision / recall / F1."""
    bands = [policy.band(row).band for row in rows]
    n_in = sum(row.gold is not None for row in rows)
    n_oos = len(rows) - n_in
    accurate = sum(row.gold is not None and row.right and band is not Band.FALLBACK
                   for row, band in zip(rows, bands, strict=True))
    answered = [row for row, band in zip(rows, bands, strict=True) if band is Band.ANSWER]
    kept_out = sum(row.gold is None for row, band in zip(rows, bands, strict=True)
                   if band is not Band.ANSWER)
    predicted_oos = len(rows) - len(answered)
    precision = _oos_precision(kept_out, predicted_oos, n_oos)
    recall = _share(kept_out, n_oos)
    return {"in_scope_accuracy": _share(accurate, n_in),
            "answered_share": _share(len(answered), len(rows)),
            "answer_precision": _share(sum(row.right for row in answered), len(answered)),
            "oos_precision": precision, "oos_recall": recall, "oos_f1": _f1(precision, recall)}


def sweep(rows: Sequence[Ranked], policy: Policy,
          grid: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """The answer threshold swept over `grid` (0.00 to 1.00 by 0.01), the suggest threshold and
    the answer margin kept (the suggest threshold lowered to the answer threshold where it would
    exceed it): one row of metrics per value."""
    grid = [round(t, 2) for t in np.arange(0.0, 1.0001, 0.01)] if grid is None else grid
    scores = [row.scores[:policy.top_k] for row in rows]
    top = np.array([s[0] if s else -np.inf for s in scores])
    clear = np.array([len(s) < 2 or s[0] - s[1] >= policy.answer_margin - 1e-9 for s in scores],
                     dtype=bool)  # far enough ahead of the second entry to answer
    gold = np.array([row.gold is not None for row in rows])
    right = np.array([row.right for row in rows])
    n_in, n_oos = int(gold.sum()), int((~gold).sum())
    points = []
    for t in grid:
        answered = (top >= t) & clear
        kept = ~gold & ~answered
        rejected = top < min(policy.suggest_threshold, t)
        precision = _oos_precision(int(kept.sum()), int((~answered).sum()), n_oos)
        recall = _share(int(kept.sum()), n_oos)
        points.append({
            "threshold": float(t),
            "answered_right": _share(int((answered & right & gold).sum()), n_in),
            "answered_wrong": _share(int((answered & ~right & gold).sum()), n_in),
            "answer_precision": _share(int((answered & right & gold).sum()),
                                       int(answered.sum())),
            "in_scope_accuracy": _share(int((gold & right & ~rejected).sum()), n_in),
            "oos_precision": precision, "oos_recall": recall, "oos_f1": _f1(precision, recall)})
    return points


def operating_points(points: Sequence[dict[str, Any]],
                     min_precision: float = MIN_ANSWER_PRECISION) -> dict[str, Any]:
    """The sweep's best thresholds (ties: the highest threshold): most right direct answers
    with answer precision >= min_precision, and the best OOS F1. None when nothing qualifies."""
    def best(candidates: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
        candidates = [p for p in candidates if p[key] is not None]
        return max(candidates, key=lambda p: (p[key], p["threshold"])) if candidates else None

    precise = [p for p in points if (p["answer_precision"] or 0.0) >= min_precision]
    return {
        "max_answers": {
            "criterion": f"most in-scope queries answered directly and right, with answer "
                         f"precision >= {min_precision:.0%}",
            "point": best(precise, "answered_right")},
        "max_oos_f1": {"criterion": "highest out-of-scope F1 (not answered directly = predicted "
                                    "out of scope)", "point": best(list(points), "oos_f1")}}


def confused_pairs(rows: Sequence[Ranked], limit: int = 10) -> list[dict[str, Any]]:
    """The most frequent (gold entry, wrong top entry) pairs among in-scope queries."""
    counts: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.gold is not None and row.ids and not row.right:
            pair = (row.gold, row.ids[0])
            counts[pair] += 1
            example.setdefault(pair, row.text)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{"faq_id": gold, "confused_with": wrong, "count": count,
             "example": example[(gold, wrong)]} for (gold, wrong), count in ranked]


def summarise(rows: Sequence[Ranked], policy: Policy) -> dict[str, Any]:
    """Every metric at the policy's thresholds, plus the sweep and its operating points."""
    points = sweep(rows, policy)
    return {**ranking_metrics(rows), **scope_metrics(rows, policy),
            "threshold": policy.answer_threshold, "suggest_threshold": policy.suggest_threshold,
            "answer_margin": policy.answer_margin,
            "n_queries": len(rows), "n_in_scope": sum(r.gold is not None for r in rows),
            "n_out_of_scope": sum(r.gold is None for r in rows),
            "mix": decision_mix(rows, policy), "operating_points": operating_points(points),
            "confused": confused_pairs(rows), "sweep": points}
