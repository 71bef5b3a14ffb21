"""Plain MiniLM against the embedder `supportbot tune-retriever` tunes, on the dev splits.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_tuned_retrieval.py [--sets banking77_5 ...]
     [--max-steps 400]

For each data set: `supportbot eval retrieval` with the plain embedder at the default thresholds
(the baseline), then `supportbot tune-retriever` on the FAQ file (its thresholds calibrated on the
FAQ's own held-out phrasings, never on the queries), then `supportbot eval retrieval` with the
tuned embedder at the recommended settings; also the plain embedder at thresholds calibrated the
same way (the tuning record has them), to tell calibration's gain from tuning's. Seconds: the
eval, plus the tuning (and calibration) for the tuned row. Reports land in
bench/out/tuned/<set>/; the table is printed and written to bench/out/tuned/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT

DATA = ROOT / "data" / "retrieval"
SETS = {
    "banking77": (DATA / "banking77_faq.jsonl", DATA / "banking77_queries.csv"),
    "banking77_5": (DATA / "banking77_faq_5.jsonl", DATA / "banking77_queries.csv"),
    "clinc150": (DATA / "clinc150_faq.jsonl", DATA / "clinc150_queries.csv"),
    "sample_faq": (ROOT / "data" / "faq.yaml", ROOT / "data" / "faq_eval.yaml"),
}
CLI = [sys.executable, "-m", "bot"]


def _eval(faq: Path, queries: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([*CLI, "eval", "retrieval", "--faq", str(faq), "--queries",
                           str(queries), "--json", "--out", str(out)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def _row(name: str, r: dict[str, Any], seconds: float) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v * 100:.1f}"

    point = r["operating_points"]["max_answers"]["point"]
    best = f"{pct(point['answered_right'])} at {point['threshold']:.2f}" if point else "none"
    mix = r["mix"]["in_scope"]
    answered_right = mix["answered_right"] / r["n_in_scope"] if r["n_in_scope"] else None
    return (f"| {name} | {pct(r['top1'])} | {pct(r['in_scope_accuracy'])} | "
            f"{pct(answered_right)} | {pct(r['answer_precision'])} | {pct(r['oos_recall'])} | "
            f"{r['threshold']:.2f} / {r['suggest_threshold']:.2f} / {r['answer_margin']:.2f} | "
            f"{best} | {seconds:.0f} |")


def _with(env: dict[str, str], retrieval: dict[str, Any]) -> dict[str, str]:
    """The environment with these retrieval settings (as SUPPORTBOT_RETRIEVAL__KEY)."""
    return {**env, **{f"SUPPORTBOT_RETRIEVAL__{k.upper()}": str(v) for k, v in retrieval.items()}}


# The table both this and bench_classifier.py print.
TABLE_HEAD = ["| data, embedder | top-1 | in-scope accuracy | answered right | answer precision "
              "| OOS recall | answer / suggest / margin | most answered right at >= 95% "
              "precision (sweep) | seconds |", "|---|---|---|---|---|---|---|---|---|"]


def baseline_row(name: str, faq: Path, queries: Path, out: Path, env: dict[str, str]) -> str:
    """The baseline's row: plain MiniLM, nearest phrasing, default thresholds (nearest pinned,
    since the default scoring is the classifier)."""
    started = time.perf_counter()
    plain = _eval(faq, queries, out / "eval-plain", _with(env, {"scoring": "nearest"}))
    return _row(f"{name}, plain", plain, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "tuned")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    lines = list(TABLE_HEAD)
    print("\n".join(lines), flush=True)
    for name in args.sets:
        faq, queries = SETS[name]
        out = args.out / name
        lines.append(baseline_row(name, faq, queries, out, env))
        print(lines[-1], flush=True)
        started = time.perf_counter()
        subprocess.run([*CLI, "tune-retriever", "--faq", str(faq), "--out", str(out / "model"),
                        "--max-steps", str(args.max_steps)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        # The plain embedder with thresholds calibrated the same way (its best scoring), to
        # tell the calibration's share of the gain from the tuning's.
        record = json.loads((out / "model" / "supportbot_tuning.json").read_text())
        calibrated = record["settings"]["plain"]
        started = time.perf_counter()
        result = _eval(faq, queries, out / "eval-plain-calibrated", _with(env, calibrated))
        lines.append(_row(f"{name}, plain + {calibrated['scoring']}, calibrated", result,
                          time.perf_counter() - started))
        print(lines[-1], flush=True)
        recommended = yaml.safe_load((out / "model" / "settings.yaml").read_text())["retrieval"]
        started = time.perf_counter()
        tuned = _eval(faq, queries, out / "eval-tuned", _with(env, recommended))
        lines.append(_row(f"{name}, tuned + {recommended['scoring']}, calibrated", tuned,
                          seconds + time.perf_counter() - started))
        print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
