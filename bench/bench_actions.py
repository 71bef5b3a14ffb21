"""Latency of an action turn (its API call to the demo shop included) against a plain FAQ-answer
turn on the same runtime, and API calls per conversation over the dialogue scripts.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_actions.py [--turns 40]

- One runtime on the sample FAQ (its index built in a temp folder); SHOP_API_URL unset, so it
  starts the demo shop on loopback (bot/actions/demo_server.py) as `supportbot serve` does.
- Action turn: "has order KO-... shipped?" as the first message of a new conversation, which
  finds order-status, takes the number from the message, calls GET /orders/{id} and answers from
  the JSON (`DialogueManager.handle`, whole turn: guards, retrieval, the call, storage). The
  call's own share is its `meta.action.call.ms`.
- FAQ-answer turn: an FAQ question as the first message of a new conversation (same path minus
  the call). Action and FAQ turns alternate, so that a change of load on this shared machine
  hits both alike; two of each warm up first.
- Calls per conversation: data/dialogue_scripts.yaml through the same runtime
  (bot/eval_script_run.py), the figure `supportbot eval dialogue --scripts` reports.
Bounded: about a minute on 2 cores (the slow-API script waits its 3 s timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, open_bench_runtime

ORDERS = ("KO-123456", "KO-654321", "KO-111111", "KO-222222")
ACTION_ASKS = ("has order {} shipped?", "check the status of order {}",
               "where is my order {}", "what's the status of my order {}")
FAQ_QUESTIONS = ("How can I track my order?", "I forgot my password, how do I reset it?",
                 "How much does shipping cost?", "How do I return an item?",
                 "Which payment methods do you accept?", "How do I use a promo code?")
SCRIPTS = ROOT / "data" / "dialogue_scripts.yaml"


async def measure(work: Path, turns: int) -> dict[str, Any]:
    """Alternating action and FAQ turns, then the scripts, on one runtime."""
    from bot.eval_script_run import evaluate_scripts
    from bot.eval_scripts import read_scripts
    from bot.types import Decision, UserMessage

    _, runtime = await open_bench_runtime(work)
    manager = runtime.manager
    action_ms: list[float] = []
    call_ms: list[float] = []
    faq_ms: list[float] = []
    try:
        for i in range(turns + 2):
            order = ORDERS[i % len(ORDERS)]
            ask = ACTION_ASKS[i % len(ACTION_ASKS)].format(order)
            for text, want, into in ((ask, Decision.ACTION, action_ms),
                                     (FAQ_QUESTIONS[i % len(FAQ_QUESTIONS)], Decision.ANSWER,
                                      faq_ms)):
                started = time.perf_counter()
                reply = await manager.handle(UserMessage(text, conversation_id=f"b{i}-{want}"))
                took = (time.perf_counter() - started) * 1000
                if reply.decision is not want:
                    raise SystemExit(f"{text!r}: expected {want.value}, got "
                                     f"{reply.decision.value} ({reply.text[:80]})")
                if i >= 2:  # the first two of each warm up
                    into.append(took)
                    if want is Decision.ACTION:
                        call_ms.append(float(reply.meta["action"]["call"]["ms"]))
        scripts = await evaluate_scripts(manager, read_scripts(SCRIPTS))
    finally:
        await runtime.close()
    return {"action": action_ms, "call": call_ms, "faq": faq_ms, "scripts": scripts.report}


def main() -> None:
    from retrieval.offline.evaluate import percentile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40, help="action turns and FAQ turns each")
    args = parser.parse_args()
    os.environ.pop("SHOP_API_URL", None)  # the demo shop, not a real one
    load = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        m = asyncio.run(measure(Path(tmp), args.turns))
    seconds = time.perf_counter() - started
    action50, action95 = percentile(m["action"], 50), percentile(m["action"], 95)
    faq50, faq95 = percentile(m["faq"], 50), percentile(m["faq"], 95)
    print(f"action turn (order-status over the demo shop, call included), {len(m['action'])} "
          f"turns: p50 {action50:.0f} ms, p95 {action95:.0f} ms; the call alone p50 "
          f"{percentile(m['call'], 50):.0f} ms, p95 {percentile(m['call'], 95):.0f} ms")
    print(f"FAQ-answer turn on the same runtime, {len(m['faq'])} turns: p50 {faq50:.0f} ms, "
          f"p95 {faq95:.0f} ms -> action / FAQ: p50 {action50 / faq50:.2f}x, p95 "
          f"{action95 / faq95:.2f}x")
    s = m["scripts"]
    calls = s["calls"]
    print(f"dialogue scripts ({SCRIPTS.name}): {s['scripts_passed']} of {s['n_scripts']} "
          f"passed; API calls per conversation mean {calls['per_conversation_mean']}, max "
          f"{calls['per_conversation_max']} ({calls['total']} calls: "
          + ", ".join(f"{k} {v}" for k, v in calls["outcomes"].items()) + ")")
    after = os.getloadavg()
    print(f"load average (1 min) {load[0]:.2f} before, {after[0]:.2f} after, on "
          f"{len(os.sched_getaffinity(0))} cores; {seconds:.0f} s in all")


if __name__ == "__main__":
    main()
