"""Clients that flood the chat socket (issue 31, item 12): one that sends invalid frames and never
reads the answers is dropped once a send has waited web.send_timeout_seconds, on a real uvicorn
on 127.0.0.1; one that keeps sending over its rate limit is closed with 1008. The server keeps
serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bot.channels.web import create_app
from retrieval.index import FaqIndex
from tests.web_support import running, web_settings

pytestmark = pytest.mark.timeout(120)
# An invalid frame whose error echoes its client_id: about twice as many bytes out as in.
INVALID = json.dumps({"type": "nope", "client_id": "x" * 64})


def gauge(metrics: str, name: str) -> float:
    """A metric's value in the exposition text (0.0 when absent)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_client_that_never_reads_is_dropped_and_others_are_served(
        tmp_path: Path, sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, send_timeout_seconds=1.0, heartbeat_seconds=60.0,
                            rate_per_ip=1e6, burst_per_ip=10**7, rate_per_connection=1e6,
                            burst_per_connection=10**7)  # no rate limit: the send timeout acts
    with running(create_app(settings, index=sample_index)) as (address, _):
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, set early
        host, port = address.split(":")
        raw.connect((host, int(port)))
        raw.setblocking(False)
        sent = 0
        async with connect(f"ws://{address}/ws", sock=raw, max_queue=1,
                           compression=None) as greedy, \
                httpx.AsyncClient(base_url=f"http://{address}") as http:

            async def flood() -> None:
                """300,000 invalid frames, never reading a reply."""
                nonlocal sent
                for _ in range(300_000):
                    await greedy.send(INVALID)
                    sent += 1

            flooding = asyncio.create_task(flood())
            started = time.monotonic()
            dropped = 0.0
            while time.monotonic() - started < 20:
                await asyncio.sleep(0.25)
                metrics = (await http.get("/metrics")).text
                dropped = gauge(metrics, 'supportbot_errors_total{kind="send_timeout"}')
                if dropped and not gauge(metrics, "supportbot_websockets_open"):
                    break
            took = time.monotonic() - started
            with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
                await asyncio.wait_for(asyncio.shield(flooding), 5)
            flooding.cancel()
            assert dropped == 1.0, f"not dropped after {took:.1f} s and {sent} frames"
            # The TCP connection is gone too, not just the handler: the flood ends with an error.
            assert flooding.done() and not flooding.cancelled(), "the connection is still open"
            assert isinstance(flooding.exception(), ConnectionClosed), flooding.exception()
            assert not gauge(metrics, "supportbot_websockets_open")
            async with connect(f"ws://{address}/ws") as other:  # everyone else is served
                assert json.loads(await other.recv())["type"] == "hello"
                await other.send(json.dumps({"type": "ping"}))
                assert json.loads(await asyncio.wait_for(other.recv(), 10)) == {"type": "pong"}
        print(f"dropped after {took:.1f} s and {sent} frames sent")


def test_a_client_that_keeps_sending_over_its_limit_is_closed(tmp_path: Path,
                                                             sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, rate_per_connection=0.01, burst_per_connection=5)
    with TestClient(create_app(settings, index=sample_index)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            codes: list[str] = []
            with pytest.raises(WebSocketDisconnect) as closed:
                for _ in range(200):
                    ws.send_text(INVALID)
                    codes.append(ws.receive_json()["code"])
            assert closed.value.code == 1008
        assert codes[:5] == ["unknown_type"] * 5  # invalid frames spend the budget too
        assert set(codes[5:]) == {"rate_limited"} and len(codes) < 40
        with client.websocket_connect("/ws") as other:  # a new socket is served
            other.receive_json()
            other.send_json({"type": "ping"})
            assert other.receive_json() == {"type": "pong"}
        metrics = client.get("/metrics").text
    assert 'supportbot_errors_total{kind="flood"} 1.0' in metrics
