"""The softmax head (retrieval.classifier) on hand-made embeddings with known answers, and the
"classifier" scoring through FaqIndex, the calibration and the retrieval eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.bands import Band, decide
from retrieval.classifier import (
    WEIGHT_DECAYS,
    SoftmaxHead,
    choose_weight_decay,
    entry_cosines,
    fit_head,
    held_out_split,
)
from retrieval.corpus import FaqEntry
from retrieval.errors import RetrievalError
from retrieval.index import SCORINGS, FaqIndex
from retrieval.offline.calibrate import held_out_samples
from retrieval.offline.evaluate import evaluate_retrieval
from retrieval.offline.metrics import Policy
from retrieval.offline.queries import LabelledQuery
from tests.retrieval_support import TableEmbedder

# Three entries around three axes of a 4-d space; each phrasing leans a little towards the 4th.
TABLE = {
    "a0": [1, 0, 0, 0.3], "a1": [1, 0.2, 0, 0], "a2": [1, 0, 0.2, 0],
    "b0": [0, 1, 0, 0.3], "b1": [0.2, 1, 0, 0], "b2": [0, 1, 0.2, 0],
    "c0": [0, 0, 1, 0.3], "c1": [0.2, 0, 1, 0], "c2": [0, 0.2, 1, 0],
    "near a": [0.9, 0.1, 0.1, 0.1], "near b": [0.1, 0.8, 0.2, 0.0],
    "between a and b": [1, 1, 0, 0], "d0": [0, 0, 0, 1], "d1": [0.1, 0, 0, 1],
    # Out-of-scope questions in two places away from every entry: around the 4th axis (o0,
    # o2) and opposite a and b (o1, o3).
    "o0": [0, 0, 0, 1], "o1": [-1, -1, 0, 0.3], "o2": [0.1, 0, 0, 1],
    "o3": [-1, -1, 0.1, 0.3], "near o": [0.3, 0, 0, 1],
}
OUTSIDE = ["o0", "o1", "o2", "o3"]


def _entries() -> list[FaqEntry]:
    return [FaqEntry(k, (f"{k}0", f"{k}1", f"{k}2"), f"answer {k}") for k in "abc"]


def _unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_head_separates_three_clusters_and_its_probabilities_sum_to_one() -> None:
    x = _unit([TABLE[f"{k}{i}"] for k in "abc" for i in range(3)])
    y = np.repeat(np.arange(3), 3)
    head = fit_head(x, y, 3, weight_decay=1e-3)
    assert isinstance(head, SoftmaxHead) and head.classes == 3 and head.weight_decay == 1e-3
    p = head.probabilities(_unit([TABLE["near a"], TABLE["near b"], TABLE["between a and b"]]))
    assert p.shape == (3, 3) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert p[0].argmax() == 0 and p[0, 0] > 0.9
    assert p[1].argmax() == 1 and p[1, 1] > 0.9
    # Halfway between a and b: a and b alike, c far below.
    assert abs(p[2, 0] - p[2, 1]) < 0.1 and p[2, 2] < 0.1
    # Every training phrasing is classified as its own entry.
    assert (head.probabilities(x).argmax(axis=1) == y).all()


def test_stronger_weight_decay_gives_softer_probabilities() -> None:
    x = _unit([TABLE[f"{k}{i}"] for k in "abc" for i in range(3)])
    y = np.repeat(np.arange(3), 3)
    query = _unit([TABLE["near a"]])
    soft = fit_head(x, y, 3, weight_decay=1e-1).probabilities(query)[0, 0]
    sharp = fit_head(x, y, 3, weight_decay=1e-4).probabilities(query)[0, 0]
    assert 1 / 3 < soft < sharp <= 1.0


def test_an_entry_without_phrasings_is_a_class_no_query_wins() -> None:
    x = _unit([TABLE["a0"], TABLE["b0"]])
    head = fit_head(x, np.array([0, 2]), 3, weight_decay=1e-3)
    p = head.probabilities(_unit([TABLE["a1"], TABLE["b1"]]))
    assert list(p.argmax(axis=1)) == [0, 2] and (p[:, 1] < 0.2).all()


def test_held_out_split_keeps_a_share_of_labels_with_two_or_more_rows() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [2])
    fit, held = held_out_split(labels, holdout=0.2, seed=1)
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(14))
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]
    assert (held == held_out_split(labels, holdout=0.2, seed=1)[1]).all()


def test_weight_decay_is_chosen_from_the_grid_on_held_out_rows() -> None:
    x = _unit([TABLE[f"{k}{i}"] for k in "abc" for i in range(3)])
    y = np.repeat(np.arange(3), 3)
    decay, lexical = choose_weight_decay(x, y, 3)
    assert decay in WEIGHT_DECAYS and not lexical, "words are only tried when asked"
    assert fit_head(x, y, 3).weight_decay in WEIGHT_DECAYS
    # Nothing to hold out (one row per label): the strongest decay.
    assert choose_weight_decay(x[::3], y[::3], 3) == (WEIGHT_DECAYS[0], False)


def test_classifier_scoring_through_the_index() -> None:
    assert "classifier" in SCORINGS
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="classifier")
    hits = index.search("near b", top_k=3)
    assert hits[0].entry.id == "b" and len(hits) == 3
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # The score is the mean of the head's probability and the entry's blend cosine.
    head = index.classifier_head()
    probability = head.probabilities(TableEmbedder(TABLE).embed(["near b"]))[0]
    blend = {h.entry.id: h.score for h in
             FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="blend").search("near b", 3)}
    assert scores == pytest.approx([(probability["abc".index(h.entry.id)] + blend[h.entry.id]) / 2
                                    for h in hits], abs=1e-5)
    assert hits[0].score > 0.6
    assert hits[0].matched_question == "b2"  # the entry's nearest phrasing, shown to operators
    assert len(index.search("near a", top_k=1)) == 1
    many = index.search_many(["near a", "near b"], top_k=2)
    assert [row[0].entry.id for row in many] == ["a", "b"]


def test_the_head_is_refitted_after_invalidate_or_a_change_of_size() -> None:
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="classifier")
    first = index.classifier_head()
    assert index.classifier_head() is first  # fitted once
    index.invalidate()
    assert index.classifier_head() is not first
    # A phrasing added at run time: the head is fitted again on it, with the same decay.
    fitted = index.classifier_head()
    index.extend(phrasings=[("c", "d0")])
    refitted = index.classifier_head()
    assert refitted is not fitted and refitted.weight_decay == fitted.weight_decay
    assert index.search("d0", top_k=1)[0].entry.id == "c"
    # An entry added at run time: one more class; taken back, the entry is never found.
    index.extend([FaqEntry("d", ("d1",), "answer d")])
    assert index.classifier_head().classes == 4
    assert index.search("d1", top_k=1)[0].entry.id == "d"
    index.remove([("d", "d1")])
    assert "d" not in {h.entry.id for h in index.search("d1", top_k=4)}


def test_classifier_scores_feed_the_bands_and_the_calibration() -> None:
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="classifier")
    clear = [h.score for h in index.search("near a", top_k=3)]
    assert decide(clear, 0.7, 0.3).band is Band.ANSWER
    unsure = [h.score for h in index.search("between a and b", top_k=3)]
    assert decide(unsure, 0.7, 0.3, answer_margin=0.2).band is not Band.ANSWER
    found = held_out_samples(_entries(), [["a0", "a1"], ["b0", "b1"], ["c0", "c1"]],
                             [(0, "a2"), (1, "b2"), (2, "c2")], TableEmbedder(TABLE),
                             ["classifier"], outside=["d0"])
    samples, leads = found["classifier"]
    assert len(samples) == 3 and all(s.right for s in samples) and len(leads) == 1


def test_the_out_of_scope_class_takes_probability_from_unrelated_questions_only() -> None:
    x = _unit([TABLE[f"{k}{i}"] for k in "abc" for i in range(3)])
    y = np.repeat(np.arange(3), 3)
    plain = fit_head(x, y, 3, weight_decay=1e-3)
    head = fit_head(x, y, 3, weight_decay=1e-3, outside=_unit([TABLE[q] for q in OUTSIDE]))
    assert head.outside and head.classes == 3 and head.weights.shape[1] == 4
    queries = _unit([TABLE["near a"], TABLE["near o"]])
    p, p_out = head.probabilities(queries), head.outside_probability(queries)
    assert p.shape == (2, 3)
    assert p.sum(axis=1) + p_out == pytest.approx([1.0, 1.0], abs=1e-5)
    # "near a" stays a's; "near o", which a plain head gives to a with confidence, is not.
    assert p[0].argmax() == 0 and p[0, 0] > 0.8 and p_out[0] < 0.1
    assert plain.probabilities(queries)[1, 0] > 0.7
    assert p_out[1] > 0.8 and p[1].max() < 0.2
    assert (plain.outside_probability(queries) == 0).all()


def test_the_index_learns_its_out_of_scope_questions_and_scores_them_lower() -> None:
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="classifier")
    before = index.search("near o", top_k=1)[0].score
    fitted = index.classifier_head()
    index.outside = OUTSIDE
    assert index.outside == tuple(OUTSIDE)
    head = index.classifier_head()
    assert head is not fitted and head.outside and head.classes == 3
    after = index.search("near o", top_k=1)[0]
    assert after.score < before - 0.2
    # In-scope questions keep their entry and nearly their score.
    assert index.search("near a", top_k=1)[0].entry.id == "a"
    twin = index.copy()
    assert twin.outside == tuple(OUTSIDE) and twin.search("near o", 1)[0].score == after.score
    index.outside = ()
    assert not index.classifier_head().outside
    assert index.search("near o", top_k=1)[0].score == pytest.approx(before, abs=1e-5)


def test_calibration_never_scores_an_out_of_scope_question_the_head_learnt() -> None:
    args = (_entries(), [["a0", "a1"], ["b0", "b1"], ["c0", "c1"]],
            [(0, "a2"), (1, "b2"), (2, "c2")], TableEmbedder(TABLE), ["classifier"])
    _, unlearnt = held_out_samples(*args, outside=OUTSIDE)["classifier"]
    _, folded = held_out_samples(*args, outside=OUTSIDE, learnt=OUTSIDE)["classifier"]
    assert len(folded) == len(OUTSIDE)
    # What a head that learnt every question would give them: the optimistic figure avoided.
    index = FaqIndex.build([FaqEntry(e.id, q, e.answer) for e, q in zip(
        _entries(), [("a0", "a1"), ("b0", "b1"), ("c0", "c1")], strict=True)],
        TableEmbedder(TABLE), scoring="classifier")
    index.outside = OUTSIDE
    learnt = [row[0].score for row in index.search_many(OUTSIDE, top_k=1)]
    # Questions 0 and 2 were searched first (the first half), then 1 and 3: each by a head
    # that learnt only the other place.
    for top, seen in zip([top for top, _ in folded], [learnt[i] for i in (0, 2, 1, 3)],
                         strict=True):
        assert top > seen + 0.01
    assert sum(top for top, _ in folded) < sum(top for top, _ in unlearnt)


def test_eval_reports_the_classifier_scoring() -> None:
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="classifier")
    queries = [LabelledQuery("near a", "a"), LabelledQuery("near b", "b"),
               LabelledQuery("d0", None)]
    report = evaluate_retrieval(index, queries, Policy(0.7, 0.3), latency_sample=0).report
    assert report["scoring"] == "classifier" and report["top1"] == 1.0


@pytest.mark.parametrize("scoring", SCORINGS)
def test_every_scoring_ranks_the_obvious_entry_first(scoring: str) -> None:
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring=scoring)
    assert [index.search(q, top_k=1)[0].entry.id for q in ("near a", "near b")] == ["a", "b"]


def test_entry_cosines_are_the_blend_scores_and_skip_entries_without_phrasings() -> None:
    phrasings = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    owner = np.array([0, 1, 0])  # entry 2 has no phrasing
    centroids = _unit([[1, 0, 1], [0, 1, 0], [1, 1, 1]])
    query = _unit([[3, 2, 1]])
    got = entry_cosines(query, phrasings, owner, centroids)[0]
    norm = np.sqrt(14)
    assert got[0] == pytest.approx((3 / norm + 4 / (norm * np.sqrt(2))) / 2, abs=1e-5)
    assert got[1] == pytest.approx(2 / norm, abs=1e-5)
    assert got[2] == -np.inf


def test_open_index_fits_the_head_when_the_settings_ask_for_the_classifier(
        tmp_path: Path) -> None:
    from bot.runtime import open_index
    from bot.settings import Settings

    faq = tmp_path / "faq.yaml"
    faq.write_text("entries:\n" + "".join(
        f"  - id: {k}\n    questions: [{k}0, {k}1, {k}2]\n    answer: answer {k}\n"
        for k in "abc"), encoding="utf-8")
    settings = Settings()
    settings.retrieval.faq_path = faq
    settings.retrieval.index_dir = tmp_path / "index"
    settings.retrieval.scoring = "classifier"
    outside = tmp_path / "unrelated.txt"
    outside.write_text("# unrelated questions\n" + "\n".join(OUTSIDE) + "\n", encoding="utf-8")
    settings.retrieval.out_of_scope = str(outside)
    index, _ = open_index(settings, embedder=TableEmbedder(TABLE))
    state = index._snapshot
    assert index.scoring == "classifier" and state is not None and state.head is not None
    assert index.outside == tuple(OUTSIDE) and state.head.outside
    assert index.search("near a", top_k=1)[0].entry.id == "a"


def test_out_of_scope_setting_names_the_bundled_set_none_or_a_file(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from bot.runtime import outside_questions
    from bot.settings import Settings

    settings = Settings()
    assert settings.retrieval.out_of_scope == "bundled"
    bundled = outside_questions(settings)
    assert len(bundled) == 100 and not any(q.startswith("#") for q in bundled)
    settings.retrieval.out_of_scope = "none"
    assert outside_questions(settings) == []
    with pytest.raises(ValidationError, match="not 'bundled', 'none' or an existing file"):
        Settings.model_validate({"retrieval": {"out_of_scope": str(tmp_path / "missing.txt")}})


# --- words next to the embedding (retrieval.lexical) ------------------------------------------

class BlurryEmbedder:
    """Every text gets nearly the same vector: only the words can tell the entries apart, as
    MiniLM blurs 'top-up failed' and 'top-up reverted'."""

    name = "blurry"
    dimension = 4

    def embed(self, texts: list[str], progress: object = None) -> np.ndarray:
        rows = [[1.0, 0.01 * (len(t) % 3), 0.0, 0.0] for t in texts]
        return _unit(rows) if rows else np.zeros((0, 4), dtype=np.float32)


WORDS = {
    "failed": ["my top-up failed", "top-up failed again", "the top-up has failed",
               "why did my top-up fail", "top-up failed twice", "failed top-up today"],
    "reverted": ["my top-up was reverted", "top-up reverted again", "the top-up got reverted",
                 "why was my top-up reverted", "top-up reverted twice", "reverted top-up today"],
}


def _word_entries() -> list[FaqEntry]:
    return [FaqEntry(k, tuple(v), f"answer {k}") for k, v in WORDS.items()]


def test_auto_weighs_words_when_they_predict_held_out_phrasings() -> None:
    index = FaqIndex.build(_word_entries(), BlurryEmbedder(), scoring="classifier")
    assert index.lexical == "off" and not index.weighs_words, "off by default"
    index.lexical = "auto"
    assert index.weighs_words
    assert [index.search(q, 2)[0].entry.id for q in
            ["the top-up failed on me", "someone reverted my top-up"]] == ["failed", "reverted"]
    index.lexical = "off"
    assert index.weighs_words is False, "setting the mode fits the head again"
    p = index.classifier_head().probabilities(BlurryEmbedder().embed(["the top-up failed"]))
    assert abs(p[0, 0] - p[0, 1]) < 0.2, "without words the entries look alike"


def test_auto_leaves_words_out_when_they_do_not_help() -> None:
    """Words shared at random across entries whose embeddings differ: the held-out log loss
    prefers the embedding alone."""
    entries = [FaqEntry(k, (f"{k}0", f"{k}1", f"{k}2"), f"answer {k}") for k in "abc"]
    index = FaqIndex.build(entries, TableEmbedder(TABLE), scoring="classifier")
    index.lexical = "auto"
    assert index.weighs_words is False
    index.lexical = "on"
    assert index.weighs_words is True
    assert index.search("near b", 1)[0].entry.id == "b"


def test_a_head_that_weighs_words_needs_the_texts() -> None:
    index = FaqIndex.build(_word_entries(), BlurryEmbedder(), scoring="classifier")
    index.lexical = "on"
    vectors = BlurryEmbedder().embed(["my top-up failed"])
    with pytest.raises(RetrievalError, match="needs their texts"):
        index.search_vectors(vectors, 2)
    assert index.search_vectors(vectors, 2, ["my top-up failed"])[0][0].entry.id == "failed"
    with pytest.raises(ValueError, match="pass their texts"):
        index.classifier_head().probabilities(vectors)
    with pytest.raises(RetrievalError, match="unknown lexical mode 'maybe'"):
        index.lexical = "maybe"
    twin = index.copy()
    assert twin.lexical == "on" and twin.weighs_words
    assert FaqIndex.build(_word_entries(), BlurryEmbedder()).weighs_words is None, \
        "only the classifier weighs words"


def test_words_and_the_out_of_scope_class_together() -> None:
    index = FaqIndex.build(_word_entries(), BlurryEmbedder(), scoring="classifier")
    index.lexical = "on"
    index.outside = ["what is the weather like", "tell me a joke", "who won the match",
                     "play some music"]
    head = index.classifier_head()
    assert head.outside and head.lexicon is not None
    texts = ["tell me a joke please", "my top-up failed"]
    outside = head.outside_probability(BlurryEmbedder().embed(texts), texts)
    assert outside[0] > 0.5 > outside[1]


def test_the_setting_reaches_the_index_and_the_eval_report() -> None:
    from bot.runtime import configure_index
    from bot.settings import Settings

    settings = Settings()
    assert settings.retrieval.lexical == "auto", "the bot's default; FaqIndex alone: off"
    index = configure_index(FaqIndex.build(_word_entries(), BlurryEmbedder()), settings)
    assert index.scoring == "classifier" and index.lexical == "auto"
    queries = [LabelledQuery("the top-up failed on me", "failed"),
               LabelledQuery("someone reverted my top-up", "reverted")]
    report = evaluate_retrieval(index, queries, Policy(0.7, 0.45), latency_sample=0).report
    assert report["lexical"] is True and report["top1"] == 1.0


def test_the_sparse_product_gives_the_dense_product_and_its_gradient() -> None:
    import torch
    from scipy import sparse

    from retrieval.classifier import _sparse_product

    rng = np.random.default_rng(0)
    dense = rng.random((5, 7)).astype(np.float32) * (rng.random((5, 7)) < 0.4)
    weights = torch.from_numpy(rng.standard_normal((7, 3)).astype(np.float32))
    weights.requires_grad_(True)
    out = _sparse_product(sparse.csr_matrix(dense))(weights)
    (out * torch.arange(15, dtype=torch.float32).reshape(5, 3)).sum().backward()
    assert np.allclose(out.detach().numpy(), dense @ weights.detach().numpy(), atol=1e-5)
    expected = dense.T @ np.arange(15, dtype=np.float32).reshape(5, 3)
    assert weights.grad is not None and np.allclose(weights.grad.numpy(), expected, atol=1e-5)


def test_a_refit_starts_from_the_last_head_and_keeps_its_choices() -> None:
    """fit_head(start=...): the decay, the vocabulary and the out-of-scope column carry over;
    a new entry gets a column of its own, which the refit then learns."""
    entries = _word_entries()
    texts = [q for e in entries for q in e.questions]
    labels = np.repeat(np.arange(2), 6)
    embed = BlurryEmbedder().embed
    outside = ["tell me a joke", "what is the weather like"]
    first = fit_head(embed(texts), labels, 2, outside=embed(outside), texts=texts,
                     outside_texts=outside, lexical=True)
    assert first.lexicon is not None and first.weights.shape[1] == 3
    more = [*texts, "my card was declined", "card declined again", "declined card today"]
    refit = fit_head(embed(more), np.array([*labels, 2, 2, 2]), 3, outside=embed(outside),
                     texts=more, outside_texts=outside, start=first)
    assert refit.lexicon is not None and refit.weight_decay == first.weight_decay
    assert refit.lexicon.size > first.lexicon.size, "the new phrasings' n-grams are learnt"
    assert refit.classes == 3 and refit.outside and refit.weights.shape[1] == 4
    questions = ["why was my card declined", "my top-up failed", "tell me a joke please"]
    p = refit.softmax(embed(questions), questions)
    assert list(p.argmax(axis=1)) == [2, 0, 3], "the new entry, an old one, out of scope"
    # A start that does not fit (fewer columns asked for) is ignored: a first fit is made.
    cold = fit_head(embed(texts[:6]), labels[:6], 1, texts=texts[:6], lexical=False,
                    start=first)
    assert cold.lexicon is None and cold.classes == 1


def test_the_index_refits_from_its_last_head_until_invalidated() -> None:
    index = FaqIndex.build(_word_entries(), BlurryEmbedder(), scoring="classifier")
    index.lexical = "auto"
    first = index.classifier_head()
    assert first.lexicon is not None
    index.extend([FaqEntry("declined", ("my card was declined", "card declined again"),
                           "answer declined")])
    refit = index.classifier_head()
    assert refit is not first and refit.lexicon is not None, "auto's choice is kept"
    assert refit.weight_decay == first.weight_decay
    assert index.search("why was my card declined", 1)[0].entry.id == "declined"
    assert index.copy()._snapshot.memory.last_head is refit, "a copy refits from the same head"
    index.invalidate()
    assert index._snapshot.memory.last_head is None, \
        "invalidate() starts afresh: decay and words chosen again"


def test_out_of_scope_additions_refit_from_the_last_head_and_removals_from_scratch() -> None:
    """'Not our topic' adds a question: a refit from the last head, as after extend(). A
    question or phrasing taken back: a head fitted from zero, so that it leaves no trace."""
    index = FaqIndex.build(_entries(), TableEmbedder(TABLE), scoring="classifier")
    index.outside = OUTSIDE[:3]
    first = index.classifier_head()
    index.outside = OUTSIDE
    assert index._snapshot.memory.last_head is first, "kept for the refit"
    added = index.classifier_head()
    assert added is not first and added.weight_decay == first.weight_decay
    assert index.search("near a", 1)[0].entry.id == "a"
    assert index.search("o3", 1)[0].score < index.search("near a", 1)[0].score - 0.3
    index.outside = OUTSIDE[:3]
    memory = index._snapshot.memory
    assert memory.last_head is None and memory.weight_decay is None, "fitted from scratch"
    assert index.classifier_head().outside
    index.extend(phrasings=[("c", "d0")])
    assert index._snapshot.memory.last_head is not None
    index.remove([("c", "d0")])
    assert index._snapshot.memory.last_head is None, \
        "a phrasing taken back: the next head starts from zero"
    assert index.classifier_head().weight_decay == added.weight_decay, "decay kept"


def test_out_of_scope_questions_appended_are_the_only_ones_embedded() -> None:
    embedded: list[str] = []

    class Counting(TableEmbedder):
        def embed(self, texts: list[str], progress: object = None) -> np.ndarray:
            embedded.extend(texts)
            return super().embed(texts, progress)

    index = FaqIndex.build(_entries(), Counting(TABLE), scoring="classifier")
    index.outside = OUTSIDE[:3]
    index.classifier_head()
    embedded.clear()
    index.outside = OUTSIDE
    assert index.search("o3", 1)[0].score < index.search("near a", 1)[0].score - 0.3
    assert embedded == ["o3", "o3", "near a"], "the new question, then the two queries"
    embedded.clear()
    index.outside = OUTSIDE[1:]
    index.classifier_head()
    assert embedded == OUTSIDE[1:], "not a prefix any more: embedded again"
