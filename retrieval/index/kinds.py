"""The FAISS index types the phrasings are kept in (`retrieval.index_type`)."""

from __future__ import annotations

import faiss
import numpy as np

from retrieval.errors import RetrievalError

# "flat", exact; "hnsw", a graph (HNSW, 32 links) and "ivf", 4 sqrt(n) clusters (16 searched),
# approximate and faster for nearest-phrasing search over very large FAQs (measured in
# bench/README.md). Blend and classifier scoring read every vector whatever the type.
INDEX_TYPES = ("flat", "hnsw", "ivf")
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128
IVF_PROBES = 16


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
