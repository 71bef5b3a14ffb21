"""The dialogue core under load, on the bundled SmolLM2-135M, each figure against a baseline.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_dialogue.py [--tokens 48] [--queries 60]

1. Batching through `DialogueManager.handle`: 8 conversations in the generated band at once vs
   the same 8 turns one after another (tokens/s of generated text; goal >= 4x). The grounding
   check is replaced by one that passes everything (after 10 ms), so that every answer runs
   its full length in both runs.
2. Time to the first visible text of a generated answer: released sentence by sentence
   (`dialogue.release: sentence`) vs as one checked answer (`answer`).
3. Generation speed on its worker thread after the event loop's thread has embedded queries
   with 1 torch thread (`retrieval.threads: 1`) vs torch's default (all cores).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_generation import QUESTIONS
from common import ENV, open_bench_runtime


class PassEverything:
    """Stands in for the grounding check where a figure is about the mechanism, not the check:
    every sentence passes (after the ~10 ms the real check costs)."""

    def check_sentence(self, sentence: str, sources: Any, question: str = "",
                       min_score: float | None = None) -> Any:
        from bot.generation.grounding import SentenceCheck

        time.sleep(0.01)
        return SentenceCheck(sentence, 1.0, True, "")


def generated_tokens(manager: Any, replies: list[Any]) -> int:
    """Tokens the model wrote for these replies (the raw text, before any check)."""
    tokenizer = manager.generator.inner.tokenizer
    return sum(len(tokenizer(r.meta.get("generated", ""), add_special_tokens=False)["input_ids"])
               for r in replies)


async def batching(work: Path, tokens: int) -> dict[str, float]:
    from bot.types import UserMessage

    _, runtime = await open_bench_runtime(work, everything_generates=True)
    manager = runtime.manager
    manager.generation.max_new_tokens = tokens
    manager.checker = PassEverything()  # generation runs its full length in both runs
    assert manager.generator is not None  # load now: loading is not throughput
    await manager.handle(UserMessage(QUESTIONS[0], conversation_id="warm-up"))
    started = time.perf_counter()
    one = [await manager.handle(UserMessage(q, conversation_id=f"one-{i}"))
           for i, q in enumerate(QUESTIONS)]
    t_one = time.perf_counter() - started
    batches_before = manager.generator.batches_run
    started = time.perf_counter()
    many = await asyncio.gather(*(manager.handle(UserMessage(q, conversation_id=f"many-{i}"))
                                  for i, q in enumerate(QUESTIONS)))
    t_many = time.perf_counter() - started
    sizes = manager.generator.batches_since(batches_before)
    n_one, n_many = generated_tokens(manager, one), generated_tokens(manager, list(many))
    # The ceiling: the bare model on the very prompts the turns built, one batch vs one by one.
    from bot.generation.prompt import build_prompt

    model = manager.generator.inner
    entries = {e.id: e for e in runtime.index.entries}
    prompts = [build_prompt(manager.persona, [entries[r.sources[0].id]], [], q,
                            model.count_tokens, model.context_tokens - tokens).messages
               for r, q in zip(one, QUESTIONS, strict=True)]
    params = manager.generation
    worker = manager.generator  # the model's own thread, without streaming, checks or storage
    started = time.perf_counter()
    singles = [worker.submit([p], params).result()[0][0] for p in prompts]
    t_raw_one = time.perf_counter() - started
    started = time.perf_counter()
    batch = [c[0] for c in worker.submit(prompts, params).result()]
    t_raw_many = time.perf_counter() - started
    count = model.tokenizer
    n_raw_one = sum(len(count(t, add_special_tokens=False)["input_ids"]) for t in singles)
    n_raw_many = sum(len(count(t, add_special_tokens=False)["input_ids"]) for t in batch)
    await runtime.close()
    return {"one": n_one / t_one, "many": n_many / t_many, "n_one": n_one, "n_many": n_many,
            "t_one": t_one, "t_many": t_many, "batches": sizes,
            "raw_one": n_raw_one / t_raw_one, "raw_many": n_raw_many / t_raw_many}


async def first_text(work: Path, release: str, real_check: bool) -> dict[str, float]:
    from bot.types import BotReply, TextEvent, UserMessage

    _, runtime = await open_bench_runtime(work, everything_generates=True)
    manager = runtime.manager
    manager.dialogue.release = release
    if not real_check:  # both modes show the same text; only the timing differs
        manager.checker = PassEverything()
    assert manager.generator is not None
    firsts, totals, generated = [], [], 0
    for i, q in enumerate(QUESTIONS):
        started = time.perf_counter()
        first = None
        async for event in manager.stream(UserMessage(q, conversation_id=f"{release}-{i}")):
            if isinstance(event, TextEvent) and first is None:
                first = time.perf_counter() - started
            if isinstance(event, BotReply):
                totals.append(time.perf_counter() - started)
                if event.decision.value == "generate":
                    generated += 1
                    firsts.append(first or 0.0)
    await runtime.close()
    return {"first": statistics.median(firsts) if firsts else float("nan"),
            "total": statistics.median(totals), "generated": generated}


def probe(threads: int) -> None:
    """(In a fresh process.) Embed on this thread with `threads` torch threads (0: torch's
    default), then time generation on a worker thread with all cores, as the server does."""
    import torch

    from bot.runtime import generator_factory
    from bot.settings import GenerationSettings, Settings
    from retrieval.embedder import SentenceTransformerEmbedder

    if threads:
        torch.set_num_threads(threads)
    SentenceTransformerEmbedder().embed(["where is my parcel"] * 64)
    generator: Any = generator_factory(Settings().model)()
    params = GenerationSettings(max_new_tokens=48)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[:4]]
    generator.generate(prompts[:1], params)  # warm-up
    started = time.perf_counter()
    texts = [generator.generate([p], params)[0][0] for p in prompts]
    seconds = time.perf_counter() - started
    tokens = sum(len(generator.inner.tokenizer(t)["input_ids"]) for t in texts)
    print(tokens / seconds)
    generator.close()


def generation_after_retrieval(threads: int) -> float:
    """Tokens/s of the generation worker once the event loop's thread has embedded."""
    out = subprocess.run([sys.executable, __file__, "--probe", str(threads)], check=True,
                         capture_output=True, text=True, env=ENV)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per answer")
    parser.add_argument("--probe", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        b = asyncio.run(batching(work, args.tokens))
        print(f"8 conversations at once through DialogueManager.handle: {b['many']:.1f} tok/s "
              f"({b['n_many']} tokens in {b['t_many']:.1f} s, batches {b['batches']}) vs one "
              f"after another {b['one']:.1f} tok/s ({b['n_one']} tokens in {b['t_one']:.1f} s) "
              f"-> {b['many'] / b['one']:.2f}x (goal >= 4x)")
        print(f"ceiling, the raw model on the same prompts: one batch {b['raw_many']:.1f} tok/s "
              f"vs one at a time {b['raw_one']:.1f} tok/s -> {b['raw_many'] / b['raw_one']:.2f}x")
        for real in (False, True):
            sentence = asyncio.run(first_text(work, "sentence", real))
            answer = asyncio.run(first_text(work, "answer", real))
            label = "the real check" if real else "every sentence passing"
            print(f"first visible text of a generated answer ({label}), median: sentence by "
                  f"sentence {sentence['first'] * 1000:.0f} ms vs whole checked answer "
                  f"{answer['first'] * 1000:.0f} ms -> "
                  f"{answer['first'] / sentence['first']:.2f}x sooner (whole turn "
                  f"{sentence['total'] * 1000:.0f} / {answer['total'] * 1000:.0f} ms; "
                  f"{sentence['generated']} / {answer['generated']} of {len(QUESTIONS)} "
                  "turns showed generated text)")
        one = statistics.median(generation_after_retrieval(1) for _ in range(3))
        default = statistics.median(generation_after_retrieval(0) for _ in range(3))
        print(f"generation on its worker after the event loop's thread embedded queries: with "
              f"1 torch thread there {one:.1f} tok/s vs torch's default {default:.1f} tok/s -> "
              f"{one / default:.2f}x (median of 3 fresh processes each)")

if __name__ == "__main__":
    main()
