"""The "classifier" scoring (a softmax head over the phrasing embeddings) against plain MiniLM
nearest-phrasing retrieval, on the dev splits.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_classifier.py [--sets banking77_5 ...]
     [--tuned bench/out/tuned]

For each data set, in one run: `supportbot eval retrieval` with the plain embedder at the default
settings (the baseline); then the classifier scoring with the plain embedder at thresholds
calibrated on the FAQ's own held-out phrasings (as `supportbot tune-retriever` calibrates: 20% of
each entry's phrasings held out, seed 0, 95% target precision, 20% out-of-scope traffic, the
bundled out-of-scope questions; never the query files); and, when `--tuned` holds the embedder
`bench_tuned_retrieval.py` tuned for the set (<tuned>/<set>/model), the same with it. Seconds:
the eval (model loading and fitting the head included) plus the calibration. Reports land in
bench/out/classifier/<set>/; the table is printed and written to bench/out/classifier/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench_tuned_retrieval import SETS, TABLE_HEAD, _eval, _row, _with, baseline_row
from common import ROOT


def calibrated_settings(faq: Path, embedder_name: str, scoring: str = "classifier"
                        ) -> dict[str, Any]:
    """The retrieval settings (scoring and thresholds) calibrated on the FAQ's held-out
    phrasings for this embedder, as tune-retriever calibrates them."""
    import torch

    from retrieval.corpus import load_faq
    from retrieval.embedder import SentenceTransformerEmbedder
    from retrieval.offline.calibrate import calibrate, held_out_samples
    from retrieval.offline.tune import split_phrasings
    from retrieval.outside import read_questions

    torch.set_num_threads(1)
    entries = load_faq(faq)
    split = split_phrasings(entries, 0.2, 0)
    found = held_out_samples(entries, split.tune, split.held_out,
                             SentenceTransformerEmbedder(embedder_name), [scoring],
                             read_questions())
    samples, leads = found[scoring]
    thresholds = calibrate(samples, 0.95, 0.2, outside=leads)
    return {"scoring": scoring, "embedder": embedder_name, **thresholds.settings()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--tuned", type=Path, default=ROOT / "bench" / "out" / "tuned")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "classifier")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    lines = list(TABLE_HEAD)
    print("\n".join(lines), flush=True)
    settings: dict[str, Any] = {}
    for name in args.sets:
        faq, queries = SETS[name]
        out = args.out / name
        lines.append(baseline_row(name, faq, queries, out, env))
        print(lines[-1], flush=True)
        embedders = [("plain", "all-MiniLM-L6-v2")]
        if (args.tuned / name / "model").is_dir():
            embedders.append(("tuned", str(args.tuned / name / "model")))
        for label, model in embedders:
            started = time.perf_counter()
            chosen = calibrated_settings(faq, model)
            settings[f"{name}, {label}"] = chosen
            result = _eval(faq, queries, out / f"eval-{label}-classifier", _with(env, chosen))
            lines.append(_row(f"{name}, {label} + classifier, calibrated", result,
                              time.perf_counter() - started))
            print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "settings.json").write_text(json.dumps(settings, indent=1) + "\n",
                                            encoding="utf-8")


if __name__ == "__main__":
    main()
