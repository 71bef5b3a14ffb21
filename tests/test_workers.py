"""`supportbot serve --workers N`: the refusal of SQLite, the settings the workers get, metrics
added up over processes, and (slow, on PostgreSQL) two real workers under 100 conversations
with one of them killed mid-traffic.

Every server here runs on loopback and is stopped by the test that started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bot.channels.workers import (
    check_database,
    load_worker_settings,
    settings_data,
    worker_app,
)
from bot.cli import app
from bot.errors import SupportbotError
from bot.settings import WORKER_ENV, Settings
from tests.conftest import ROOT, SAMPLE_FAQ
from tests.web_support import FAQ_QUESTIONS, free_port, stored

runner = CliRunner()


# --- without processes -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["option", "setting"])
def test_serve_with_workers_refuses_sqlite_in_one_line(config_file: Path, how: str) -> None:
    if how == "setting":
        with config_file.open("a", encoding="utf-8") as out:
            out.write("web:\n  workers: 3\n")
    args = ["--workers", "2"] if how == "option" else []
    result = runner.invoke(app, ["--config", str(config_file), "serve", *args])
    assert result.exit_code == 1
    n = 2 if how == "option" else 3
    assert result.stderr.strip() == (
        f"error: --workers {n} needs PostgreSQL: turns of one conversation are kept in order "
        "across processes by PostgreSQL advisory locks, which sqlite lacks; set "
        "storage.database_url: postgresql+asyncpg://user:password@host/db (or serve with one "
        "worker)")
    assert not (config_file.parent / "index").exists()  # refused before the index was built


def test_serve_workers_option_is_bounded(config_file: Path) -> None:
    result = runner.invoke(app, ["--config", str(config_file), "serve", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.stderr


def test_postgres_urls_pass_the_check() -> None:
    settings = Settings()
    settings.web.workers = 2
    settings.storage.database_url = "postgresql+asyncpg://bot:pw@db.example/support"
    check_database(settings)
    settings.storage.database_url = "mysql+aiomysql://bot:pw@db.example/support"
    with pytest.raises(SupportbotError, match="which mysql lacks"):
        check_database(settings)


def test_workers_get_the_parents_settings_not_the_environment_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent applied SUPPORTBOT_* and then the command line (--preload): a worker has
    exactly that, secrets included, though it inherits the same variables."""
    monkeypatch.setenv("SUPPORTBOT_WEB__PRELOAD", "false")
    monkeypatch.setenv("SUPPORTBOT_PERSONA__COMPANY_NAME", "Acme Outdoor")
    parent = Settings()
    parent.web.preload = True  # what --preload does after the environment was read
    parent.web.secret = "a key that signs every worker's tokens"  # type: ignore[assignment]
    parent.model.openai.api_key = "sk-test"  # type: ignore[assignment]
    parent.retrieval.index_dir = tmp_path / "index"
    data = json.loads(json.dumps(settings_data(parent)))  # what the file holds
    worker = load_worker_settings(data)
    assert worker.web.preload is True
    assert worker.persona.company_name == "Acme Outdoor"
    assert worker.web.secret is not None
    assert worker.web.secret.get_secret_value() == "a key that signs every worker's tokens"
    assert worker.model.openai.api_key is not None
    assert worker.model.openai.api_key.get_secret_value() == "sk-test"
    assert worker.retrieval.index_dir == tmp_path / "index"
    assert worker.model_dump() == parent.model_dump()


def test_worker_app_builds_the_app_from_the_settings_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    with pytest.raises(SupportbotError, match=WORKER_ENV):
        worker_app()
    settings = Settings()
    settings.persona.company_name = "Acme Outdoor"
    settings.web.secret = "a key that signs every worker's tokens"  # type: ignore[assignment]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings_data(settings)), encoding="utf-8")
    monkeypatch.setenv(WORKER_ENV, str(path))
    built = worker_app()
    assert built.title == "Acme Outdoor support bot"
    assert not (tmp_path / ".supportbot").exists()  # the key came from the file, not made anew


_COUNT_A_TURN = """
import os, sys
from bot.channels.web.metrics import Metrics
from bot.types import BotReply, Decision
metrics = Metrics(lambda: 7)
for _ in range(int(sys.argv[1])):
    metrics.turn(BotReply("hi", Decision.ANSWER, "c"), "web", 0.01)
metrics.websockets.inc()
sys.stdout.write(str(os.getpid()) + "\\n" + metrics.render().decode())
"""


def test_metrics_add_up_over_worker_processes(tmp_path: Path) -> None:
    """Three processes sharing PROMETHEUS_MULTIPROC_DIR, as the workers do: each one's
    /metrics shows the sums, and a dead one's live gauges go once it is marked dead."""
    from prometheus_client.multiprocess import mark_process_dead

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outputs = [subprocess.run([sys.executable, "-c", _COUNT_A_TURN, str(n)], env=env,
                              capture_output=True, text=True, timeout=120, check=True).stdout
               for n in (2, 3)]
    pids = [out.split("\n", 1)[0] for out in outputs]
    last = outputs[-1]
    assert 'supportbot_turns_total{channel="web",decision="answer"} 5.0' in last
    assert "supportbot_generated_tokens_total 14.0" in last  # 7 tokens in each process
    assert "supportbot_turn_seconds_count{kind=\"faq\"} 5.0" in last
    assert f'supportbot_worker_turns{{pid="{pids[0]}"}} 2.0' in last
    assert f'supportbot_worker_turns{{pid="{pids[1]}"}} 3.0' in last
    assert "supportbot_websockets_open 2.0" in last
    mark_process_dead(int(pids[0]), str(tmp_path))
    after = subprocess.run([sys.executable, "-c", _COUNT_A_TURN, "0"], env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'supportbot_turns_total{channel="web",decision="answer"} 5.0' in after  # kept
    assert f'pid="{pids[0]}"' not in after  # its live gauges went
    assert "supportbot_websockets_open 2.0" in after  # the second one's and the third's


# --- two real workers on PostgreSQL ------------------------------------------------------------

CLIENTS = 100
MESSAGES = 5
KILL_AFTER = 150  # replies received before one worker is killed (of 500)
LATE_CLIENTS = 10  # conversations started once the killed worker has been replaced
WAIT = 60.0  # seconds any one reply may take on a busy 2-core machine
DRAIN = 10


@dataclass
class Client:
    """One customer: sends a message, waits for its reply, sends the next. A connection that
    drops is reopened on the same conversation (its token) and the unanswered message re-sent
    with the same client_id, which the server answers once whichever worker gets it."""

    address: str
    name: str
    messages: list[str]
    conversation_id: str | None = None
    token: str | None = None
    ws: ClientConnection | None = None
    replies: list[dict[str, Any]] = field(default_factory=list)
    drops: int = 0
    resumed: int = 0

    @property
    def ids(self) -> list[str]:
        return [f"{self.name}-{k}" for k in range(len(self.messages))]

    async def run(self, answered: Counter[str]) -> None:
        try:
            for text, client_id in zip(self.messages, self.ids, strict=True):
                self.replies.append(await self._turn(text, client_id))
                answered["replies"] += 1
        finally:
            if self.ws is not None:
                await self.ws.close()

    async def _turn(self, text: str, client_id: str) -> dict[str, Any]:
        for attempt in range(8):
            try:
                if self.ws is None:
                    await self._connect()
                assert self.ws is not None
                await self.ws.send(json.dumps({"type": "message", "text": text,
                                               "client_id": client_id}))
                return await self._reply(client_id)
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
                self.drops += 1
                if self.ws is not None:
                    self.ws.transport.abort()
                self.ws = None
                await asyncio.sleep(min(0.2 * 2 ** attempt, 5) * random.uniform(0.5, 1.5))
        raise AssertionError(f"{self.name}: no reply to {client_id} after 8 connections")

    async def _connect(self) -> None:
        query = "" if self.conversation_id is None else \
            f"?conversation_id={self.conversation_id}&token={self.token}"
        self.ws = await connect(f"ws://{self.address}/ws{query}", open_timeout=WAIT,
                                close_timeout=5)
        hello = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
        # A worker that did not issue the token accepts it: they share one key.
        assert hello["type"] == "hello", (self.name, hello)
        if self.conversation_id is None:
            self.conversation_id, self.token = hello["conversation_id"], hello["token"]
        else:
            assert hello["resumed"] and hello["conversation_id"] == self.conversation_id
            self.resumed += 1

    async def _reply(self, client_id: str) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))
            if frame["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif frame["type"] == "error":
                raise AssertionError(f"{self.name}: error frame {frame}")
            elif frame["type"] == "reply":
                assert frame["client_id"] == client_id, (self.name, client_id, frame)
                return dict(frame)
            else:
                assert frame["type"] == "token" and frame["client_id"] == client_id, frame


def script(i: int) -> list[str]:
    """Client i's five FAQ questions (each answered straight from the FAQ), in its own order."""
    return [FAQ_QUESTIONS[(i + k) % len(FAQ_QUESTIONS)] for k in range(MESSAGES)]


def workers_of(server: int) -> set[int]:
    """The worker processes of a server: its children that multiprocessing spawned (not its
    resource tracker), read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == server and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def established(address: str) -> str:
    """The server's established TCP connections with the process holding each (`ss`)."""
    if shutil.which("ss") is None:
        return "(ss not installed)"
    port = address.rsplit(":", 1)[1]
    return subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                          capture_output=True, text=True, timeout=10).stdout


async def scrape(http: httpx.AsyncClient) -> tuple[dict[int, float], float]:
    """Turns by live worker pid, and all turns counted (dead workers' too), from /metrics."""
    text = (await http.get("/metrics")).text
    per_worker = {int(pid): float(value) for pid, value in
                  re.findall(r'^supportbot_worker_turns\{pid="(\d+)"\} (\S+)$', text, re.M)}
    turns = sum(float(v) for v in re.findall(r"^supportbot_turns_total\{.*\} (\S+)$", text,
                                             re.M))
    return per_worker, turns


async def until(what: str, check: Any, timeout: float) -> Any:
    """Poll the async `check` until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        with_value = await check()
        if with_value:
            return with_value
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        await asyncio.sleep(0.25)


@pytest.fixture
async def two_workers(tmp_path: Path, postgres_url: str
                      ) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """`supportbot serve --workers 2` (this checkout's code) on a free loopback port."""
    config = tmp_path / "supportbot.yaml"
    config.write_text(
        f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
        f"storage:\n  database_url: {postgres_url}\n"
        f"web:\n  drain_seconds: {DRAIN}\n  burst_per_ip: 100000\n"
        "  burst_per_connection: 1000\n", encoding="utf-8")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    with (tmp_path / "stdout.log").open("w") as out, (tmp_path / "stderr.log").open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config),
                                    "serve", "--workers", "2", "--port", str(port)],
                                   cwd=tmp_path, env=env, stdout=out, stderr=err, text=True)
    try:
        yield process, f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            for pid in workers_of(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            process.wait(30)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_two_workers_lose_nothing_when_one_is_killed(
        tmp_path: Path, two_workers: tuple[subprocess.Popen[str], str],
        postgres_url: str) -> None:
    process, address = two_workers
    log = tmp_path / "stderr.log"
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=WAIT) as http:

        async def both_up() -> dict[int, float] | None:
            assert process.poll() is None, log.read_text()
            try:
                per_worker, _ = await scrape(http)
            except httpx.TransportError:
                return None
            return per_worker if len(per_worker) == 2 else None

        first = set(await until("both workers to start", both_up, 150))
        assert first == workers_of(process.pid)
        ready_s = time.monotonic() - started
        assert (tmp_path / ".supportbot" / "web-secret").is_file()  # made once, by the parent

        answered: Counter[str] = Counter()
        clients = [Client(address, f"c{i}", script(i)) for i in range(CLIENTS)]
        traffic = asyncio.gather(*(client.run(answered) for client in clients))

        async def halfway() -> bool:
            if traffic.done():
                traffic.result()  # a client's failure, raised here
                raise AssertionError("the traffic ended before the kill")
            return answered["replies"] >= KILL_AFTER

        await until(f"{KILL_AFTER} replies", halfway, 120)
        served, _ = await scrape(http)
        assert set(served) == first and all(served.values()), f"a worker served nothing: {served}"
        victim = max(served, key=lambda pid: served[pid])  # surely holding open sockets
        os.kill(victim, signal.SIGKILL)
        killed_at = answered["replies"]
        await traffic
        traffic_s = time.monotonic() - started - ready_s

        async def replaced() -> dict[int, float] | None:
            per_worker, _ = await scrape(http)
            now = workers_of(process.pid)
            return per_worker if len(now) == 2 and victim not in now \
                and set(per_worker) == now else None

        # uvicorn's supervisor starts a new worker for the dead one; once it is up, its pid
        # (and not the dead one's) is in /metrics.
        before = await until("the killed worker to be replaced", replaced, 120)
        workers = set(before)
        (restarted,), (survivor,) = workers - first, workers & first
        # The replacement serves too: with the survivor paused, only it can accept.
        late = [Client(address, f"late{i}", script(i)) for i in range(LATE_CLIENTS)]
        os.kill(survivor, signal.SIGSTOP)
        try:
            await asyncio.gather(*(client.run(answered) for client in late))
        finally:
            os.kill(survivor, signal.SIGCONT)
        per_worker, turns = await scrape(http)
        assert per_worker[restarted] - before[restarted] == LATE_CLIENTS * MESSAGES
        assert workers_of(process.pid) == workers  # the paused one was not taken for hung

        open_connections = established(address)  # to say which one held a slow stop up
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = await asyncio.to_thread(process.wait, 2 * DRAIN + 15)
        stopped_s = time.monotonic() - stopping
    stderr = log.read_text()
    assert code == 0, stderr[-3000:]
    assert stopped_s < DRAIN + 5, (
        f"stopping took {stopped_s:.1f} s; survivor {survivor}, replacement {restarted}; "
        f"connections open at SIGTERM:\n{open_connections}\n{stderr[-2500:]}")
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"Child process [{victim}] died" in stderr
    assert not any(alive(pid) for pid in first | workers), "a worker outlived the server"

    everyone = clients + late
    drops = sum(c.drops for c in everyone)
    replies = sum(len(c.replies) for c in everyone)
    duplicates = sum(bool(r["duplicate"]) for c in everyone for r in c.replies)
    print(f"\nworkers ready in {ready_s:.1f} s; {CLIENTS}x{MESSAGES} turns in {traffic_s:.1f} s; "
          f"killed {victim} after {killed_at} replies; {drops} drops, "
          f"{sum(c.resumed for c in everyone)} resumed, {duplicates} answered from the store; "
          f"turns by live worker {per_worker}; stopped in {stopped_s:.1f} s")
    assert drops > 0, "killing a worker dropped no connection: the test tested nothing"

    # Every message stored exactly once, in the order sent, each with the reply the client got.
    assert turns >= replies == (CLIENTS + LATE_CLIENTS) * MESSAGES
    messages = await stored(postgres_url)
    by_conversation: dict[str, list[Any]] = {}
    for m in messages:
        by_conversation.setdefault(m.conversation_id, []).append(m)
    assert set(by_conversation) == {c.conversation_id for c in everyone}
    for client in everyone:
        rows = by_conversation[client.conversation_id]
        assert [m.role for m in rows] == ["user", "bot"] * MESSAGES, client.name
        assert [m.text for m in rows[::2]] == client.messages, client.name
        assert [m.client_id for m in rows[::2]] == client.ids, client.name
        assert [m.id for m in rows[1::2]] == [r["message_id"] for r in client.replies]
        assert [m.text for m in rows[1::2]] == [r["text"] for r in client.replies]
        assert {m.decision for m in rows[1::2]} == {"answer"}, client.name
    assert len(messages) == 2 * replies


@pytest.mark.slow
def test_serve_with_workers_reports_an_index_error_in_one_line(tmp_path: Path) -> None:
    """The index is opened in a process of its own (the parent stays small): its error is
    still one line and status 1, before any worker starts."""
    config = tmp_path / "supportbot.yaml"
    config.write_text(
        f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n  auto_rebuild: false\n"
        "storage:\n  database_url: postgresql+asyncpg://bot:pw@127.0.0.1:1/never-opened\n",
        encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "serve",
                           "--workers", "2", "--port", str(free_port())], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error")] == [
        f"error: no index in {tmp_path / 'index'}; run 'supportbot index' to build it"
    ], done.stderr
    assert "serving" not in done.stderr
