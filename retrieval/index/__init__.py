"""The FAQ index: build, search (one immutable snapshot per search), save and open."""

from __future__ import annotations

from retrieval.errors import RetrievalError
from retrieval.index.faq_index import FaqIndex
from retrieval.index.kinds import INDEX_TYPES, new_faiss_index
from retrieval.index.scoring import EXHAUSTIVE_LIMIT, FaqHit
from retrieval.index.state import LEXICAL_MODES, SCORINGS
from retrieval.index.store import FORMAT_VERSION, INDEX_FILE, META_FILE, stale_reasons

__all__ = ["EXHAUSTIVE_LIMIT", "FORMAT_VERSION", "INDEX_FILE", "INDEX_TYPES", "LEXICAL_MODES",
           "META_FILE", "SCORINGS", "FaqHit", "FaqIndex", "RetrievalError", "new_faiss_index",
           "stale_reasons"]
