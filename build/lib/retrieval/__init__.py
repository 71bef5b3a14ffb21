"""FAQ retrieval: corpus loading, embedding, and a FAISS index over FAQ phrasings."""

from __future__ import annotations

from retrieval.corpus import FaqEntry, corpus_hash, load_faq
from retrieval.errors import CorpusError, IndexStaleError, RetrievalError
from retrieval.index import FaqHit, FaqIndex

__all__ = [
    "CorpusError",
    "FaqEntry",
    "FaqHit",
    "FaqIndex",
    "IndexStaleError",
    "RetrievalError",
    "corpus_hash",
    "load_faq",
]
