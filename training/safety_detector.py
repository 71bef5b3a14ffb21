"""Train the learned safety heads (injection, harmful) over the bundled sentence embeddings.

Run: HF_HUB_OFFLINE=1 python -m training.safety_detector [--data data/safety]
     [--out bot/safety/detector.json]

Logistic regression on MiniLM embeddings of `train.jsonl`; long prompts are also embedded window
by window, as the guard scores them. Each head's threshold is chosen on `dev.jsonl` only: the
lowest at which at most a set share (HEADS) of the dev's benign rows would be blocked. The test
split is never read here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embedder import SentenceTransformerEmbedder

WINDOW_WORDS = 120  # the same windows as bot/safety/injection.py scores
# Each head: the categories it detects, and the share of dev customers it alone may block (the
# harmful head learns from 60 questions only, so it gets the stricter budget).
HEADS = {"injection": ({"jailbreak"}, 0.003), "harmful": ({"harmful"}, 0.0)}


def windows(text: str, size: int = WINDOW_WORDS) -> list[str]:
    """The text if short; else its first, middle and last `size` words."""
    words = text.split()
    if len(words) <= size:
        return [text]
    starts = sorted({0, len(words) - size, (len(words) - size) // 2})
    return [" ".join(words[s:s + size]) for s in starts]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def embed_rows(embedder: SentenceTransformerEmbedder, rows: list[dict[str, Any]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every window of every row (lower-cased), and the row each belongs to."""
    texts, owner = [], []
    for i, row in enumerate(rows):
        for window in windows(row["text"].lower()):
            texts.append(window)
            owner.append(i)
    return embedder.embed(texts), np.asarray(owner)


def row_scores(probabilities: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """A row's score is its highest window's."""
    scores = np.zeros(n)
    np.maximum.at(scores, owner, probabilities)
    return scores


def choose_threshold(scores: np.ndarray, benign: np.ndarray, max_fp: float) -> float:
    """The lowest threshold that blocks at most `max_fp` of the benign rows."""
    ranked = np.sort(scores[benign])[::-1]
    allowed = int(np.floor(max_fp * len(ranked)))
    return float(min(0.99, max(0.5, ranked[allowed] + 1e-4))) if len(ranked) else 0.5


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/safety"))
    parser.add_argument("--out", type=Path, default=Path("bot/safety/detector.json"))
    parser.add_argument("--c", type=float, default=1.0, help="Inverse regularisation strength.")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    embedder = SentenceTransformerEmbedder()
    train, dev = read(args.data / "train.jsonl"), read(args.data / "dev.jsonl")
    x_train, owner_train = embed_rows(embedder, train)
    x_dev, owner_dev = embed_rows(embedder, dev)
    dev_benign = np.asarray([r["label"] == 0 for r in dev])
    heads: dict[str, Any] = {}
    report: dict[str, Any] = {}
    for name, (positive, max_fp) in HEADS.items():
        y = np.asarray([train[i]["category"] in positive for i in owner_train], dtype=int)
        model = LogisticRegression(C=args.c, class_weight="balanced", max_iter=2000)
        model.fit(x_train, y)
        dev_scores = row_scores(model.predict_proba(x_dev)[:, 1], owner_dev, len(dev))
        threshold = choose_threshold(dev_scores, dev_benign, max_fp)
        hits = np.asarray([r["category"] in positive for r in dev])
        report[name] = {"threshold": round(threshold, 4),
                        "dev_detection": round(float((dev_scores[hits] >= threshold).mean()), 4),
                        "dev_false_positive": round(float(
                            (dev_scores[dev_benign] >= threshold).mean()), 4)}
        heads[name] = {"weights": [round(float(w), 6) for w in model.coef_[0]],
                       "bias": float(model.intercept_[0])}
    args.out.write_text(json.dumps({"embedder": embedder.name, "heads": heads, "meta": {
        "trained_on": str(args.data / "train.jsonl"), "rows": len(train), "c": args.c,
        "dev": report}}, indent=None) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
