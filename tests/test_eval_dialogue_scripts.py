"""`eval dialogue --scripts`: reading script files (and their errors), checking replies, the
closed-port "API down" book, the summary, the single-query rule for actions, and the bundled
scripts through the whole bot against the demo shop (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.actions.book import SAMPLE_FAQ, ActionBook
from bot.actions.caller import ActionCaller
from bot.actions.spec import load_actions
from bot.cli import app
from bot.eval_dialogue import classify
from bot.eval_script_run import check, down_book, row_for, scripts_markdown, summarise
from bot.eval_scripts import Expect, Script, ScriptFileError, ScriptTurn, read_scripts
from bot.types import ActionRecord, BotReply, Decision, Source

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "dialogue_scripts.yaml"
ACTIONS = ("order-status", "return-status")
runner = CliRunner()

BROKEN = """\
scripts:
  - name: fine
    turns:
      - say: where is my order
        decision: ask
  - name: broken
    api: sideways
    turns:
      - say: where is my order
        decision: asked
        action: track-parcel
      - decision: action
        contain: shipped
  - turns: []
"""


def reply(decision: Decision, text: str = "Order KO-1 has shipped.", action: str | None = None,
          outcome: str | None = None, sources: tuple[str, ...] = ()) -> BotReply:
    meta = {}
    if action is not None:
        record = ActionRecord(id=action, slots={})
        if outcome is not None:
            record["call"] = {"status": 200, "outcome": outcome, "ms": 5.0}
        meta["action"] = record
    return BotReply(text, decision, "c", sources=[Source(i, i, 1.0) for i in sources],
                    meta=dict(meta))


def test_the_bundled_scripts_read_and_cover_the_cases() -> None:
    scripts = read_scripts(BUNDLED, action_ids=ACTIONS)
    assert len(scripts) >= 10 and len({s.name for s in scripts}) == len(scripts)
    assert {s.api for s in scripts} >= {"down", "slow", None}
    says = " ".join(t.say for s in scripts for t in s.turns)
    assert "KO-000504" in says and "yes" in says and "never mind" in says
    decisions = {t.expect.decision for s in scripts for t in s.turns}
    assert decisions >= {"ask", "action", "fallback", "handoff", "answer"}


def test_a_broken_script_file_names_file_line_and_field_of_every_problem(tmp_path: Path
                                                                         ) -> None:
    path = tmp_path / "scripts.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(ScriptFileError) as caught:
        read_scripts(path, {"order-status", "track-order"}, ACTIONS)
    message = str(caught.value)
    assert f"{path}, line 7: field 'scripts[2].api': 'sideways' is not an API mode" in message
    assert "line 10: field 'scripts[2].turns[1].decision': 'asked' is not a decision" in message
    assert "line 11: field 'scripts[2].turns[1].action': 'track-parcel' is not a declared " \
           "action (expected one of: order-status, return-status)" in message
    assert "line 12: field 'scripts[2].turns[2].say': missing or empty" in message
    assert "line 13: field 'scripts[2].turns[2].contain': unknown field 'contain'" in message
    assert "line 14: field 'scripts[3].name': missing" in message
    assert "line 14: field 'scripts[3].turns': must be a non-empty list" in message

    path.write_text("scripts:\n  - name: x\n    turns: [say: a\n", encoding="utf-8")
    with pytest.raises(ScriptFileError, match=r"line \d+: invalid YAML"):
        read_scripts(path)
    path.write_text("- say: hi\n", encoding="utf-8")
    with pytest.raises(ScriptFileError, match="expected a mapping with a list 'scripts'"):
        read_scripts(path)


def test_the_cli_reports_a_broken_script_file_without_a_traceback(config_file: Path,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "scripts.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    result = runner.invoke(app, ["--config", str(config_file), "eval", "dialogue", "--scripts",
                                 str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "line 10: field 'scripts[2].turns[1].decision'" in " ".join(result.output.split())
    neither = runner.invoke(app, ["--config", str(config_file), "eval", "dialogue"])
    assert neither.exit_code == 2 and "either --queries or --scripts" in neither.output


def test_check_names_every_mismatch() -> None:
    made = reply(Decision.ACTION, action="order-status", outcome="ok", sources=("order-status",))
    assert check(made, Expect("action", "order-status", "order-status", "ok",
                              ("has SHIPPED", "ko-1"), ("cancelled",))) == []
    assert check(made, Expect("fallback", "return-status", "track-order", "timeout",
                              ("refund",), ("shipped",))) == [
        "decision: expected fallback, got action",
        "action: expected return-status, got order-status",
        "source: expected track-order, got order-status",
        "call: expected timeout, got ok",
        "contains: 'refund' not in the reply",
        "not_contains: 'shipped' in the reply"]
    assert check(reply(Decision.ANSWER), Expect(action="order-status", call="ok")) == [
        "action: expected order-status, got none", "call: expected ok, got no call"]


def test_the_summary_counts_calls_latency_and_the_first_failing_turn() -> None:
    turns = (ScriptTurn("where is my order", Expect("ask"), 3),
             ScriptTurn("KO-123456", Expect("action", contains=("delivered",)), 5),
             ScriptTurn("thanks, how do I reset my password", Expect("answer"), 7))
    script = Script("asked", turns, None, 2)
    rows = [row_for(script, 1, reply(Decision.ASK, "Which order?", "order-status"), 100.0),
            row_for(script, 2, reply(Decision.ACTION, action="order-status", outcome="ok"),
                    300.0),
            row_for(script, 3, reply(Decision.ANSWER, "Click", sources=("reset-password",)),
                    50.0)]
    ok = Script("ok", turns[:1], "slow", 9)
    rows.append(row_for(ok, 1, reply(Decision.ASK, "Which order?", "order-status"), 90.0))
    report = summarise([script, ok], rows)
    assert (report["n_scripts"], report["scripts_passed"]) == (2, 1)
    assert (report["n_turns"], report["turns_passed"]) == (4, 3)
    failure = report["scripts"][0]["first_failure"]
    assert (failure["turn"], failure["line"]) == (2, 5)
    assert failure["why"] == "contains: 'delivered' not in the reply"
    assert report["calls"] == {"total": 1, "per_conversation_mean": 0.5,
                               "per_conversation_max": 1, "outcomes": {"ok": 1}}
    latency = report["latency"]
    assert (latency["action_turns"], latency["action_p50_ms"], latency["faq_turns"],
            latency["faq_p50_ms"]) == (1, 300.0, 1, 50.0)
    shown = scripts_markdown(report)
    assert "1 of 2 scripts passed" in shown and "FAIL at turn 2 (line 5" in shown


@pytest.mark.parametrize(("decision", "source", "gold", "outcome"), [
    (Decision.ASK, "order-status", "order-status", "answered_right"),
    (Decision.ACTION, "order-status", "order-status", "answered_right"),
    (Decision.ASK, "return-status", "order-status", "answered_wrong"),
    (Decision.ACTION, "return-status", "order-status", "answered_wrong"),
    (Decision.ASK, "order-status", "track-order", "answered_wrong"),
    (Decision.ACTION, "order-status", None, "answered"),
    (Decision.FALLBACK, "order-status", "order-status", "fallback"),  # the call failed
])
def test_an_action_started_counts_as_an_answer_in_single_query_mode(
        decision: Decision, source: str, gold: str | None, outcome: str) -> None:
    assert classify(reply(decision, sources=(source,)), gold) == outcome


async def test_the_down_book_calls_a_closed_loopback_port() -> None:
    actions = {a.id: a for a in load_actions(SAMPLE_FAQ)}
    book = ActionBook(actions, ActionCaller(["shop.example.com"]))
    down, port = down_book(book, 5.0)
    try:
        assert down.actions["order-status"].call.url == \
            f"http://127.0.0.1:{port}/orders/{{order_id}}"
        result = await down.caller.call(down.actions["order-status"], {"order_id": "KO-123456"})
        assert (result.ok, result.error, result.status) == (False, "connect", None)
        assert result.duration_ms < 3000
    finally:
        await down.aclose()
        await book.aclose()


WRONG_ON_PURPOSE = """
  - name: wrong on purpose
    turns:
      - say: Where is my order?
        decision: ask
      - say: KO-123456
        decision: action
        contains: was delivered
"""


@pytest.mark.slow
def test_the_bundled_scripts_pass_on_the_real_bot_and_a_wrong_one_fails(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled scripts against the demo shop, plus one whose expectation is wrong (KO-123456
    has shipped, not been delivered): it must fail at its second turn."""
    monkeypatch.delenv("SHOP_API_URL", raising=False)  # the demo shop starts
    scripts = tmp_path / "scripts.yaml"
    scripts.write_text(BUNDLED.read_text(encoding="utf-8") + WRONG_ON_PURPOSE, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["--config", str(config_file), "eval", "dialogue", "--scripts",
                                 str(scripts), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    by_name = {s["name"]: s for s in report["scripts"]}
    wrong = by_name.pop("wrong on purpose")
    assert not wrong["passed"] and wrong["first_failure"]["turn"] == 2
    assert "'was delivered' not in the reply" in wrong["first_failure"]["why"]
    failed = {name: s["first_failure"] for name, s in by_name.items() if not s["passed"]}
    assert failed == {}
    assert report["scripts_passed"] == report["n_scripts"] - 1
    calls = report["calls"]
    assert calls["outcomes"]["connect"] == 2 and calls["outcomes"]["timeout"] == 1
    assert calls["per_conversation_max"] == 2 and 0 < calls["per_conversation_mean"] < 2
    latency = report["latency"]
    assert latency["action_turns"] >= 6 and latency["action_p95_ms"] >= latency["action_p50_ms"]
    assert latency["faq_turns"] >= 1 and latency["faq_p50_ms"] > 0
    rows = [json.loads(line) for line in (out / "turns.jsonl").read_text().splitlines()]
    slow = next(r for r in rows if "KO-000504" in r["say"])
    assert slow["call"]["outcome"] == "timeout" and slow["latency_ms"] < 9000
