"""Helpers shared by the benchmark scripts: a temp config, the console script, a timed run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FAQ = ROOT / "data" / "faq.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def ask_command(work: Path, extra_yaml: str = "") -> list[str]:
    """`supportbot --config <work>/supportbot.yaml ask --json`, with index and DB inside `work`."""
    config = work / "supportbot.yaml"
    config.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
                      f"storage:\n  database_url: sqlite+aiosqlite:///bot.db\n{extra_yaml}")
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent)) or "supportbot"
    return [exe, "--config", str(config), "ask", "--json"]


def timed(cmd: list[str]) -> float:
    """Wall time of a whole process, in seconds."""
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - started


async def open_bench_runtime(work: Path, everything_generates: bool = False,
                             middle_generates: bool = False, adapter: Path | None = None,
                             prompt_entries: int | None = None,
                             backend: str = "transformers") -> Any:
    """The sample-FAQ bot with index and database inside `work`.

    With `everything_generates`, every question lands in the generated band; with
    `middle_generates`, the middle band generates (the default setting asks "Did you mean").
    """
    from bot.runtime import open_index, open_runtime
    from bot.settings import Settings

    settings = Settings()
    settings.retrieval.faq_path = SAMPLE_FAQ
    settings.retrieval.index_dir = work / "index"
    settings.storage.database_url = f"sqlite+aiosqlite:///{work}/latency.db"
    if everything_generates:
        settings.retrieval.answer_threshold = 1.0
        settings.retrieval.suggest_threshold = -1.0
        settings.dialogue.middle = "generate"
    if middle_generates:
        settings.dialogue.middle = "generate"
    settings.model.adapter = adapter
    settings.model.backend = backend  # type: ignore[assignment]
    if prompt_entries:
        settings.dialogue.prompt_entries = prompt_entries
    index, _ = open_index(settings)
    return settings, await open_runtime(settings, index)
