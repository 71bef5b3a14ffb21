"""`supportbot eval dialogue`: labelled queries through the whole dialogue manager -> outcomes.

Each query is a new conversation (its own conversation and user id, channel "eval"), so
retrieval, safety guards, the policy and generation all run as for a customer's first message.

Outcome rules (the report and README use these words):
- in scope (the query has a gold entry):
  - answered_right: decision `answer` whose first source is the gold entry, or `generate`
    whose sources (the FAQ entries in the prompt the answer was grounded on and checked
    against) include the gold entry, or `ask` / `action` whose first source is the gold id:
    the right action started (asking for its slots, or called with a value the message held;
    a call that failed is a `fallback` turn, counted below);
  - answered_wrong: any other `answer`, `generate`, `ask` or `action` (an answer without
    sources, such as the identity or "no human" replies, is wrong too: the row's `intent`
    names them; another action started is wrong too);
  - suggested_right: `clarify` ("Did you mean") offering the gold entry among its suggestions;
  - suggested_wrong: `clarify` not offering it (a generation rejected by the grounding check
    turns into `clarify`, so it lands here or in suggested_right);
  - fallback: every other decision: fallback, handoff, invalid, waiting, error, blocked.
- out of scope (no gold entry): answered (`answer`, `generate`, `ask` or `action`, from any
  entry or action or none), suggested (`clarify`), fallback (every other decision).
- answer precision: answered_right / all direct answers (answer, generate, ask, action), an
  answered out-of-scope query counting as a wrong answer; None without direct answers.
- latency: wall-clock milliseconds of the whole turn (storage included), one query at a time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bot.types import BotReply, Decision, UserMessage
from retrieval.errors import ReportWriteError
from retrieval.offline.evaluate import mix_table, percentile
from retrieval.offline.queries import LabelledQuery

if TYPE_CHECKING:
    from bot.dialogue import DialogueManager
    from bot.settings import Settings

IN_SCOPE = ("answered_right", "answered_wrong", "suggested_right", "suggested_wrong",
            "fallback")
OUT_OF_SCOPE = ("answered", "suggested", "fallback")
DIRECT = (Decision.ANSWER, Decision.GENERATE)
# An action started: asking for its slots (or a yes), or answered from its call.
STARTED = (Decision.ASK, Decision.ACTION)
# What a generated turn keeps in its reply's meta about grounding (bot/dialogue/generated.py).
GroundingKey = Literal["generated", "checks", "rejected", "held_back", "cut_off",
                       "generation_error"]
_GROUNDING_KEYS: tuple[GroundingKey, ...] = ("generated", "checks", "rejected", "held_back",
                                              "cut_off", "generation_error")


@dataclass(frozen=True)
class DialogueRow:
    """One query's turn: what the bot decided and said, and how that counts."""

    query: str
    faq_id: str | None
    decision: str
    text: str
    sources: list[dict[str, Any]]  # [{id, score}] the reply drew on
    suggestions: list[str]  # ids offered by "Did you mean"
    confidence: float
    grounding: dict[str, Any] | None  # checks, rejection... of a generation, if one ran
    outcome: str
    latency_ms: float
    line: int | None = None
    error: str | None = None  # the cause of an `error` turn or of a failed generation
    intent: str | None = None  # a canned reply's intent ("identity", "no-human"), not the FAQ

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def classify(reply: BotReply, faq_id: str | None) -> str:
    """The outcome of one reply to a query whose gold entry is `faq_id` (None: out of scope)."""
    if faq_id is None:
        if reply.decision in DIRECT or reply.decision in STARTED:
            return "answered"
        return "suggested" if reply.decision is Decision.CLARIFY else "fallback"
    if reply.decision is Decision.ANSWER or reply.decision in STARTED:
        right = bool(reply.sources) and reply.sources[0].id == faq_id
        return "answered_right" if right else "answered_wrong"
    if reply.decision is Decision.GENERATE:
        right = any(s.id == faq_id for s in reply.sources)
        return "answered_right" if right else "answered_wrong"
    if reply.decision is Decision.CLARIFY:
        offered = any(s.id == faq_id for s in reply.suggestions)
        return "suggested_right" if offered else "suggested_wrong"
    return "fallback"


def grounding(reply: BotReply) -> dict[str, Any] | None:
    """What the reply's meta says about a generation and its grounding checks (None: none ran)."""
    found: dict[str, Any] = {key: reply.meta[key] for key in _GROUNDING_KEYS
                             if key in reply.meta}
    if len(reply.candidates) > 1:
        found["candidate_scores"] = [round(c.score, 4) for c in reply.candidates]
    return found or None


def row_for(query: LabelledQuery, reply: BotReply, latency_ms: float) -> DialogueRow:
    """The row of one query and the bot's final reply to it."""
    error = reply.meta.get("error") or reply.meta.get("generation_error")
    return DialogueRow(
        query=query.text, faq_id=query.faq_id, decision=reply.decision.value, text=reply.text,
        sources=[{"id": s.id, "score": s.score} for s in reply.sources],
        suggestions=[s.id for s in reply.suggestions], confidence=round(reply.confidence, 4),
        grounding=grounding(reply), outcome=classify(reply, query.faq_id),
        latency_ms=round(latency_ms, 2), line=query.line,
        error=str(error) if error is not None else None, intent=reply.meta.get("intent"))


def _share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def summarise(rows: Sequence[DialogueRow]) -> dict[str, Any]:
    """Counts and shares per outcome, the decision mix, answer precision and latency."""
    inside = dict.fromkeys(IN_SCOPE, 0)
    outside = dict.fromkeys(OUT_OF_SCOPE, 0)
    for row in rows:
        (inside if row.faq_id is not None else outside)[row.outcome] += 1
    n_in, n_oos = sum(inside.values()), sum(outside.values())
    direct = inside["answered_right"] + inside["answered_wrong"] + outside["answered"]
    generated = [r for r in rows if r.grounding is not None]
    latencies = [r.latency_ms for r in rows]
    return {
        "n_queries": len(rows), "n_in_scope": n_in, "n_out_of_scope": n_oos,
        "mix": {"in_scope": inside, "out_of_scope": outside},
        "shares": {"in_scope": {k: _share(v, n_in) for k, v in inside.items()},
                   "out_of_scope": {k: _share(v, n_oos) for k, v in outside.items()}},
        "answer_precision": _share(inside["answered_right"], direct),
        "decisions": dict(sorted(Counter(r.decision for r in rows).items())),
        "generation": {"attempted": len(generated),
                       "released": sum(r.decision == Decision.GENERATE.value for r in rows),
                       "rejected": sum("rejected" in (r.grounding or {}) for r in generated),
                       "failed": sum("generation_error" in (r.grounding or {})
                                     for r in generated)},
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95)}


def settings_used(settings: Settings) -> dict[str, Any]:
    """The settings that shape the outcomes, for the report."""
    r, d, m = settings.retrieval, settings.dialogue, settings.model
    return {"answer_threshold": r.answer_threshold, "answer_margin": r.answer_margin,
            "suggest_threshold": r.suggest_threshold,
            "max_suggestions": r.max_suggestions, "top_k": r.top_k, "embedder": r.embedder,
            "scoring": r.scoring,
            "middle": d.middle, "prompt_entries": d.prompt_entries, "prompt_floor": d.prompt_floor,
            "min_grounding": d.min_grounding, "release": d.release,
            "model": m.base_model, "adapter": str(m.adapter) if m.adapter else None,
            "candidates": m.generation.n, "temperature": m.generation.temperature,
            "max_new_tokens": m.generation.max_new_tokens, "safety": settings.safety.enabled}


@dataclass(frozen=True)
class DialogueEvaluation:
    """The report (JSON-ready) and one row per query."""

    report: dict[str, Any]
    rows: list[DialogueRow]


async def evaluate_dialogue(manager: DialogueManager, queries: Sequence[LabelledQuery],
                            settings: dict[str, Any] | None = None,
                            progress: Callable[[DialogueRow], None] | None = None,
                            sources: dict[str, str] | None = None,
                            channel: str = "eval") -> DialogueEvaluation:
    """Send each query as a new conversation, one at a time; classify the final replies."""
    rows = []
    run = uuid.uuid4().hex[:8]
    for number, query in enumerate(queries, start=1):
        message = UserMessage(text=query.text, conversation_id=f"eval-{run}-{number}",
                              channel=channel, user_id=f"eval-{run}-{number}")
        started = time.perf_counter()
        reply = await manager.handle(message)
        row = row_for(query, reply, (time.perf_counter() - started) * 1000)
        rows.append(row)
        if progress is not None:
            progress(row)
    report = {**(sources or {}), "settings": settings or {}, **summarise(rows),
              "generator_loaded": manager.generator_loaded,
              "tokens_generated": manager.tokens_generated}
    return DialogueEvaluation(report, rows)


def write_report(evaluation: DialogueEvaluation, out_dir: Path) -> list[Path]:
    """rows.jsonl (one row per query), report.json and report.md."""
    return write_rows_report(out_dir, "rows.jsonl", evaluation.rows, evaluation.report,
                             dialogue_markdown(evaluation.report))


def write_rows_report(out_dir: Path, rows_name: str, rows: Sequence[Any],
                      report: dict[str, Any], markdown: str) -> list[Path]:
    """`rows_name` (one JSON line per row, by its to_dict()), report.json and report.md in
    `out_dir`; ReportWriteError when they cannot be written."""
    written = [out_dir / rows_name, out_dir / "report.json", out_dir / "report.md"]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written[0].write_text("".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n"
                                      for row in rows), encoding="utf-8")
        written[1].write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        written[2].write_text(markdown, encoding="utf-8")
    except OSError as exc:
        raise ReportWriteError(out_dir, exc) from exc
    return written


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def dialogue_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: settings, the outcome mix, precision, decisions and latency."""
    r, s = report, report.get("settings", {})
    n_in, n_oos = r["n_in_scope"], r["n_out_of_scope"]

    model = f"model {s.get('model')}" + (f" + adapter {s['adapter']}" if s.get("adapter") else "")
    gen = r["generation"]
    lines = [
        f"# Dialogue evaluation: {r.get('queries', '')}", "",
        f"FAQ {r.get('faq', '')}; {r['n_queries']} queries ({n_in} in scope, {n_oos} out of "
        f"scope), each a new conversation; thresholds answer {s.get('answer_threshold')}, "
        f"suggest {s.get('suggest_threshold')}; middle band: {s.get('middle')}; {model}"
        f"{'' if r.get('generator_loaded') else ' (not loaded)'}.", "",
        "| answer precision | p50 ms | p95 ms | generated: attempted | released | rejected "
        "by grounding | failed |", "|---|---|---|---|---|---|---|",
        f"| {_pct(r['answer_precision'])} | {r['p50_ms']} | {r['p95_ms']} | "
        f"{gen['attempted']} | {gen['released']} | {gen['rejected']} | {gen['failed']} |", "",
        *mix_table(r["mix"], n_in, n_oos), "",
        "Decisions: " + (", ".join(f"{k} {v}" for k, v in r["decisions"].items()) or "none")
        + ".", "",
        "Definitions: answered right = `answer` from the right entry, `generate` with the "
        "right entry among the entries it was grounded on, or `ask` / `action` of the right "
        "action (it started); fallback = fallback, handoff, "
        "invalid, waiting, error or blocked; answer precision counts an answered out-of-scope "
        "query as wrong; latency is the whole turn, one query at a time."]
    return "\n".join(lines) + "\n"
