"""The web channel against a real uvicorn on 127.0.0.1: many pipelined conversations, clients
that leave mid-answer, shutdown while a turn runs, bad input over the wire, heartbeats, and
`supportbot serve` as a process (SIGTERM, a port already in use).

Every server here runs on loopback and is stopped by the test that started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bot.channels.web import create_app
from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.conftest import SAMPLE_FAQ
from tests.dialogue_support import FAITHFUL, NEAR_MISS
from tests.web_support import FAQ_QUESTIONS, free_port, running, scripted, stored, web_settings

pytestmark = [pytest.mark.timeout(180), pytest.mark.every_database]

# Between the suggest and answer thresholds of the default settings: "Did you mean", each with
# a pick of one of the entries offered (NEAR_MISS is offered three, the other one).
DID_YOU_MEAN = [(NEAR_MISS, "2", 1), ("do you have a shop in town", "the first one", 0)]
WAIT = 30.0  # seconds any one frame may take on a busy 2-core machine


async def receive(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    """The next JSON frame."""
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def hello(ws: ClientConnection) -> dict[str, Any]:
    frame = await receive(ws)
    assert frame["type"] == "hello", frame
    return frame


async def replies(ws: ClientConnection, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The next `count` turns: (the text of their token frames, the reply frame) each.

    Token frames must carry the client_id of the reply they belong to.
    """
    done: list[tuple[str, dict[str, Any]]] = []
    pieces: list[str] = []
    owner: str | None = None
    while len(done) < count:
        frame = await receive(ws)
        if frame["type"] == "token":
            assert owner in (None, frame["client_id"]), "token frames of two turns interleaved"
            owner = frame["client_id"]
            pieces.append(frame["text"])
        elif frame["type"] == "reply":
            assert owner in (None, frame["client_id"]), "a reply after another turn's tokens"
            done.append(("".join(pieces), frame))
            pieces, owner = [], None
        elif frame["type"] != "ping":
            raise AssertionError(f"unexpected frame {frame}")
    return done


async def send(ws: ClientConnection, text_: str, client_id: str | None = None) -> None:
    await ws.send(json.dumps({"type": "message", "text": text_,
                              **({"client_id": client_id} if client_id else {})}))


def meta(row: Any) -> dict[str, Any]:
    value = row.meta
    return dict(json.loads(value) if isinstance(value, str) else value or {})


# --- many conversations at once ----------------------------------------------------------------


def script(i: int) -> list[str]:
    """Client i's five messages: an FAQ question, a 'Did you mean' question, a pick by number
    (only a pick if answered after the previous one), another FAQ question, another near miss."""
    near, pick, _ = DID_YOU_MEAN[i % 2]
    return [FAQ_QUESTIONS[i % 5], near, pick, FAQ_QUESTIONS[(i + 2) % 5],
            DID_YOU_MEAN[(i + 1) % 2][0]]


async def conversation(address: str, i: int, pipelined: bool) -> dict[str, Any]:
    """One client's conversation; pipelined clients send all five messages at once."""
    messages = script(i)
    ids = [f"c{i}-{k}" for k in range(len(messages))]
    async with connect(f"ws://{address}/ws", open_timeout=WAIT) as ws:
        greeting = await hello(ws)
        turns: list[tuple[str, dict[str, Any]]] = []
        if pipelined:
            for message, client_id in zip(messages, ids, strict=True):
                await send(ws, message, client_id)
            turns = await replies(ws, len(messages))
        else:
            for message, client_id in zip(messages, ids, strict=True):
                await send(ws, message, client_id)
                turns += await replies(ws, 1)
    return {"conversation_id": greeting["conversation_id"], "token": greeting["token"],
            "messages": messages, "ids": ids, "turns": turns}


@pytest.mark.parametrize("clients", [50])
async def test_many_pipelined_conversations_keep_order_and_lose_nothing(
        tmp_path: Path, sample_index: FaqIndex, database_url: str, clients: int) -> None:
    settings = web_settings(tmp_path)
    settings.storage.database_url = database_url
    started = time.perf_counter()
    with running(create_app(settings, index=sample_index)) as (address, _):
        # Even clients send their five messages without waiting; odd ones wait for each reply.
        results = await asyncio.gather(*(conversation(address, i, pipelined=i % 2 == 0)
                                         for i in range(clients)))
        first = results[0]
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            seen = (await http.get(f"/v1/conversations/{first['conversation_id']}",
                                   headers={"X-Conversation-Token": first["token"]})).json()
    elapsed = time.perf_counter() - started
    for i, result in enumerate(results):
        turns = result["turns"]
        assert [reply["client_id"] for _, reply in turns] == result["ids"]
        assert [reply["decision"] for _, reply in turns] == [
            "answer", "clarify", "answer", "answer", "clarify"], result["messages"]
        assert not any(reply["duplicate"] for _, reply in turns)
        assert all(tokens == reply["text"] for tokens, reply in turns)
        offered = turns[1][1]["suggestions"]
        assert turns[2][1]["sources"][0]["id"] == offered[DID_YOU_MEAN[i % 2][2]]["id"]
    # The database: every conversation exactly its ten messages, alternating, in sent order.
    by_conversation: dict[str, list[Any]] = defaultdict(list)
    for row in await stored(database_url):
        by_conversation[row.conversation_id].append(row)
    assert len(by_conversation) == clients
    for result in results:
        messages = by_conversation[result["conversation_id"]]
        assert [m.role for m in messages] == ["user", "bot"] * 5
        assert [m.text for m in messages[::2]] == result["messages"]
        assert [m.client_id for m in messages[::2]] == result["ids"]
        assert [m.id for m in messages[1::2]] == [r["message_id"] for _, r in result["turns"]]
        assert [m.text for m in messages[1::2]] == [r["text"] for _, r in result["turns"]]
    assert [m["text"] for m in seen["messages"]] == [m.text for m in by_conversation[
        first["conversation_id"]]]
    assert elapsed < 90, f"{clients} conversations took {elapsed:.0f} s"


# --- a client that leaves mid-answer, and shutdown while a turn runs --------------------------


def slow_settings(tmp_path: Path, index: FaqIndex, sentences: int) -> Settings:
    """NEAR_MISS lands in the generated band; the scripted answer repeats a sentence that
    passes the grounding check, so it is released sentence by sentence."""
    settings = web_settings(tmp_path, index, generate=True)
    settings.dialogue.release = "sentence"
    settings.model.generation.max_new_tokens = 20 * sentences + 20
    return settings


@pytest.mark.parametrize("leave", ["close", "abort"])
async def test_a_client_who_leaves_mid_answer_stops_its_generation(
        tmp_path: Path, sample_index: FaqIndex, leave: str) -> None:
    answer = " ".join([FAITHFUL] * 8)
    words = len(answer.split())
    settings = slow_settings(tmp_path, sample_index, sentences=8)
    generator, load = scripted(answer, seconds_per_token=0.05)
    with running(create_app(settings, index=sample_index, generator=load)) as (address, _):
        ws = await connect(f"ws://{address}/ws", open_timeout=WAIT)
        conversation_id = (await hello(ws))["conversation_id"]
        await send(ws, NEAR_MISS, "slow")
        first = await receive(ws)
        assert first["type"] == "token", first
        if leave == "close":
            await ws.close()
        else:  # no closing handshake: the TCP connection just goes
            ws.transport.abort()
        at_leaving = generator.steps
        deadline = time.monotonic() + 10
        while not meta_rows(await stored(settings.storage.database_url), "bot"):
            assert time.monotonic() < deadline, "the interrupted turn was not stored"
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 10  # the generation ends: no step is taken after it
        while generator.running.is_set():
            assert time.monotonic() < deadline, "generation went on after the client left"
            await asyncio.sleep(0.01)
        settled = generator.steps
    # A step is 50 ms: the model stopped within a second of the client leaving, long before
    # the answer's end.
    assert settled <= at_leaving + 20 < words // 2, (at_leaving, settled, words)
    bot = meta_rows(await stored(settings.storage.database_url), "bot")
    assert len(bot) == 1 and bot[0].conversation_id == conversation_id
    assert meta(bot[0])["interrupted"] is True
    assert bot[0].text == first["text"] == FAITHFUL  # exactly what the customer was shown


def meta_rows(rows: list[Any], role: str) -> list[Any]:
    return [r for r in rows if r.role == role]


async def test_shutdown_finishes_and_stores_the_turn_in_flight(tmp_path: Path,
                                                              sample_index: FaqIndex) -> None:
    answer = " ".join([FAITHFUL] * 3)
    settings = slow_settings(tmp_path, sample_index, sentences=3)
    generator, load = scripted(answer, seconds_per_token=0.05)
    with running(create_app(settings, index=sample_index, generator=load)) as (address, server):
        ws = await connect(f"ws://{address}/ws", open_timeout=WAIT)
        await hello(ws)
        await send(ws, NEAR_MISS, "in-flight")
        await send(ws, FAQ_QUESTIONS[0], "queued")  # sent, waiting behind the running turn
        assert (await receive(ws))["type"] == "token"
        server.should_exit = True  # what SIGTERM does
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await receive(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    # `running` has waited for the server to stop: the turn ran to its end and was stored, and
    # so was the one queued behind it, though the client could see neither.
    messages = await stored(settings.storage.database_url)
    assert [(m.role, m.client_id) for m in messages] == [
        ("user", "in-flight"), ("bot", None), ("user", "queued"), ("bot", None)]
    assert messages[1].text == answer and messages[1].decision == "generate"
    assert "interrupted" not in meta(messages[1])
    assert messages[3].decision == "answer"
    assert generator.steps == len(answer.split())


# --- bad input over the wire -------------------------------------------------------------------


async def test_bad_frames_over_the_wire_leave_the_connection_usable(
        tmp_path: Path, sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path)
    with running(create_app(settings, index=sample_index)) as (address, _):
        async with connect(f"ws://{address}/ws", open_timeout=WAIT) as ws:
            greeting = await hello(ws)
            assert greeting["max_frame_bytes"] == 16384
            too_large = json.dumps({"type": "message", "text": "x" * 20_000})
            for frame, code in (("{not json", "invalid_json"), (b"\x00\x01", "binary_frame"),
                                (too_large, "frame_too_large")):
                await ws.send(frame)
                error = await receive(ws)
                assert (error["type"], error["code"]) == ("error", code), error
                await send(ws, FAQ_QUESTIONS[0], f"after-{code}")
                [(_, reply)] = await replies(ws, 1)
                assert reply["decision"] == "answer"
            # Over uvicorn's own limit (ws_max_size, 1 MiB) the frame never reaches the app:
            # the web-socket layer closes the connection with 1009 (message too big).
            await ws.send("x" * ((1 << 20) + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # The conversation is intact: resume it and go on.
        resume = f"conversation_id={greeting['conversation_id']}&token={greeting['token']}"
        async with connect(f"ws://{address}/ws?{resume}", open_timeout=WAIT) as ws:
            again = await hello(ws)
            assert again["resumed"] and len(again["history"]) == 6
            await send(ws, FAQ_QUESTIONS[1])
            [(_, reply)] = await replies(ws, 1)
            assert reply["decision"] == "answer"
        async with connect(f"ws://{address}/ws?conversation_id={greeting['conversation_id']}"
                           "&token=forged", open_timeout=WAIT) as ws:
            refused = await receive(ws)
            assert refused["code"] == "bad_token"
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_rest_refuses_large_bodies_and_limits_rate_over_the_wire(
        tmp_path: Path, sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, burst_per_connection=2, rate_per_connection=2.0)
    with running(create_app(settings, index=sample_index)) as (address, _):
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=WAIT) as http:
            large = await http.post("/v1/chat", json={"text": "x" * 20_000})
            assert large.status_code == 413 and "larger than" in large.json()["detail"]

            async def chunks() -> Any:  # no Content-Length: refused while it streams in
                for _ in range(40):
                    yield b" " * 1024

            streamed = await http.post("/v1/chat", content=chunks(),
                                       headers={"Content-Type": "application/json"})
            assert streamed.status_code == 413
            first = (await http.post("/v1/chat", json={"text": FAQ_QUESTIONS[0]})).json()
            again = {"text": FAQ_QUESTIONS[1], "conversation_id": first["conversation_id"],
                     "token": first["token"]}
            assert (await http.post("/v1/chat", json=again)).status_code == 200
            limited = await http.post("/v1/chat", json=again)
            assert limited.status_code == 429
            retry_after = int(limited.headers["Retry-After"])
            assert retry_after >= 1
            await asyncio.sleep(retry_after)
            later = await http.post("/v1/chat", json=again)
            assert later.status_code == 200 and later.json()["reply"]["decision"] == "answer"
        async with connect(f"ws://{address}/ws", open_timeout=WAIT) as ws:
            await hello(ws)
            for k in range(2):
                await send(ws, FAQ_QUESTIONS[0], f"ok-{k}")
            await send(ws, FAQ_QUESTIONS[0], "too-soon")
            frames = [await receive(ws) for _ in range(4)]  # tokens and replies, one error
            errors = [f for f in frames if f["type"] == "error"]
            while len([f for f in frames if f["type"] == "reply"]) < 2:
                frames.append(await receive(ws))
            assert [(e["code"], e["client_id"]) for e in errors] == [("rate_limited", "too-soon")]
            await asyncio.sleep(0.6)  # one message's worth of the bucket back (2 per second)
            await send(ws, FAQ_QUESTIONS[0], "later")
            [(_, reply)] = await replies(ws, 1)
            assert reply["client_id"] == "later" and reply["decision"] == "answer"


async def test_heartbeats_arrive_and_a_silent_client_is_closed(tmp_path: Path,
                                                               sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, heartbeat_seconds=0.25)
    with running(create_app(settings, index=sample_index)) as (address, _):
        async with connect(f"ws://{address}/ws", open_timeout=WAIT) as ws:
            assert (await hello(ws))["heartbeat_seconds"] == 0.25
            pings = 0
            until = time.monotonic() + 1.5  # six intervals, each ping answered: still open
            while time.monotonic() < until:
                frame = await receive(ws, timeout=2)
                assert frame == {"type": "ping"}
                pings += 1
                await ws.send(json.dumps({"type": "pong"}))
            assert pings >= 3
            await send(ws, FAQ_QUESTIONS[0])
            assert (await replies(ws, 1))[0][1]["decision"] == "answer"
        async with connect(f"ws://{address}/ws", open_timeout=WAIT) as ws:
            await hello(ws)
            started = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    assert await receive(ws, timeout=5) == {"type": "ping"}  # never answered
            waited = time.monotonic() - started
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            assert 0.4 <= waited < 3, waited


# --- `supportbot serve` as a process -----------------------------------------------------------


def supportbot() -> str:
    """The console script installed next to this Python."""
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent))
    assert exe is not None, "the supportbot console script is not installed"
    return exe


def serve_config(tmp_path: Path) -> Path:
    path = tmp_path / "supportbot.yaml"
    path.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
                    "storage:\n  database_url: sqlite+aiosqlite:///bot.db\n"
                    "web:\n  drain_seconds: 10\n", encoding="utf-8")
    return path


def serve_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
async def test_supportbot_serve_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen([supportbot(), "--config", str(serve_config(tmp_path)), "serve",
                                "--port", str(port)], cwd=tmp_path, env=serve_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=WAIT) as http:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "supportbot serve did not become ready"
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            answer = (await http.post("/v1/chat", json={"text": FAQ_QUESTIONS[0],
                                                        "client_id": "q1"})).json()
            assert answer["reply"]["decision"] == "answer"
            ws = await connect(f"ws://127.0.0.1:{port}/ws", open_timeout=WAIT)
            await hello(ws)  # open when the server stops: closed with 1012 (service restart)
            process.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            _, stderr = await asyncio.to_thread(process.communicate, timeout=15)
        assert process.returncode == 0, stderr
        assert time.monotonic() - stopped < 10 + 5, "stopping took longer than the drain time"
        assert "Traceback" not in stderr, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    settings = Settings()
    settings.storage.database_url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    messages = await stored(settings.storage.database_url)
    assert [(m.role, m.client_id) for m in messages] == [("user", "q1"), ("bot", None)]
    assert messages[1].id == answer["reply"]["message_id"]


@pytest.mark.slow
def test_supportbot_serve_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([supportbot(), "--config", str(serve_config(tmp_path)), "serve",
                               "--port", str(port)], cwd=tmp_path, env=serve_env(),
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in done.stderr, \
        done.stderr
    assert "serving" not in done.stderr  # refused before the index and database were opened
