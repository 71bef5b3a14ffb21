"""Operators' replies reach a customer whose socket another server process holds: two apps on
one PostgreSQL database (as `supportbot serve --workers 2` runs them), the customer on one, the
operator on the other; and the relay's own parts, big frames and reconnection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.channels.web import create_app
from bot.channels.web.relay import PostgresRelay
from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.operator_support import add_operators, login, turn
from tests.web_support import web_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(tmp_path: Path, postgres_url: str) -> Settings:
    settings = web_settings(tmp_path)
    settings.storage.database_url = postgres_url
    add_operators(settings, "anna")
    return settings


@pytest.fixture
def two_workers(settings: Settings, sample_index: FaqIndex
                ) -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(create_app(settings, index=sample_index),
                    base_url="https://testserver") as first, \
            TestClient(create_app(settings, index=sample_index),
                       base_url="https://testserver") as second:
        yield first, second


def test_an_operator_reply_on_one_worker_reaches_a_socket_on_another(
        two_workers: tuple[TestClient, TestClient]) -> None:
    customer_side, operator_side = two_workers
    with customer_side.websocket_connect("/ws") as ws:
        conversation_id = ws.receive_json()["conversation_id"]
        assert turn(ws, "I want to talk to a human")["decision"] == "handoff"
        assert login(operator_side).status_code == 200
        base = f"/operator/api/conversations/{conversation_id}"
        assert operator_side.post(f"{base}/claim").status_code == 200
        sent = operator_side.post(f"{base}/reply", json={"text": "Hi, Anna here."})
        assert sent.status_code == 200 and sent.json()["live_sockets"] == 0  # none there
        frame = ws.receive_json()
        assert frame == {"type": "operator", "text": "Hi, Anna here.", "name": "anna",
                         "message_id": sent.json()["message_id"],
                         "created_at": sent.json()["created_at"]}
        long = "長" * 4000  # 12,000 bytes: more than one NOTIFY takes
        assert operator_side.post(f"{base}/reply", json={"text": long}).status_code == 200
        assert ws.receive_json()["text"] == long
        assert operator_side.post(f"{base}/release").status_code == 200
        assert ws.receive_json() == {"type": "status", "status": "bot"}


def test_the_relay_skips_its_own_frames_and_listens_again_after_a_lost_connection(
        settings: Settings) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    async def scenario() -> None:
        got: dict[str, list[tuple[str, dict[str, Any]]]] = {"a": [], "b": []}

        def sink(name: str) -> Any:
            async def deliver(conversation_id: str, frame: dict[str, Any]) -> int:
                got[name].append((conversation_id, frame))
                return 1
            return deliver

        engine = create_async_engine(settings.storage.database_url)
        a = PostgresRelay(settings.storage.database_url, sink("a"), engine)
        b = PostgresRelay(settings.storage.database_url, sink("b"), engine)
        await a.start()
        await b.start()
        try:
            assert await a.publish("web-1", {"type": "status", "status": "bot"})
            await _until(lambda: got["b"])
            assert got == {"a": [], "b": [("web-1", {"type": "status", "status": "bot"})]}

            await b._raw.close()  # the database dropped b's connection
            await _until(lambda: b._raw is not None and not b._raw.is_closed(), 10)
            assert await a.publish("web-2", {"type": "status", "status": "closed"})
            await _until(lambda: len(got["b"]) == 2)
            assert got["b"][1] == ("web-2", {"type": "status", "status": "closed"})
        finally:
            await a.stop()
            await b.stop()
            await engine.dispose()

    asyncio.run(scenario())


async def _until(condition: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")
