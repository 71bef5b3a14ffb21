"""How the thresholds split held-out queries: answered right, answered wrong, offered, fallen back.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_retrieval.py [--faq data/faq.yaml]
     [--eval data/faq_eval.yaml] [--plot bench/out/retrieval_scores.png]

Baseline in the same run: what always answering with the top hit (no thresholds) would do.
The bands come from retrieval.bands, as in the bot; `supportbot eval retrieval --queries
data/faq_eval.yaml` reports the same mix and more (bench/README.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from common import ROOT

from bot.settings import RetrievalSettings
from retrieval.bands import Band, decide
from retrieval.corpus import load_faq
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faq", type=Path, default=ROOT / "data" / "faq.yaml")
    parser.add_argument("--eval", type=Path, default=ROOT / "data" / "faq_eval.yaml")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "out" /
                        "retrieval_scores.png")
    args = parser.parse_args()
    settings = RetrievalSettings()
    answer_t, suggest_t, shown = (settings.answer_threshold, settings.suggest_threshold,
                                  settings.max_suggestions)

    index = FaqIndex.build(load_faq(args.faq), SentenceTransformerEmbedder(settings.embedder))
    held_out = yaml.safe_load(args.eval.read_text(encoding="utf-8"))
    paraphrases, unrelated = held_out["paraphrases"], held_out["unrelated"]
    para_hits = index.search_many([p["text"] for p in paraphrases], top_k=settings.top_k)
    unrel_hits = index.search_many(unrelated, top_k=settings.top_k)

    top = np.array([h[0].score for h in para_hits])
    right = np.array([h[0].entry.id == p["id"] for h, p in zip(para_hits, paraphrases,
                                                                 strict=True)])
    in_top = np.array([p["id"] in [x.entry.id for x in h[:shown]]
                       for h, p in zip(para_hits, paraphrases, strict=True)])
    unrel_top = np.array([h[0].score for h in unrel_hits])

    # The bot's own band decision (retrieval.bands), not a copy of its comparisons.
    para_bands = [decide([x.score for x in h], answer_t, suggest_t, shown) for h in para_hits]
    unrel_bands = [decide([x.score for x in h], answer_t, suggest_t, shown).band
                   for h in unrel_hits]
    answered = np.array([b.band is Band.ANSWER for b in para_bands])
    clarified = np.array([b.band is Band.SUGGEST for b in para_bands])
    offered_right = np.array([p["id"] in [h[i].entry.id for i in b.offered] for h, p, b in
                              zip(para_hits, paraphrases, para_bands, strict=True)])
    n, m = len(top), len(unrel_top)
    print(f"{len(index.entries)} entries, {index.size} phrasings; {n} held-out paraphrases, "
          f"{m} unrelated queries; thresholds answer {answer_t}, suggest {suggest_t}")
    print(f"baseline, top hit always answered: right {right.mean():.1%}, wrong "
          f"{(~right).mean():.1%} of paraphrases; unrelated answered 100%")
    offered_share = (clarified & offered_right).sum() / max(clarified.sum(), 1)
    print(f"paraphrases: answered right {(answered & right).sum() / n:.1%}, answered wrong "
          f"{(answered & ~right).sum() / n:.1%}, 'Did you mean' {clarified.mean():.1%} "
          f"(right entry offered in {offered_share:.1%} of those), "
          f"fallback {(top < suggest_t).mean():.1%}")
    print(f"unrelated: answered {unrel_bands.count(Band.ANSWER) / m:.1%}, 'Did you mean' "
          f"{unrel_bands.count(Band.SUGGEST) / m:.1%}, fallback "
          f"{unrel_bands.count(Band.FALLBACK) / m:.1%}")
    print(f"precision of direct answers: {right[answered].mean() if answered.any() else 0:.1%}; "
          f"top-1 {right.mean():.1%}, top-{shown} {in_top.mean():.1%}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bins = [i / 40 for i in range(41)]
    ax.hist(top[right], bins=bins, alpha=0.6, label="paraphrase, top hit right")
    ax.hist(top[~right], bins=bins, alpha=0.6, label="paraphrase, top hit wrong")
    ax.hist(unrel_top, bins=bins, alpha=0.6, label="unrelated query")
    for value, name in ((answer_t, "answer"), (suggest_t, "suggest")):
        ax.axvline(value, color="black", linestyle="--", linewidth=1)
        ax.text(value, ax.get_ylim()[1] * 0.95, f" {name}", va="top")
    ax.set_xlabel("cosine score of the top FAQ hit")
    ax.set_ylabel("queries")
    ax.set_title("Top-hit scores on held-out queries (all-MiniLM-L6-v2, sample FAQ)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
