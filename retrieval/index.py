"""FaqIndex: a FAISS inner-product index over every phrasing of every FAQ entry, with metadata."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.classifier import SoftmaxHead, fit_head, head_scores
from retrieval.corpus import FaqEntry, corpus_hash, faq_file_hash, load_faq
from retrieval.embedder import Embedder, ProgressCallback
from retrieval.errors import IndexMissingError, IndexStaleError, IndexWriteError, RetrievalError
from retrieval.head_cache import HEAD_FILE, head_key, load_head, save_head

# 2: the metadata also holds the entries and the hash of the FAQ file's bytes.
FORMAT_VERSION = 2
INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
# Exact search over all phrasings up to this size; FAQ corpora are small, so this is the usual case.
EXHAUSTIVE_LIMIT = 4096
# How an entry's score comes from its phrasings' cosines with the query: "nearest", the best
# phrasing's; "blend", the mean of that and the cosine with the entry's centroid (the mean of its
# phrasing vectors), which helps entries with few phrasings (measured in bench/README.md);
# "classifier", a softmax head fitted on the phrasings (retrieval.classifier, measured there too).
SCORINGS = ("nearest", "blend", "classifier")
# retrieval.lexical: whether the classifier weighs words too (retrieval.lexical module).
LEXICAL_MODES = ("auto", "on", "off")
# The FAISS index the phrasings are kept in: "flat", exact; "hnsw", a graph (HNSW, 32 links) and
# "ivf", 4 sqrt(n) clusters (16 searched), approximate and faster for nearest-phrasing search
# over very large FAQs (measured in bench/README.md). Blend and classifier scoring read every
# vector whatever the type.
INDEX_TYPES = ("flat", "hnsw", "ivf")
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128
IVF_PROBES = 16


@dataclass(frozen=True)
class FaqHit:
    """One FAQ entry found for a query: cosine score and the phrasing that matched best."""

    entry: FaqEntry
    score: float
    matched_question: str


@dataclass
class _Derived:
    """What blend and classifier scoring make from one state of the index: the live (not
    removed) phrasings' ids, vectors and entries, the entries' centroids, the head."""

    index: faiss.Index
    removed: np.ndarray  # the removal mask it was made with
    live: np.ndarray  # phrasing ids
    vectors: np.ndarray
    owner: np.ndarray  # entry of each live phrasing
    centroids: np.ndarray  # one per entry (zero for an entry without live phrasings)
    entries: list[FaqEntry]
    phrasings: list[str]
    head: SoftmaxHead | None = None


class FaqIndex:
    """Embeds every phrasing, searches by cosine similarity, and returns entries, not phrasings."""

    def __init__(self, entries: Sequence[FaqEntry], embedder: Embedder, index: faiss.Index,
                 phrasing_entry: np.ndarray, phrasings: list[str],
                 known_hash: str | None = None, faq_sha256: str | None = None,
                 scoring: str = "nearest", index_type: str = "flat") -> None:
        if scoring not in SCORINGS:
            raise RetrievalError(f"unknown scoring '{scoring}' (one of {', '.join(SCORINGS)})")
        self.scoring = scoring
        # The type asked for (INDEX_TYPES); a small FAQ asked to be "ivf" is kept flat.
        self.index_type = index_type
        # Made from one state of the index (blend and classifier scoring; see _derived()).
        self._derived_state: _Derived | None = None
        self._weight_decay: float | None = None  # the classifier's, chosen at its first fit
        # Whether the classifier weighs the questions' words (retrieval.lexical: "auto" chooses
        # at the first fit, on held-out phrasings), and what that fit chose.
        self._lexical = "off"
        self._lexical_chosen: bool | None = None
        # The last head fitted: a refit after extend() or remove() starts from it.
        self._last_head: SoftmaxHead | None = None
        # Where a head fitted from scratch is kept for the next start (open() sets it).
        self.head_file: Path | None = None
        # Out-of-scope questions the classifier learns as one more class, and their vectors.
        self._outside: tuple[str, ...] = ()
        self._outside_vectors: np.ndarray | None = None
        self._fitting = threading.Lock()
        self.entries = list(entries)
        self.by_id = {entry.id: entry for entry in self.entries}
        # Entries whose phrasings were all removed: never found, not in by_id, id reusable.
        self.retired: frozenset[str] = frozenset()
        self._extending = threading.Lock()
        self.embedder = embedder
        self.corpus_hash = known_hash or corpus_hash(self.entries)
        # The hash of the FAQ file's bytes the entries came from, when known (see open()).
        self.faq_sha256 = faq_sha256
        self._index = index
        self._phrasing_entry = phrasing_entry
        self._phrasings = phrasings
        self._removed = np.zeros(len(phrasings), dtype=bool)  # phrasings taken back: remove()

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
        """An independent copy (sharing the embedder): extending one leaves the other."""
        with self._extending:
            twin = FaqIndex(self.entries, self.embedder, faiss.clone_index(self._index),
                            self._phrasing_entry.copy(), list(self._phrasings),
                            self.corpus_hash, self.faq_sha256, self.scoring, self.index_type)
            twin._removed = self._removed.copy()
            twin._weight_decay = self._weight_decay
            twin._lexical, twin._lexical_chosen = self._lexical, self._lexical_chosen
            twin._last_head = self._last_head
            twin._outside, twin._outside_vectors = self._outside, self._outside_vectors
            twin.retired = self.retired
            twin.by_id = dict(self.by_id)
        return twin

    @property
    def size(self) -> int:
        """Number of indexed phrasings."""
        return int(self._index.ntotal)

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
        if self.size == 0:
            return [[] for _ in range(len(vectors))]
        if self.scoring == "blend":
            return self._search_blend(vectors, top_k)
        if self.scoring == "classifier":
            return self._search_classifier(vectors, top_k, texts)
        index = self._index  # one index for the whole search (extend() may swap it)
        size = int(index.ntotal)
        top_k = min(top_k, len(self.entries))
        exact = isinstance(index, faiss.IndexFlat)
        k = size if exact and size <= EXHAUSTIVE_LIMIT else min(size, top_k * 20)
        results: list[list[FaqHit]] = [[] for _ in range(len(vectors))]
        todo = list(range(len(vectors)))
        while todo:
            scores, ids = index.search(vectors[todo], k)
            short = []
            for row, row_scores, row_ids in zip(todo, scores, ids, strict=True):
                results[row] = self._entries_of(row_scores, row_ids, top_k)
                if len(results[row]) < top_k and k < size:
                    short.append(row)  # a few entries own all k nearest phrasings: look deeper
            todo, k = short, min(size, k * 4)
        return results

    def extend(self, entries: Sequence[FaqEntry] = (),
               phrasings: Sequence[tuple[str, str]] = ()) -> int:
        """Add entries, and phrasings `(entry id, question)` of entries old or new, while the
        index serves; returns how many phrasings were embedded and added.

        Copy on write, append only: searches in flight keep the FAISS index they started with,
        and its phrasing ids stay valid in the longer tables, so nothing locks a search.
        RetrievalError for an entry id that exists already or a phrasing of an unknown entry.
        """
        with self._extending:
            current = list(self.entries)
            position = {entry.id: i for i, entry in enumerate(current)}
            questions: list[str] = []
            owners: list[int] = []
            retired = set(self.retired)
            for entry in entries:
                if entry.id in retired:  # back again: its old phrasings stay removed
                    retired.discard(entry.id)
                    current[position[entry.id]] = entry
                elif entry.id in position:
                    raise RetrievalError(f"there is already an FAQ entry '{entry.id}'")
                else:
                    position[entry.id] = len(current)
                    current.append(entry)
                questions += entry.questions
                owners += [position[entry.id]] * len(entry.questions)
            for entry_id, question in phrasings:
                if entry_id not in position or entry_id in retired:
                    raise RetrievalError(f"no FAQ entry '{entry_id}' to add a phrasing to")
                i = position[entry_id]
                current[i] = replace(current[i], questions=(*current[i].questions, question))
                questions.append(question)
                owners.append(i)
            index = faiss.clone_index(self._index)
            if questions:
                index.add(self.embedder.embed(questions))
            # Tables first, index last: a search that still reads the old index finds its
            # phrasing ids at the same places in the new tables.
            self.entries = current
            self.by_id = {entry.id: entry for entry in current if entry.id not in retired}
            self.retired = frozenset(retired)
            self._phrasings = self._phrasings + questions
            self._phrasing_entry = np.concatenate(
                [self._phrasing_entry, np.asarray(owners, dtype=np.int64)])
            self._removed = np.concatenate([self._removed, np.zeros(len(questions), bool)])
            self._index = index
            return len(questions)

    def remove(self, phrasings: Sequence[tuple[str, str]]) -> int:
        """Take phrasings `(entry id, question)` out of search while the index serves (an
        entry left without phrasings is never found); returns how many were removed."""
        with self._extending:
            removed = self._removed.copy()
            current = list(self.entries)
            position = {entry.id: i for i, entry in enumerate(current)}
            wanted = {(position[e], q) for e, q in phrasings if e in position}
            count = 0
            for i, (owner, question) in enumerate(zip(self._phrasing_entry, self._phrasings,
                                                      strict=True)):
                if not removed[i] and (int(owner), question) in wanted:
                    removed[i] = True
                    count += 1
            retired = set(self.retired)
            for owner, question in wanted:
                entry = current[owner]
                kept = tuple(q for q in entry.questions if q != question)
                if kept:
                    current[owner] = replace(entry, questions=kept)
                else:  # keeps its last phrasing as its title, for messages that cite it
                    retired.add(entry.id)
            self.entries = current
            self.by_id = {entry.id: entry for entry in current if entry.id not in retired}
            self.retired = frozenset(retired)
            self._removed = removed
            if count:  # the next head is fitted from zero (with the same decay and words
                self._last_head = None  # choice): a phrasing taken back leaves no trace
            return count

    def live_entries(self) -> list[FaqEntry]:
        """The entries search can find (all but the retired ones)."""
        retired = self.retired
        return [entry for entry in self.entries if entry.id not in retired]

    def _entries_of(self, scores: np.ndarray, ids: np.ndarray, top_k: int) -> list[FaqHit]:
        """The first top_k distinct entries of phrasings ranked best first, each at its best."""
        best: dict[int, FaqHit] = {}
        owner, entries, phrasings = self._phrasing_entry, self.entries, self._phrasings
        removed = self._removed
        for score, phrasing_id in zip(scores, ids, strict=True):
            if phrasing_id < 0 or removed[phrasing_id]:
                continue
            entry_id = int(owner[phrasing_id])
            if entry_id not in best:
                best[entry_id] = FaqHit(entries[entry_id], float(score), phrasings[phrasing_id])
                if len(best) == top_k:
                    break
        return list(best.values())

    def invalidate(self) -> None:
        """Forget what was made from the indexed phrasings (blend centroids, classifier head
        and its weight decay): the next search makes them again."""
        self._derived_state = None
        self._weight_decay = None
        self._lexical_chosen = None
        self._last_head = None

    def _derived(self) -> _Derived:
        """The live phrasings' vectors, owners and the entries' centroids, made again after an
        extend() or remove(). The index is read before the tables: extend() writes the tables
        first, so these are at least as new as the index and hold all it can return."""
        index = self._index
        removed, entries, owner = self._removed, self.entries, self._phrasing_entry
        state = self._derived_state
        if state is not None and state.index is index and state.removed is removed:
            return state
        live = np.flatnonzero(~removed[:index.ntotal])
        vectors = index.reconstruct_n(0, index.ntotal)[live]
        owners = owner[live]
        sums = np.zeros((len(entries), index.d), dtype=np.float32)
        np.add.at(sums, owners, vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        state = _Derived(index, removed, live, vectors, owners,
                         sums / np.where(norms > 0, norms, 1.0), entries, self._phrasings)
        self._derived_state = state
        return state

    @property
    def outside(self) -> tuple[str, ...]:
        """Questions the FAQ does not cover, learnt by the classifier head as an out-of-scope
        class (retrieval.classifier); empty: no such class."""
        return self._outside

    @outside.setter
    def outside(self, questions: Sequence[str]) -> None:
        """Set the out-of-scope questions. Questions added to some (an operator's "not our
        topic") refit the head from the last one, as extend() does; any other change fits it
        from scratch (invalidate()), so that a question taken back leaves no trace."""
        questions = tuple(questions)
        if questions != self._outside:
            added = bool(self._outside) and set(self._outside) <= set(questions)
            appended = questions[:len(self._outside)] == self._outside
            with self._fitting:
                if not appended:  # the vectors kept are those of a prefix of the questions
                    self._outside_vectors = None
                self._outside = questions
                if added:
                    self._derived_state = None  # a new head, starting from _last_head
            if not added:
                self.invalidate()

    @property
    def lexical(self) -> str:
        """Whether the classifier head weighs the questions' words next to their embedding
        (retrieval.lexical): "on", "off", or "auto" (chosen on held-out phrasings)."""
        return self._lexical

    @lexical.setter
    def lexical(self, mode: str) -> None:
        if mode not in LEXICAL_MODES:
            raise RetrievalError(f"unknown lexical mode '{mode}' (one of "
                                 f"{', '.join(LEXICAL_MODES)})")
        if mode != self._lexical:
            self._lexical = mode
            self.invalidate()

    @property
    def weighs_words(self) -> bool | None:
        """Whether the classifier head weighs the questions' words (what "auto" chose; the head
        is fitted first if need be); None for the other scorings."""
        if self.scoring != "classifier" or self.size == 0:
            return None
        return self.classifier_head().lexicon is not None

    def _outside_of(self) -> np.ndarray | None:
        """The out-of-scope questions' vectors, embedded at the first fit (under _fitting);
        after questions were appended, only those are embedded."""
        done = 0 if self._outside_vectors is None else len(self._outside_vectors)
        if done < len(self._outside):
            new = self.embedder.embed(list(self._outside[done:]))
            self._outside_vectors = new if self._outside_vectors is None else np.concatenate(
                [self._outside_vectors, new])
        return self._outside_vectors

    def classifier_head(self) -> SoftmaxHead:
        """The softmax head of the live phrasings: fitted at first use, and again once they
        change (then starting from the last head, with its decay and its choice of words)."""
        return self._head_of(self._derived())

    def _head_of(self, state: _Derived) -> SoftmaxHead:
        with self._fitting:
            if state.head is None:
                texts = [state.phrasings[i] for i in state.live]
                # A head fitted from scratch is kept in (and first looked for in) head_file.
                kept = None if self._last_head is not None or self.head_file is None else (
                    self.head_file, head_key(self.embedder.name, self.embedder.dimension,
                                             [e.id for e in state.entries], texts,
                                             state.owner.tolist(), self._outside,
                                             self._lexical))
                if kept is not None:
                    state.head = load_head(*kept)
                if state.head is None:
                    lexical = {"on": True, "off": False}.get(self._lexical,
                                                             self._lexical_chosen)
                    state.head = fit_head(state.vectors, state.owner, len(state.centroids),
                                          self._weight_decay, outside=self._outside_of(),
                                          texts=texts, outside_texts=self._outside,
                                          lexical=lexical, start=self._last_head)
                    if kept is not None:
                        save_head(*kept, state.head)
                self._weight_decay = state.head.weight_decay
                self._lexical_chosen = state.head.lexicon is not None
                self._last_head = state.head
        return state.head

    def _search_classifier(self, vectors: np.ndarray, top_k: int,
                           texts: Sequence[str] | None) -> list[list[FaqHit]]:
        """Entries by the head's score (retrieval.classifier.head_scores); matched_question is
        the entry's nearest phrasing."""
        state = self._derived()
        head = self._head_of(state)
        if head.lexicon is not None and (texts is None or len(texts) != len(vectors)):
            raise RetrievalError("this index's classifier weighs the questions' words: "
                                 "search_vectors needs their texts, one per vector")
        scores = head_scores(head, vectors, state.vectors, state.owner, state.centroids,
                             texts=texts if head.lexicon is not None else None)
        results = []
        for row, query in zip(scores, vectors, strict=True):
            hits = []
            for e in np.argsort(-row, kind="stable")[:top_k]:
                mine = np.flatnonzero(state.owner == e)
                if len(mine) and np.isfinite(row[e]):
                    best = int(state.live[mine[np.argmax(state.vectors[mine] @ query)]])
                    hits.append(FaqHit(state.entries[int(e)], float(row[e]),
                                       state.phrasings[best]))
            results.append(hits)
        return results

    def _search_blend(self, vectors: np.ndarray, top_k: int) -> list[list[FaqHit]]:
        """Entries by the mean of their best phrasing's and their centroid's cosine (exact)."""
        state = self._derived()
        owner, count = state.owner, len(state.centroids)
        results = []
        for row, centroid_scores in zip(vectors @ state.vectors.T, vectors @ state.centroids.T,
                                        strict=True):
            order = np.lexsort((-row, owner))  # by entry, then best phrasing first
            first = order[np.unique(owner[order], return_index=True)[1]]
            best = np.full(count, -np.inf, dtype=np.float32)
            nearest = np.full(count, -1, dtype=np.int64)
            best[owner[first]], nearest[owner[first]] = row[first], state.live[first]
            scores = (best + centroid_scores) / 2
            ranked = [int(e) for e in np.argsort(-scores, kind="stable")[:top_k]
                      if nearest[e] >= 0]
            results.append([FaqHit(state.entries[e], float(scores[e]),
                                   state.phrasings[int(nearest[e])]) for e in ranked])
        return results

    def save(self, index_dir: Path | str) -> None:
        """Write the FAISS index and its metadata; files are replaced atomically."""
        index_dir = Path(index_dir)
        tmp_index = index_dir / (INDEX_FILE + ".tmp")
        try:
            _private_folders(index_dir)
            faiss.write_index(self._index, str(tmp_index))
            os.replace(tmp_index, index_dir / INDEX_FILE)
        except (OSError, RuntimeError) as exc:  # faiss raises RuntimeError when it cannot write
            with contextlib.suppress(OSError):
                tmp_index.unlink(missing_ok=True)
            raise IndexWriteError(index_dir, exc) from exc
        self.save_meta(index_dir)

    def save_meta(self, index_dir: Path | str) -> None:
        """Write (atomically replace) only the metadata, say to record a new FAQ file hash."""
        index_dir = Path(index_dir)
        meta = {
            "format_version": FORMAT_VERSION,
            "corpus_hash": self.corpus_hash,
            "faq_sha256": self.faq_sha256,
            "embedder": self.embedder.name,
            "dimension": self.embedder.dimension,
            "index_type": self.index_type,
            "entries": len(self.entries),
            "phrasings": self._phrasings,
            "phrasing_entry": self._phrasing_entry.tolist(),
            "faq_entries": [asdict(entry) for entry in self.entries],
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp_meta = index_dir / (META_FILE + ".tmp")
        try:
            tmp_meta.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp_meta, index_dir / META_FILE)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp_meta.unlink(missing_ok=True)
            raise IndexWriteError(index_dir, exc) from exc

    @classmethod
    def load(cls, index_dir: Path | str, entries: Sequence[FaqEntry],
             embedder: Embedder, index_type: str = "flat") -> FaqIndex:
        """Load a saved index; raise IndexStaleError if corpus, embedder or index type no
        longer match."""
        index_dir = Path(index_dir)
        meta = _read_meta(index_dir)
        reasons = stale_reasons(meta, entries, embedder, index_type)
        if reasons:
            raise IndexStaleError(index_dir, reasons)
        return cls._from_saved(index_dir, meta, entries, embedder)

    @classmethod
    def load_or_build(cls, index_dir: Path | str, entries: Sequence[FaqEntry],
                      embedder: Embedder, rebuild: bool = True,
                      progress: ProgressCallback | None = None, faq_sha256: str | None = None,
                      index_type: str = "flat"
                      ) -> tuple[FaqIndex, IndexMissingError | IndexStaleError | None]:
        """Load the saved index, or (re)build and save it when missing or stale and rebuild is set.

        Returns the index and why it was rebuilt: the error that loading raised (None when the
        saved index was used as it was). `faq_sha256` is recorded with a rebuilt index.
        """
        try:
            return cls.load(index_dir, entries, embedder, index_type), None
        except (IndexMissingError, IndexStaleError) as exc:
            if not rebuild:
                raise
            why = exc
        index = cls.build(entries, embedder, progress=progress, index_type=index_type)
        index.faq_sha256 = faq_sha256
        index.save(index_dir)
        return index, why

    @classmethod
    def open(cls, faq_path: Path | str, index_dir: Path | str, embedder: Embedder,
             rebuild: bool = True, progress: ProgressCallback | None = None,
             index_type: str = "flat"
             ) -> tuple[FaqIndex, IndexMissingError | IndexStaleError | None]:
        """Open the saved index of a FAQ file; (re)build it when missing or stale and `rebuild`.

        When the file's bytes are the ones the index was built from, the entries come from the
        index's own metadata and the file is not parsed again. Returns the index and why it was
        (re)built, as load_or_build does. The classifier head fitted from scratch is kept in the
        same folder (retrieval.head_cache), and the next start on the same inputs loads it.
        """
        faq_path, index_dir = Path(faq_path), Path(index_dir)
        digest = faq_file_hash(faq_path)
        try:
            index = cls._load_unchanged(index_dir, digest, embedder, index_type)
            index.head_file = index_dir / HEAD_FILE
            return index, None
        except (IndexMissingError, IndexStaleError):
            pass  # parse the file: load_or_build finds (and reports) why the index is stale
        entries = load_faq(faq_path)
        index, why = cls.load_or_build(index_dir, entries, embedder, rebuild, progress, digest,
                                       index_type)
        index.head_file = index_dir / HEAD_FILE
        if index.faq_sha256 != digest:
            # The same entries from other bytes (an edited comment, say): remember these bytes
            # so that the next start skips parsing. A read-only index only loses the shortcut.
            index.faq_sha256 = digest
            with contextlib.suppress(IndexWriteError):
                index.save_meta(index_dir)
        return index, why

    @classmethod
    def _load_unchanged(cls, index_dir: Path, faq_sha256: str, embedder: Embedder,
                        index_type: str = "flat") -> FaqIndex:
        """The saved index with its saved entries, if built from a file with these bytes."""
        meta = _read_meta(index_dir)
        if meta["faq_sha256"] != faq_sha256:
            raise IndexStaleError(index_dir, ["the FAQ file changed since it was built"])
        reasons = _embedder_reasons(meta, embedder) + _type_reasons(meta, index_type)
        if reasons:
            raise IndexStaleError(index_dir, reasons)
        entries = _saved_entries(index_dir, meta)
        return cls._from_saved(index_dir, meta, entries, embedder, known_hash=meta["corpus_hash"])

    @classmethod
    def _from_saved(cls, index_dir: Path, meta: dict[str, Any], entries: Sequence[FaqEntry],
                    embedder: Embedder, known_hash: str | None = None) -> FaqIndex:
        """The FaqIndex for checked metadata: reads the FAISS file and checks that they fit."""
        try:
            index = faiss.read_index(str(index_dir / INDEX_FILE))
        except RuntimeError as exc:
            raise IndexStaleError(index_dir, [f"unreadable FAISS file: {exc}"]) from exc
        phrasing_entry = meta["phrasing_entry"]
        if index.ntotal != len(meta["phrasings"]) or index.d != embedder.dimension:
            raise IndexStaleError(index_dir, ["FAISS file and metadata disagree"])
        if any(not 0 <= i < len(entries) for i in phrasing_entry):
            raise IndexStaleError(index_dir, ["the phrasing table does not fit the entries"])
        return cls(entries, embedder, index, np.asarray(phrasing_entry, dtype=np.int64),
                   list(meta["phrasings"]), known_hash, meta["faq_sha256"],
                   index_type=str(meta.get("index_type", "flat")))


# The metadata's keys and the JSON types their values must have (None: null allowed).
_META_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,), "corpus_hash": (str,), "faq_sha256": (str, type(None)),
    "embedder": (str,), "dimension": (int,), "phrasings": (list,), "phrasing_entry": (list,),
    "faq_entries": (list,),
}


def _read_meta(index_dir: Path) -> dict[str, Any]:
    """The saved metadata, checked for shape; IndexMissingError or IndexStaleError if unusable."""
    meta_path, index_path = index_dir / META_FILE, index_dir / INDEX_FILE
    if not meta_path.is_file() or not index_path.is_file():
        raise IndexMissingError(index_dir)
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IndexStaleError(index_dir, [
            f"unreadable metadata {meta_path}: not UTF-8 ({exc.reason} at byte {exc.start})"
        ]) from exc
    except (OSError, ValueError) as exc:
        raise IndexStaleError(index_dir, [f"unreadable metadata {meta_path}: {exc}"]) from exc
    if not isinstance(meta, dict):
        raise IndexStaleError(index_dir, [
            f"malformed metadata {meta_path}: a JSON {type(meta).__name__}, not an object"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexStaleError(index_dir, [
            f"index format {meta.get('format_version')} != {FORMAT_VERSION}"])
    wrong = [key for key, types in _META_TYPES.items()
             if key not in meta or isinstance(meta[key], bool)
             or not isinstance(meta[key], types)]
    if not wrong and (len(meta["phrasing_entry"]) != len(meta["phrasings"])
                      or not all(isinstance(p, str) for p in meta["phrasings"])
                      or not all(type(i) is int for i in meta["phrasing_entry"])):
        wrong = ["phrasings", "phrasing_entry"]
    if wrong:
        raise IndexStaleError(index_dir, [
            f"malformed metadata {meta_path}: missing or wrong {', '.join(wrong)}"])
    return meta


def _saved_entries(index_dir: Path, meta: dict[str, Any]) -> list[FaqEntry]:
    """The entries saved in the metadata; IndexStaleError if any is malformed."""
    entries = []
    for item in meta["faq_entries"]:
        try:
            entry = FaqEntry(item["id"], tuple(item["questions"]), item["answer"],
                             tuple(item["tags"]), item["link"])
        except (KeyError, TypeError) as exc:
            raise IndexStaleError(index_dir, [f"malformed saved entry: {exc!r}"]) from exc
        fields = (entry.id, entry.answer, *entry.questions, *entry.tags)
        if not all(isinstance(f, str) for f in fields) or not isinstance(entry.link, str | None):
            raise IndexStaleError(index_dir, [f"malformed saved entry {entry.id!r}"])
        entries.append(entry)
    return entries


def _embedder_reasons(meta: dict[str, Any], embedder: Embedder) -> list[str]:
    if meta.get("embedder") != embedder.name:
        return [f"built with embedder '{meta.get('embedder')}', now '{embedder.name}'"]
    if meta.get("dimension") != embedder.dimension:
        return [f"dimension {meta.get('dimension')} != {embedder.dimension}"]
    return []


def _type_reasons(meta: dict[str, Any], index_type: str) -> list[str]:
    saved = meta.get("index_type", "flat")  # indexes saved before the setting were flat
    return [] if saved == index_type else [f"a {saved} index, now {index_type}"]


def new_faiss_index(index_type: str, dimension: int, vectors: np.ndarray) -> faiss.Index:
    """An inner-product FAISS index of the type holding `vectors` (IVF is trained on them)."""
    if index_type not in INDEX_TYPES:
        raise RetrievalError(f"unknown index type '{index_type}' "
                             f"(one of {', '.join(INDEX_TYPES)})")
    index: faiss.Index
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif index_type == "ivf" and len(vectors) >= 39:  # FAISS wants ~39 points per cluster
        clusters = max(1, min(int(4 * np.sqrt(len(vectors))), len(vectors) // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dimension), dimension, clusters,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(clusters, IVF_PROBES)
        index.make_direct_map()  # reconstruct(), which blend and classifier scoring use
    else:  # flat, or too few phrasings to cluster: exact
        index = faiss.IndexFlatIP(dimension)
    if len(vectors):
        index.add(vectors)
    return index


def stale_reasons(meta: dict[str, Any], entries: Sequence[FaqEntry],
                  embedder: Embedder, index_type: str = "flat") -> list[str]:
    """Why saved metadata no longer fits this corpus, embedder and index type (empty when it
    fits)."""
    reasons = []
    if meta.get("format_version") != FORMAT_VERSION:
        reasons.append(f"index format {meta.get('format_version')} != {FORMAT_VERSION}")
    if meta.get("corpus_hash") != corpus_hash(entries):
        reasons.append("the FAQ corpus changed since it was built")
    reasons += _embedder_reasons(meta, embedder) + _type_reasons(meta, index_type)
    if not isinstance(meta.get("phrasings"), list) or not isinstance(
            meta.get("phrasing_entry"), list):
        reasons.append("metadata lacks the phrasing table")
    return reasons


__all__ = ["FaqHit", "FaqIndex", "RetrievalError", "stale_reasons"]


def _private_folders(folder: Path) -> None:
    """Create `folder` and its missing parents readable by their owner only (0700): the
    index's folder usually sits in .supportbot/, beside the conversation database and the web
    secret, and whoever makes .supportbot/ first decides its mode. Existing folders are left
    as they are."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(mode=0o700, exist_ok=True)
