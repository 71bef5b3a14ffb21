"""The supportbot command line, in-process and as the installed console script."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.actions.spec import load_actions
from bot.cli import app
from bot.storage import ConversationStore
from retrieval.corpus import load_faq
from tests.conftest import ROOT, SAMPLE_FAQ

runner = CliRunner()


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def test_config_show_prints_effective_settings(config_file: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_PERSONA__COMPANY_NAME", "Acme Outdoor")
    code, stdout, _ = run(config_file, "config", "show")
    assert code == 0
    assert "company_name: Acme Outdoor" in stdout
    assert f"index_dir: {config_file.parent / 'index'}" in stdout


def test_config_show_hides_the_database_password(config_file: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_STORAGE__DATABASE_URL",
                       "postgresql+asyncpg://bot:s3cret@db.example/support")
    code, stdout, _ = run(config_file, "config", "show")
    assert code == 0
    assert "s3cret" not in stdout
    assert "database_url: postgresql+asyncpg://bot:***@db.example/support" in stdout


def test_config_show_takes_lists_from_env_and_warns_on_unknown_names(
        config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_DIALOGUE__HANDOFF_KEYWORDS", "human,real person")
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL_TOP_K", "3")
    code, stdout, stderr = run(config_file, "config", "show")
    assert code == 0, stderr
    assert "handoff_keywords:\n  - human\n  - real person\n" in stdout
    assert "top_k: 5" in stdout
    assert "warning: ignoring unknown environment variable SUPPORTBOT_RETRIEVAL_TOP_K: did you " \
        "mean SUPPORTBOT_RETRIEVAL__TOP_K?" in " ".join(stderr.split())


def test_config_show_warns_before_an_error(config_file: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL_TOP_K", "3")
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__TOP_K", "0")
    code, stdout, stderr = run(config_file, "config", "show")
    assert code == 1 and stdout == ""
    assert stderr.index("warning: ignoring unknown environment variable "
                        "SUPPORTBOT_RETRIEVAL_TOP_K") < stderr.index("error: invalid settings")
    assert "[environment variable SUPPORTBOT_RETRIEVAL__TOP_K]" in " ".join(stderr.split())


def test_config_example_is_the_committed_example(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "example"])
    assert result.exit_code == 0, result.stderr
    committed = Path(__file__).parent.parent / "supportbot.example.yaml"
    assert result.stdout == committed.read_text(encoding="utf-8")
    copy = tmp_path / "supportbot.yaml"
    copy.write_text(result.stdout, encoding="utf-8")
    code, stdout, stderr = run(copy, "config", "show")
    assert code == 0, stderr
    assert "answer_threshold: 0.7" in stdout


def test_bad_config_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "supportbot.yaml"
    config.write_text("retrieval:\n  top_k: many\n")
    code, stdout, stderr = run(config, "config", "show")
    assert code == 1 and stdout == ""
    assert "retrieval.top_k" in stderr and f"{config}, line 2" in stderr
    assert "Traceback" not in stderr


def test_missing_config_file(tmp_path: Path) -> None:
    code, _, stderr = run(tmp_path / "nope.yaml", "config", "show")
    assert code == 1 and "not found" in stderr


def test_bad_faq_names_file_and_line(tmp_path: Path) -> None:
    faq = tmp_path / "faq.yaml"
    faq.write_text("entries:\n  - id: a\n    questions: [q]\n    answer: ''\n")
    config = tmp_path / "supportbot.yaml"
    config.write_text("retrieval:\n  faq_path: faq.yaml\n")
    code, _, stderr = run(config, "index")
    assert code == 1
    assert f"{faq}, line 4: field 'answer': missing or empty answer" in " ".join(stderr.split())
    assert "Traceback" not in stderr


def test_missing_faq_is_named_as_the_faq_not_as_actions(tmp_path: Path) -> None:
    """The FAQ file also declares the actions, and is read for them first: a missing one is
    still reported as the missing FAQ."""
    config = tmp_path / "supportbot.yaml"
    config.write_text("retrieval:\n  faq_path: nowhere/faq.yaml\n")
    code, _, stderr = run(config, "ask", "how do I reset my password")
    assert code == 1
    assert "FAQ file not found" in stderr and "actions" not in stderr
    assert "Traceback" not in stderr


def test_index_then_ask_json(config_file: Path) -> None:
    code, _, stderr = run(config_file, "index")
    assert code == 0, stderr
    entries = load_faq(SAMPLE_FAQ)
    actions = load_actions(SAMPLE_FAQ)  # found by their questions like entries
    phrasings = sum(len(e.questions) for e in entries) + sum(len(a.questions) for a in actions)
    message = " ".join(stderr.split())
    assert (f"indexed {len(entries)} entries and {len(actions)} actions ({phrasings} "
            f"phrasings, dimension 384, embedder "
            f"all-MiniLM-L6-v2) into {config_file.parent / 'index'} in ") in message
    assert (config_file.parent / "index" / "meta.json").is_file()
    code, stdout, stderr = run(config_file, "ask", "--json", "How can I track my order?")
    assert code == 0, stderr
    reply = json.loads(stdout)
    assert reply["decision"] == "answer"
    assert [s["id"] for s in reply["sources"]] == ["track-order"]
    assert reply["confidence"] > 0.9 and reply["latency_ms"] > 0  # an FAQ phrasing itself
    assert "rebuilt" not in stderr, "a fresh index is loaded, not rebuilt"


def test_stale_index_is_rebuilt_with_a_notice(config_file: Path, tmp_path: Path) -> None:
    assert run(config_file, "index")[0] == 0
    faq = tmp_path / "faq.yaml"
    shutil.copy(Path(__file__).parent.parent / "data" / "faq.yaml", faq)
    faq.write_text(faq.read_text().replace("track my order", "follow my order"))
    config_file.write_text(config_file.read_text().replace(
        str(Path(__file__).parent.parent / "data" / "faq.yaml"), str(faq)))
    code, stdout, stderr = run(config_file, "ask", "--json", "follow my order")
    assert code == 0
    assert "rebuilt the FAQ index" in stderr and "FAQ corpus changed" in stderr
    assert json.loads(stdout)["decision"] == "answer"


def test_stale_index_is_refused_when_rebuild_is_off(config_file: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(config_file, "index")[0] == 0
    faq = tmp_path / "faq.yaml"
    faq.write_text(SAMPLE_FAQ.read_text(encoding="utf-8").replace(
        "track my order", "follow my order"), encoding="utf-8")
    config_file.write_text(config_file.read_text().replace(str(SAMPLE_FAQ), str(faq)))
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__AUTO_REBUILD", "false")
    code, _, stderr = run(config_file, "ask", "follow my order")
    assert code == 1
    message = " ".join(stderr.split())
    assert f"the index in {config_file.parent / 'index'} is stale" in message
    assert "FAQ corpus changed" in message and "run 'supportbot index'" in message
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__AUTO_REBUILD", "true")
    code, _, stderr = run(config_file, "ask", "follow my order")
    assert code == 0, stderr
    message = " ".join(stderr.split())
    assert f"rebuilt the FAQ index in {config_file.parent / 'index'}: the FAQ corpus changed " \
        "since it was built" in message


def test_missing_index_is_refused_when_rebuild_is_off(config_file: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_RETRIEVAL__AUTO_REBUILD", "false")
    code, _, stderr = run(config_file, "ask", "hello")
    assert code == 1
    assert "no index in" in stderr and "supportbot index" in stderr


def test_unwritable_index_dir_is_a_message_not_a_traceback(config_file: Path) -> None:
    (config_file.parent / "index").write_text("not a folder")
    code, _, stderr = run(config_file, "ask", "hello")
    assert code == 1
    message = " ".join(stderr.split())
    assert f"cannot save the index in {config_file.parent / 'index'}" in message
    assert "retrieval.index_dir" in message and "Traceback" not in stderr


@pytest.mark.slow
def test_console_script_ask_json_end_to_end(config_file: Path) -> None:
    """The installed `supportbot` command, as scripts call it: stdout is one JSON object."""
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent))
    assert exe, "the supportbot console script is installed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([exe, "--config", str(config_file), "ask", "--json",
                           "What's the capital of Australia?"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert proc.stdout.count("\n") == 1
    assert reply["decision"] == "fallback" and reply["question"].startswith("What's")


@pytest.mark.slow
def test_terminal_chat_end_to_end(config_file: Path) -> None:
    """A whole chat through the console script; every turn lands in the database."""
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent))
    assert exe
    script = "How can I track my order?\nwhat is the capital of australia\n/reset\nhuman\n/quit\n"
    proc = subprocess.run([exe, "--config", str(config_file), "chat"], input=script,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "How can I help you today?" in proc.stdout
    assert "(answer" in proc.stdout and "(fallback" in proc.stdout and "(handoff" in proc.stdout
    assert "-- new conversation --" in proc.stdout

    async def stored() -> dict[str, int]:
        store = ConversationStore(f"sqlite+aiosqlite:///{config_file.parent / 'bot.db'}")
        try:
            return await store.counts()
        finally:
            await store.close()

    assert asyncio.run(stored()) == {"conversations": 2, "messages": 6}


def test_ask_candidates_json_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    """--candidates N generates N answers and shows each with its grounding score."""
    config = tmp_path / "supportbot.yaml"
    config.write_text(
        f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
        "  answer_threshold: 0.99\n  suggest_threshold: 0.1\n"
        f"model:\n  base_model: {tiny_model_dir}\n  generation:\n    max_new_tokens: 8\n"
        "dialogue:\n  min_grounding: 0.0\n  middle: generate\n"
        "storage:\n  database_url: sqlite+aiosqlite:///bot.db\n")
    code, stdout, stderr = run(config, "ask", "--json", "--candidates", "3",
                               "do you sell kayaks made of carbon")
    assert code == 0, stderr
    reply = json.loads(stdout)
    scores = [c["score"] for c in reply["candidates"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert reply["meta"]["model"] == str(tiny_model_dir)
    # The tiny random model writes noise, which the grounding check refuses even at 0.0.
    assert reply["decision"] == "clarify" and reply["meta"]["rejected"].startswith("grounding")
    code, stdout, stderr = run(config, "ask", "--candidates", "3",
                               "do you sell kayaks made of carbon")
    assert code == 0, stderr
    assert stdout.count("candidate ") == 3 and "(grounding 0.00)" in stdout


def test_history_lists_and_shows_conversations(config_file: Path) -> None:
    for question in ("How can I track my order?", "What's the capital of Australia?"):
        code, _, stderr = run(config_file, "ask", "--conversation-id", "conv-1", question)
        assert code == 0, stderr
    assert run(config_file, "ask", "--conversation-id", "conv-2", "human")[0] == 0
    code, stdout, _ = run(config_file, "history")
    assert code == 0
    assert stdout.index("conv-2") < stdout.index("conv-1"), "newest first"
    assert re.search(r"│\s*4\s*│\s*conv-1", stdout), "conv-1 holds 4 messages"
    assert re.search(r"│\s*2\s*│\s*conv-2", stdout)
    code, stdout, _ = run(config_file, "history", "conv-1")
    assert code == 0
    assert "customer" in stdout and "How can I track my order?" in stdout
    assert re.search(r"answer · confidence 0\.9\d · track-order 0\.9\d", stdout), stdout
    assert "fallback" in stdout
    code, _, stderr = run(config_file, "history", "nope")
    assert code == 1 and "no conversation 'nope'" in stderr


def test_the_cli_loads_no_training_or_offline_tool_until_a_command_needs_it() -> None:
    """`serve` and `chat` start without training/ or the offline tools: the commands that use
    them (train, tune-retriever, eval) import them inside."""
    code = ("import bot.cli, sys; print(sorted(m for m in sys.modules if m.split('.')[0] == "
            "'training' or m.startswith('retrieval.offline') or m in {'retrieval.tune', "
            "'retrieval.calibrate', 'retrieval.evaluate', 'retrieval.metrics', "
            "'retrieval.queries', 'retrieval.plots', 'bot.eval_dialogue', "
            "'bot.safety.evaluate'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"
