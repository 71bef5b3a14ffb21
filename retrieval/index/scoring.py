"""Search over one snapshot: entries ranked by nearest phrasing, blend, or the classifier head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from retrieval.classifier import SoftmaxHead, head_scores
from retrieval.corpus import FaqEntry
from retrieval.errors import RetrievalError
from retrieval.index.state import Derived, Snapshot

# Exact search over all phrasings up to this size; FAQ corpora are small, so this is the usual case.
EXHAUSTIVE_LIMIT = 4096


@dataclass(frozen=True)
class FaqHit:
    """One FAQ entry found for a query: cosine score and the phrasing that matched best."""

    entry: FaqEntry
    score: float
    matched_question: str


def search_nearest(state: Snapshot, vectors: np.ndarray, top_k: int) -> list[list[FaqHit]]:
    """Entries ranked by their best-matching phrasing (FAISS search, approximate or exact)."""
    index, size = state.index, state.size
    top_k = min(top_k, len(state.entries))
    exact = isinstance(index, faiss.IndexFlat)
    k = size if exact and size <= EXHAUSTIVE_LIMIT else min(size, top_k * 20)
    results: list[list[FaqHit]] = [[] for _ in range(len(vectors))]
    todo = list(range(len(vectors)))
    while todo:
        scores, ids = index.search(vectors[todo], k)
        short = []
        for row, row_scores, row_ids in zip(todo, scores, ids, strict=True):
            results[row] = entries_of(state, row_scores, row_ids, top_k)
            if len(results[row]) < top_k and k < size:
                short.append(row)  # a few entries own all k nearest phrasings: look deeper
        todo, k = short, min(size, k * 4)
    return results


def entries_of(state: Snapshot, scores: np.ndarray, ids: np.ndarray,
               top_k: int) -> list[FaqHit]:
    """The first top_k distinct entries of phrasings ranked best first, each at its best."""
    best: dict[int, FaqHit] = {}
    owner, entries, phrasings, removed = state.owner, state.entries, state.phrasings, \
        state.removed
    for score, phrasing_id in zip(scores, ids, strict=True):
        if phrasing_id < 0 or removed[phrasing_id]:
            continue
        entry_id = int(owner[phrasing_id])
        if entry_id not in best:
            best[entry_id] = FaqHit(entries[entry_id], float(score), phrasings[phrasing_id])
            if len(best) == top_k:
                break
    return list(best.values())


def search_blend(state: Snapshot, derived: Derived, vectors: np.ndarray,
                 top_k: int) -> list[list[FaqHit]]:
    """Entries by the mean of their best phrasing's and their centroid's cosine (exact)."""
    owner, count = derived.owner, len(derived.centroids)
    results = []
    for row, centroid_scores in zip(vectors @ derived.vectors.T, vectors @ derived.centroids.T,
                                    strict=True):
        order = np.lexsort((-row, owner))  # by entry, then best phrasing first
        first = order[np.unique(owner[order], return_index=True)[1]]
        best = np.full(count, -np.inf, dtype=np.float32)
        nearest = np.full(count, -1, dtype=np.int64)
        best[owner[first]], nearest[owner[first]] = row[first], derived.live[first]
        scores = (best + centroid_scores) / 2
        ranked = [int(e) for e in np.argsort(-scores, kind="stable")[:top_k] if nearest[e] >= 0]
        results.append([FaqHit(state.entries[e], float(scores[e]),
                               state.phrasings[int(nearest[e])]) for e in ranked])
    return results


def search_classifier(state: Snapshot, derived: Derived, head: SoftmaxHead,
                      vectors: np.ndarray, top_k: int,
                      texts: Sequence[str] | None) -> list[list[FaqHit]]:
    """Entries by the head's score (retrieval.classifier.head_scores); matched_question is the
    entry's nearest phrasing."""
    if head.lexicon is not None and (texts is None or len(texts) != len(vectors)):
        raise RetrievalError("this index's classifier weighs the questions' words: "
                             "search_vectors needs their texts, one per vector")
    scores = head_scores(head, vectors, derived.vectors, derived.owner, derived.centroids,
                         texts=texts if head.lexicon is not None else None)
    results = []
    for row, query in zip(scores, vectors, strict=True):
        hits = []
        for e in np.argsort(-row, kind="stable")[:top_k]:
            mine = np.flatnonzero(derived.owner == e)
            if len(mine) and np.isfinite(row[e]):
                best = int(derived.live[mine[np.argmax(derived.vectors[mine] @ query)]])
                hits.append(FaqHit(state.entries[int(e)], float(row[e]), state.phrasings[best]))
        results.append(hits)
    return results
