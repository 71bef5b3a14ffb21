"""The storage commands: history (status, escaping, bounds), db current / upgrade, release."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.storage import ConversationStore, upgrade
from bot.types import BotReply, ConversationStatus, Decision, UserMessage

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "supportbot.yaml"
    path.write_text("storage:\n  database_url: sqlite+aiosqlite:///bot.db\n", encoding="utf-8")
    return path


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def store_turns(config: Path, *turns: tuple[str, str, ConversationStatus | None]) -> None:
    """Record (conversation id, text, status) turns in the config's database."""
    async def record() -> None:
        store = ConversationStore(f"sqlite+aiosqlite:///{config.parent / 'bot.db'}")
        await store.init()
        try:
            for conversation_id, text, status in turns:
                await store.record_turn(
                    UserMessage(text, conversation_id=conversation_id, channel="web"),
                    BotReply(f"re: {text}", Decision.FALLBACK, conversation_id), status=status)
        finally:
            await store.close()

    asyncio.run(record())


def test_history_shows_the_status(config: Path) -> None:
    store_turns(config, ("calm", "hi", None), ("angry", "a human now", ConversationStatus.HANDOFF))
    code, stdout, stderr = run(config, "history")
    assert code == 0, stderr
    assert "status" in stdout
    assert [line.split("│")[3].strip() for line in stdout.splitlines()
            if "calm" in line or "angry" in line] == ["handoff", "bot"]
    code, stdout, _ = run(config, "history", "angry")
    assert code == 0
    assert "conversation angry · web · user local · status handoff since " in stdout


def test_history_escapes_control_characters(config: Path) -> None:
    store_turns(config, ("c", "\x1b[2J\x1b]0;pwned\x07red\rover\u202eevil\nnext\tline", None))
    code, stdout, stderr = run(config, "history", "c")
    assert code == 0, stderr
    assert "\x1b" not in stdout and "\x07" not in stdout and "\r" not in stdout
    assert "\u202e" not in stdout
    assert "\\x1b[2J\\x1b]0;pwned\\x07red\\x0dover\\u202eevil" in stdout
    assert "evil\nnext" in stdout and "\\x09" not in stdout, "newlines and tabs are kept"


@pytest.mark.parametrize("last", ["99999999999999999999", "0", "10001"])
def test_history_last_is_bounded(config: Path, last: str) -> None:
    code, _, stderr = run(config, "history", "--last", last)
    assert code == 2
    assert "--last" in stderr and "Traceback" not in stderr


def test_history_refuses_an_overlong_id(config: Path) -> None:
    code, _, stderr = run(config, "history", "x" * 129)
    assert code == 1
    assert "conversation id longer than 128 characters" in stderr


def test_db_current_and_upgrade(config: Path) -> None:
    code, stdout, _ = run(config, "db", "current")
    assert (code, stdout.strip()) == (0, "none (head is 0009: run `supportbot db upgrade`)")

    async def at_0001() -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(f"sqlite+aiosqlite:///{config.parent / 'bot.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: upgrade(sync, "0001"))
        await engine.dispose()

    asyncio.run(at_0001())
    code, stdout, _ = run(config, "db", "current")
    assert (code, stdout.strip()) == (0, "0001 (head is 0009: run `supportbot db upgrade`)")
    code, stdout, _ = run(config, "db", "upgrade")
    assert code == 0
    assert stdout.strip() == (f"upgraded sqlite+aiosqlite:///{config.parent / 'bot.db'} "
                              "from 0001 to 0009 (head)")
    assert run(config, "db", "current")[1].strip() == "0009 (head)"
    assert "is already at 0009 (head)" in run(config, "db", "upgrade")[1]


def test_db_upgrade_masks_the_password(tmp_path: Path) -> None:
    config = tmp_path / "supportbot.yaml"
    config.write_text("storage:\n  database_url: "
                      "postgresql+asyncpg://bot:s3cret@127.0.0.1:1/bot\n", encoding="utf-8")
    code, stdout, stderr = run(config, "db", "upgrade")
    assert code == 1 and stdout == ""
    assert "cannot open database postgresql+asyncpg://bot:***@127.0.0.1:1/bot" in stderr
    assert "s3cret" not in stderr and "Traceback" not in stderr


def test_release_gives_a_conversation_back_to_the_bot(config: Path) -> None:
    store_turns(config, ("c", "a human please", ConversationStatus.HANDOFF))
    code, stdout, stderr = run(config, "release", "c")
    assert code == 0, stderr
    assert "conversation c is back with the bot (was handoff)" in stdout
    assert "· status bot since " in run(config, "history", "c")[1]
    code, stdout, _ = run(config, "release", "c")
    assert code == 0 and "was not handed off" in stdout
    code, _, stderr = run(config, "release", "nope")
    assert code == 1 and "no conversation 'nope' in sqlite+aiosqlite:///" in stderr


def test_sync_driver_url_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "supportbot.yaml"
    config.write_text("storage:\n  database_url: sqlite:///x.db\n", encoding="utf-8")
    code, _, stderr = run(config, "history")
    assert code == 1 and "Traceback" not in stderr
    assert f"use sqlite+aiosqlite:///{tmp_path / 'x.db'}" in " ".join(stderr.split())


@pytest.mark.parametrize("where", ["directory", "/proc/nope/x.db"])
def test_an_unopenable_database_is_one_clean_line(tmp_path: Path, where: str) -> None:
    """The real command in a process of its own: no "Event loop is closed" traceback after it.

    A failed aiosqlite connect used to leave its worker thread to report to the event loop
    that asyncio.run had just closed; it printed the traceback in about 1 run of 5 on a busy
    machine, so the command runs several times.
    """
    path = tmp_path if where == "directory" else Path(where)
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent))
    assert exe, "the supportbot console script is installed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "SUPPORTBOT_STORAGE__DATABASE_URL": f"sqlite+aiosqlite:///{path}"}
    for _ in range(4):
        proc = subprocess.run([exe, "history"], capture_output=True, text=True, timeout=120,
                              env=env, cwd=tmp_path, check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"error: cannot open database sqlite+aiosqlite:///{path}")
        assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
