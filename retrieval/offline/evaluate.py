"""`supportbot eval retrieval`: a FaqIndex over labelled queries -> metrics, Markdown, plots."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.embedder import ProgressCallback
from retrieval.errors import ReportWriteError
from retrieval.index import FaqIndex
from retrieval.offline.metrics import MIN_ANSWER_PRECISION, RANK_DEPTH, Policy, Ranked, summarise
from retrieval.offline.queries import LabelledQuery

# Single-query searches timed for p50 / p95 (spread evenly over the file), after a warm-up.
LATENCY_SAMPLE = 200
_WARM_UP = 3


@dataclass(frozen=True)
class Evaluation:
    """The report (JSON-ready) and the per-query results it was computed from."""

    report: dict[str, Any]
    rows: list[Ranked]


def rank_queries(index: FaqIndex, queries: Sequence[LabelledQuery], top_k: int,
                 progress: ProgressCallback | None = None) -> list[Ranked]:
    """Embed all queries in batches and search each as the bot does (top_k entries), and deeper
    (RANK_DEPTH) for hit@k and MRR: a large index looks at fewer phrasings for a small top_k."""
    texts = [q.text for q in queries]
    vectors = index.embedder.embed(texts, progress=progress)
    seen = index.search_vectors(vectors, top_k, texts)
    depth = max(RANK_DEPTH, top_k)
    deep = seen if depth == top_k else index.search_vectors(vectors, depth, texts)
    return [Ranked(q.faq_id, tuple(h.entry.id for h in hits), tuple(h.score for h in hits),
                   q.text, tuple(h.entry.id for h in deeper))
            for q, hits, deeper in zip(queries, seen, deep, strict=True)]


def query_latency(index: FaqIndex, queries: Sequence[LabelledQuery], top_k: int,
                  sample: int = LATENCY_SAMPLE) -> list[float]:
    """Milliseconds of single-query searches (embedding included) on an even spread of queries."""
    if not queries or sample <= 0:
        return []
    step = max(1, len(queries) // sample)
    picked = [q.text for q in queries[::step][:sample]]
    for text in picked[:_WARM_UP]:
        index.search(text, top_k)
    times = []
    for text in picked:
        started = time.perf_counter()
        index.search(text, top_k)
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method), rounded to 0.01 ms; 0.0 without values."""
    if len(values) < 2:
        return round(values[0], 2) if values else 0.0
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


def evaluate_retrieval(index: FaqIndex, queries: Sequence[LabelledQuery], policy: Policy,
                       progress: ProgressCallback | None = None,
                       latency_sample: int = LATENCY_SAMPLE,
                       sources: dict[str, str] | None = None) -> Evaluation:
    """Every metric of the index on the labelled queries at the policy's thresholds."""
    rows = rank_queries(index, queries, policy.top_k, progress)
    times = query_latency(index, queries, policy.top_k, latency_sample)
    report: dict[str, Any] = {
        **(sources or {}), "embedder": index.embedder.name,
        "scoring": index.scoring, "lexical": index.weighs_words, "entries": len(index.entries),
        "phrasings": index.size, "top_k": policy.top_k,
        "max_suggestions": policy.max_suggestions, **summarise(rows, policy),
        "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95),
        "latency_queries": len(times)}
    return Evaluation(report, rows)


def write_report(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """report.json, report.md, scores.png and sweep.png."""
    from retrieval.offline import plots

    written = [out_dir / "report.json", out_dir / "report.md"]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written[0].write_text(json.dumps(evaluation.report, indent=1) + "\n", encoding="utf-8")
        written[1].write_text(retrieval_markdown(evaluation.report), encoding="utf-8")
        written += plots.write_plots(evaluation, out_dir)
    except OSError as exc:
        raise ReportWriteError(out_dir, exc) from exc
    return written


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _point(point: dict[str, Any] | None) -> str:
    if point is None:
        return "none qualifies"
    return (f"threshold {point['threshold']:.2f}: answered right {_pct(point['answered_right'])}"
            f", answer precision {_pct(point['answer_precision'])}, OOS recall "
            f"{_pct(point['oos_recall'])}, OOS F1 {_pct(point['oos_f1'])}")


def mix_table(mix: dict[str, dict[str, int]], n_in: int, n_oos: int) -> list[str]:
    """The decision mix (in scope / out of scope) as a Markdown table: counts and shares."""
    inside, outside = mix["in_scope"], mix["out_of_scope"]

    def share(count: int, total: int) -> str:
        return f"{count} ({count / total * 100:.1f}%)" if total else "-"

    return [
        "| queries | answered right | answered wrong | 'Did you mean', right entry offered | "
        "'Did you mean', not offered | fallback |", "|---|---|---|---|---|---|",
        f"| in scope | {share(inside['answered_right'], n_in)} | "
        f"{share(inside['answered_wrong'], n_in)} | {share(inside['suggested_right'], n_in)} | "
        f"{share(inside['suggested_wrong'], n_in)} | {share(inside['fallback'], n_in)} |",
        f"| out of scope | - | {share(outside['answered'], n_oos)} | "
        f"{share(outside['suggested'], n_oos)} (offered) | - | "
        f"{share(outside['fallback'], n_oos)} |"]


def retrieval_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: headline metrics, the decision mix, operating points, confusions."""
    r = report
    n_in, n_oos = r["n_in_scope"], r["n_out_of_scope"]

    lines = [
        f"# Retrieval evaluation: {r.get('queries', '')}", "",
        f"FAQ {r.get('faq', '')}: {r['entries']} entries, {r['phrasings']} phrasings; "
        f"embedder {r['embedder']}; {r['n_queries']} queries ({n_in} in scope, {n_oos} out of "
        f"scope); thresholds answer {r['threshold']}, suggest {r['suggest_threshold']}, "
        f"top_k {r['top_k']}, up to {r['max_suggestions']} suggestions.", "",
        "| top-1 | hit@3 | hit@5 | MRR@10 | in-scope accuracy | answer precision | "
        "OOS precision | OOS recall | OOS F1 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {_pct(r['top1'])} | {_pct(r['hit@3'])} | {_pct(r['hit@5'])} | "
        f"{'n/a' if r['mrr'] is None else r['mrr']} | {_pct(r['in_scope_accuracy'])} | "
        f"{_pct(r['answer_precision'])} | {_pct(r['oos_precision'])} | {_pct(r['oos_recall'])} "
        f"| {_pct(r['oos_f1'])} | {r['p50_ms']} | {r['p95_ms']} |", "",
        *mix_table(r["mix"], n_in, n_oos), "",
        "Operating points of the answer threshold (suggest threshold kept):", ""]
    for point in r["operating_points"].values():
        lines.append(f"- {point['criterion']}: {_point(point['point'])}")
    lines += ["", "Definitions: answered = top score >= answer threshold; rejected = fallback "
              "(top score < suggest threshold); in-scope accuracy = top entry right and not "
              "rejected; predicted out of scope = not answered directly; answer precision counts "
              f"an answered out-of-scope query as wrong; MRR over the top {RANK_DEPTH}; the "
              f"direct-answer operating point needs >= {MIN_ANSWER_PRECISION:.0%} precision."]
    if r["confused"]:
        lines += ["", "| right entry | top entry instead | queries | example |",
                  "|---|---|---|---|"]
        lines += [f"| {c['faq_id']} | {c['confused_with']} | {c['count']} | "
                  f"{c['example'].replace('|', '/')} |" for c in r["confused"]]
    return "\n".join(lines) + "\n"
