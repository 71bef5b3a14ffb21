"""`supportbot report`: handoff rate, time to the first operator reply, the questions behind
the handoffs grouped by meaning."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from bot.cli import app
from bot.operators.accounts import hash_password
from bot.operators.store import OperatorStore
from bot.storage import ConversationStore
from bot.types import Decision, UserMessage
from retrieval.index import FaqIndex
from tests.dialogue_support import manager

TURNS = {
    "a": ["what's the capital of australia", "yes"],
    "b": ["which city is the capital of australia?", "yes please"],
    "c": ["I want to talk to a human"],
    "d": ["How can I track my order?"],
}


async def conversations(url: str, index: FaqIndex) -> None:
    store = ConversationStore(url)
    await store.init()
    try:
        dm = manager(index, store)
        for conversation, texts in TURNS.items():
            for text in texts:
                await dm.handle(UserMessage(text, conversation_id=conversation))
        decisions = [m.decision for m in await store.history("a")]
        assert decisions == [None, Decision.FALLBACK.value, None, Decision.HANDOFF.value]
        operators = OperatorStore(store)
        await operators.add("anna", hash_password("correct horse battery"))
        await operators.claim("a", "anna")
        await operators.reply("a", "anna", "Canberra! But we sell tents, not atlases.")
        dm.close()
    finally:
        await store.close()


def test_report_counts_handoffs_waits_and_groups_their_questions(
        config_file: Path, sample_index: FaqIndex) -> None:
    asyncio.run(conversations(f"sqlite+aiosqlite:///{config_file.parent / 'bot.db'}",
                              sample_index))
    result = CliRunner().invoke(app, ["--config", str(config_file), "report", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["conversations"] == 4 and report["handoffs"] == 3
    assert report["handoff_rate"] == 0.75
    assert report["asked_for_human_directly"] == 1
    assert report["answered_by_operator"] == 1
    assert 0 <= report["first_reply_seconds"]["median"] < 60
    [group] = report["clusters"]  # the two capital questions, "yes" and "a human" left out
    assert group["count"] == 2 and "capital of australia" in group["example"]
    assert sorted(group["questions"]) == sorted([TURNS["a"][0], TURNS["b"][0]])
    assert group["nearest_score"] < 0.5, "far from every entry: a missing FAQ entry"

    shown = CliRunner().invoke(app, ["--config", str(config_file), "report"])
    assert shown.exit_code == 0, shown.output
    assert "handed to a human: 3 (75.0%)" in shown.output and "FAQ candidates" in shown.output
