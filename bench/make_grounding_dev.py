"""Generate the unlabelled answers of the grounding dev set, exactly as the bot's middle band does.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/make_grounding_dev.py [--out FILE]
(default bench/out/grounding_raw.jsonl; an existing file is resumed)

Questions: the paraphrases and out-of-scope queries of data/faq_eval.yaml, then the extra
paraphrases of data/grounding_questions.yaml; kept when the top retrieval score is in
[suggest_threshold, answer_threshold). Prompt: build_prompt with the top entry only, greedy,
max_new_tokens 100, then tidy_reply. The answers are labelled by hand into
data/grounding_dev.jsonl (see data/README.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from common import ROOT

BATCH = 8


def questions() -> list[tuple[str, str | None, str]]:
    """(query, intended faq id or None for out-of-scope, source file) in a fixed order."""
    held_out = yaml.safe_load((ROOT / "data" / "faq_eval.yaml").read_text(encoding="utf-8"))
    extra = yaml.safe_load((ROOT / "data" / "grounding_questions.yaml").read_text(encoding="utf-8"))
    rows: list[tuple[str, str | None, str]] = []
    rows += [(p["text"], p["id"], "faq_eval.yaml") for p in held_out["paraphrases"]]
    rows += [(q if isinstance(q, str) else q["text"], None, "faq_eval.yaml")
             for q in held_out["unrelated"]]
    rows += [(p["text"], p["id"], "grounding_questions.yaml") for p in extra["paraphrases"]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "grounding_raw.jsonl")
    args = parser.parse_args()
    from bot.generation.prompt import build_prompt
    from bot.generation.text import tidy_reply
    from bot.generation.transformers_generator import TransformersGenerator
    from bot.settings import GenerationSettings, Settings
    from retrieval.corpus import load_faq
    from retrieval.embedder import SentenceTransformerEmbedder
    from retrieval.index import FaqIndex

    settings = Settings()
    index = FaqIndex.build(load_faq(ROOT / "data" / "faq.yaml"), SentenceTransformerEmbedder())
    rows = questions()
    hits = index.search_many([q for q, _, _ in rows], top_k=1)
    low, high = settings.retrieval.suggest_threshold, settings.retrieval.answer_threshold
    middle = [(q, i, f, h[0]) for (q, i, f), h in zip(rows, hits, strict=True)
              if low <= h[0].score < high]
    done: set[str] = set()
    if args.out.exists():  # resume: a killed run keeps what it wrote
        done = {json.loads(line)["query"] for line in args.out.read_text().splitlines()}
    todo = [m for m in middle if m[0] not in done]
    print(f"{len(middle)} middle-band questions of {len(rows)}; {len(todo)} to generate")
    generator = TransformersGenerator.load(settings.model.base_model, device="cpu")
    params = GenerationSettings(temperature=0, max_new_tokens=100)
    budget = generator.context_tokens - params.max_new_tokens
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as out:
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            prompts: list[Any] = [
                build_prompt(settings.persona, [hit.entry], [], q, generator.count_tokens,
                             budget).messages for q, _, _, hit in batch]
            texts = generator.generate(prompts, params)
            for (q, intended, source, hit), candidates in zip(batch, texts, strict=True):
                record = {"query": q, "faq_id": intended, "retrieved_id": hit.entry.id,
                          "score": round(hit.score, 4), "answer": tidy_reply(candidates[0]),
                          "source": source}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
            print(f"{start + len(batch)}/{len(todo)}", flush=True)


if __name__ == "__main__":
    main()
