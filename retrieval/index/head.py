"""The classifier head of one snapshot: loaded from the head cache or fitted, then remembered."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from retrieval.classifier import SoftmaxHead, fit_head
from retrieval.embedder import Embedder
from retrieval.head_cache import head_key, load_head, save_head
from retrieval.index.state import Derived, HeadMemory, Snapshot, derive


def with_head(state: Snapshot, embedder: Embedder, head_file: Path | None) -> Snapshot:
    """`state` with its softmax head over the live phrasings: fitted from the last head when
    there is one (its decay and choice of words), else looked for in `head_file`, else fitted
    from scratch and kept there. Also embeds out-of-scope questions not embedded yet."""
    if state.head is not None:
        return state
    derived = state.derived if state.derived is not None else derive(state)
    memory = state.memory
    outside_vectors = _outside_vectors(state, embedder)
    texts = [state.phrasings[i] for i in derived.live]
    # A head fitted from scratch is kept in (and first looked for in) head_file.
    kept = None if memory.last_head is not None or head_file is None else (
        head_file, head_key(embedder.name, embedder.dimension, [e.id for e in state.entries],
                            texts, derived.owner.tolist(), state.outside, state.lexical))
    head = load_head(*kept) if kept is not None else None
    if head is None:
        head = _fit(state, derived, outside_vectors, texts)
        if kept is not None:
            save_head(*kept, head)
    return replace(state, derived=derived, outside_vectors=outside_vectors, head=head,
                   memory=HeadMemory(head.weight_decay, head.lexicon is not None, head))


def _fit(state: Snapshot, derived: Derived, outside_vectors: np.ndarray | None,
         texts: list[str]) -> SoftmaxHead:
    """A head fitted on the live phrasings (and the out-of-scope class)."""
    lexical = {"on": True, "off": False}.get(state.lexical, state.memory.lexical_chosen)
    return fit_head(derived.vectors, derived.owner, len(derived.centroids),
                    state.memory.weight_decay, outside=outside_vectors, texts=texts,
                    outside_texts=state.outside, lexical=lexical,
                    start=state.memory.last_head)


def _outside_vectors(state: Snapshot, embedder: Embedder) -> np.ndarray | None:
    """The out-of-scope questions' vectors; after questions were appended, only those are
    embedded."""
    done = 0 if state.outside_vectors is None else len(state.outside_vectors)
    if done >= len(state.outside):
        return state.outside_vectors
    new = embedder.embed(list(state.outside[done:]))
    return new if state.outside_vectors is None else np.concatenate(
        [state.outside_vectors, new])
