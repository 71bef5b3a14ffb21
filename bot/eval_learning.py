"""`supportbot eval learning` (offline tool): replays labelled queries in order as new customers
against a fresh bot with the FAQ, the customers reacting as customers do, and measures how the
bot's answers change as it learns from them.

Simulated customers (one conversation and one source each, one query each):
- a direct answer: rated down when wrong at `down_rate`, rated up when right at `up_rate`;
- "Did you mean": the right entry picked when it is offered, else "none of these";
- a fallback: an operator labels the question at `operator_rate` (answers it from the entry).
An adversarial customer (`adversarial`, a share of them, drawn with `seed`) picks a wrong option
whenever one is offered and rates wrong answers up and right ones down.

Each window of `window` queries reports, for the queries' first replies: the answered share, the
answer precision (right / answered; an answered out-of-scope query is wrong), the clarify and
fallback shares, and the learnt phrasings in the index at the window's end. Time is simulated:
`minutes_per_customer` apart, so that learning's hourly limits act as they would in service.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.learning.trust import wording_key
from bot.types import BotReply, Decision, UserMessage
from retrieval.errors import ReportWriteError
from retrieval.offline.queries import LabelledQuery

if TYPE_CHECKING:
    from bot.runtime import Runtime

OPERATOR = "eval-operator"


@dataclass(frozen=True)
class Customers:
    """How the simulated customers and operators behave."""

    down_rate: float = 0.5
    up_rate: float = 0.1
    operator_rate: float = 0.0
    adversarial: float = 0.0
    seed: int = 0
    minutes_per_customer: float = 1.0


@dataclass
class Window:
    """One window of queries: what their first replies were, and what had been learnt."""

    start: int
    queries: int = 0
    answered: int = 0
    right: int = 0
    clarify: int = 0
    fallback: int = 0
    picks: int = 0
    nones: int = 0
    ups: int = 0
    downs: int = 0
    labels: int = 0
    adversarial: int = 0
    learnt: int = 0
    learnt_wrong: int = 0  # learnt phrasings (of queries replayed) added to an entry not theirs
    threshold: float | None = None  # the answer threshold in force at the window's end
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)

        def share(n: int) -> float | None:
            return round(n / self.queries, 4) if self.queries else None

        data.update(answered_share=share(self.answered), clarify_share=share(self.clarify),
                    fallback_share=share(self.fallback),
                    precision=round(self.right / self.answered, 4) if self.answered else None,
                    end=self.start + self.queries)
        return data


class Clock:
    """Simulated wall time for learning's limits: advanced by one customer at a time."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def replay(runtime: Runtime, queries: Sequence[LabelledQuery], customers: Customers,
                 window: int, progress: Callable[[bool], None] | None = None,
                 clock: Clock | None = None) -> list[Window]:
    """Every query as a new customer, in order; the windows of `window` queries."""
    use = runtime.use
    assert use is not None, "learning is off (learning.enabled)"
    rng = random.Random(customers.seed)
    manager = runtime.manager
    windows: list[Window] = []
    started = time.perf_counter()
    gold_of = {wording_key(q.text): q.faq_id for q in queries}
    for n, query in enumerate(queries):
        if n % window == 0:
            if windows:
                _close(windows[-1], runtime, started, gold_of)
                started = time.perf_counter()
            windows.append(Window(start=n))
        current = windows[-1]
        if clock is not None:
            clock.now += timedelta(minutes=customers.minutes_per_customer)
        hostile = rng.random() < customers.adversarial
        current.adversarial += hostile
        conversation, source = f"eval-learning-{n}", f"eval:{n}"

        def say(text: str, conversation: str = conversation,
                source: str = source) -> UserMessage:
            return UserMessage(text, conversation, channel="eval", user_id=source,
                               source=source)

        await use.sync(force=True)
        reply = await manager.handle(say(query.text))
        current.queries += 1
        gold = query.faq_id
        right = False
        if reply.decision in (Decision.ANSWER, Decision.GENERATE):
            current.answered += 1
            top = reply.sources[0].id if reply.sources else None
            right = gold is not None and top == gold
            current.right += right
            await _rate(manager, reply, right, hostile, customers, rng, current, source)
        elif reply.decision is Decision.CLARIFY:
            current.clarify += 1
            offered = [s.id for s in reply.suggestions]
            wrong = [i for i, e in enumerate(offered) if e != gold]
            if hostile and wrong:
                choice: int | None = rng.choice(wrong)
            elif gold in offered:
                choice = offered.index(gold)
            else:
                choice = None
            if choice is None:
                await manager.handle(say("none of these"))
                current.nones += 1
            else:
                await manager.handle(say(str(choice + 1)))
                current.picks += 1
        else:
            current.fallback += 1
            if gold is not None and rng.random() < customers.operator_rate:
                await use.operator_answered(conversation, OPERATOR, gold, query.text)
                current.labels += 1
        if progress is not None:
            progress(right)
    if windows:
        await use.sync(force=True)
        _close(windows[-1], runtime, started, gold_of)
    return windows


def _close(window: Window, runtime: Runtime, started: float,
           gold_of: dict[str, str | None]) -> None:
    """What was learnt by the window's end (and how much of it wrongly), the threshold then,
    and the time it took."""
    from bot.dialogue.replies import thresholds

    assert runtime.use is not None
    learnt = runtime.use.learnt
    window.learnt = len(learnt)
    window.learnt_wrong = sum(1 for item in learnt if wording_key(item.wording) in gold_of
                              and gold_of[wording_key(item.wording)] != item.entry_id)
    window.threshold = round(thresholds(runtime.manager.retrieval,
                                        runtime.index.calibration).answer_threshold, 4)
    window.seconds = round(time.perf_counter() - started, 2)


async def _rate(manager: Any, reply: BotReply, right: bool, hostile: bool,
                customers: Customers, rng: random.Random, window: Window, source: str) -> None:
    """The customer's thumbs on a direct answer, if they give one."""
    if reply.message_id is None:
        return
    if hostile:
        rating = "down" if right else "up"
        rate = customers.down_rate if right else customers.up_rate
        rate = max(rate, customers.down_rate)
    else:
        rating = "up" if right else "down"
        rate = customers.up_rate if right else customers.down_rate
    if rng.random() >= rate:
        return
    await manager.feedback(reply.conversation_id, reply.message_id, rating, source=source,
                           channel="eval")
    if rating == "up":
        window.ups += 1
    else:
        window.downs += 1


def report(windows: Sequence[Window], settings: dict[str, Any],
           sources: dict[str, str]) -> dict[str, Any]:
    """The JSON report: windows, the first and the last one, and what was run."""
    rows = [w.to_dict() for w in windows]
    return {**sources, "settings": settings, "windows": rows,
            "first": rows[0] if rows else None, "last": rows[-1] if rows else None}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def learning_markdown(data: dict[str, Any]) -> str:
    """The report as a Markdown table, one row per window."""
    lines = [f"# Learning from use: {data.get('faq', '')} with {data.get('queries', '')}", "",
             "| queries | answered | precision | did you mean | fallback | picks | none | "
             "down | up | operator | learnt (wrong) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in data["windows"]:
        lines.append(f"| {w['start'] + 1}-{w['end']} | {_pct(w['answered_share'])} | "
                     f"{_pct(w['precision'])} | {_pct(w['clarify_share'])} | "
                     f"{_pct(w['fallback_share'])} | {w['picks']} | {w['nones']} | "
                     f"{w['downs']} | {w['ups']} | {w['labels']} | {w['learnt']} "
                     f"({w['learnt_wrong']}) |")
    settings = data.get("settings", {})
    lines += ["", "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items())]
    return "\n".join(lines) + "\n"


def write_report(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """report.json, report.md and learning.png (the learning curve) in `out_dir`."""
    import json

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [out_dir / "report.json", out_dir / "report.md", out_dir / "learning.png"]
        paths[0].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        paths[1].write_text(learning_markdown(data), encoding="utf-8")
        _plot(data, paths[2])
    except OSError as exc:
        raise ReportWriteError(out_dir, exc) from exc
    return paths


def _plot(data: dict[str, Any], path: Path) -> None:
    """The learning curve: answered share and precision per window, learnt phrasings."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    windows = data["windows"]
    ends = [w["end"] for w in windows]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for key, label in (("answered_share", "answered directly"), ("precision",
                                                                  "answer precision"),
                       ("clarify_share", "Did you mean"), ("fallback_share", "fallback")):
        values = [w[key] if w[key] is not None else float("nan") for w in windows]
        ax.plot(ends, values, marker="o", label=label)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("customers so far")
    ax.set_ylabel("share of the window's first replies")
    learnt = ax.twinx()
    learnt.plot(ends, [w["learnt"] for w in windows], color="grey", linestyle="--",
                label="learnt phrasings")
    learnt.set_ylabel("learnt phrasings")
    handles = ax.get_legend_handles_labels()
    extra = learnt.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8, loc="lower right")
    settings = data.get("settings", {})
    ax.set_title(f"Learning from use (adversarial {settings.get('adversarial', 0)}, "
                 f"window {settings.get('window', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
