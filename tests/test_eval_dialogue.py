"""`eval dialogue`: the outcome rules on hand-made replies, a real manager, and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.dialogue import DialogueManager
from bot.eval_dialogue import (
    DialogueRow,
    classify,
    dialogue_markdown,
    evaluate_dialogue,
    row_for,
    settings_used,
    summarise,
)
from bot.generation.transformers_generator import TransformersGenerator
from bot.settings import Settings
from bot.storage import ConversationStore
from bot.types import BotReply, Candidate, Decision, Source
from retrieval.index import FaqIndex
from retrieval.offline.queries import LabelledQuery
from tests.conftest import SAMPLE_FAQ
from tests.dialogue_support import FAITHFUL, NEAR_MISS, into_generated_band
from tests.fakes import ScriptedGenerator

pytestmark = pytest.mark.timeout(120)


runner = CliRunner()


def reply(decision: Decision, sources: tuple[str, ...] = (), suggestions: tuple[str, ...] = (),
          **meta: object) -> BotReply:
    return BotReply("text", decision, "c", sources=[Source(i, i, 0.8) for i in sources],
                    suggestions=[Source(i, i, 0.5) for i in suggestions], meta=dict(meta))


@pytest.mark.parametrize(("made", "gold", "outcome"), [
    (reply(Decision.ANSWER, ("A",)), "A", "answered_right"),
    (reply(Decision.ANSWER, ("B",)), "A", "answered_wrong"),
    (reply(Decision.ANSWER), "A", "answered_wrong"),  # the identity reply: no source at all
    (reply(Decision.GENERATE, ("B", "A")), "A", "answered_right"),  # grounded on A among others
    (reply(Decision.GENERATE, ("B",)), "A", "answered_wrong"),
    (reply(Decision.CLARIFY, suggestions=("B", "A")), "A", "suggested_right"),
    (reply(Decision.CLARIFY, suggestions=("B", "C")), "A", "suggested_wrong"),
    *[(reply(d), "A", "fallback") for d in (Decision.FALLBACK, Decision.HANDOFF,
                                           Decision.INVALID, Decision.WAITING, Decision.ERROR,
                                           Decision.BLOCKED)],
    (reply(Decision.ANSWER, ("A",)), None, "answered"),
    (reply(Decision.GENERATE, ("A",)), None, "answered"),
    (reply(Decision.ANSWER), None, "answered"),  # answered at all, from an entry or not
    (reply(Decision.CLARIFY, suggestions=("A",)), None, "suggested"),
    (reply(Decision.FALLBACK), None, "fallback"),
    (reply(Decision.BLOCKED), None, "fallback"),
])
def test_outcome_rules(made: BotReply, gold: str | None, outcome: str) -> None:
    assert classify(made, gold) == outcome


def test_a_row_keeps_sources_suggestions_grounding_and_errors() -> None:
    made = BotReply("Did you mean", Decision.CLARIFY, "c", suggestions=[Source("A", "a?", 0.6)],
                    confidence=0.61234, candidates=[Candidate("x", 0.2), Candidate("y", 0.1)],
                    meta={"generated": "noise", "rejected": "grounding: 0.10 < 0.72",
                          "retrieved": [{"id": "A", "score": 0.6}]})
    row = row_for(LabelledQuery("q", "A", 3), made, 12.345)
    assert (row.outcome, row.suggestions, row.sources, row.line) == (
        "suggested_right", ["A"], [], 3)
    assert row.grounding == {"generated": "noise", "rejected": "grounding: 0.10 < 0.72",
                             "candidate_scores": [0.2, 0.1]}
    assert (row.confidence, row.latency_ms, row.error) == (0.6123, 12.35, None)
    answered = row_for(LabelledQuery("q", "A"), reply(Decision.ANSWER, ("A",)), 1.0)
    assert answered.grounding is None and answered.sources == [{"id": "A", "score": 0.8}]
    failed = row_for(LabelledQuery("q", None), reply(Decision.ERROR, error="boom"), 1.0)
    assert (failed.outcome, failed.error) == ("fallback", "boom")
    canned = row_for(LabelledQuery("are you a bot", None), reply(Decision.ANSWER,
                                                                  intent="identity"), 1.0)
    assert (canned.outcome, canned.intent, canned.sources) == ("answered", "identity", [])


def row(faq_id: str | None, outcome: str, decision: str, latency: float = 10.0,
        grounding: dict[str, object] | None = None) -> DialogueRow:
    return DialogueRow("q", faq_id, decision, "t", [], [], 0.5, grounding, outcome, latency)


# Hand-made rows whose figures are worked out in the test.
ROWS = [
    row("A", "answered_right", "answer", 10.0),
    row("A", "answered_right", "generate", 30.0, {"checks": []}),
    row("B", "answered_wrong", "answer", 20.0),
    row("C", "suggested_right", "clarify", 40.0, {"rejected": "grounding: low"}),
    row("D", "suggested_wrong", "clarify", 50.0),
    row("E", "fallback", "handoff", 60.0),
    row(None, "answered", "answer", 70.0),
    row(None, "suggested", "clarify", 80.0),
    row(None, "fallback", "fallback", 90.0),
    row(None, "fallback", "blocked", 100.0),
]


def test_summary_by_hand() -> None:
    report = summarise(ROWS)
    assert (report["n_queries"], report["n_in_scope"], report["n_out_of_scope"]) == (10, 6, 4)
    assert report["mix"] == {
        "in_scope": {"answered_right": 2, "answered_wrong": 1, "suggested_right": 1,
                     "suggested_wrong": 1, "fallback": 1},
        "out_of_scope": {"answered": 1, "suggested": 1, "fallback": 2}}
    assert report["shares"]["in_scope"]["answered_right"] == round(2 / 6, 4)
    assert report["shares"]["out_of_scope"]["fallback"] == 0.5
    # Direct answers: 2 right, 1 wrong, 1 out of scope answered -> 2 / 4.
    assert report["answer_precision"] == 0.5
    assert report["decisions"] == {"answer": 3, "blocked": 1, "clarify": 3, "fallback": 1,
                                   "generate": 1, "handoff": 1}
    assert report["generation"] == {"attempted": 2, "released": 1, "rejected": 1, "failed": 0}
    assert (report["p50_ms"], report["p95_ms"]) == (55.0, 95.5)
    markdown = dialogue_markdown({**report, "settings": {"model": "m", "adapter": "lora"}})
    assert "| in scope | 2 (33.3%) | 1 (16.7%) |" in markdown
    assert "| out of scope | - | 1 (25.0%) |" in markdown and "adapter lora" in markdown


def test_summary_of_nothing_and_of_no_direct_answer() -> None:
    empty = summarise([])
    assert (empty["n_queries"], empty["answer_precision"], empty["p50_ms"]) == (0, None, 0.0)
    assert empty["shares"]["in_scope"]["fallback"] is None
    assert "| in scope | - |" in dialogue_markdown(empty)
    only_fallback = summarise([row("A", "fallback", "fallback")])
    assert only_fallback["answer_precision"] is None
    assert only_fallback["shares"]["in_scope"]["fallback"] == 1.0


def generating(index: FaqIndex, store: ConversationStore, generator: object) -> DialogueManager:
    """A manager whose thresholds put NEAR_MISS in the generated band (how-to-return on top)."""
    settings = into_generated_band(Settings(), index)
    settings.model.generation.max_new_tokens = 40
    return DialogueManager(index, store, settings.persona, settings.retrieval, settings.dialogue,
                           settings.model.generation, lambda: generator)  # type: ignore[arg-type]


async def test_generated_answers_count_by_the_entries_they_were_grounded_on(
        sample_index: FaqIndex, store: ConversationStore) -> None:
    dm = generating(sample_index, store, ScriptedGenerator(FAITHFUL))
    queries = [LabelledQuery(NEAR_MISS, "how-to-return"), LabelledQuery(NEAR_MISS, "return-policy"),
               LabelledQuery("How can I track my order?", "track-order")]
    seen: list[DialogueRow] = []
    evaluation = await evaluate_dialogue(dm, queries, {"middle": "generate"}, seen.append,
                                         {"queries": "q.csv"})
    dm.close()
    assert seen == evaluation.rows
    # prompt_entries is 1: the answer is grounded on how-to-return alone.
    assert [(r.decision, r.outcome) for r in evaluation.rows] == [
        ("generate", "answered_right"), ("generate", "answered_wrong"),
        ("answer", "answered_right")]
    assert evaluation.rows[0].sources[0]["id"] == "how-to-return"
    assert evaluation.rows[0].grounding is not None
    assert evaluation.rows[0].grounding["checks"][0]["supported"] is True
    report = evaluation.report
    assert report["answer_precision"] == round(2 / 3, 4) and report["generator_loaded"]
    assert report["generation"]["released"] == 2 and report["queries"] == "q.csv"
    # Each query is a conversation of its own: one customer and one bot message each.
    assert (await store.counts()) == {"conversations": 3, "messages": 6}


async def test_a_tiny_model_rejected_by_grounding_is_a_did_you_mean(
        sample_index: FaqIndex, store: ConversationStore, tiny_model_dir: Path) -> None:
    dm = generating(sample_index, store, TransformersGenerator.load(str(tiny_model_dir),
                                                                   device="cpu"))
    evaluation = await evaluate_dialogue(dm, [LabelledQuery(NEAR_MISS, "how-to-return")])
    dm.close()
    (only,) = evaluation.rows
    # The random model writes noise: the grounding check refuses it and "Did you mean" follows.
    assert (only.decision, only.outcome) == ("clarify", "suggested_right")
    assert only.grounding is not None and only.grounding["rejected"].startswith("grounding")
    assert evaluation.report["generation"] == {"attempted": 1, "released": 0, "rejected": 1,
                                               "failed": 0}


def test_settings_used_name_thresholds_band_and_model() -> None:
    settings = Settings()
    settings.model.adapter = Path("/adapters/v1")
    used = settings_used(settings)
    assert (used["answer_threshold"], used["suggest_threshold"], used["middle"]) == (
        0.7, 0.45, "clarify")
    assert used["adapter"] == "/adapters/v1" and "SmolLM2" in used["model"]


QUERIES = ("query,faq_id\n"
           "How can I track my order?,track-order\n"  # an FAQ phrasing: answered right
           "I changed my mind and don't want the order anymore,cancel-order\n"  # 0.675: offered
           "how to cancle an order,cancel-order\n"  # change-order scores 0.72: answered wrong
           "what's the weather on mars,\n")  # nothing near: fallback


def clarifying_config(tmp_path: Path) -> Path:
    """The sample FAQ, default thresholds, and the middle band as 'Did you mean': no model.
    Nearest-phrasing scoring, which the queries' comments give the scores of."""
    config = tmp_path / "supportbot.yaml"
    config.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
                      "  scoring: nearest\n"
                      "dialogue:\n  middle: clarify\n"
                      "storage:\n  database_url: sqlite+aiosqlite:///bot.db\n", encoding="utf-8")
    return config


def test_cli_eval_dialogue_json_and_rows(tmp_path: Path) -> None:
    config = clarifying_config(tmp_path)
    queries = tmp_path / "q.csv"
    queries.write_text(QUERIES, encoding="utf-8")
    out = tmp_path / "report"
    result = runner.invoke(app, ["--config", str(config), "eval", "dialogue", "--queries",
                                 str(queries), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is one JSON object and nothing else
    assert report["mix"] == {
        "in_scope": {"answered_right": 1, "answered_wrong": 1, "suggested_right": 1,
                     "suggested_wrong": 0, "fallback": 0},
        "out_of_scope": {"answered": 0, "suggested": 0, "fallback": 1}}
    assert report["answer_precision"] == 0.5 and report["n_queries"] == 4
    assert not report["generator_loaded"] and report["settings"]["middle"] == "clarify"
    rows = [json.loads(line) for line in
            (out / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["outcome"] for r in rows] == ["answered_right", "suggested_right",
                                            "answered_wrong", "fallback"]
    assert rows[1]["suggestions"][:2] == ["how-to-return", "cancel-order"]
    assert {p.name for p in out.iterdir()} == {"rows.jsonl", "report.json", "report.md"}
    assert "| in scope | 1 (33.3%)" in (out / "report.md").read_text(encoding="utf-8")
    assert not (tmp_path / "bot.db").exists(), "the eval's conversations stay out of it"


def test_cli_another_faq_is_indexed_in_memory(tmp_path: Path) -> None:
    config = clarifying_config(tmp_path)
    other = tmp_path / "other-faq.yaml"
    shutil.copy(SAMPLE_FAQ, other)
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"query": "How can I track my order?", "faq_id": "track-order"}\n'
                       '{"query": "what is the capital of peru", "faq_id": null}\n'
                       '{"query": "cancel order", "faq_id": "cancel-order"}\n', encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config), "eval", "dialogue", "--queries",
                                 str(queries), "--faq", str(other), "--limit", "2"])
    assert result.exit_code == 0, result.stderr
    assert "# Dialogue evaluation" in result.stdout and "2 queries (1 in scope" in result.stdout
    assert not (tmp_path / "index").exists() and not (tmp_path / "bot.db").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ("query,faq_id\nwhere is my parcel,parcel\n",
     "q.csv, line 2: field 'faq_id': no FAQ entry has the id 'parcel'"),
    ("query,faq_id\nwhere is my parcel,track-order\n,track-order\n",
     "q.csv, line 3: field 'query': missing or empty query"),
])
def test_cli_bad_query_file_names_file_and_line(tmp_path: Path, text: str,
                                                expected: str) -> None:
    queries = tmp_path / "q.csv"
    queries.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(clarifying_config(tmp_path)), "eval",
                                 "dialogue", "--queries", str(queries), "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert f"error: {tmp_path / expected}" in " ".join(result.stderr.split())
    missing = runner.invoke(app, ["--config", str(clarifying_config(tmp_path)), "eval",
                                  "dialogue", "--queries", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "queries file not found" in missing.stderr
