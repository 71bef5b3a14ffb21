"""Tuning the embedder and calibrating thresholds: the split, the batches, the blend score, the
calibration on hand-made cases with known answers, and `supportbot tune-retriever` end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from retrieval.corpus import FaqEntry
from retrieval.embedder import TUNING_FILE, SentenceTransformerEmbedder
from retrieval.errors import IndexStaleError, RetrievalError
from retrieval.index import SCORINGS, FaqIndex
from retrieval.offline.calibrate import ANSWER_FLOOR, Sample, calibrate, samples_from_hits
from retrieval.offline.tune import TuneConfig, TuneError, epoch_batches, split_phrasings
from retrieval.outside import read_questions
from tests.retrieval_support import TableEmbedder


def _entry(id_: str, *questions: str) -> FaqEntry:
    return FaqEntry(id_, tuple(questions), f"answer of {id_}")


def test_split_holds_out_a_share_of_entries_with_three_or_more_phrasings() -> None:
    entries = [_entry("a", *[f"a{i}" for i in range(10)]), _entry("b", "b0", "b1", "b2"),
               _entry("c", "c0", "c1")]
    split = split_phrasings(entries, holdout=0.2, seed=3)
    assert [len(t) for t in split.tune] == [8, 2, 2]
    assert sorted(own for own, _ in split.held_out) == [0, 0, 1]
    for own, text in split.held_out:  # held out means not tuned on
        assert text not in split.tune[own] and text in entries[own].questions
    assert split == split_phrasings(entries, holdout=0.2, seed=3)
    assert split_phrasings(entries, holdout=0.0, seed=3).held_out == []


def test_batches_pair_within_a_group_and_never_repeat_a_group_in_a_batch() -> None:
    groups = [["a0", "a1", "a2", "a3"], ["b0", "b1"], ["c0", "c1", "c2"], ["lonely"]]
    owner = {t: g for g, texts in enumerate(groups) for t in texts}
    batches = epoch_batches(groups, batch_size=2, rng=random.Random(0), positives=2)
    pairs = [pair for batch in batches for pair in batch]
    # a: 4 anchors x 2 positives, b: 2 x 1 (only one other), c: 3 x 2; the lonely text none.
    assert len(pairs) == 8 + 2 + 6
    for batch in batches:
        assert len(batch) == 2
        assert len({owner[a] for a, _ in batch}) == len(batch)
    assert all(owner[a] == owner[p] and a != p for a, p in pairs)


def test_config_names_every_bad_field() -> None:
    with pytest.raises(TuneError, match=r"batch_size.*holdout"):
        TuneConfig(batch_size=1, holdout=0.9)


def test_blend_scores_are_the_mean_of_nearest_and_centroid_cosines() -> None:
    table = {"a0": [1, 0, 0], "a1": [0, 1, 0], "b0": [0, 0, 1], "q": [3, 2, 1]}
    entries = [_entry("a", "a0", "a1"), _entry("b", "b0")]
    embedder = TableEmbedder(table)
    norm = np.sqrt(14)
    nearest = FaqIndex.build(entries, embedder).search("q", top_k=2)
    assert [h.entry.id for h in nearest] == ["a", "b"]
    assert [h.score for h in nearest] == pytest.approx([3 / norm, 1 / norm], abs=1e-5)
    blend = FaqIndex.build(entries, embedder, scoring="blend").search("q", top_k=2)
    # a's centroid is (1, 1, 0) / sqrt(2): cosine 5 / (sqrt(14) sqrt(2)); b's is b0 itself.
    assert [h.entry.id for h in blend] == ["a", "b"]
    assert [h.score for h in blend] == pytest.approx(
        [(3 / norm + 5 / (norm * np.sqrt(2))) / 2, 1 / norm], abs=1e-5)
    assert [h.matched_question for h in blend] == ["a0", "b0"]
    assert len(FaqIndex.build(entries, embedder, scoring="blend").search("q", top_k=1)) == 1


def test_samples_take_the_out_of_scope_score_from_the_other_entries() -> None:
    samples = samples_from_hits([0, 0, 1], [[(0, 0.9), (1, 0.4), (2, 0.3)],
                                            [(2, 0.8), (0, 0.7), (1, 0.5)], [(1, 0.6)]])
    assert [(s.top, s.right, s.oos_top) for s in samples] == [
        (0.9, True, 0.4), (0.8, False, 0.8), (0.6, True, -1.0)]
    # Leads over the next entry: with the own entry 0.9 - 0.4; without it 0.4 - 0.3, and so on;
    # 1.0 when there is no next entry.
    assert [s.margin for s in samples] == pytest.approx([0.5, 0.1, 1.0])
    assert [s.oos_margin for s in samples] == pytest.approx([0.1, 0.3, 1.0])


def test_calibration_finds_the_lowest_threshold_that_keeps_precision() -> None:
    # Right answers at 0.90, 0.80, 0.70, 0.60; a wrong top entry at 0.65; the simulated
    # out-of-scope scores 0.30 each. Without out-of-scope traffic: precision is 1 down to 0.66,
    # 0.75 at 0.65 (3 of 4): with a 0.95 target the answer threshold is 0.66.
    samples = [Sample(t, True, 0.3) for t in (0.9, 0.8, 0.7, 0.6)] + [Sample(0.65, False, 0.3)]
    result = calibrate(samples, target_precision=0.95, oos_share=0.0, suggest_recall=1.0,
                       margins=(0.0,))
    assert result.answer == pytest.approx(0.66)
    assert result.answered_right == pytest.approx(3 / 5)
    assert result.answer_precision == pytest.approx(1.0)
    # Every right top entry keeps its 'Did you mean': the lowest right score, 0.60.
    assert result.suggest == pytest.approx(0.6)
    # At 75%, the 25th percentile (0.675) would be above the answer threshold: capped to it.
    assert calibrate(samples, 0.95, 0.0, 0.75, (0.0,)).suggest == pytest.approx(0.66)
    assert result.oos_fallback == 1.0 and result.oos_answered == 0.0


def test_out_of_scope_traffic_raises_the_threshold() -> None:
    # An out-of-scope question would score 0.8 for one sample: weighted at 50% of traffic, the
    # answers at 0.8 and below lose precision; above it all is right.
    samples = [Sample(t, True, 0.8 if t == 0.9 else 0.2) for t in (0.95, 0.9, 0.85, 0.75)]
    low = calibrate(samples, target_precision=0.9, oos_share=0.0, margins=(0.0,),
                    max_oos_answered=1.0)
    high = calibrate(samples, target_precision=0.9, oos_share=0.5, margins=(0.0,),
                     max_oos_answered=1.0)
    assert low.answer == pytest.approx(ANSWER_FLOOR)  # nothing wrong at any threshold
    assert high.answer == pytest.approx(0.81)
    # Without any weight on it, the out-of-scope question still may not be answered (1 in 4
    # samples > 3%): the same threshold.
    assert calibrate(samples, 0.9, 0.0, margins=(0.0,)).answer == pytest.approx(0.81)
    with pytest.raises(ValueError, match="held-out"):
        calibrate([])


FAQ = """entries:
  - id: track
    questions: [where is my order, track my parcel, order status please, has my package shipped]
    answer: Open My orders to see the tracking link.
  - id: refund
    questions: [I want my money back, how do refunds work, refund my purchase, get a refund]
    answer: Refunds reach your card within 5 days of the return arriving.
  - id: password
    questions: [I forgot my password, reset my password, cannot log in, password reset link]
    answer: Use Forgot password on the sign-in page.
"""


@pytest.mark.slow
def test_tune_retriever_writes_a_model_the_index_and_settings_can_use(tmp_path: Path) -> None:
    faq = tmp_path / "faq.yaml"
    faq.write_text(FAQ, encoding="utf-8")
    out = tmp_path / "tuned"
    args = ["tune-retriever", "--faq", str(faq), "--out", str(out), "--max-steps", "2",
            "--batch-size", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / TUNING_FILE).read_text())
    assert record["steps"] == 2 and len(record["losses"]) == 2
    assert record["held_out_phrasings"] == 3 and record["tuned_phrasings"] == 9
    assert set(record["calibration"]) == {"plain", "tuned"}
    assert record["oos_questions"] == "bundled" and record["oos_count"] == 100
    assert record["recommended"]["scoring"] in SCORINGS
    for name in ("plain", "tuned"):  # each embedder's best scoring, as settings (bench/ reads)
        assert set(record["settings"][name]) == {"scoring", "answer_threshold", "answer_margin",
                                                 "suggest_threshold"}
    assert record["settings"]["tuned"]["scoring"] == record["recommended"]["scoring"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    settings = (out / "settings.yaml").read_text()
    assert f'embedder: "{out.resolve()}"' in settings and "answer_threshold:" in settings
    assert "answer_margin:" in settings
    assert "| tuned, nearest |" in result.stdout

    # The tuned folder is an embedder; its name carries the fingerprint, so tuning again
    # into the same folder makes a saved index stale.
    embedder = SentenceTransformerEmbedder(str(out))
    assert embedder.name == f"{out}#{record['fingerprint']}"
    entries = FaqIndex.build([_entry("x", "hello there")], embedder).entries
    FaqIndex.build(entries, embedder).save(tmp_path / "index")
    assert CliRunner().invoke(app, args).exit_code == 0
    with pytest.raises(IndexStaleError, match="built with embedder"):
        FaqIndex.load(tmp_path / "index", entries, SentenceTransformerEmbedder(str(out)))


def test_a_margin_answers_more_when_the_wrong_answers_are_close_calls() -> None:
    # Right answers lead the second entry by 0.2; the wrong ones, at the same scores, by 0.02.
    # By score alone precision is 50% everywhere; with a margin of 0.05 it is 100%.
    samples = [Sample(t, True, 0.1, margin=0.2) for t in (0.9, 0.8, 0.7)] + \
        [Sample(t, False, 0.1, margin=0.02) for t in (0.9, 0.8, 0.7)]
    by_score = calibrate(samples, 0.95, 0.0, margins=(0.0,))
    assert by_score.answer == pytest.approx(0.91)  # above every score: nothing answered
    assert by_score.answered_right == 0.0
    with_margin = calibrate(samples, 0.95, 0.0, margins=(0.0, 0.05, 0.1))
    assert with_margin.margin == pytest.approx(0.05)  # the smallest margin that does it
    assert with_margin.answered_right == pytest.approx(0.5)
    assert with_margin.answer_precision == pytest.approx(1.0)


def test_real_out_of_scope_questions_count_half_of_the_out_of_scope_traffic() -> None:
    # The held-out phrasings alone allow answering down to the floor; one of two real out-of-scope
    # questions scores 0.85 with a clear lead: at 50% of traffic, half of it, answering at
    # 0.85 or below is wrong 12.5% of the time at best: the threshold goes above it.
    samples = [Sample(t, True, 0.1, margin=0.3) for t in (0.95, 0.9, 0.8, 0.7)]
    alone = calibrate(samples, 0.95, 0.5, margins=(0.0,))
    assert alone.answer == pytest.approx(ANSWER_FLOOR)
    real = calibrate(samples, 0.95, 0.5, margins=(0.0,), outside=[(0.85, 0.4), (0.3, 0.1)])
    assert real.answer == pytest.approx(0.86)
    assert real.oos_answered == 0.0 and real.answered_right == pytest.approx(0.5)


def test_out_of_scope_questions_bundled_and_from_a_file(tmp_path: Path) -> None:
    bundled = read_questions()
    assert len(bundled) == 100 and not any(q.startswith("#") for q in bundled)
    assert "how is glue made" in bundled
    mine = tmp_path / "oos.txt"
    mine.write_text("# ours\nwhat is the meaning of life\n\n  who won the match  \n")
    assert read_questions(mine) == ["what is the meaning of life", "who won the match"]
    with pytest.raises(RetrievalError, match="cannot read out-of-scope questions"):
        read_questions(tmp_path / "missing.txt")


def test_tune_retriever_refuses_a_faq_without_pairs(tmp_path: Path) -> None:
    faq = tmp_path / "faq.yaml"
    faq.write_text("entries:\n  - id: one\n    questions: [only this]\n    answer: Sure.\n",
                   encoding="utf-8")
    result = CliRunner().invoke(app, ["tune-retriever", "--faq", str(faq), "--out",
                                      str(tmp_path / "t")])
    assert result.exit_code == 1
    assert "at least 2 entries with 2 or more phrasings" in result.output
    assert "Traceback" not in result.output
