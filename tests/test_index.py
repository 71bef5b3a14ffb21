"""FaqIndex on the real bundled embedder: build, search, save/load, and staleness."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from retrieval.corpus import FaqEntry, faq_file_hash, load_faq
from retrieval.embedder import SentenceTransformerEmbedder, resolve_embedder_path
from retrieval.errors import IndexMissingError, IndexStaleError, IndexWriteError
from retrieval.index import INDEX_FILE, META_FILE, FaqIndex
from tests.retrieval_support import FAQ


def test_search_returns_entries_with_best_phrasing(sample_index: FaqIndex) -> None:
    hits = sample_index.search("Is there a tracking number for my shipment?", top_k=5)
    assert hits[0].entry.id == "track-order"
    assert hits[0].matched_question == "Is there a tracking number for my shipment?"
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


def test_non_utf8_metadata_is_stale_and_rebuilt(tmp_path: Path, sample_index: FaqIndex,
                                                sample_entries: list[FaqEntry],
                                                minilm: SentenceTransformerEmbedder) -> None:
    sample_index.save(tmp_path)
    (tmp_path / META_FILE).write_bytes(b'{"embedder": "caf\xe9"}')
    with pytest.raises(IndexStaleError) as caught:
        FaqIndex.load(tmp_path, sample_entries, minilm)
    assert f"unreadable metadata {tmp_path / META_FILE}: not UTF-8" in str(caught.value)
    assert "at byte 17" in str(caught.value)
    rebuilt, why = FaqIndex.load_or_build(tmp_path, sample_entries, minilm)
    assert isinstance(why, IndexStaleError) and "not UTF-8" in str(why)
    assert rebuilt.size == sample_index.size
    assert FaqIndex.load(tmp_path, sample_entries, minilm).size == sample_index.size


def _edit(meta: dict[str, Any], key: str, value: object) -> dict[str, Any]:
    return {**meta, key: value} if value is not None else {k: v for k, v in meta.items()
                                                           if k != key}


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda meta: [meta], "a JSON list, not an object"),
    (lambda meta: "index", "a JSON str, not an object"),
    (lambda meta: {}, "index format None != 2"),
    (lambda meta: _edit(meta, "format_version", 1), "index format 1 != 2"),
    (lambda meta: _edit(meta, "phrasings", None), "missing or wrong phrasings"),
    (lambda meta: _edit(meta, "dimension", "384"), "missing or wrong dimension"),
    (lambda meta: _edit(meta, "corpus_hash", 7), "missing or wrong corpus_hash"),
    (lambda meta: _edit(meta, "phrasing_entry", meta["phrasing_entry"][:-1]),
     "missing or wrong phrasings, phrasing_entry"),
    (lambda meta: _edit(meta, "phrasing_entry", [10**6] * len(meta["phrasing_entry"])),
     "the phrasing table does not fit the entries"),
])
def test_wrong_shaped_metadata_is_stale(tmp_path: Path, sample_index: FaqIndex,
                                        sample_entries: list[FaqEntry],
                                        minilm: SentenceTransformerEmbedder,
                                        edit: Any, fragment: str) -> None:
    sample_index.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text(encoding="utf-8"))
    (tmp_path / META_FILE).write_text(json.dumps(edit(meta)), encoding="utf-8")
    with pytest.raises(IndexStaleError) as caught:
        FaqIndex.load_or_build(tmp_path, sample_entries, minilm, rebuild=False)
    assert fragment in str(caught.value)
    assert str(tmp_path) in str(caught.value) and "supportbot index" in str(caught.value)
    _, why = FaqIndex.load_or_build(tmp_path, sample_entries, minilm)
    assert isinstance(why, IndexStaleError) and fragment in str(why)


def test_unwritable_index_folder_is_a_clear_error(tmp_path: Path, sample_index: FaqIndex) -> None:
    blocker = tmp_path / "index"
    blocker.write_text("a file where the index folder should be")
    with pytest.raises(IndexWriteError) as caught:
        sample_index.save(blocker)
    assert f"cannot save the index in {blocker}" in str(caught.value)
    assert "retrieval.index_dir" in str(caught.value)
    with pytest.raises(IndexWriteError, match="Not a directory"):
        sample_index.save(blocker / "sub")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_index_folder_is_a_clear_error(tmp_path: Path, sample_index: FaqIndex) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(IndexWriteError, match=r"Permission denied.*retrieval\.index_dir"):
            sample_index.save(folder)
    finally:
        folder.chmod(0o700)


def test_failed_save_leaves_the_old_index_usable(tmp_path: Path, sample_index: FaqIndex,
                                                 sample_entries: list[FaqEntry],
                                                 minilm: SentenceTransformerEmbedder) -> None:
    sample_index.save(tmp_path)
    (tmp_path / (META_FILE + ".tmp")).mkdir()  # the metadata cannot be written
    with pytest.raises(IndexWriteError):
        sample_index.save(tmp_path)
    assert FaqIndex.load(tmp_path, sample_entries, minilm).size == sample_index.size
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX_FILE, META_FILE, META_FILE + ".tmp"]


def test_open_uses_the_saved_entries_while_the_file_is_unchanged(
        tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    faq, index_dir = tmp_path / "faq.yaml", tmp_path / "index"
    faq.write_text(FAQ, encoding="utf-8")
    built, why = FaqIndex.open(faq, index_dir, minilm)
    assert isinstance(why, IndexMissingError)
    assert built.entries == load_faq(faq)
    opened, why = FaqIndex.open(faq, index_dir, minilm)
    assert why is None, "used the saved index"
    assert opened.entries == built.entries and opened.corpus_hash == built.corpus_hash
    assert opened.search("where is my package")[0].entry.id == "track"
    # Proof that the file is not parsed: the entries come from the index's own metadata.
    meta_path = index_dir / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["faq_entries"][1]["answer"] = "Saved answer."
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    opened, why = FaqIndex.open(faq, index_dir, minilm)
    assert why is None and opened.entries[1].answer == "Saved answer."


def test_open_rebuilds_when_the_faq_changes(tmp_path: Path,
                                            minilm: SentenceTransformerEmbedder) -> None:
    faq, index_dir = tmp_path / "faq.yaml", tmp_path / "index"
    faq.write_text(FAQ, encoding="utf-8")
    FaqIndex.open(faq, index_dir, minilm)
    faq.write_text(FAQ.replace("Within 30 days.", "Within 14 days."), encoding="utf-8")
    with pytest.raises(IndexStaleError, match="FAQ corpus changed"):
        FaqIndex.open(faq, index_dir, minilm, rebuild=False)
    rebuilt, why = FaqIndex.open(faq, index_dir, minilm)
    assert isinstance(why, IndexStaleError) and "FAQ corpus changed" in str(why)
    assert rebuilt.entries[1].answer == "Within 14 days."
    assert FaqIndex.open(faq, index_dir, minilm)[1] is None


def test_open_remembers_new_bytes_with_the_same_entries(
        tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    faq, index_dir = tmp_path / "faq.yaml", tmp_path / "index"
    faq.write_text(FAQ, encoding="utf-8")
    FaqIndex.open(faq, index_dir, minilm)
    faq.write_text("# reviewed by support\n" + FAQ, encoding="utf-8")
    opened, why = FaqIndex.open(faq, index_dir, minilm)
    assert why is None, "same entries: nothing to rebuild"
    meta = json.loads((index_dir / META_FILE).read_text(encoding="utf-8"))
    assert meta["faq_sha256"] == faq_file_hash(faq), "the next start skips parsing"
    assert opened.entries == load_faq(faq)


def test_open_treats_malformed_saved_entries_as_stale(
        tmp_path: Path, minilm: SentenceTransformerEmbedder) -> None:
    faq, index_dir = tmp_path / "faq.yaml", tmp_path / "index"
    faq.write_text(FAQ, encoding="utf-8")
    FaqIndex.open(faq, index_dir, minilm)
    meta_path = index_dir / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["faq_entries"][0] = {"id": "track", "questions": "not a list"}
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    opened, why = FaqIndex.open(faq, index_dir, minilm)
    assert why is None, "the file is parsed and the index (same corpus) is used"
    assert opened.entries == load_faq(faq)
    assert FaqIndex.open(faq, index_dir, minilm)[0].entries == load_faq(faq)


def test_large_index_finds_top_k_entries_when_one_entry_owns_the_nearest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the exhaustive limit FAISS is asked for top_k * 20 phrasings; when one entry owns
    all of them, the search looks deeper rather than return fewer entries than top_k."""
    import numpy as np

    from retrieval.index import scoring as index_module
    from tests.retrieval_support import TableEmbedder

    rng = np.random.default_rng(0)
    near = [f"near {i}" for i in range(60)]  # all close to the query
    table = {t: [1.0, 0.05 * rng.random(), 0.0] for t in near}
    table |= {"other a": [0.5, 1.0, 0.0], "other b": [0.3, 0.0, 1.0], "q": [1.0, 0.0, 0.0]}
    entries = [FaqEntry("big", tuple(near), "x"), FaqEntry("a", ("other a",), "y"),
               FaqEntry("b", ("other b",), "z")]
    monkeypatch.setattr(index_module, "EXHAUSTIVE_LIMIT", 10)
    built = FaqIndex.build(entries, TableEmbedder(table))
    assert built.size == 62 > 2 * 20
    assert [h.entry.id for h in built.search("q", top_k=2)] == ["big", "a"]
    assert [h.entry.id for h in built.search("q", top_k=5)] == ["big", "a", "b"]


# --- FAISS index types ------------------------------------------------------------------------

QUERIES = ["where is my package", "can I pay with paypal", "how long does a refund take",
           "i forgot my password", "do you ship to canada"]


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_index_types_find_what_flat_finds_and_grow(
        index_type: str, minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry],
        tmp_path: Path) -> None:
    flat = FaqIndex.build(sample_entries, minilm)
    other = FaqIndex.build(sample_entries, minilm, index_type=index_type)
    import faiss

    kind = faiss.IndexHNSW if index_type == "hnsw" else faiss.IndexIVF
    assert isinstance(other._snapshot.index, kind) and other.index_type == index_type
    for query in QUERIES:  # 216 phrasings: the approximate search finds the same entries
        assert [h.entry.id for h in other.search(query, 3)] == \
            [h.entry.id for h in flat.search(query, 3)], query
    for scoring in ("blend", "classifier"):  # these read the vectors back from the index
        other.scoring = flat.scoring = scoring
        assert other.search(QUERIES[0], 3) == flat.search(QUERIES[0], 3)
    other.scoring = "nearest"
    other.extend(phrasings=[("track-order", "parcel whereabouts please")])
    assert other.search("parcel whereabouts please", 1)[0].score == pytest.approx(1.0, abs=1e-4)
    other.remove([("track-order", "parcel whereabouts please")])
    assert other.search("parcel whereabouts please", 1)[0].matched_question != \
        "parcel whereabouts please"

    saved = FaqIndex.build(sample_entries, minilm, index_type=index_type)
    saved.save(tmp_path)
    loaded = FaqIndex.load(tmp_path, sample_entries, minilm, index_type)
    assert isinstance(loaded._snapshot.index, kind) and loaded.index_type == index_type
    with pytest.raises(IndexStaleError, match=f"a {index_type} index, now flat"):
        FaqIndex.load(tmp_path, sample_entries, minilm)  # the setting changed: rebuilt


def test_an_ivf_index_of_a_small_faq_is_exact_and_not_rebuilt_each_start(
        minilm: SentenceTransformerEmbedder, sample_entries: list[FaqEntry],
        tmp_path: Path) -> None:
    import faiss

    small = sample_entries[:5]  # under 39 phrasings: too few to cluster
    built = FaqIndex.build(small, minilm, index_type="ivf")
    assert isinstance(built._snapshot.index, faiss.IndexFlatIP) and built.index_type == "ivf"
    built.save(tmp_path)
    assert FaqIndex.load(tmp_path, small, minilm, "ivf").index_type == "ivf"
    with pytest.raises(Exception, match="unknown index type 'annoy'"):
        FaqIndex.build(small, minilm, index_type="annoy")
