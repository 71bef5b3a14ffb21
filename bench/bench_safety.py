"""The input guards' latency per message, and what they add to a turn, against baselines.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_safety.py [--messages 400] [--turns 150]

1. All input guards together (`SafetyLayer.check_input`, the default pipeline) on a worker
   thread with one torch thread, as a turn runs them, on `--messages` messages of
   data/safety/dev.jsonl that reach the guards (at most `dialogue.max_input_chars`: 2,000):
   customers, tweets, jailbreaks and harmful questions in the set's proportions. Goal: p95
   <= 20 ms. Baseline in the same run: embedding the same message alone with MiniLM (what
   retrieval pays anyway, and what the guards share with it).
2. FAQ-answer latency through `DialogueManager.handle` (storage included) with the guards vs
   without them, on the sample FAQ's own phrasings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, open_bench_runtime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def messages(limit: int, max_chars: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "data/safety/dev.jsonl").read_text(
        encoding="utf-8").splitlines()]
    texts = [r["text"] for r in rows if len(r["text"]) <= max_chars]
    random.Random(0).shuffle(texts)
    return texts[:limit]


def guards(runtime: Any, texts: list[str]) -> dict[str, Any]:
    """Per message: the whole input pipeline, each guard, and MiniLM alone (same thread)."""
    from bot.runtime import torch_threads

    layer = runtime.manager.safety
    embedder = runtime.index.embedder
    totals: list[float] = []
    alone: list[float] = []
    per_guard: dict[str, list[float]] = {}

    def run() -> None:
        torch_threads(1)()
        for text in texts[:20]:  # warm-up
            layer.check_input(text, "bench", "warm", "bench")
        for i, text in enumerate(texts):
            started = time.perf_counter()
            result = layer.check_input(text, "bench", f"b{i}", "bench")
            totals.append((time.perf_counter() - started) * 1000)
            for verdict in result.verdicts:
                per_guard.setdefault(verdict.guard, []).append(verdict.ms)
            started = time.perf_counter()
            embedder.embed([text])
            alone.append((time.perf_counter() - started) * 1000)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()
    return {"totals": totals, "alone": alone, "per_guard": per_guard}


async def turns(work: Path, count: int) -> dict[str, list[float]]:
    """FAQ answers through handle, with the guards and without (the same runtime)."""
    from bot.types import Decision, UserMessage

    _, runtime = await open_bench_runtime(work)
    manager = runtime.manager
    layer = manager.safety
    questions = [q for e in runtime.index.entries for q in e.questions]
    questions = (questions * (count // len(questions) + 1))[:count]
    out: dict[str, list[float]] = {"with": [], "without": []}
    try:
        for q in questions[:10]:
            await manager.handle(UserMessage(q, conversation_id=f"warm-{q}"))
        for i, q in enumerate(questions):
            for label, safety in (("with", layer), ("without", None)):
                manager.safety = safety
                started = time.perf_counter()
                reply = await manager.handle(UserMessage(q, conversation_id=f"{label}-{i}"))
                if reply.decision is Decision.ANSWER:
                    out[label].append((time.perf_counter() - started) * 1000)
    finally:
        manager.safety = layer
        await runtime.close()
    return out


async def measure(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    settings, runtime = await open_bench_runtime(work)
    try:
        texts = messages(args.messages, settings.dialogue.max_input_chars)
        found = await asyncio.get_running_loop().run_in_executor(None, guards, runtime, texts)
    finally:
        await runtime.close()
    return found, await turns(work, args.turns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400, help="messages for figure 1")
    parser.add_argument("--turns", type=int, default=150, help="FAQ turns for figure 2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found, handled = asyncio.run(measure(args, Path(tmp)))
    totals, alone = found["totals"], found["alone"]
    print(f"all input guards per message ({len(totals)} messages): p50 "
          f"{percentile(totals, 50):.1f} ms, p95 {percentile(totals, 95):.1f} ms, max "
          f"{max(totals):.1f} ms (goal: p95 <= 20 ms)")
    print(f"baseline: MiniLM embedding of the same message alone: p50 "
          f"{percentile(alone, 50):.1f} ms, p95 {percentile(alone, 95):.1f} ms")
    for name, ms in found["per_guard"].items():
        print(f"  {name:10s} p50 {percentile(ms, 50):6.2f} ms  p95 {percentile(ms, 95):6.2f} ms"
              f"  ({len(ms)} messages reached it)")
    w, wo = handled["with"], handled["without"]
    print(f"FAQ answer through DialogueManager.handle with guards: median "
          f"{statistics.median(w):.1f} ms, p95 {percentile(w, 95):.1f} ms ({len(w)} answers)")
    print(f"baseline: the same turns without guards: median {statistics.median(wo):.1f} ms, "
          f"p95 {percentile(wo, 95):.1f} ms -> with / without = "
          f"{statistics.median(w) / statistics.median(wo):.2f}x")


if __name__ == "__main__":
    main()
