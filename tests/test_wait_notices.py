"""A customer left waiting for a human is told the expected wait, once, on their channel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.channels.web import create_app
from bot.operators import notices as notices_module
from bot.operators.notices import send_wait_notices, wait_phrase
from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.operator_support import add_operators, login, turn
from tests.wait_support import wait_for
from tests.web_support import rows, web_settings

pytestmark = pytest.mark.timeout(60)


def test_the_wait_is_said_in_minutes_or_vaguely() -> None:
    assert wait_phrase(None) == "a little longer than usual"
    assert wait_phrase(0.2) == "about 1 minute"
    assert wait_phrase(7.6) == "about 8 minutes"


def notices(settings: Settings, conversation_id: str | None = None) -> list[str]:
    """The texts of the wait notices stored (of one conversation)."""
    return [r.text for r in rows(settings, "SELECT conversation_id, text FROM messages "
                                           "WHERE decision='notice'")
            if conversation_id in (None, r.conversation_id)]


@pytest.fixture
def sweeps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The app's wait-notice sweeps, counted as they end (each: the notices it sent)."""
    done: list[int] = []
    sweep = notices_module.send_wait_notices

    async def counted(*args: Any) -> int:
        sent = await sweep(*args)
        done.append(sent)
        return sent

    monkeypatch.setattr(notices_module, "send_wait_notices", counted)
    return done


def test_a_waiting_customer_hears_the_expected_wait_once(tmp_path: Path, sample_index: FaqIndex,
                                                         sweeps: list[int]) -> None:
    settings = web_settings(tmp_path)
    settings.operators.wait_notice_minutes = 0.005  # 0.3 s, swept every 0.075 s
    add_operators(settings, "anna")
    with TestClient(create_app(settings, index=sample_index),
                    base_url="https://testserver") as client:
        # Someone else's conversation, claimed once it waited past the setting: the expected
        # wait...
        with client.websocket_connect("/ws") as first:
            other = first.receive_json()["conversation_id"]
            assert turn(first, "I want to talk to a human")["decision"] == "handoff"
        assert login(client).status_code == 200
        wait_for(lambda: notices(settings, other), "a notice to the first customer")
        assert client.post(f"/operator/api/conversations/{other}/claim").status_code == 200
        # ...and given back at once: its wait still counts (a claim is history, not a state)
        assert client.post(f"/operator/api/conversations/{other}/release").status_code == 200

        with client.websocket_connect("/ws") as ws:
            conversation = ws.receive_json()["conversation_id"]
            assert turn(ws, "I want to talk to a human")["decision"] == "handoff"
            frame = ws.receive_json()  # nothing else is sent to a waiting customer
        assert frame["type"] == "operator" and frame["name"] == settings.persona.bot_name
        assert "the wait is about 1 minute" in frame["text"]
        assert "we will reply here in this chat" in frame["text"]
        swept = len(sweeps)  # several more sweeps: still one notice for this handoff
        wait_for(lambda: len(sweeps) >= swept + 3, "three more sweeps")
        stored = rows(settings, "SELECT conversation_id, decision, role FROM messages "
                                "WHERE decision='notice'")
        # The first conversation got its own notice before it was claimed.
        assert sorted(r.conversation_id for r in stored) == sorted([other, conversation])
        assert all(r.role == "bot" for r in stored)
        history = client.get(f"/operator/api/conversations/{conversation}").json()
        assert [m["decision"] for m in history["messages"] if m["role"] == "bot"] == [
            "handoff", "notice"]


def test_no_notice_when_switched_off(tmp_path: Path,
                                                        sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path)
    settings.operators.wait_notice_minutes = 0
    with TestClient(create_app(settings, index=sample_index)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            assert turn(ws, "I want to talk to a human")["decision"] == "handoff"
            handed_off = time.monotonic()
        # The customer has waited longer than the 0.001 minutes set below (0.06 s)...
        wait_for(lambda: time.monotonic() - handed_off > 0.06, "a wait of 0.06 s")
        # A sweep now, run as the app's own would be: off, it sends nothing...
        ctx = client.app.state.operators  # type: ignore[attr-defined]
        sweep = (settings, ctx.store, ctx.web, ctx.telegram)
        assert client.portal.call(send_wait_notices, *sweep) == 0
        assert notices(settings) == []
        # ...though the customer is waiting unclaimed: with any wait set, they are told.
        settings.operators.wait_notice_minutes = 0.001
        assert client.portal.call(send_wait_notices, *sweep) == 1
    assert len(notices(settings)) == 1
