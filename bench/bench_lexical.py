"""Words next to the embedding in the classifier head (`retrieval.lexical`) against the head on
embeddings alone and plain MiniLM nearest-phrasing retrieval, on the dev splits.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_lexical.py [--sets banking77 ...]

For each data set, in one run, each at the default thresholds: `supportbot eval retrieval` with
nearest scoring (the baseline), the classifier with `lexical: off`, and with `lexical: auto`
(the default: the head is fitted with and without the words' n-grams, and the held-out log loss
on 20% of the FAQ's own phrasings decides; never the query files). Then, in this process, the
seconds to fit the head when the index opens (phrasings embedded once before): the cost of
'auto' at start-up; to refit it after an operator adds one phrasing (the first in-scope
query, to its entry), which starts from the last head; and to open the saved index again,
which loads the head kept in its folder. Reports land in
bench/out/lexical/<set>/; the table is printed and written to bench/out/lexical/table.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from bench_tuned_retrieval import SETS, TABLE_HEAD, _eval, _row, _with, baseline_row
from common import ROOT


def fit_seconds(faq: Path, queries: Path) -> dict[str, float]:
    """Seconds to fit the classifier head (with the bundled out-of-scope class) per mode, to
    refit it (`refit <mode>`) after one phrasing is added, and to get it when the saved index
    is opened again (`restart`, 'auto': the head kept in the index folder is loaded)."""
    import tempfile

    import torch

    from bot.runtime import outside_questions
    from bot.settings import Settings
    from retrieval.embedder import SentenceTransformerEmbedder
    from retrieval.index import FaqIndex
    from retrieval.offline.queries import read_queries

    torch.set_num_threads(1)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    folder = tempfile.TemporaryDirectory()
    index, _ = FaqIndex.open(faq, folder.name, embedder)
    index.scoring = "classifier"
    added = next(q for q in read_queries(queries) if q.faq_id is not None)
    index.outside = outside_questions(Settings())
    index.classifier_head()  # the out-of-scope questions embedded once, outside the timing
    kept, index.head_file = index.head_file, None  # fitted below, never loaded from the folder
    seconds = {}
    for mode in ("off", "auto", "on"):
        index.lexical = mode
        index.invalidate()
        started = time.perf_counter()
        index.classifier_head()
        seconds[mode] = time.perf_counter() - started
        twin = index.copy()
        twin.extend(phrasings=[(str(added.faq_id), added.text)])
        started = time.perf_counter()
        twin.classifier_head()
        seconds[f"refit {mode}"] = time.perf_counter() - started
    index.head_file, index.lexical = kept, "auto"
    index.classifier_head()  # fitted with 'auto' and kept in the folder, as the bot does
    started = time.perf_counter()
    again, _ = FaqIndex.open(faq, folder.name, embedder)
    again.scoring, again.outside, again.lexical = "classifier", index.outside, "auto"
    again.classifier_head()
    seconds["restart"] = time.perf_counter() - started
    folder.cleanup()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "lexical")
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    lines = list(TABLE_HEAD)
    print("\n".join(lines), flush=True)
    fits = []
    for name in args.sets:
        faq, queries = SETS[name]
        out = args.out / name
        lines.append(baseline_row(name, faq, queries, out, env))
        print(lines[-1], flush=True)
        for mode in ("off", "auto"):
            started = time.perf_counter()
            result = _eval(faq, queries, out / f"eval-{mode}",
                           _with(env, {"scoring": "classifier", "lexical": mode}))
            lines.append(_row(f"{name}, classifier, lexical {mode} (words "
                              f"{'weighed' if result['lexical'] else 'left out'})", result,
                              time.perf_counter() - started))
            print(lines[-1], flush=True)
        seconds = fit_seconds(faq, queries)
        fits.append(f"- {name}: fitting the head takes {seconds['off']:.1f} s without words, "
                    f"{seconds['auto']:.1f} s to choose ('auto'), {seconds['on']:.1f} s with them; "
                    f"after one phrasing is added, {seconds['refit off']:.1f} / "
                    f"{seconds['refit auto']:.1f} / {seconds['refit on']:.1f} s; opening the "
                    f"saved index again ('auto', head loaded): {seconds['restart']:.2f} s")
        print(fits[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join([*lines, "", *fits]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
