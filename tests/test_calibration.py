"""Answer thresholds calibrated on the FAQ's own phrasings: bounds, explicit settings winning,
kept with the saved index, redone after an FAQ addition, and used by the dialogue."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import retrieval.calibration as calibration
from bot.channels.web import create_app
from bot.cli import app as cli_app
from bot.dialogue.replies import band, thresholds
from bot.operators.faq import FaqLearning
from bot.runtime import configure_index, open_index
from bot.settings import Settings, load_settings
from bot.storage import ConversationStore
from bot.types import Decision, UserMessage
from retrieval.bands import Band
from retrieval.calibration import ANSWER_FLOOR, Calibration, cross_validate, ensure_calibrated
from retrieval.corpus import FaqEntry
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import META_FILE, FaqIndex
from tests.dialogue_support import manager
from tests.web_support import web_settings

# Paraphrases of the sample FAQ (none is one of its phrasings) that score in the low 0.70s.
QUESTIONS = ("take me off your mailing list", "how can I get in touch with a staff member",
             "are your jackets true to size or should I go up one",
             "can I reserve online and collect from the Lyon shop")


@pytest.fixture(scope="module")
def calibrated(sample_index_shared: FaqIndex) -> tuple[FaqIndex, Calibration]:
    """The sample FAQ scored as served by default (classifier, no out-of-scope class), and its
    calibration at the default target."""
    index = sample_index_shared.copy()
    index.scoring = "classifier"
    found = cross_validate(index, 0.97)
    assert found is not None
    return index, found


@pytest.fixture
def classifier_index(calibrated: tuple[FaqIndex, Calibration]) -> FaqIndex:
    """A copy of the calibrated index that a test may change."""
    return calibrated[0].copy()


def test_calibration_is_within_the_floor_and_one_and_reaches_the_target(
        calibrated: tuple[FaqIndex, Calibration], classifier_index: FaqIndex,
        sample_entries: list[FaqEntry]) -> None:
    found = calibrated[1]
    assert ANSWER_FLOOR <= found.answer <= 1.0 and 0.0 <= found.margin <= 0.2
    assert found.precision is None or found.precision >= 0.97  # on its own folds
    # every phrasing of an entry with two or more is held out exactly once
    assert found.samples == sum(len(e.questions) for e in sample_entries
                                if len(e.questions) > 1)
    stricter = cross_validate(classifier_index, 0.995)
    assert stricter is not None and stricter.answer >= found.answer


def test_entries_with_one_phrasing_are_never_held_out(minilm: SentenceTransformerEmbedder
                                                      ) -> None:
    single = [FaqEntry("a", ("how do I track my order",), "Tracking."),
              FaqEntry("b", ("how do I return an item",), "Returns.")]
    assert cross_validate(FaqIndex.build(single, minilm), 0.97) is None
    mixed = [*single, FaqEntry("c", ("can I pay by card", "do you take credit cards",
                                     "which cards do you accept"), "Cards.")]
    found = cross_validate(FaqIndex.build(mixed, minilm), 0.97)
    assert found is not None and found.samples == 3


def test_an_explicit_setting_wins_over_the_calibration(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calibrated = Calibration(0.83, 0.05, 0.98, 0.5, 100, "k")
    default = thresholds(Settings().retrieval, calibrated)
    assert (default.answer_threshold, default.answer_margin) == (0.83, 0.05)
    assert default.source["answer_threshold"] == "calibrated"
    config = tmp_path / "supportbot.yaml"
    config.write_text("retrieval:\n  answer_threshold: 0.7\n", encoding="utf-8")
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__ANSWER_MARGIN", "0.0")
    pinned = thresholds(load_settings(config).retrieval, calibrated)
    assert (pinned.answer_threshold, pinned.answer_margin) == (0.7, 0.0)
    assert pinned.source == {"answer_threshold": "set", "answer_margin": "set",
                             "suggest_threshold": "default"}
    assert thresholds(Settings().retrieval, None).answer_threshold == 0.7  # nothing calibrated


def _settings(tmp_path: Path, **retrieval: object) -> Settings:
    settings = Settings()
    settings.retrieval.faq_path = Path("data/faq.yaml")
    settings.retrieval.index_dir = tmp_path / "index"
    for key, value in retrieval.items():
        setattr(settings.retrieval, key, value)
    return settings


def test_the_calibration_is_saved_and_reopened_without_recalibrating(
        tmp_path: Path, minilm: SentenceTransformerEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(tmp_path)
    first, _ = open_index(settings, minilm)
    assert first.calibration is not None
    saved = json.loads((settings.retrieval.index_dir / META_FILE).read_text())["calibration"]
    assert saved["answer"] == first.calibration.answer and saved["key"] == first.calibration.key
    calls: list[float] = []
    real = calibration.cross_validate

    def counting(index: FaqIndex, target: float, key: str = "") -> Calibration | None:
        calls.append(target)
        return real(index, target, key)

    monkeypatch.setattr(calibration, "cross_validate", counting)
    again, why = open_index(settings, minilm)
    assert why is None and calls == [] and again.calibration == first.calibration
    # a changed setting recalibrates (and saves it)
    stricter, _ = open_index(_settings(tmp_path, target_precision=0.99), minilm)
    assert calls == [0.99] and stricter.calibration is not None
    assert stricter.calibration.key != first.calibration.key
    saved = json.loads((settings.retrieval.index_dir / META_FILE).read_text())["calibration"]
    assert saved["target"] == 0.99


def test_an_faq_addition_recalibrates(tmp_path: Path, sample_index: FaqIndex) -> None:
    settings = _settings(tmp_path)
    settings.storage.database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    index = configure_index(sample_index.copy(), settings)
    index.outside = ()  # a faster head: the out-of-scope class is not what is tested
    assert ensure_calibrated(index) and index.calibration is not None
    before = index.calibration

    async def scenario() -> None:
        store = ConversationStore(settings.storage.database_url)
        await store.init()
        try:
            learning = FaqLearning(store, index, sync_seconds=0.0)
            await learning.add("anna", "my plastic rectangle got stuck in the pay thingy",
                               entry_id="payment-failed")
        finally:
            await store.close()

    asyncio.run(scenario())
    assert index.calibration is not None and index.calibration.key != before.key
    assert index.calibration.samples == before.samples + 1
    assert not ensure_calibrated(index)  # up to date: nothing to redo


def test_the_dialogue_uses_the_calibrated_threshold(
        tmp_path: Path, calibrated: tuple[FaqIndex, Calibration],
        classifier_index: FaqIndex) -> None:
    found = calibrated[1]
    assert found.answer > 0.70
    hits = classifier_index.search_many(list(QUESTIONS))
    between = [(q, h) for q, h in zip(QUESTIONS, hits, strict=True)
               if 0.70 <= h[0].score < found.answer
               and h[0].score - h[1].score >= found.margin]
    assert between, "a question should score between 0.70 and the calibrated threshold"
    question, ranked = between[0]
    settings = Settings()
    assert band(settings.retrieval, ranked, None).band is Band.ANSWER  # the old default
    assert band(settings.retrieval, ranked, found).band is Band.SUGGEST
    classifier_index.calibration = found

    async def reply(dm_settings: dict[str, object]) -> Decision:
        store = ConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await store.init()
        try:
            dm = manager(classifier_index, store, **dm_settings)
            got = await dm.handle(UserMessage(question, f"c{len(dm_settings)}"))
            return got.decision
        finally:
            await store.close()

    assert asyncio.run(reply({})) is Decision.CLARIFY  # calibrated: "Did you mean"
    # set explicitly, 0.70 wins again and the same question is answered
    assert asyncio.run(reply({"answer_threshold": 0.70, "answer_margin": 0.0})) \
        is Decision.ANSWER


def test_a_calibration_read_back_must_be_whole() -> None:
    good = Calibration(0.8, 0.0, None, 0.4, 10, "k", 0.97, "classifier")
    assert Calibration.from_dict(good.to_dict()) == good
    assert Calibration.from_dict({"answer": 2.0}) is None
    assert Calibration.from_dict(replace(good, answer=1.5).to_dict()) is None
    assert Calibration.from_dict("nonsense") is None


def test_readyz_and_config_show_give_the_thresholds_in_use(
        tmp_path: Path, classifier_index: FaqIndex) -> None:
    classifier_index.calibration = Calibration(0.81, 0.02, 0.98, 0.5, 100, "k", 0.97,
                                               "classifier")
    settings = web_settings(tmp_path)
    settings.retrieval.suggest_threshold = 0.5
    with TestClient(create_app(settings, index=classifier_index),
                    base_url="https://testserver") as client:
        ready = client.get("/readyz").json()
    assert ready["thresholds"] == {
        "answer_threshold": 0.81, "answer_margin": 0.02, "suggest_threshold": 0.5,
        "source": {"answer_threshold": "calibrated", "answer_margin": "calibrated",
                   "suggest_threshold": "set"}}
    assert str(tmp_path) not in json.dumps(ready)  # no paths
    config = tmp_path / "c.yaml"
    config.write_text(f"retrieval:\n  index_dir: {tmp_path / 'none'}\n  answer_threshold: 0.75\n",
                      encoding="utf-8")
    shown = CliRunner().invoke(cli_app, ["--config", str(config), "config", "show"])
    assert shown.exit_code == 0, shown.output
    assert "# thresholds in use: answer_threshold 0.75 (set), answer_margin 0.00 (default)" \
        in shown.stdout and "no saved index" in shown.stdout
