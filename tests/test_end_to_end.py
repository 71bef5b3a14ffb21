"""A whole conversation on the real bundled models: MiniLM retrieval and SmolLM2-135M generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.runtime import open_index, open_runtime
from bot.settings import load_settings
from bot.types import Decision, UserMessage

# A held-out paraphrase (data/faq_eval.yaml) that lands between the thresholds, and that the
# bundled model (greedy decoding) answers well enough to pass the grounding check.
NEAR_MISS = "I'd like the same shoes in black, can I swap them"


@pytest.mark.slow
async def test_conversation_on_the_bundled_models(config_file: Path) -> None:
    settings = load_settings(config_file)
    index, _ = open_index(settings)
    runtime = await open_runtime(settings, index)
    manager = runtime.manager
    try:
        turns = [
            ("How can I track my order?", Decision.ANSWER, ["track-order"]),
            ("I forgot my password, how do I reset it?", Decision.ANSWER, ["reset-password"]),
            (NEAR_MISS, Decision.GENERATE, ["exchange-item"]),
            ("What's the capital of Australia?", Decision.FALLBACK, []),
        ]
        replies = []
        for text, decision, ids in turns:
            reply = await manager.handle(UserMessage(text, conversation_id="e2e"))
            assert (reply.decision, reply.faq_ids) == (decision, ids), (text, reply)
            replies.append(reply)
            if decision is Decision.ANSWER:
                assert not manager.generator_loaded, "FAQ answers never wait for the model"
        generated = replies[2]
        assert generated.confidence >= settings.dialogue.min_grounding
        assert "exchange" in generated.text.lower() or "swap" in generated.text.lower()
        assert generated.meta["model"] == "SmolLM2-135M-Instruct"
        assert generated.meta["prompt_tokens"] < manager.generator.context_tokens  # type: ignore[union-attr]

        rows = await runtime.store.history("e2e", limit=100)
        bots = [r for r in rows if r.role == "bot"]
        assert [r.role for r in rows] == ["user", "bot"] * 4
        assert [b.decision for b in bots] == ["answer", "answer", "generate", "fallback"]
        assert all(b.latency_ms and b.latency_ms > 0 for b in bots)
        assert bots[2].faq_ids == ["exchange-item"] and bots[2].scores[0] > 0
        assert bots[2].meta["candidates"][0]["text"] == generated.text
        assert bots[3].meta["retrieved"], "even a fallback records what was near"
    finally:
        await runtime.close()
