"""`supportbot eval dialogue --scripts` (offline tool): dialogue scripts (bot/eval_scripts.py)
through the whole dialogue manager, each as a new conversation, their expectations checked.

A script passes when every turn's reply shows what the turn expects: its decision, the action
in its meta (`meta["action"]["id"]`), its first source, its call's outcome
(`meta["action"]["call"]["outcome"]`), each `contains` text and none of the `not_contains`
texts (both ignoring case). Every turn runs even after one fails (the conversation goes on as
the bot left it); the script's result names its first failing turn and why.

`api: down` scripts run against a copy of the actions whose URLs start at a loopback port that
is bound but never listens (a real "connection refused", the same call path otherwise), on a
caller of their own (so its circuit breaker does not carry over); header variables get a
placeholder there, so no real secret is sent.

The report: scripts passed, turns passed, API calls per conversation (turns whose reply
carries `meta["action"]["call"]`), the outcomes of those calls, the latency of action turns
(decision `action`: answered from a call, the call included) p50 / p95, and of FAQ-answer turns
(decision `answer` with a source and no action) p50 for comparison; whole turns, wall-clock,
one turn at a time.
"""

from __future__ import annotations

import re
import socket
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.actions.book import ActionBook
from bot.actions.caller import ActionCaller
from bot.actions.templates import names
from bot.eval_dialogue import write_rows_report
from bot.eval_scripts import Expect, Script
from bot.types import BotReply, Decision, UserMessage
from retrieval.offline.evaluate import percentile

if TYPE_CHECKING:
    from bot.dialogue import DialogueManager

# Where an action's URL starts: a `${VARIABLE}` or a scheme and host; `down` replaces it.
_BASE = re.compile(r"^(\$\{[A-Za-z_][A-Za-z0-9_]*\}|[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*)")


@dataclass(frozen=True)
class TurnRow:
    """One scripted turn: what was said, what the bot did, and what did not match."""

    script: str
    turn: int
    line: int | None
    say: str
    decision: str
    text: str
    action: str | None  # the action in the reply's meta
    source: str | None  # the reply's first source
    call: dict[str, Any] | None  # {status, outcome, ms} of the reply's API call
    latency_ms: float
    failures: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def check(reply: BotReply, expect: Expect) -> list[str]:
    """What in the reply does not match the expectation (empty: it matches)."""
    record = reply.meta.get("action") if isinstance(reply.meta.get("action"), dict) else None
    action = record.get("id") if record else None
    call = record.get("call") if record else None
    outcome = call.get("outcome") if isinstance(call, dict) else None
    first = reply.sources[0].id if reply.sources else None
    failures = []
    if expect.decision is not None and reply.decision.value != expect.decision:
        failures.append(f"decision: expected {expect.decision}, got {reply.decision.value}")
    if expect.action is not None and action != expect.action:
        failures.append(f"action: expected {expect.action}, got {action or 'none'}")
    if expect.source is not None and first != expect.source:
        failures.append(f"source: expected {expect.source}, got {first or 'none'}")
    if expect.call is not None and outcome != expect.call:
        failures.append(f"call: expected {expect.call}, got {outcome or 'no call'}")
    said = reply.text.casefold()
    failures += [f"contains: {text!r} not in the reply" for text in expect.contains
                 if text.casefold() not in said]
    failures += [f"not_contains: {text!r} in the reply" for text in expect.not_contains
                 if text.casefold() in said]
    return failures


def row_for(script: Script, number: int, reply: BotReply, latency_ms: float) -> TurnRow:
    """The row of a script's turn `number` (1-based) and the bot's final reply to it."""
    turn = script.turns[number - 1]
    record = reply.meta.get("action") if isinstance(reply.meta.get("action"), dict) else None
    call = record.get("call") if record else None
    return TurnRow(script=script.name, turn=number, line=turn.line, say=turn.say,
                   decision=reply.decision.value, text=reply.text,
                   action=record.get("id") if record else None,
                   source=reply.sources[0].id if reply.sources else None,
                   call=dict(call) if isinstance(call, dict) else None,
                   latency_ms=round(latency_ms, 2), failures=check(reply, turn.expect))


def down_book(book: ActionBook, max_timeout_s: float = 10.0) -> tuple[ActionBook, int]:
    """A copy of `book` whose calls go to a loopback port that is bound but never listens, and
    that port. Its `aclose()` releases the port."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    port = int(held.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    actions = {}
    placeholders: dict[str, str] = {}
    for ident, action in book.actions.items():
        url = _BASE.sub(lambda _: base, action.call.url, count=1)
        for _, value in action.call.headers:
            placeholders.update({name: "down" for name in names(value, "env")})
        placeholders.update({name: base for name in names(url, "env")})
        actions[ident] = replace(action, call=replace(action.call, url=url))
    caller = ActionCaller([f"127.0.0.1:{port}"], max_timeout_s=max_timeout_s,
                          environ=placeholders)
    return ActionBook(actions, caller, stop=held.close), port


@dataclass(frozen=True)
class ScriptsEvaluation:
    """The report (JSON-ready) and one row per scripted turn."""

    report: dict[str, Any]
    rows: list[TurnRow]


async def run_script(manager: DialogueManager, script: Script, conversation: str,
                     channel: str = "eval") -> list[TurnRow]:
    """The script's turns, in order, in one new conversation."""
    original = manager.actions
    down = None
    if script.api == "down" and original is not None:
        down, _ = down_book(original, original.caller.max_timeout_s)
        manager.actions = down
    rows = []
    try:
        for number, turn in enumerate(script.turns, 1):
            message = UserMessage(text=turn.say, conversation_id=conversation,
                                  channel=channel, user_id=conversation)
            started = time.perf_counter()
            reply = await manager.handle(message)
            rows.append(row_for(script, number, reply, (time.perf_counter() - started) * 1000))
    finally:
        manager.actions = original
        if down is not None:
            await down.aclose()
    return rows


async def evaluate_scripts(manager: DialogueManager, scripts: Sequence[Script],
                           sources: dict[str, str] | None = None,
                           progress: Callable[[list[TurnRow]], None] | None = None
                           ) -> ScriptsEvaluation:
    """Run every script as a new conversation, one at a time, and summarise."""
    run = uuid.uuid4().hex[:8]
    rows: list[TurnRow] = []
    for number, script in enumerate(scripts, 1):
        done = await run_script(manager, script, f"script-{run}-{number}")
        rows += done
        if progress is not None:
            progress(done)
    report = {**(sources or {}), **summarise(scripts, rows)}
    return ScriptsEvaluation(report, rows)


def _calls(rows: Sequence[TurnRow]) -> list[TurnRow]:
    return [r for r in rows if r.call is not None]


def summarise(scripts: Sequence[Script], rows: Sequence[TurnRow]) -> dict[str, Any]:
    """Per script pass / fail (first failing turn and why), and the overall figures."""
    results: list[dict[str, Any]] = []
    per_conversation: list[int] = []
    for script in scripts:
        mine = [r for r in rows if r.script == script.name]
        per_conversation.append(len(_calls(mine)))
        failing = next((r for r in mine if r.failures), None)
        results.append({
            "name": script.name, "line": script.line, "api": script.api,
            "passed": failing is None, "turns": len(mine), "calls": per_conversation[-1],
            "first_failure": None if failing is None else {
                "turn": failing.turn, "line": failing.line, "say": failing.say,
                "why": "; ".join(failing.failures), "reply": failing.text}})
    action_ms = [r.latency_ms for r in rows if r.decision == Decision.ACTION.value]
    faq_ms = [r.latency_ms for r in rows
              if r.decision == Decision.ANSWER.value and r.action is None and r.source]
    call_ms = [float(r.call["ms"]) for r in _calls(rows)
               if r.call is not None and r.call.get("outcome") == "ok"]
    outcomes = Counter(str(r.call.get("outcome")) for r in _calls(rows) if r.call is not None)
    return {
        "n_scripts": len(results), "scripts_passed": sum(r["passed"] for r in results),
        "n_turns": len(rows), "turns_passed": sum(not r.failures for r in rows),
        "calls": {"total": len(_calls(rows)),
                  "per_conversation_mean": round(statistics.fmean(per_conversation), 3)
                  if per_conversation else None,
                  "per_conversation_max": max(per_conversation, default=0),
                  "outcomes": dict(sorted(outcomes.items()))},
        "latency": {"action_turns": len(action_ms), "action_p50_ms": percentile(action_ms, 50),
                    "action_p95_ms": percentile(action_ms, 95),
                    "ok_call_p50_ms": percentile(call_ms, 50),
                    "faq_turns": len(faq_ms), "faq_p50_ms": percentile(faq_ms, 50)},
        "decisions": dict(sorted(Counter(r.decision for r in rows).items())),
        "scripts": results}


def write_report(evaluation: ScriptsEvaluation, out_dir: Path) -> list[Path]:
    """turns.jsonl (one row per scripted turn), report.json and report.md."""
    return write_rows_report(out_dir, "turns.jsonl", evaluation.rows, evaluation.report,
                             scripts_markdown(evaluation.report))


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def scripts_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the totals, then one line per script."""
    r, calls, lat = report, report["calls"], report["latency"]
    outcomes = ", ".join(f"{k} {v}" for k, v in calls["outcomes"].items()) or "none"
    lines = [
        f"# Dialogue scripts: {r.get('scripts_file', '')}", "",
        f"FAQ {r.get('faq', '')}; {r['scripts_passed']} of {r['n_scripts']} scripts passed, "
        f"{r['turns_passed']} of {r['n_turns']} turns.", "",
        "| API calls | per conversation (mean / max) | action turn p50 ms | p95 ms | "
        "FAQ-answer turn p50 ms |", "|---|---|---|---|---|",
        f"| {calls['total']} | {calls['per_conversation_mean']} / "
        f"{calls['per_conversation_max']} | {lat['action_p50_ms']} | {lat['action_p95_ms']} | "
        f"{lat['faq_p50_ms']} |", "",
        f"Call outcomes: {outcomes}. Action turns: {lat['action_turns']}, FAQ-answer turns: "
        f"{lat['faq_turns']}.", "",
        "| script | api | result | turns | calls |", "|---|---|---|---|---|"]
    for s in r["scripts"]:
        failure = s["first_failure"]
        result = "pass" if failure is None else (
            f"FAIL at turn {failure['turn']} (line {failure['line']}, "
            f"{_cell(failure['say'])!r}): {_cell(failure['why'])}")
        lines.append(f"| {_cell(s['name'])} | {s['api'] or ''} | {result} | {s['turns']} | "
                     f"{s['calls']} |")
    lines += ["", "Definitions: a call is a turn whose reply carries `meta.action.call`; an "
              "action turn is decision `action` (answered from a call, the call included); a "
              "FAQ-answer turn is decision `answer` from an FAQ entry; whole turns, one at a "
              "time."]
    return "\n".join(lines) + "\n"
