"""FaqIndex: a FAISS inner-product index over every phrasing of every FAQ entry, with metadata.

Thread safety: everything a search reads is one immutable Snapshot (retrieval.index.state).
A search takes `self._snapshot` once and reads only it; every change (extend, remove, a new
scoring, lexical mode or out-of-scope set, invalidate, a fitted head) builds a new snapshot
and publishes it by one assignment under the one writer lock, `self._writing`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from retrieval.classifier import SoftmaxHead
from retrieval.corpus import FaqEntry, corpus_hash
from retrieval.embedder import Embedder, ProgressCallback
from retrieval.errors import IndexMissingError, IndexStaleError
from retrieval.index import edits, opening, scoring, store
from retrieval.index.head import with_head
from retrieval.index.kinds import new_faiss_index
from retrieval.index.scoring import FaqHit
from retrieval.index.state import (
    HeadMemory,
    Snapshot,
    same_head_inputs,
    snapshot,
    with_derived,
)

if TYPE_CHECKING:
    from retrieval.calibration import Calibration

Opened = tuple["FaqIndex", IndexMissingError | IndexStaleError | None]


class FaqIndex:
    """Embeds every phrasing, searches by cosine similarity, and returns entries, not phrasings."""

    def __init__(self, entries: Sequence[FaqEntry], embedder: Embedder, index: faiss.Index,
                 phrasing_entry: np.ndarray, phrasings: list[str],
                 known_hash: str | None = None, faq_sha256: str | None = None,
                 scoring: str = "nearest", index_type: str = "flat") -> None:
        entries = list(entries)
        self._writing = threading.Lock()  # the one writer lock: taken to replace _snapshot
        self._snapshot: Snapshot = snapshot(index, entries, frozenset(), list(phrasings),
                                            phrasing_entry, np.zeros(len(phrasings), bool),
                                            scoring=scoring)
        # The type asked for (INDEX_TYPES); a small FAQ asked to be "ivf" is kept flat.
        self.index_type = index_type
        self.embedder = embedder
        self.corpus_hash = known_hash or corpus_hash(entries)
        # The hash of the FAQ file's bytes the entries came from, when known (see open()).
        self.faq_sha256 = faq_sha256
        # Where a head fitted from scratch is kept for the next start (open() sets it).
        self.head_file: Path | None = None
        # The answer threshold and margin calibrated on the FAQ's phrasings
        # (retrieval.calibration), the one read with a saved index, and the target precision.
        self.calibration: Calibration | None = None
        self.saved_calibration: Calibration | None = None
        self.target_precision: float | None = None

    @classmethod
    def build(cls, entries: Sequence[FaqEntry], embedder: Embedder,
              progress: ProgressCallback | None = None, scoring: str = "nearest",
              index_type: str = "flat") -> FaqIndex:
        """Embed every phrasing of every entry and build an inner-product index of the type."""
        phrasings = [q for entry in entries for q in entry.questions]
        owner = np.array([i for i, entry in enumerate(entries) for _ in entry.questions],
                         dtype=np.int64)
        vectors = embedder.embed(phrasings, progress=progress)
        index = new_faiss_index(index_type, embedder.dimension, vectors)
        return cls(entries, embedder, index, owner, phrasings, scoring=scoring,
                   index_type=index_type)

    def copy(self) -> FaqIndex:
        """An independent copy (sharing the embedder): extending one leaves the other. The
        snapshot is immutable, so both start from the same one."""
        twin = FaqIndex.__new__(FaqIndex)
        twin.__dict__.update(self.__dict__)
        twin._writing, twin.head_file = threading.Lock(), None
        return twin

    def _publish(self, state: Snapshot) -> None:
        """Replace the snapshot (the caller holds the writer lock)."""
        self._snapshot = state

    # --- what a search reads, each from the snapshot of the moment ---------------------------

    @property
    def entries(self) -> list[FaqEntry]:
        """Every entry, the retired ones too (an entry's position is its number in the index)."""
        return self._snapshot.entries

    @property
    def by_id(self) -> dict[str, FaqEntry]:
        """The entries search can find, by id."""
        return self._snapshot.by_id

    @property
    def retired(self) -> frozenset[str]:
        """Entries whose phrasings were all removed: never found, not in by_id, id reusable."""
        return self._snapshot.retired

    @property
    def size(self) -> int:
        """Number of indexed phrasings."""
        return self._snapshot.size

    def live_entries(self) -> list[FaqEntry]:
        """The entries search can find (all but the retired ones)."""
        state = self._snapshot
        return [entry for entry in state.entries if entry.id not in state.retired]

    # --- search ------------------------------------------------------------------------------

    def search(self, query: str, top_k: int = 5) -> list[FaqHit]:
        """Return up to top_k entries ranked by their best-matching phrasing."""
        return self.search_many([query], top_k)[0]

    def search_many(self, queries: Sequence[str], top_k: int = 5) -> list[list[FaqHit]]:
        """Search several queries in one embedding batch."""
        if not queries:
            return []
        if self.size == 0:
            return [[] for _ in queries]
        return self.search_vectors(self.embedder.embed(list(queries)), top_k, queries)

    def search_vectors(self, vectors: np.ndarray, top_k: int = 5,
                       texts: Sequence[str] | None = None) -> list[list[FaqHit]]:
        """Search queries embedded already (by this index's embedder), one row each; `texts`
        are the queries themselves, which a classifier that weighs words needs."""
        state = self._snapshot  # the one state this whole search reads
        if state.size == 0:
            return [[] for _ in range(len(vectors))]
        if state.scoring == "nearest":
            return scoring.search_nearest(state, vectors, top_k)
        assert state.derived is not None  # made with every blend or classifier snapshot
        if state.scoring == "blend":
            return scoring.search_blend(state, state.derived, vectors, top_k)
        head = self._head(state)
        return scoring.search_classifier(state, state.derived, head, vectors, top_k, texts)

    # --- changes: each a new snapshot, published under the writer lock -----------------------

    def extend(self, entries: Sequence[FaqEntry] = (),
               phrasings: Sequence[tuple[str, str]] = ()) -> int:
        """Add entries, and phrasings `(entry id, question)` of entries old or new, while the
        index serves; returns how many phrasings were embedded and added. Searches in flight
        keep the snapshot they started with. RetrievalError for an entry id that exists
        already or a phrasing of an unknown entry."""
        with self._writing:
            state, count = edits.extended(self._snapshot, self.embedder.embed, entries,
                                          phrasings)
            self._publish(state)
        return count

    def remove(self, phrasings: Sequence[tuple[str, str]]) -> int:
        """Take phrasings `(entry id, question)` out of search while the index serves (an
        entry left without phrasings is never found); returns how many were removed."""
        with self._writing:
            state, count = edits.without(self._snapshot, phrasings)
            self._publish(state)
        return count

    def invalidate(self) -> None:
        """Forget the classifier head and what its first fit chose (weight decay, words): the
        next search fits them again."""
        with self._writing:
            self._publish(edits.forgotten(self._snapshot))

    @property
    def scoring(self) -> str:
        """How entries are scored (SCORINGS): "nearest", "blend" or "classifier"."""
        return self._snapshot.scoring

    @scoring.setter
    def scoring(self, value: str) -> None:
        with self._writing:
            self._publish(with_derived(replace(self._snapshot, scoring=value)))

    @property
    def lexical(self) -> str:
        """Whether the classifier head weighs the questions' words next to their embedding
        (retrieval.lexical): "on", "off", or "auto" (chosen on held-out phrasings)."""
        return self._snapshot.lexical

    @lexical.setter
    def lexical(self, mode: str) -> None:
        with self._writing:
            state = self._snapshot
            if mode != state.lexical:
                self._publish(edits.forgotten(with_derived(replace(state, lexical=mode))))

    @property
    def outside(self) -> tuple[str, ...]:
        """Questions the FAQ does not cover, learnt by the classifier head as an out-of-scope
        class (retrieval.classifier); empty: no such class."""
        return self._snapshot.outside

    @outside.setter
    def outside(self, questions: Sequence[str]) -> None:
        """Set the out-of-scope questions. Questions added to some (an operator's "not our
        topic") refit the head from the last one, as extend() does; any other change fits it
        from scratch (as after invalidate()), so that a question taken back leaves no trace."""
        questions = tuple(questions)
        with self._writing:
            state = self._snapshot
            if questions == state.outside:
                return
            added = bool(state.outside) and set(state.outside) <= set(questions)
            appended = questions[:len(state.outside)] == state.outside
            # The vectors kept are those of a prefix of the questions.
            new = replace(state, outside=questions, head=None,
                          outside_vectors=state.outside_vectors if appended else None)
            self._publish(new if added else edits.forgotten(new))

    # --- the classifier head -----------------------------------------------------------------

    @property
    def weighs_words(self) -> bool | None:
        """Whether the classifier head weighs the questions' words (what "auto" chose; the head
        is fitted first if need be); None for the other scorings."""
        if self.scoring != "classifier" or self.size == 0:
            return None
        return self.classifier_head().lexicon is not None

    def classifier_head(self) -> SoftmaxHead:
        """The softmax head of the live phrasings: fitted at first use, and again once they
        change (then starting from the last head, with its decay and its choice of words)."""
        return self._head(self._snapshot)

    def _head(self, state: Snapshot) -> SoftmaxHead:
        """The head of `state`: its own, or fitted under the writer lock and published with the
        current snapshot when that has the same inputs (else fitted for `state` alone: a
        writer replaced it during the search)."""
        if state.head is not None:
            return state.head
        with self._writing:
            current = self._snapshot
            if not same_head_inputs(current, state):
                fitted = with_head(state, self.embedder, None)
                assert fitted.head is not None
                return fitted.head
            if current.head is None:
                current = with_head(current, self.embedder, self.head_file)
                self._publish(current)
            assert current.head is not None
            return current.head

    def head_memory(self) -> HeadMemory:
        """What the last fitted head chose (its decay, its use of words), the head fitted
        first when the scoring is the classifier."""
        if self.scoring == "classifier" and self.size:
            self.classifier_head()
        return self._snapshot.memory

    def remember(self, memory: HeadMemory) -> None:
        """Fit the next head with this decay and choice of words (and from its head)."""
        with self._writing:
            self._publish(replace(self._snapshot, head=None, memory=memory))

    def vectors_of(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The indexed vectors of those of `texts` that are live phrasings."""
        state = self._snapshot
        wanted = set(texts)
        rows = [i for i in np.flatnonzero(~state.removed[:state.size])
                if state.phrasings[i] in wanted]
        if not rows:
            return {}
        vectors = state.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        return {state.phrasings[i]: v for i, v in zip(rows, vectors, strict=True)}

    def outside_vectors(self) -> dict[str, np.ndarray]:
        """The out-of-scope questions' vectors embedded so far, by question."""
        state = self._snapshot
        if state.outside_vectors is None:
            return {}
        return dict(zip(state.outside, state.outside_vectors, strict=False))

    # --- persistence (retrieval.index.store) -------------------------------------------------

    def save(self, index_dir: Path | str) -> None:
        """Write the FAISS index and its metadata; files are replaced atomically."""
        state = self._snapshot
        store.write_faiss(Path(index_dir), state.index)
        self._save_meta(Path(index_dir), state)

    def save_meta(self, index_dir: Path | str) -> None:
        """Write (atomically replace) only the metadata, say to record a new FAQ file hash."""
        self._save_meta(Path(index_dir), self._snapshot)

    def _save_meta(self, index_dir: Path, state: Snapshot) -> None:
        store.write_meta(index_dir, corpus_hash=self.corpus_hash, faq_sha256=self.faq_sha256,
                         embedder=self.embedder, index_type=self.index_type,
                         entries=state.entries, phrasings=state.phrasings,
                         phrasing_entry=state.owner.tolist(),
                         calibration=None if self.calibration is None
                         else self.calibration.to_dict())

    @classmethod
    def load(cls, index_dir: Path | str, entries: Sequence[FaqEntry],
             embedder: Embedder, index_type: str = "flat") -> FaqIndex:
        """Load a saved index; raise IndexStaleError if corpus, embedder or index type no
        longer match."""
        return opening.load(cls, Path(index_dir), entries, embedder, index_type)

    @classmethod
    def load_or_build(cls, index_dir: Path | str, entries: Sequence[FaqEntry],
                      embedder: Embedder, rebuild: bool = True,
                      progress: ProgressCallback | None = None, faq_sha256: str | None = None,
                      index_type: str = "flat") -> Opened:
        """Load the saved index, or (re)build and save it when missing or stale and rebuild is set.

        Returns the index and why it was rebuilt: the error that loading raised (None when the
        saved index was used as it was). `faq_sha256` is recorded with a rebuilt index.
        """
        return opening.load_or_build(cls, Path(index_dir), entries, embedder, rebuild,
                                     progress, faq_sha256, index_type)

    @classmethod
    def open(cls, faq_path: Path | str, index_dir: Path | str, embedder: Embedder,
             rebuild: bool = True, progress: ProgressCallback | None = None,
             index_type: str = "flat", extra: Sequence[FaqEntry] = ()) -> Opened:
        """Open the saved index of a FAQ file; (re)build it when missing or stale and `rebuild`.
        `extra` entries (an action's questions) are indexed after the file's.

        When the file's bytes are the ones the index was built from, the entries come from the
        index's own metadata and the file is not parsed again. Returns the index and why it was
        (re)built, as load_or_build does. The classifier head fitted from scratch is kept in the
        same folder (retrieval.head_cache), and the next start on the same inputs loads it.
        """
        return opening.open_index(cls, Path(faq_path), Path(index_dir), embedder, rebuild,
                                  progress, index_type, extra)
