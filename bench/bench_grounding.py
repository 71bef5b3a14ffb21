"""How many wrong generated answers each grounding check lets through, on the labelled dev set.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_grounding.py [--min-score 0.75]

Loads data/grounding_dev.jsonl (answers of the bundled model, labelled by hand per sentence; no
model needed) and, for the "tune" and "test" splits, compares:
- old: today's check before this change (0.6 * semantic + 0.4 * lexical - 0.15 per unsupported
  number, on the whole answer; shown when >= 0.6);
- new: GroundingChecker under the prefix policy (sentences are released until the first one that
  fails; the answer is shown when at least one sentence is released).
An answer shown is wrong when any released sentence is labelled wrong. Also prints
sentence-level precision and recall of "supported", a sweep of min_score, and writes
bench/out/grounding_sweep.png (precision and accept rate against min_score).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common import ROOT

DEV = ROOT / "data" / "grounding_dev.jsonl"
TARGET = 0.05  # at most 1 in 20 answers shown may be wrong
OLD_STOP_WORDS = (
    "about after again also because been before being below between both could does doing down "
    "during each from further have having here into itself just more most other over same "
    "should some such than that their them then there these they this those through under "
    "until very were what when where which while with would your yours you'll we'll i'll "
    "can't don't won't it's")
OLD_STOP = frozenset(OLD_STOP_WORDS.split())
THRESHOLDS = [round(0.40 + 0.025 * i, 3) for i in range(21)]  # 0.40 .. 0.90


@dataclass(frozen=True)
class Outcome:
    """Shown / wrong counts for answers, and the confusion counts for sentences."""

    total: int
    shown: int
    shown_wrong: int
    tp: int  # supported and labelled right
    fp: int  # supported but labelled wrong
    fn: int  # rejected but labelled right

    @property
    def wrong_rate(self) -> float:
        return self.shown_wrong / self.shown if self.shown else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def old_score(answer: str, entry: Any, embedder: Any) -> float:
    """Today's check as it was before grounding.py (ranking.py at commit c6a630d), kept here."""
    word = re.compile(r"[a-z][a-z'-]{3,}")
    number = re.compile(r"\d+(?:[.,]\d+)?")
    if not answer.strip():
        return 0.0
    source = f"{entry.question} {entry.answer}".lower()
    vectors = embedder.embed([answer, entry.answer])
    semantic = float(vectors[1] @ vectors[0])
    words = [w for w in word.findall(answer.lower()) if w not in OLD_STOP]
    lexical = sum(w in set(word.findall(source)) for w in words) / len(words) if words else 0.0
    unsupported = sum(n not in set(number.findall(source)) for n in number.findall(answer))
    return min(max(0.6 * max(semantic, 0.0) + 0.4 * lexical - 0.15 * unsupported, 0.0), 1.0)


def evaluate_old(rows: Sequence[dict[str, Any]], scores: Sequence[float],
                 threshold: float) -> Outcome:
    """Whole answers shown when the old score passes; sentences all share the answer's verdict."""
    shown = shown_wrong = tp = fp = fn = 0
    for row, score in zip(rows, scores, strict=True):
        passed = score >= threshold
        shown += passed
        shown_wrong += passed and row["label"] == "wrong"
        for sentence in row["sentences"]:
            right = sentence["label"] == "right"
            tp += passed and right
            fp += passed and not right
            fn += (not passed) and right
    return Outcome(len(rows), shown, shown_wrong, tp, fp, fn)


def evaluate_new(rows: Sequence[dict[str, Any]], checks: Sequence[Sequence[Any]],
                 threshold: float) -> Outcome:
    """Prefix policy: release sentences until the first that fails at this threshold."""
    shown = shown_wrong = tp = fp = fn = 0
    for row, answer_checks in zip(rows, checks, strict=True):
        prefix: list[dict[str, Any]] = []
        releasing = True
        for sentence, check in zip(row["sentences"], answer_checks, strict=True):
            supported = not check.reason and check.score >= threshold
            right = sentence["label"] == "right"
            tp += supported and right
            fp += supported and not right
            fn += (not supported) and right
            releasing = releasing and supported
            if releasing:
                prefix.append(sentence)
        shown += bool(prefix)
        shown_wrong += bool(prefix) and any(s["label"] == "wrong" for s in prefix)
    return Outcome(len(rows), shown, shown_wrong, tp, fp, fn)


def pick_threshold(outcomes: dict[float, Outcome]) -> float:
    """The lowest min_score whose shown answers are at most 5% wrong, else the most precise."""
    meeting = [t for t, o in outcomes.items() if o.shown and o.wrong_rate <= TARGET]
    if meeting:
        return min(meeting)
    return min(outcomes, key=lambda t: (outcomes[t].wrong_rate, -outcomes[t].shown))


def line(name: str, o: Outcome, wrong: int) -> str:
    return (f"{name:<36} shown {o.shown:>3}/{o.total:<3} ({o.shown / o.total:5.1%})  "
            f"wrong let through {o.shown_wrong:>2}/{wrong:<3} "
            f"shown&wrong {o.shown_wrong:>2}/{o.shown:<3} ({o.wrong_rate:5.1%})  "
            f"sentences: precision {o.precision:5.1%} recall {o.recall:5.1%}")


def plot(sweeps: dict[str, dict[float, Outcome]], chosen: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("tune", "-"), ("test", "--")):
        xs = list(sweeps[split])
        ax.plot(xs, [1 - sweeps[split][t].wrong_rate for t in xs], "b" + style,
                label=f"precision of shown answers ({split})")
        ax.plot(xs, [sweeps[split][t].shown / sweeps[split][t].total for t in xs], "g" + style,
                label=f"accept rate ({split})")
    ax.axhline(1 - TARGET, color="grey", lw=0.8, ls=":")
    ax.axvline(chosen, color="red", lw=0.8, ls=":", label=f"chosen min_score {chosen}")
    ax.set_xlabel("min_score")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("GroundingChecker, prefix policy, bundled SmolLM2-135M answers")
    out = ROOT / "bench" / "out" / "grounding_sweep.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-score", type=float, default=None,
                        help="report this operating point instead of the one picked on tune")
    args = parser.parse_args()
    from bot.generation.grounding import GroundingChecker
    from retrieval.corpus import load_faq
    from retrieval.embedder import SentenceTransformerEmbedder

    rows = [json.loads(text) for text in DEV.read_text(encoding="utf-8").splitlines()]
    entries = {e.id: e for e in load_faq(ROOT / "data" / "faq.yaml")}
    embedder = SentenceTransformerEmbedder()
    checker = GroundingChecker(embedder, min_score=0.0)  # thresholds applied below
    splits = {s: [r for r in rows if r["split"] == s] for s in ("tune", "test")}
    sweeps: dict[str, dict[float, Outcome]] = {}
    old: dict[str, Outcome] = {}
    for split, part in splits.items():
        checks = [checker.check_answer(r["answer"], [entries[r["retrieved_id"]]], r["query"])
                  for r in part]
        for row, answer_checks in zip(part, checks, strict=True):
            assert len(answer_checks) == len(row["sentences"]), row["answer"]
        sweeps[split] = {t: evaluate_new(part, checks, t) for t in THRESHOLDS}
        old_scores = [old_score(r["answer"], entries[r["retrieved_id"]], embedder) for r in part]
        old[split] = evaluate_old(part, old_scores, 0.6)
    chosen = args.min_score if args.min_score is not None else pick_threshold(sweeps["tune"])
    for split, part in splits.items():
        right = sum(r["label"] == "right" for r in part)
        print(f"\n== {split}: {len(part)} answers ({right} right, {len(part) - right} wrong), "
              f"{len({r['retrieved_id'] for r in part})} FAQ entries")
        print(line("old check (whole answer, 0.6)", old[split], len(part) - right))
        new = sweeps[split].get(chosen) or evaluate_new(
            part, [checker.check_answer(r["answer"], [entries[r["retrieved_id"]]], r["query"])
                   for r in part], chosen)
        print(line(f"new check (prefix, min_score {chosen})", new, len(part) - right))
    print("\nsweep of min_score (new check, prefix policy): shown / shown&wrong")
    print("min_score  " + "  ".join(f"{s:>22}" for s in splits))
    for t in THRESHOLDS:
        mark = "  <- chosen on tune" if t == chosen else ""
        cells = [f"{o.shown:>3}/{o.total} {o.shown_wrong:>2}/{o.shown:<3} ({o.wrong_rate:4.0%})"
                 for o in (sweeps[s][t] for s in splits)]
        print(f"{t:<9}  " + "  ".join(f"{c:>22}" for c in cells) + mark)
    plot(sweeps, chosen)


if __name__ == "__main__":
    main()
