"""The index's state as one immutable snapshot: FAISS index, tables, settings, derived caches."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import faiss
import numpy as np

from retrieval.classifier import SoftmaxHead
from retrieval.corpus import FaqEntry
from retrieval.errors import RetrievalError

# How an entry's score comes from its phrasings' cosines with the query: "nearest", the best
# phrasing's; "blend", the mean of that and the cosine with the entry's centroid (the mean of its
# phrasing vectors), which helps entries with few phrasings (measured in bench/README.md);
# "classifier", a softmax head fitted on the phrasings (retrieval.classifier, measured there too).
SCORINGS = ("nearest", "blend", "classifier")
# retrieval.lexical: whether the classifier weighs words too (retrieval.lexical module).
LEXICAL_MODES = ("auto", "on", "off")


def frozen_array(values: Any, dtype: Any) -> np.ndarray:
    """A read-only copy of `values`: a snapshot's arrays are never written after it is made."""
    array = np.array(values, dtype=dtype)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Derived:
    """What blend and classifier scoring make from one snapshot's phrasings: the live (not
    removed) phrasings' ids, vectors and entries, and the entries' centroids."""

    live: np.ndarray  # phrasing ids
    vectors: np.ndarray
    owner: np.ndarray  # entry of each live phrasing
    centroids: np.ndarray  # one per entry (zero for an entry without live phrasings)


@dataclass(frozen=True)
class HeadMemory:
    """What the last fitted head chose, carried to the next fit: its weight decay, whether it
    weighs words ("auto"), and the head itself, which a refit starts from."""

    weight_decay: float | None = None
    lexical_chosen: bool | None = None
    last_head: SoftmaxHead | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything a search reads, made whole by a writer and replaced by one assignment.

    `owner[i]` is the entry position of phrasing `i`; `removed[i]` marks phrasings taken back.
    `derived` is made when the snapshot is (for blend and classifier scoring); `head` is fitted
    at the first classifier search and published as a new snapshot with it.
    """

    index: faiss.Index
    entries: list[FaqEntry]
    by_id: dict[str, FaqEntry]
    retired: frozenset[str]  # entries whose phrasings were all removed: never found
    phrasings: list[str]
    owner: np.ndarray
    removed: np.ndarray
    scoring: str = "nearest"
    lexical: str = "off"
    outside: tuple[str, ...] = ()  # out-of-scope questions, the classifier's extra class
    outside_vectors: np.ndarray | None = None  # of a prefix of `outside`, embedded at a fit
    memory: HeadMemory = HeadMemory()
    derived: Derived | None = None
    head: SoftmaxHead | None = None

    @property
    def size(self) -> int:
        """Number of indexed phrasings."""
        return int(self.index.ntotal)


def snapshot(index: faiss.Index, entries: list[FaqEntry], retired: frozenset[str],
             phrasings: list[str], owner: np.ndarray, removed: np.ndarray,
             **settings: Any) -> Snapshot:
    """A snapshot of these tables (frozen copies of the arrays), its derived caches made."""
    by_id = {entry.id: entry for entry in entries if entry.id not in retired}
    made = Snapshot(index, entries, by_id, retired, phrasings, frozen_array(owner, np.int64),
                    frozen_array(removed, bool), **settings)
    return with_derived(made)


def with_derived(state: Snapshot) -> Snapshot:
    """The snapshot with its derived caches made when its scoring reads them (else none)."""
    if state.scoring not in SCORINGS:
        raise RetrievalError(f"unknown scoring '{state.scoring}' (one of {', '.join(SCORINGS)})")
    if state.lexical not in LEXICAL_MODES:
        raise RetrievalError(f"unknown lexical mode '{state.lexical}' (one of "
                             f"{', '.join(LEXICAL_MODES)})")
    if state.scoring == "nearest" or state.derived is not None:
        return state
    return replace(state, derived=derive(state))


def derive(state: Snapshot) -> Derived:
    """The live phrasings' vectors, owners and the entries' centroids of one snapshot."""
    index = state.index
    live = np.flatnonzero(~state.removed[:index.ntotal])
    vectors = index.reconstruct_n(0, index.ntotal)[live]
    owners = state.owner[live]
    sums = np.zeros((len(state.entries), index.d), dtype=np.float32)
    np.add.at(sums, owners, vectors)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    # Left writeable: torch reads them (the classifier head) and warns on read-only arrays.
    return Derived(live, vectors, owners, sums / np.where(norms > 0, norms, 1.0))


def same_head_inputs(a: Snapshot, b: Snapshot) -> bool:
    """Whether a head fitted for one snapshot is the head of the other."""
    return a.derived is b.derived and a.outside == b.outside and a.lexical == b.lexical
