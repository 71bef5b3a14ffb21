"""FaqIndex on the real bundled embedder: build, search, save/load, and staleness."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from retrieval.corpus import FaqEntry
from retrieval.embedder import SentenceTransformerEmbedder, resolve_embedder_path
from retrieval.errors import IndexMissingError, IndexStaleError
from retrieval.index import META_FILE, FaqIndex


def test_search_returns_entries_with_best_phrasing(sample_index: FaqIndex) -> None:
    hits = sample_index.search("Where is my package?", top_k=5)
    assert hits[0].entry.id == "track-order"
    assert hits[0].matched_question == "Where is my package?"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert len(hits) == 5
    assert len({h.entry.id for h in hits}) == 5, "entries, not phrasings"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_paraphrase_is_found(sample_index: FaqIndex) -> None:
    hits = sample_index.search("I forgot my password and can't log in", top_k=3)
    assert "reset-password" in [h.entry.id for h in hits]


def test_search_many_matches_single_searches(sample_index: FaqIndex) -> None:
    queries = ["how much is shipping", "do you have gift cards"]
    batch = sample_index.search_many(queries, top_k=3)
    for query, hits in zip(queries, batch, strict=True):
        single = sample_index.search(query, top_k=3)
        assert [h.entry.id for h in hits] == [h.entry.id for h in single]
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], abs=1e-5)


def test_save_load_round_trip(tmp_path: Path, sample_index: FaqIndex,
                              sample_entries: list[FaqEntry],
                              minilm: SentenceTransformerEmbedder) -> None:
    sample_index.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["embedder"] == "all-MiniLM-L6-v2" and meta["dimension"] == 384
    assert meta["corpus_hash"] == sample_index.corpus_hash
    loaded = FaqIndex.load(tmp_path, sample_entries, minilm)
    assert loaded.size == sample_index.size == sum(len(e.questions) for e in sample_entries)
    query = "can I pay with paypal"
    assert [(h.entry.id, round(h.score, 4)) for h in loaded.search(query)] == \
        [(h.entry.id, round(h.score, 4)) for h in sample_index.search(query)]


def test_changed_corpus_is_stale(tmp_path: Path, sample_index: FaqIndex,
                                 sample_entries: list[FaqEntry],
                                 minilm: SentenceTransformerEmbedder) -> None:
    sample_index.save(tmp_path)
    changed = [replace(sample_entries[0], answer="A new answer."), *sample_entries[1:]]
    with pytest.raises(IndexStaleError, match="FAQ corpus changed"):
        FaqIndex.load(tmp_path, changed, minilm)
    rebuilt, why = FaqIndex.load_or_build(tmp_path, changed, minilm)
    assert isinstance(why, IndexStaleError) and "corpus changed" in str(why)
    assert rebuilt.entries[0].answer == "A new answer."
    again, why_again = FaqIndex.load_or_build(tmp_path, changed, minilm)
    assert why_again is None, "the rebuilt index was saved and is now fresh"
    assert again.corpus_hash == rebuilt.corpus_hash


def test_changed_embedder_is_stale(tmp_path: Path, sample_index: FaqIndex,
                                   sample_entries: list[FaqEntry]) -> None:
    sample_index.save(tmp_path)
    other = SentenceTransformerEmbedder(resolve_embedder_path("all-MiniLM-L6-v2"))
    with pytest.raises(IndexStaleError, match="built with embedder 'all-MiniLM-L6-v2'"):
        FaqIndex.load(tmp_path, sample_entries, other)


def test_stale_index_is_refused_without_rebuild(tmp_path: Path, sample_index: FaqIndex,
                                                sample_entries: list[FaqEntry],
                                                minilm: SentenceTransformerEmbedder) -> None:
    sample_index.save(tmp_path)
    with pytest.raises(IndexStaleError, match="supportbot index"):
        FaqIndex.load_or_build(tmp_path, sample_entries[:-1], minilm, rebuild=False)


def test_missing_and_corrupt_index(tmp_path: Path, sample_index: FaqIndex,
                                   sample_entries: list[FaqEntry],
                                   minilm: SentenceTransformerEmbedder) -> None:
    with pytest.raises(IndexMissingError, match="no index in"):
        FaqIndex.load(tmp_path, sample_entries, minilm)
    sample_index.save(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(IndexStaleError, match="unreadable metadata"):
        FaqIndex.load(tmp_path, sample_entries, minilm)
