"""Turn the public intent data in ../shared/data into FAQ and query files for `eval retrieval`.

Run: python data/retrieval/build.py [--shared ../shared/data] [--out data/retrieval] [--seed 17]

Writes (deterministic for a seed and the same input files):
  banking77_faq.jsonl      one FAQ entry per intent, its 80% phrasings as the questions
  banking77_faq_5.jsonl    the same entries with 5 of those phrasings each
  banking77_queries.csv    the other 20% of each intent (query, faq_id)
  clinc150_faq.jsonl       CLINC150 train: one entry per in-scope intent, 100 phrasings each
  clinc150_queries.csv     CLINC150 val (in scope) and oos_val (faq_id empty: out of scope)
Answers are placeholders naming the intent: the evaluation scores which entry is found.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
OUT = Path(__file__).resolve().parent  # 1.5 MB in all: small enough to keep in the repository
QUERY_SHARE = 0.2
FEW = 5


def _entry(intent: str, questions: list[str], source: str) -> dict[str, object]:
    return {"id": intent, "questions": questions,
            "answer": f"(placeholder) The {source} answer for the intent '{intent}'.",
            "tags": [source]}


def _write_faq(path: Path, entries: list[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as file:
        for entry in entries:
            file.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _write_queries(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["query", "faq_id"])
        writer.writerows(rows)


def _clean(text: str) -> str:
    return " ".join(text.split())


def banking77(shared: Path, out: Path, seed: int) -> list[Path]:
    """A seeded 80/20 split of each Banking77 intent: FAQ phrasings / held-out queries."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    with (shared / "banking77" / "train.csv").open(encoding="utf-8", newline="") as file:
        for row in csv.DictReader(file):
            text = _clean(row["text"])
            if text and text.lower() not in seen:  # a few exact repeats would leak across
                seen.add(text.lower())
                by_intent[row["category"]].append(text)
    rng = random.Random(seed)
    faq, few, queries = [], [], []
    for intent in sorted(by_intent):
        texts = by_intent[intent][:]
        rng.shuffle(texts)
        held = max(1, round(len(texts) * QUERY_SHARE))
        kept = texts[held:]
        faq.append(_entry(intent, kept, "banking77"))
        few.append(_entry(intent, kept[:FEW], "banking77"))
        queries += [(text, intent) for text in texts[:held]]
    paths = [out / "banking77_faq.jsonl", out / "banking77_faq_5.jsonl",
             out / "banking77_queries.csv"]
    _write_faq(paths[0], faq)
    _write_faq(paths[1], few)
    _write_queries(paths[2], queries)
    return paths


def clinc150(shared: Path, out: Path) -> list[Path]:
    """CLINC150 train as the FAQ, val and oos_val as the queries (no sampling: fixed splits)."""
    data = json.loads((shared / "clinc150" / "train_val.json").read_text(encoding="utf-8"))
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in data["train"]:
        by_intent[intent].append(_clean(text))
    faq = [_entry(intent, list(dict.fromkeys(by_intent[intent])), "clinc150")
           for intent in sorted(by_intent)]
    queries = [(_clean(text), intent) for text, intent in data["val"]]
    queries += [(_clean(text), "") for text, _ in data["oos_val"]]
    paths = [out / "clinc150_faq.jsonl", out / "clinc150_queries.csv"]
    _write_faq(paths[0], faq)
    _write_queries(paths[1], queries)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED, help="../shared/data")
    parser.add_argument("--out", type=Path, default=OUT, help="where the files go")
    parser.add_argument("--seed", type=int, default=17, help="seed of the Banking77 split")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in banking77(args.shared, args.out, args.seed) + clinc150(args.shared, args.out):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
