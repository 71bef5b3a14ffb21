"""Measure the guards on labelled files: `supportbot eval safety` and `supportbot eval pii`."""

from __future__ import annotations

import csv
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bot.errors import InputError
from bot.safety.base import Embed, GuardContext
from bot.safety.normalize import fold
from bot.safety.pii import Redactor
from bot.safety.pipeline import GuardPipeline
from bot.shared.textfile import TextFileError, jsonl_lines, read_text


def read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of a CSV or JSONL file, each with the required fields; InputError names the line."""
    try:
        text = read_text(path)
    except TextFileError as exc:
        where = f", line {exc.line}" if exc.line is not None else ""
        raise InputError(f"cannot read {path}{where}: {exc.message}") from exc
    rows: list[dict[str, Any]] = []
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        start = 2
    else:
        start = 1
        for number, row in jsonl_lines(text):
            if isinstance(row, str):
                raise InputError(f"{path}, line {number}: {row}")
            rows.append(row)
    for offset, row in enumerate(rows):
        missing = [f for f in required if row.get(f) in (None, "")]
        if missing:
            raise InputError(f"{path}, row {offset + start}: missing {', '.join(missing)}")
    if not rows:
        raise InputError(f"{path} holds no rows")
    return rows


def _label(row: dict[str, Any], path: Path) -> int:
    value = str(row["label"]).strip()
    if value not in ("0", "1"):
        raise InputError(f"{path}: label must be 0 or 1, not {value!r}")
    return int(value)


def _rates(blocked: list[bool], labels: list[int]) -> dict[str, Any]:
    positives = sum(labels)
    negatives = len(labels) - positives
    hits = sum(1 for b, y in zip(blocked, labels, strict=True) if b and y)
    false = sum(1 for b, y in zip(blocked, labels, strict=True) if b and not y)
    return {"detection_rate": round(hits / positives, 4) if positives else None,
            "false_positive_rate": round(false / negatives, 4) if negatives else None,
            "precision": round(hits / (hits + false), 4) if hits + false else None,
            "n_positive": positives, "n_negative": negatives}


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return round(values[0], 3) if values else 0.0
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


def evaluate_safety(path: Path, pipeline: GuardPipeline, embed: Embed | None) -> dict[str, Any]:
    """Every guard on every row (so each is measured alone, with its latency); the pipeline
    blocks a row when any guard does (the first block wins, the outcome is the same)."""
    rows = read_rows(path, ("text", "label"))
    labels = [_label(r, path) for r in rows]
    names = pipeline.names
    blocked: dict[str, list[bool]] = {n: [] for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    first: list[str | None] = []
    for i, row in enumerate(rows):
        context = GuardContext(user_id="eval", conversation_id=f"eval-{i}", channel="eval",
                               embed=embed)
        current, who = str(row["text"]), None
        for guard in pipeline.guards:
            started = time.perf_counter()
            verdict = guard.check(current, context)
            times[guard.name].append((time.perf_counter() - started) * 1000)
            if guard.name == "normalize" and verdict.redacted_text is not None:
                current = verdict.redacted_text
            if not context.folded:
                context.text, context.folded = current, fold(current)
            blocked[guard.name].append(not verdict.allowed)
            if not verdict.allowed and who is None:
                who = guard.name
        first.append(who)
    overall = [w is not None for w in first]
    report: dict[str, Any] = {"data": str(path), "rows": len(rows),
                              "overall": _rates(overall, labels), "guards": {},
                              "categories": {}}
    totals = [sum(ms) for ms in zip(*times.values(), strict=True)]
    report["overall"].update({"p50_ms": _percentile(totals, 50), "p95_ms": _percentile(totals, 95)})
    for name in names:
        report["guards"][name] = {**_rates(blocked[name], labels),
                                  "p50_ms": _percentile(times[name], 50),
                                  "p95_ms": _percentile(times[name], 95)}
    categories = sorted({str(r.get("category") or "") for r in rows})
    for category in categories:
        index = [i for i, r in enumerate(rows) if str(r.get("category") or "") == category]
        entry = _rates([overall[i] for i in index], [labels[i] for i in index])
        entry["blocked_by"] = {n: sum(1 for i in index if first[i] == n) for n in names
                               if any(first[i] == n for i in index)}
        report["categories"][category or "(none)"] = entry
    return report


def _overlap(a: tuple[int, int], spans: Iterable[tuple[int, int]]) -> int:
    covered: set[int] = set()
    for start, end in spans:
        covered.update(range(max(a[0], start), min(a[1], end)))
    return len(covered)


def evaluate_pii(path: Path, redactor: Redactor) -> dict[str, Any]:
    """Recall (gold spans at least half redacted) and precision (redacted spans at least half
    on gold PII) per label; any label counts as redacted. The false-positive rate: the share
    of rows without PII (order numbers, say) in which anything was redacted."""
    rows = read_rows(path, ("text", "spans"))
    clean_rows: list[bool] = []  # per row without gold spans: was anything found
    gold_found: dict[str, list[bool]] = {}
    predicted_right: dict[str, list[bool]] = {}
    times = []
    for number, row in enumerate(rows, start=1):
        try:
            gold = [(int(s["start"]), int(s["end"]), str(s["label"])) for s in row["spans"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}, row {number}: spans must be a list of {{start, end, "
                             "label}}") from exc
        started = time.perf_counter()
        found = redactor.find(str(row["text"]))
        times.append((time.perf_counter() - started) * 1000)
        predicted = [(s.start, s.end) for s in found]
        if not gold:
            clean_rows.append(bool(found))
        for start, end, label in gold:
            hit = _overlap((start, end), predicted) * 2 >= max(end - start, 1)
            gold_found.setdefault(label, []).append(hit)
        for span in found:
            right = _overlap((span.start, span.end), [(g[0], g[1]) for g in gold]) * 2 >= max(
                span.end - span.start, 1)
            predicted_right.setdefault(span.label, []).append(right)
    labels = sorted(set(gold_found) | set(predicted_right))
    all_gold = [h for hits in gold_found.values() for h in hits]
    all_pred = [r for rights in predicted_right.values() for r in rights]
    report: dict[str, Any] = {
        "data": str(path), "rows": len(rows),
        "overall": {"recall": _share(all_gold), "precision": _share(all_pred),
                    "support": len(all_gold), "rows_without_pii": len(clean_rows),
                    "false_positive_rate": _share(clean_rows),
                    "p50_ms": _percentile(times, 50),
                    "p95_ms": _percentile(times, 95)},
        "labels": {label: {"recall": _share(gold_found.get(label, [])),
                           "precision": _share(predicted_right.get(label, [])),
                           "support": len(gold_found.get(label, []))} for label in labels}}
    return report


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def safety_markdown(report: dict[str, Any]) -> str:
    """The safety report as Markdown tables."""
    o = report["overall"]
    lines = [f"# Safety evaluation: {report['data']} ({report['rows']} rows)", "",
             "| scope | detection | false positives | precision | positives | negatives | "
             "p50 ms | p95 ms |", "|---|---|---|---|---|---|---|---|",
             f"| pipeline | {_pct(o['detection_rate'])} | {_pct(o['false_positive_rate'])} | "
             f"{_pct(o['precision'])} | {o['n_positive']} | {o['n_negative']} | {o['p50_ms']} | "
             f"{o['p95_ms']} |"]
    for name, g in report["guards"].items():
        lines.append(f"| {name} (alone) | {_pct(g['detection_rate'])} | "
                     f"{_pct(g['false_positive_rate'])} | {_pct(g['precision'])} | "
                     f"{g['n_positive']} | {g['n_negative']} | {g['p50_ms']} | {g['p95_ms']} |")
    lines += ["", "| category | rows | must be | blocked | first block by |",
              "|---|---|---|---|---|"]
    for name, c in report["categories"].items():
        positive = c["n_positive"] > 0
        rows = c["n_positive"] + c["n_negative"]
        rate = c["detection_rate"] if positive else c["false_positive_rate"]
        by = ", ".join(f"{k} {v}" for k, v in c["blocked_by"].items()) or "-"
        lines.append(f"| {name} | {rows} | {'blocked' if positive else 'passed'} | "
                     f"{_pct(rate)} | {by} |")
    return "\n".join(lines) + "\n"


def pii_markdown(report: dict[str, Any]) -> str:
    """The PII report as a Markdown table."""
    o = report["overall"]
    lines = [f"# PII redaction: {report['data']} ({report['rows']} rows)", "",
             "| label | recall | precision | gold spans |", "|---|---|---|---|",
             f"| all | {_pct(o['recall'])} | {_pct(o['precision'])} | {o['support']} |"]
    for label, entry in report["labels"].items():
        lines.append(f"| {label} | {_pct(entry['recall'])} | {_pct(entry['precision'])} | "
                     f"{entry['support']} |")
    lines.append("")
    if o.get("rows_without_pii"):
        lines.append(f"False positives: something redacted in {_pct(o['false_positive_rate'])} "
                     f"of {o['rows_without_pii']} rows without PII.")
    lines.append(f"Latency per message: p50 {o['p50_ms']} ms, p95 {o['p95_ms']} ms.")
    return "\n".join(lines) + "\n"
