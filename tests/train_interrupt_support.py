"""Helpers of the stop-and-resume tests (test_train_interrupt*.py): the tiny model's rows, a
real signal delivered after a chosen optimizer step, and `supportbot train` run in-process."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import SAMPLE_FAQ
from training import interrupt
from training.types import IGNORE, Row

PAIRS = [
    ("How do I return an item?", "You can return most items within 30 days of delivery."),
    ("How long is delivery?", "Standard delivery takes 3-5 working days."),
    ("Where is my parcel?", "Open My orders in your account to see the tracking status."),
    ("I forgot my password", "Click Forgot password on the sign-in page."),
    ("Is express delivery faster?", "Yes: express delivery takes 1-2 days."),
    ("Can I get a refund?", "Yes, a full refund within 30 days."),
    ("Hi", "Hello! How can I help?"),
    ("Where do I sign in?", "Use the sign-in page and follow the link we email you."),
]
# Fast settings for the tiny model, in float64: "the same adapter" then holds to 1e-10 on any
# CPU (float32 sums taken in another order differ by ~1e-7, and Adam magnifies that).
EXACT: dict[str, Any] = {"learning_rate": 1e-2, "warmup_steps": 0, "threads": 1, "eval_every": 0,
         "save_every": 0, "grad_accum": 1, "dtype": "float64"}


def tiny_rows(model_dir: Path) -> list[Row]:
    """One row per pair with the tiny model's chat template; the first 8 tokens carry no loss."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for question, answer in PAIRS:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            tokenize=False)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        rows.append(Row(ids, [IGNORE] * 8 + ids[8:], list(range(len(ids)))))
    return rows


def signal_after_step(monkeypatch: pytest.MonkeyPatch, step: int, signum: int) -> None:
    """Deliver a real `signum` to this process right after optimizer step `step`."""
    agree, calls = interrupt.agree, [0]

    def agree_after_signal(*args: Any) -> interrupt.Decision:
        calls[0] += 1
        if calls[0] == step:
            signal.raise_signal(signum)
        return agree(*args)

    monkeypatch.setattr(interrupt, "agree", agree_after_signal)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """This environment without torchrun's variables (a child decides its own rank)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}


def run_train_cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """`supportbot train ARGS` with a config naming the sample FAQ: (exit code, output)."""
    from bot.cli import app

    config = tmp_path / "supportbot.yaml"
    config.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n",
                      encoding="utf-8")
    result = CliRunner().invoke(app, ["--config", str(config), "train", *args])
    return result.exit_code, result.output
