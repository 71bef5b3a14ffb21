"""Generation speed and end-to-end latency on the bundled SmolLM2-135M, against baselines.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generation.py [--tokens 64] [--turns 12]

Figures, each with its baseline measured in the same run:
1. tokens/s of one stream through TransformersGenerator.stream vs raw `model.generate` on the
   same model, prompt and settings (goal: >= 0.95 of it);
2. tokens/s of 8 prompts in one batch vs the same 8 prompts one at a time;
3. cold start of `supportbot ask --json` on a question that needs generation: first run (the
   GGUF is converted into an empty cache) and cached; baseline: an FAQ-answer ask (no model);
4. median latency of an FAQ answer and of a generated answer (DialogueManager.handle).

With `--quality [--adapter FOLDER] [--backend llama_cpp]`, only the answer quality of the middle
band: the first 40 held-out paraphrases (data/faq_eval.yaml) whose top score falls between the
suggest and answer thresholds go through the bot with `dialogue.middle: generate`; how many
answers are sent, and how many of those are wrong: grounded in an entry other than the
paraphrase's own (the grounding check has already rejected text its entry does not support).
Every output, with its judgement, goes to bench/out/middle_band_<name>.jsonl for a person to read.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, ask_command, open_bench_runtime, timed

QUESTIONS = [
    "how do I opt out of promotional emails",
    "can I trade these trousers for a medium instead of a small",
    "my parcel hasn't shown up, can I see where it is",
    "payment didnt work, it says transaction unsuccessful",
    "where do I put my discount voucher at checkout",
    "how much assembly is needed when a mountain bike is delivered to my house",
    "the tent pole was snapped when I opened the package",
    "can you post to a PO box in the states",
]


def new_tokens(generator: Any, output: Any, prompt_len: int) -> int:
    """Generated tokens in a batch output, not counting anything after each row's EOS."""
    eos = generator.tokenizer.eos_token_id
    total = 0
    for row in output[:, prompt_len:].tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


def speed(tokens: int) -> dict[str, float]:
    import torch

    from bot.generation.batching import BatchingGenerator
    from bot.generation.transformers_generator import TransformersGenerator
    from bot.settings import GenerationSettings, Settings

    settings = Settings()
    gen = TransformersGenerator.load(settings.model.base_model, cache_dir=settings.model.cache_dir)
    params = GenerationSettings(temperature=0, max_new_tokens=tokens, repetition_penalty=1.0)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    config = gen.generation_config(params)
    # Greedy and the same config on both sides: the stream produces exactly the raw tokens.
    long_answer = [{"role": "user", "content": "Describe in detail, step by step, how a customer "
                                               "returns a jacket to an online shop."}]

    def raw(batch_prompts: list[Any]) -> tuple[int, float]:
        batch = gen.encode(batch_prompts)
        started = time.perf_counter()
        with torch.inference_mode():
            out = gen.model.generate(**batch, generation_config=config)
        return new_tokens(gen, out, batch["input_ids"].shape[1]), time.perf_counter() - started

    raw([long_answer])  # warm-up
    # 1. one stream through the generator vs raw generate, alternating; on 2 busy cores single
    # runs vary by a few percent, so the figure is the median of 5 paired ratios
    raw_rates, stream_rates = [], []
    for _ in range(5):
        n, seconds = raw([long_answer])
        raw_rates.append(n / seconds)
        started = time.perf_counter()
        pieces = list(gen.stream(long_answer, params))
        seconds = time.perf_counter() - started
        assert pieces
        stream_rates.append(n / seconds)
    # 2. 8 prompts in one batch vs one at a time
    n_batch, t_batch = raw(prompts)
    singles = [raw([p]) for p in prompts]
    n_single, t_single = sum(n for n, _ in singles), sum(t for _, t in singles)
    # 3. 8 conversations calling generate at once: through BatchingGenerator vs directly
    concurrent = {name: concurrently(target, prompts, params)
                  for name, target in (("direct", gen), ("batched", BatchingGenerator(gen)))}
    ratios = [s / r for s, r in zip(stream_rates, raw_rates, strict=True)]
    return {"raw": statistics.median(raw_rates), "stream": statistics.median(stream_rates),
            "ratio": statistics.median(ratios),
            "batch": n_batch / t_batch, "single": n_single / t_single, **concurrent}


def concurrently(generator: Any, prompts: list[Any], params: Any) -> float:
    """Wall time for one thread per prompt, all calling generator.generate at once."""
    barrier = threading.Barrier(len(prompts) + 1)

    def call(prompt: Any) -> None:
        barrier.wait()
        generator.generate([prompt], params)

    threads = [threading.Thread(target=call, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def cold_start(work: Path) -> dict[str, float]:
    ask = ask_command(work, f"model:\n  cache_dir: {work / 'models'}\n")
    faq = timed([*ask, "How can I track my order?"])  # also builds the index
    faq = min(faq, timed([*ask, "How can I track my order?"]))
    first = timed([*ask, QUESTIONS[0]])
    cached = statistics.median(timed([*ask, QUESTIONS[0]]) for _ in range(3))
    return {"first": first, "cached": cached, "faq": faq}


async def latency(turns: int, work: Path) -> dict[str, Any]:
    from bot.types import Decision, UserMessage

    settings, runtime = await open_bench_runtime(work)
    index = runtime.index
    manager = runtime.manager
    faq_questions = [e.question for e in index.entries][:turns]
    held_out = yaml.safe_load((ROOT / "data" / "faq_eval.yaml").read_text())["paraphrases"]
    middle = [p["text"] for p in held_out
              if settings.retrieval.suggest_threshold <= index.search(p["text"])[0].score
              < settings.retrieval.answer_threshold][:turns]
    assert manager.generator is not None  # load it now: loading is not latency
    faq_ms, gen_ms, decisions = [], [], []
    for i, q in enumerate(faq_questions):
        reply = await manager.handle(UserMessage(q, conversation_id=f"faq-{i}"))
        if reply.decision is Decision.ANSWER:
            faq_ms.append(reply.latency_ms)
    for i, q in enumerate(middle):
        reply = await manager.handle(UserMessage(q, conversation_id=f"gen-{i}"))
        gen_ms.append(reply.latency_ms)
        decisions.append(reply.decision.value)
    await runtime.close()
    return {"faq": statistics.median(faq_ms), "gen": statistics.median(gen_ms),
            "generated": decisions.count("generate"), "middle": len(middle)}


def restated(text: str, ids: list[str], index: Any) -> str | None:
    """Of the entries in the prompt, the one whose answer shares the most words with `text`."""
    words = set(re.findall(r"[a-z0-9']+", text.lower()))
    answers = {e.id: set(re.findall(r"[a-z0-9']+", e.answer.lower())) for e in index.entries
               if e.id in ids}
    return max(ids, key=lambda i: len(words & answers[i]) / max(len(answers[i]), 1),
               default=None)


async def quality(adapter: Path | None, limit: int, work: Path,
                  prompt_entries: int | None, backend: str) -> dict[str, Any]:
    """Sent and wrong generated answers on the held-out middle band, each output kept."""
    import json

    from bot.types import Decision, UserMessage

    settings, runtime = await open_bench_runtime(work, middle_generates=True, adapter=adapter,
                                                 prompt_entries=prompt_entries, backend=backend)
    index, manager = runtime.index, runtime.manager
    held_out = yaml.safe_load((ROOT / "data" / "faq_eval.yaml").read_text())["paraphrases"]
    middle = [p for p in held_out
              if settings.retrieval.suggest_threshold <= index.search(p["text"])[0].score
              < settings.retrieval.answer_threshold][:limit]
    rows = []
    for i, p in enumerate(middle):
        reply = await manager.handle(UserMessage(p["text"], conversation_id=f"q-{i}"))
        sent = reply.decision is Decision.GENERATE and reply.meta.get("interrupted") is None
        top = index.search(p["text"])[0].entry.id
        source = restated(reply.text, [s.id for s in reply.sources], index) if sent else None
        prompt_ids = [s.id for s in reply.sources]
        # With model.generation.n > 1: every sampled candidate, its grounding score and the
        # entry it restates; `votes`: how many pass the grounding threshold.
        candidates = [{"text": c.text, "score": c.score,
                       "source": restated(c.text, prompt_ids, index)}
                      for c in reply.candidates] if len(reply.candidates) > 1 else []
        rows.append({"question": p["text"], "expected": p["id"], "top_entry": top,
                     "decision": reply.decision.value, "sent": sent,
                     "prompt_entries": prompt_ids, "source": source,
                     "wrong": sent and source != p["id"], "text": reply.text,
                     "raw": reply.meta.get("generated"), "candidates": candidates,
                     "votes": sum(c["score"] >= settings.dialogue.min_grounding
                                  for c in candidates)})
    await runtime.close()
    name = (adapter.name if adapter else "base") + (
        "" if backend == "transformers" else f"_{backend}")
    out = ROOT / "bench" / "out" / f"middle_band_{name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    sent_rows = [r for r in rows if r["sent"]]
    return {"n": len(rows), "sent": len(sent_rows), "wrong": sum(r["wrong"] for r in rows),
            "right_entry_top": sum(r["top_entry"] == r["expected"] for r in rows), "out": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per generation")
    parser.add_argument("--turns", type=int, default=12, help="messages per latency figure")
    parser.add_argument("--quality", action="store_true", help="only the middle band's answer "
                        "quality (sent / wrong), with and without --adapter")
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder from "
                        "`supportbot train` (with --quality)")
    parser.add_argument("--limit", type=int, default=40, help="middle-band questions (--quality)")
    parser.add_argument("--no-base", action="store_true", help="with --quality --adapter: "
                        "skip the base model's run")
    parser.add_argument("--prompt-entries", type=int, help="dialogue.prompt_entries (--quality; "
                        "use the value the adapter was trained with)")
    parser.add_argument("--backend", default="transformers", choices=["transformers",
                        "llama_cpp"], help="model.backend (--quality; llama_cpp serves an "
                        "adapter through its adapter.gguf: supportbot export-gguf)")
    args = parser.parse_args()
    if args.quality:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [None, args.adapter] if args.adapter else [None]
            for adapter in runs[1:] if args.no_base and args.adapter else runs:
                q = asyncio.run(quality(adapter, args.limit, Path(tmp) / (
                    adapter.name if adapter else "base"), args.prompt_entries, args.backend))
                print(f"{adapter or 'base model'} ({args.backend}): {q['sent']} of {q['n']} "
                      f"middle-band answers sent (goal >= 30), {q['wrong']} of them wrong "
                      "(goal <= 1 in 20); "
                      f"top entry right for {q['right_entry_top']} of {q['n']}; outputs: "
                      f"{q['out']}")
        return
    s = speed(args.tokens)
    print(f"1 stream: generator.stream {s['stream']:.1f} tok/s vs raw model.generate "
          f"{s['raw']:.1f} tok/s (medians) -> {s['ratio']:.3f} of raw, median of 5 paired "
          "runs (goal >= 0.95)")
    print(f"8 prompts: one batch {s['batch']:.1f} tok/s vs one at a time {s['single']:.1f} tok/s "
          f"-> {s['batch'] / s['single']:.2f}x")
    print(f"8 concurrent conversations: through BatchingGenerator {s['batched']:.1f} s vs "
          f"calling the generator directly {s['direct']:.1f} s -> "
          f"{s['direct'] / s['batched']:.2f}x faster")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cold = cold_start(work)
        lat = asyncio.run(latency(args.turns, work))
    print(f"cold start `supportbot ask --json`, generated answer: first run (converts the GGUF) "
          f"{cold['first']:.1f} s, cached {cold['cached']:.1f} s; baseline FAQ-answer ask "
          f"{cold['faq']:.1f} s")
    print(f"median latency: FAQ answer {lat['faq']:.0f} ms, generated-band turn {lat['gen']:.0f} "
          f"ms ({lat['generated']} of {lat['middle']} held-out middle-band questions got a "
          "generated answer; the rest failed the grounding check and got 'Did you mean')")


if __name__ == "__main__":
    main()
