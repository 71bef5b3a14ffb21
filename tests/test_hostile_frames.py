"""Hostile input to the chat web socket and the REST bodies (issue 31, items 11 and 15): lone
surrogates, ids past the database's range, deep nesting, and arbitrary JSON thrown at every frame
type and body (property-based, hypothesis). The server answers each with an `error` frame or a
4xx, never a 500 or a dropped socket, and keeps serving. And a turn the locked database could
not keep says so (`stored: false`) and is counted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from bot.channels.web import create_app
from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.web_support import rows, web_settings

pytestmark = pytest.mark.timeout(180)
FAQ_QUESTION = "how do I reset my password"
LONE = "\udc00"  # a lone low surrogate: JSON can write it (escaped), UTF-8 cannot carry it
TYPES = ("message", "feedback", "ping", "pong", "mystery")
SERVER_FRAMES = {"token", "reply", "error", "pong", "ping", "feedback", "operator", "typing",
                 "status"}


def until(ws: Any, kind: str) -> list[dict[str, Any]]:
    """Frames up to and including the first of type `kind` (the socket must stay open)."""
    seen: list[dict[str, Any]] = []
    while True:
        frame = ws.receive_json()
        assert frame.get("type") in SERVER_FRAMES, frame
        assert not (frame["type"] == "error" and frame.get("code") == "internal"), frame
        seen.append(frame)
        if frame["type"] == kind:
            return seen


def answered(ws: Any, text: str, client_id: str) -> dict[str, Any]:
    """Send a message; its reply frame (frames of earlier turns are passed over)."""
    ws.send_json({"type": "message", "text": text, "client_id": client_id})
    while True:
        frame = until(ws, "reply")[-1]
        if frame["client_id"] == client_id:
            return frame


# --- item 11: the attacks as found --------------------------------------------------------------


@pytest.mark.parametrize(("raw", "code", "says"), [
    (json.dumps({"type": "message", "text": "hi", "client_id": LONE}), "bad_frame", "client_id"),
    (json.dumps({"type": "message", "text": "hi " + LONE}), "bad_frame", "text"),
    (json.dumps({"type": "feedback", "message_id": 1, "rating": "up", "comment": LONE}),
     "bad_frame", "comment"),
    (json.dumps({"type": "feedback", "message_id": 2**63, "rating": "up"}), "bad_frame",
     "message_id"),
    (json.dumps({"type": "feedback", "message_id": 2**53, "rating": "up"}), "bad_frame",
     "message_id"),
    ("[" * 16000, "invalid_json", "nested too deeply"),
    (json.dumps({"type": LONE}), "unknown_type", "unknown frame type"),
    (json.dumps({"type": "message", "text": "hi", "client_id": "a\x00"}), "bad_frame",
     "NUL"),  # PostgreSQL refuses NUL in text: the turn could not be stored
])
def test_hostile_frames_get_an_error_and_the_socket_keeps_answering(
        client: TestClient, settings: Settings, raw: str, code: str, says: str) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text(raw)
        error = until(ws, "error")[-1]
        assert (error["code"], error["client_id"]) == (code, None), error
        assert says in error["message"]
        reply = answered(ws, FAQ_QUESTION, "after")  # the turn worker is alive
        assert reply["decision"] == "answer" and reply["stored"] and reply["message_id"]
    users = rows(settings, "SELECT text, client_id FROM messages WHERE role = 'user'")
    assert [tuple(r) for r in users] == [(FAQ_QUESTION, "after")]


def test_a_frame_that_fails_unexpectedly_gets_internal_and_the_socket_keeps_reading(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> bool:
        raise ValueError("a bug while rating")

    monkeypatch.setattr(client.app.state.web.manager, "feedback", broken)  # type: ignore[attr-defined]
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "feedback", "message_id": 1, "rating": "up", "client_id": "r"})
        error = until_internal(ws)
        assert (error["code"], error["client_id"]) == ("internal", "r")
        assert "a bug" not in error["message"]  # no internals for the client
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        assert answered(ws, FAQ_QUESTION, "after")["decision"] == "answer"


def until_internal(ws: Any) -> dict[str, Any]:
    """The next error frame, internal ones included."""
    while True:
        frame = ws.receive_json()
        if frame["type"] == "error":
            return dict(frame)


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/v1/chat", json.dumps({"text": "hi", "client_id": LONE}), 422, "client_id"),
    ("/v1/chat", json.dumps({"text": "hi " + LONE}), 422, "text"),
    ("/v1/chat", json.dumps({"text": "hi", "conversation_id": LONE, "token": "t"}), 422,
     "conversation_id"),
    ("/v1/feedback", json.dumps({"conversation_id": "c", "token": "t", "message_id": 2**63,
                                 "rating": "up"}), 422, "message_id"),
    ("/v1/feedback", json.dumps({"conversation_id": "c", "token": "t", "message_id": 1,
                                 "rating": "up", "comment": LONE}), 422, "comment"),
    ("/v1/chat", json.dumps({"text": "hi\x00"}), 422, "NUL"),
    ("/v1/chat", "[" * 16000, 400, "parsing the body"),
])
def test_hostile_bodies_get_a_4xx_naming_the_field(client: TestClient, path: str, body: str,
                                                   status: int, says: str) -> None:
    response = client.post(path, content=body.encode(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert says in response.text
    assert client.post("/v1/chat", json={"text": FAQ_QUESTION}).status_code == 200


def test_a_valid_rating_of_a_surrogate_free_comment_still_counts(client: TestClient,
                                                                 settings: Settings) -> None:
    first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
    rated = client.post("/v1/feedback", json={
        "conversation_id": first["conversation_id"], "token": first["token"],
        "message_id": first["reply"]["message_id"], "rating": "up", "comment": "🙂 très bien"})
    assert rated.status_code == 200, rated.text
    assert [tuple(r) for r in rows(settings, "SELECT comment FROM feedback")] == [
        ("🙂 très bien",)]


# --- item 11: arbitrary JSON at every frame type and body ---------------------------------------

LONE_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXTS = st.lists(st.one_of(st.characters(), LONE_SURROGATES), max_size=12).map("".join)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**53, 2**63 - 1, 2**63, 2**64]),
                    st.floats(allow_nan=True, allow_infinity=True), TEXTS)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXTS, inner, max_size=3)), max_leaves=8)
FIELD_VALUES = {"text": st.one_of(TEXTS, st.just(FAQ_QUESTION), VALUES),
                "client_id": st.one_of(TEXTS, st.just("c-1"), VALUES),
                "message_id": st.one_of(st.integers(-(2**70), 2**70), st.integers(1, 50), VALUES),
                "rating": st.one_of(st.sampled_from(["up", "down"]), VALUES),
                "comment": st.one_of(TEXTS, VALUES), "stream": VALUES,
                "conversation_id": st.one_of(TEXTS, VALUES), "token": st.one_of(TEXTS, VALUES)}


@st.composite
def frames(draw: st.DrawFn) -> str:
    """A client frame: any type, any subset of the fields, any JSON in them; or a raw text."""
    kind = draw(st.one_of(st.sampled_from(TYPES), VALUES))
    fields = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), unique=True, max_size=5))
    frame: dict[str, Any] = {"type": kind}
    frame.update({name: draw(FIELD_VALUES[name]) for name in fields})
    shape = draw(st.sampled_from(["object", "object", "object", "value", "nested", "raw"]))
    if shape == "value":
        return json.dumps(draw(VALUES))
    if shape == "nested":
        return "[" * draw(st.integers(1, 16000))
    if shape == "raw":
        return draw(st.text(max_size=40))
    return json.dumps(frame)


def test_arbitrary_frames_are_answered_and_the_socket_keeps_serving(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()

        @examples(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example])
        @given(raw=frames())
        def answers(raw: str) -> None:
            ws.send_text(raw)
            ws.send_json({"type": "ping"})
            until(ws, "pong")  # no internal error, no dropped socket on the way

        answers()
        # Answered (the safety layer may by now refuse the flood politely: still a reply).
        assert answered(ws, FAQ_QUESTION, "last")["text"]


@st.composite
def bodies(draw: st.DrawFn, names: tuple[str, ...]) -> bytes:
    """A REST body: an object with any of `names` holding any JSON, or any JSON at all."""
    if draw(st.booleans()):
        fields = draw(st.lists(st.sampled_from(names), unique=True))
        return json.dumps({name: draw(FIELD_VALUES[name]) for name in fields}).encode()
    return json.dumps(draw(VALUES)).encode()


CHAT_FIELDS = ("text", "client_id", "conversation_id", "token", "stream")
FEEDBACK_FIELDS = ("conversation_id", "token", "message_id", "rating", "comment")


@pytest.mark.parametrize(("path", "names"), [("/v1/chat", CHAT_FIELDS),
                                             ("/v1/feedback", FEEDBACK_FIELDS)])
def test_arbitrary_bodies_get_an_answer_never_a_500(client: TestClient, path: str,
                                                    names: tuple[str, ...]) -> None:
    first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
    own = {"conversation_id": first["conversation_id"], "token": first["token"]}

    @examples(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies(names), mine=st.booleans())
    def answers(body: bytes, mine: bool) -> None:
        data = json.loads(body)
        if mine and isinstance(data, dict):  # the right conversation, to reach past the token
            body = json.dumps({**data, **own}).encode()
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code in (200, 400, 403, 404, 413, 422), (response.status_code,
                                                                   response.text[:300])

    answers()
    assert client.post("/v1/chat", json={"text": FAQ_QUESTION}).status_code == 200


# --- item 15: a turn the database could not keep says so ---------------------------------------


def test_a_turn_the_locked_database_could_not_keep_says_so(
        tmp_path: Path, sample_index: FaqIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.storage.engine.BUSY_TIMEOUT_MS", 200)  # fail fast, not after 30 s
    settings = web_settings(tmp_path)
    with TestClient(create_app(settings, index=sample_index)) as client:
        kept = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
        assert kept["reply"]["stored"] and kept["reply"]["message_id"]
        own = {"conversation_id": kept["conversation_id"], "token": kept["token"]}
        lock = sqlite3.connect(tmp_path / "web.db", isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")  # another process holds the database
            lost = client.post("/v1/chat", json={"text": FAQ_QUESTION, **own})
            with client.websocket_connect(f"/ws?conversation_id={own['conversation_id']}"
                                          f"&token={own['token']}") as ws:
                ws.receive_json()
                streamed = answered(ws, FAQ_QUESTION, "locked")
        finally:
            lock.rollback()
            lock.close()
        metrics = client.get("/metrics").text
        again = client.post("/v1/chat", json={"text": FAQ_QUESTION, **own}).json()
    assert lost.status_code == 200, lost.text
    reply = lost.json()["reply"]
    assert reply["decision"] == "answer" and reply["text"]  # the customer still got the answer
    assert (reply["message_id"], reply["stored"]) == (None, False)
    assert (streamed["message_id"], streamed["stored"]) == (None, False)
    assert 'supportbot_errors_total{kind="storage"} 2.0' in metrics
    assert again["reply"]["stored"] and again["reply"]["message_id"]
