"""FaqIndex: a FAISS inner-product index over every phrasing of every FAQ entry, with metadata."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from retrieval.corpus import FaqEntry, corpus_hash
from retrieval.embedder import Embedder, ProgressCallback
from retrieval.errors import IndexMissingError, IndexStaleError, RetrievalError

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
# Exact search over all phrasings up to this size; FAQ corpora are small, so this is the usual case.
EXHAUSTIVE_LIMIT = 4096


@dataclass(frozen=True)
class FaqHit:
    """One FAQ entry found for a query: cosine score and the phrasing that matched best."""

    entry: FaqEntry
    score: float
    matched_question: str


class FaqIndex:
    """Embeds every phrasing, searches by cosine similarity, and returns entries, not phrasings."""

    def __init__(self, entries: Sequence[FaqEntry], embedder: Embedder, index: faiss.Index,
                 phrasing_entry: np.ndarray, phrasings: list[str]) -> None:
        self.entries = list(entries)
        self.embedder = embedder
        self.corpus_hash = corpus_hash(self.entries)
        self._index = index
        self._phrasing_entry = phrasing_entry
        self._phrasings = phrasings

    @classmethod
    def build(cls, entries: Sequence[FaqEntry], embedder: Embedder,
              progress: ProgressCallback | None = None) -> FaqIndex:
        """Embed every phrasing of every entry and build an exact inner-product index."""
        phrasings = [q for entry in entries for q in entry.questions]
        owner = np.array([i for i, entry in enumerate(entries) for _ in entry.questions],
                         dtype=np.int64)
        vectors = embedder.embed(phrasings, progress=progress)
        index = faiss.IndexFlatIP(embedder.dimension)
        if len(vectors):
            index.add(vectors)
        return cls(entries, embedder, index, owner, phrasings)

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
        vectors = self.embedder.embed(list(queries))
        k = self.size if self.size <= EXHAUSTIVE_LIMIT else min(self.size, top_k * 20)
        scores, ids = self._index.search(vectors, k)
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            best: dict[int, FaqHit] = {}
            for score, phrasing_id in zip(row_scores, row_ids, strict=True):
                if phrasing_id < 0:
                    continue
                entry_id = int(self._phrasing_entry[phrasing_id])
                if entry_id not in best:  # FAISS returns phrasings best first
                    best[entry_id] = FaqHit(self.entries[entry_id], float(score),
                                            self._phrasings[phrasing_id])
                    if len(best) == top_k:
                        break
            results.append(list(best.values()))
        return results

    def save(self, index_dir: Path | str) -> None:
        """Write the FAISS index and its metadata; files are replaced atomically."""
        index_dir = Path(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "corpus_hash": self.corpus_hash,
            "embedder": self.embedder.name,
            "dimension": self.embedder.dimension,
            "entries": len(self.entries),
            "phrasings": self._phrasings,
            "phrasing_entry": self._phrasing_entry.tolist(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp_index, tmp_meta = index_dir / (INDEX_FILE + ".tmp"), index_dir / (META_FILE + ".tmp")
        faiss.write_index(self._index, str(tmp_index))
        tmp_meta.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp_index, index_dir / INDEX_FILE)
        os.replace(tmp_meta, index_dir / META_FILE)

    @classmethod
    def load(cls, index_dir: Path | str, entries: Sequence[FaqEntry],
             embedder: Embedder) -> FaqIndex:
        """Load a saved index; raise IndexStaleError if corpus or embedder no longer match."""
        index_dir = Path(index_dir)
        meta_path, index_path = index_dir / META_FILE, index_dir / INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise IndexMissingError(index_dir)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise IndexStaleError(index_dir, [f"unreadable metadata: {exc}"]) from exc
        reasons = stale_reasons(meta, entries, embedder)
        if reasons:
            raise IndexStaleError(index_dir, reasons)
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise IndexStaleError(index_dir, [f"unreadable FAISS file: {exc}"]) from exc
        if index.ntotal != len(meta["phrasings"]):
            raise IndexStaleError(index_dir, ["FAISS file and metadata disagree"])
        return cls(entries, embedder, index, np.asarray(meta["phrasing_entry"], dtype=np.int64),
                   list(meta["phrasings"]))

    @classmethod
    def load_or_build(cls, index_dir: Path | str, entries: Sequence[FaqEntry],
                      embedder: Embedder, rebuild: bool = True,
                      progress: ProgressCallback | None = None
                      ) -> tuple[FaqIndex, IndexMissingError | IndexStaleError | None]:
        """Load the saved index, or (re)build and save it when missing or stale and rebuild is set.

        Returns the index and why it was rebuilt: the error that loading raised (None when the
        saved index was used as it was).
        """
        try:
            return cls.load(index_dir, entries, embedder), None
        except (IndexMissingError, IndexStaleError) as exc:
            if not rebuild:
                raise
            why = exc
        index = cls.build(entries, embedder, progress=progress)
        index.save(index_dir)
        return index, why


def stale_reasons(meta: dict[str, object], entries: Sequence[FaqEntry],
                  embedder: Embedder) -> list[str]:
    """Why saved metadata no longer fits this corpus and embedder (empty when it fits)."""
    reasons = []
    if meta.get("format_version") != FORMAT_VERSION:
        reasons.append(f"index format {meta.get('format_version')} != {FORMAT_VERSION}")
    if meta.get("corpus_hash") != corpus_hash(entries):
        reasons.append("the FAQ corpus changed since it was built")
    if meta.get("embedder") != embedder.name:
        reasons.append(f"built with embedder '{meta.get('embedder')}', now '{embedder.name}'")
    elif meta.get("dimension") != embedder.dimension:
        reasons.append(f"dimension {meta.get('dimension')} != {embedder.dimension}")
    if not isinstance(meta.get("phrasings"), list) or not isinstance(
            meta.get("phrasing_entry"), list):
        reasons.append("metadata lacks the phrasing table")
    return reasons


__all__ = ["FaqHit", "FaqIndex", "RetrievalError", "stale_reasons"]
