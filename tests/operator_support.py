"""Helpers for the operator tests: accounts in the test database, logging in, customer turns,
and a conversation handed off to a human."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi.testclient import TestClient

from bot.operators.accounts import hash_password
from bot.operators.store import OperatorStore
from bot.settings import Settings
from bot.storage import ConversationStore

PASSWORD = "correct horse battery"


def add_operators(settings: Settings, *names: str) -> None:
    """Operator accounts `names`, all with PASSWORD, in the settings' database."""
    async def add() -> None:
        store = ConversationStore(settings.storage.database_url)
        try:
            await store.init()
            for name in names:
                await OperatorStore(store).add(name, hash_password(PASSWORD))
        finally:
            await store.close()

    asyncio.run(add())


def login(client: TestClient, name: str = "anna", password: str = PASSWORD) -> Any:
    """POST the operator login; the response."""
    return client.post("/operator/api/login", json={"name": name, "password": password})


def turn(ws: Any, text: str) -> dict[str, Any]:
    """Send a customer message; the reply frame (token frames skipped)."""
    ws.send_json({"type": "message", "text": text})
    while True:
        frame = ws.receive_json()
        if frame["type"] == "reply":
            return dict(frame)
        assert frame["type"] == "token", frame


def handed_off(client: TestClient) -> tuple[str, str]:
    """A web conversation whose customer asked for a human: its id and token."""
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert turn(ws, "I want to talk to a human")["decision"] == "handoff"
    return hello["conversation_id"], hello["token"]
