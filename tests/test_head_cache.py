"""The fitted classifier head kept next to the saved index (retrieval.head_cache): a second
start on the same inputs loads it instead of fitting; any change of inputs fits again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import retrieval.index.head as index_module
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.head_cache import HEAD_FILE, head_key, load_head, save_head
from retrieval.index import FaqIndex
from tests.retrieval_support import FAQ


def _open(tmp_path: Path, minilm: SentenceTransformerEmbedder, lexical: str = "auto"
          ) -> FaqIndex:
    faq = tmp_path / "faq.yaml"
    if not faq.exists():
        faq.write_text(FAQ, encoding="utf-8")
    index, _ = FaqIndex.open(faq, tmp_path / "index", minilm)
    index.scoring = "classifier"
    index.outside = ["what is the weather like", "tell me a joke"]
    index.lexical = lexical
    return index


def _no_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the head was fitted, not loaded")

    monkeypatch.setattr(index_module, "fit_head", refuse)


def test_a_second_start_loads_the_head_the_first_one_fitted(
        tmp_path: Path, minilm: SentenceTransformerEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = _open(tmp_path, minilm)
    fitted = first.classifier_head()
    assert (tmp_path / "index" / HEAD_FILE).is_file()
    expected = [(h.entry.id, h.score) for h in first.search("where is my package", 3)]
    with monkeypatch.context() as patch:
        _no_fitting(patch)
        second = _open(tmp_path, minilm)
        loaded = second.classifier_head()
        assert np.allclose(loaded.weights, fitted.weights)
        assert loaded.weight_decay == fitted.weight_decay
        assert [(h.entry.id, h.score) for h in second.search("where is my package", 3)] \
            == expected
    # Another lexical mode is another head: fitted, and kept instead of the first.
    other = _open(tmp_path, minilm, lexical="on")
    assert other.classifier_head().lexicon is not None


def test_a_refit_after_a_change_keeps_the_first_head_on_disk(
        tmp_path: Path, minilm: SentenceTransformerEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    index = _open(tmp_path, minilm)
    index.classifier_head()
    saved = (tmp_path / "index" / HEAD_FILE).read_bytes()
    index.extend(phrasings=[("track", "has my parcel left the warehouse")])
    index.classifier_head()  # refitted from the last head: not what a restart starts from
    assert (tmp_path / "index" / HEAD_FILE).read_bytes() == saved
    with monkeypatch.context() as patch:
        _no_fitting(patch)
        _open(tmp_path, minilm).classifier_head()


def test_an_unreadable_or_unwritable_head_file_only_costs_a_fit(
        tmp_path: Path, minilm: SentenceTransformerEmbedder,
        caplog: pytest.LogCaptureFixture) -> None:
    index = _open(tmp_path, minilm)
    head = index.classifier_head()
    path = tmp_path / "index" / HEAD_FILE
    path.write_bytes(b"not a pickle")
    with caplog.at_level(logging.WARNING):
        again = _open(tmp_path, minilm).classifier_head()
    assert "ignoring the saved classifier head" in caplog.text
    assert np.allclose(again.weights, head.weights, atol=1e-4)
    key = head_key("m", 4, ["a"], ["q"], [0], (), "auto")
    assert load_head(path, key) is None  # the file was written again, under the real key
    blocked = tmp_path / "blocked" / HEAD_FILE
    blocked.parent.mkdir()
    (blocked.parent / (HEAD_FILE + ".tmp")).mkdir()  # the temporary file cannot be written
    save_head(blocked, key, head)
    assert not blocked.exists() and load_head(blocked, key) is None
    save_head(tmp_path / HEAD_FILE, key, head)
    assert load_head(tmp_path / HEAD_FILE, key) is not None
    assert load_head(tmp_path / HEAD_FILE, head_key("m", 4, ["a"], ["q"], [0], (), "on")) \
        is None, "another key"
