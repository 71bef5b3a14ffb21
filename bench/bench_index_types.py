"""FAISS index types for nearest-phrasing search (`retrieval.index_type`): recall and speed of
HNSW and IVF against the exact flat index, measured in the same run.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_index_types.py [--sets clinc150 banking77]
     [--repeat 4]

For each data set (FAQ phrasings and queries from data/retrieval/), the phrasings and queries
are embedded once; then for each index type: build seconds, the recall@10 of the 10 nearest
phrasings against flat's, how often the top entry is flat's, top-1 accuracy on the labelled
in-scope queries, and the search time per query (one query at a time, as the bot searches,
embedding excluded, nearest scoring), with its ratio to flat's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import ROOT

from retrieval.corpus import load_faq
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import INDEX_TYPES, FaqIndex, new_faiss_index
from retrieval.offline.queries import read_queries

DATA = ROOT / "data" / "retrieval"
SETS = {"clinc150": ("clinc150_faq.jsonl", "clinc150_queries.csv"),
        "banking77": ("banking77_faq.jsonl", "banking77_queries.csv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--repeat", type=int, default=4, help="timed passes over the queries")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    embedder = SentenceTransformerEmbedder()
    print("| data (phrasings; queries) | index | build s | recall@10 vs flat | top entry = flat's "
          "| top-1 accuracy | search ms / query (p50) | vs flat |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        faq_file, query_file = SETS[name]
        entries = load_faq(DATA / faq_file)
        queries = [q for q in read_queries(DATA / query_file, {e.id for e in entries})
                   if q.faq_id]
        phrasings = [p for e in entries for p in e.questions]
        owner = np.array([i for i, e in enumerate(entries) for _ in e.questions], dtype=np.int64)
        vectors = embedder.embed(phrasings)
        asked = embedder.embed([q.text for q in queries])
        truth = [q.faq_id for q in queries]
        reference: dict[str, np.ndarray] = {}
        flat_ms = 0.0
        for kind in INDEX_TYPES:
            started = time.perf_counter()
            faiss_index = new_faiss_index(kind, embedder.dimension, vectors)
            built = time.perf_counter() - started
            index = FaqIndex(entries, embedder, faiss_index, owner, phrasings, index_type=kind)
            _, nearest = faiss_index.search(asked, 10)
            reference.setdefault("ids", nearest)
            recall = np.mean([len(set(a) & set(b)) / 10
                              for a, b in zip(nearest, reference["ids"], strict=True)])
            tops = [hits[0].entry.id if hits else None
                    for hits in index.search_vectors(asked, top_k=5)]
            reference.setdefault("tops", np.array(tops, dtype=object))
            same = np.mean(np.array(tops, dtype=object) == reference["tops"])
            accuracy = np.mean([t == f for t, f in zip(tops, truth, strict=True)])
            times = []
            for _ in range(args.repeat):
                for row in asked:
                    begun = time.perf_counter()
                    index.search_vectors(row.reshape(1, -1), top_k=5)
                    times.append((time.perf_counter() - begun) * 1000)
            p50 = statistics.median(times)
            flat_ms = flat_ms or p50
            print(f"| {name} ({len(phrasings):,}; {len(queries):,}) | {kind} | {built:.1f} | "
                  f"{recall:.3f} | {same:.1%} | {accuracy:.1%} | {p50:.3f} | "
                  f"{flat_ms / p50:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
