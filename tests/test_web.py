"""The web app in-process: the web socket protocol, REST, feedback, limits, metrics, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bot.channels.web import create_app
from bot.channels.web.security import ConversationTokens, RateLimiter
from bot.errors import SettingsError
from bot.settings import Settings, WebSettings
from retrieval.index import FaqIndex
from tests.dialogue_support import FAITHFUL, NEAR_MISS
from tests.web_support import rows, scripted, web_settings

pytestmark = pytest.mark.timeout(120)
FAQ_QUESTION = "how do I reset my password"


def turn(ws: Any, text: str, client_id: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """Send a message; the token texts and the reply frame."""
    ws.send_json({"type": "message", "text": text, **({"client_id": client_id}
                                                      if client_id else {})})
    tokens: list[str] = []
    while True:
        frame = ws.receive_json()
        if frame["type"] == "token":
            tokens.append(frame["text"])
        elif frame["type"] == "reply":
            return tokens, frame
        else:
            raise AssertionError(f"unexpected frame {frame}")


def test_health_ready_and_page_routes(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["faq_entries"] > 10
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html") and "<html" in page.text
    widget = client.get("/widget.js")
    assert widget.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/chat.js").status_code == 200
    assert "_created" not in client.get("/metrics").text


def test_a_faq_question_streams_and_is_stored(client: TestClient, settings: Settings) -> None:
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and not hello["resumed"] and hello["history"] == []
        assert hello["greeting"].startswith("Hi, I'm Kes") and hello["status"] == "bot"
        tokens, reply = turn(ws, FAQ_QUESTION, client_id="c1")
    assert "".join(tokens) == reply["text"] and reply["decision"] == "answer"
    assert reply["client_id"] == "c1" and not reply["duplicate"]
    assert reply["sources"][0]["id"] == "reset-password"
    assert reply["sources"][0]["link"].startswith("https://help.kestrel-outfitters.example/")
    stored = rows(settings, "SELECT id, role, text, client_id, conversation_id FROM messages")
    assert [(r.role, r.client_id) for r in stored] == [("user", "c1"), ("bot", None)]
    assert stored[1].id == reply["message_id"] and stored[1].text == reply["text"]
    assert stored[0].conversation_id == hello["conversation_id"]


def test_resume_shows_history_and_a_wrong_token_is_refused(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        turn(ws, FAQ_QUESTION)
    conversation, token = hello["conversation_id"], hello["token"]
    with client.websocket_connect(f"/ws?conversation_id={conversation}&token={token}") as ws:
        again = ws.receive_json()
    assert again["resumed"] and again["conversation_id"] == conversation
    assert [m["role"] for m in again["history"]] == ["user", "bot"]
    assert again["history"][1]["sources"][0]["id"] == "reset-password"
    assert again["history"][1]["feedback"] is None
    other = ConversationTokens(b"another server's key, 32 chars").token(conversation)
    for query in (f"conversation_id={conversation}&token={other}",
                  f"conversation_id=web-{'0' * 32}&token={token}",
                  f"conversation_id={conversation}", f"token={token}"):
        with client.websocket_connect(f"/ws?{query}") as ws:
            frame = ws.receive_json()
            assert frame["type"] == "error" and frame["code"] == "bad_token", query
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4403


@pytest.mark.parametrize(("send", "code"), [
    ("{not json", "invalid_json"),
    (b"\x00\x01", "binary_frame"),
    ('["message"]', "bad_frame"),
    ('{"text": "hi"}', "bad_frame"),
    ('{"type": "shout", "text": "hi"}', "unknown_type"),
    ('{"type": "message"}', "bad_frame"),
    ('{"type": "message", "text": 42}', "bad_frame"),
    ('{"type": "message", "text": "   "}', "empty_text"),
    ('{"type": "message", "text": "' + "x" * 2001 + '"}', "text_too_long"),
    ('{"type": "message", "text": "' + "x" * 20000 + '"}', "frame_too_large"),
    ('{"type": "message", "text": "hi", "client_id": ""}', "bad_frame"),
    ('{"type": "message", "text": "hi", "client_id": "' + "c" * 65 + '"}', "bad_frame"),
    ('{"type": "feedback", "message_id": "7", "rating": "up"}', "bad_frame"),
    ('{"type": "feedback", "message_id": 7, "rating": "meh"}', "bad_frame"),
    ('{"type": "feedback", "message_id": 99999, "rating": "up"}', "unknown_message"),
])
def test_bad_frames_get_an_error_and_the_connection_stays_usable(
        client: TestClient, settings: Settings, send: str | bytes, code: str) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        turn(ws, FAQ_QUESTION)
        if isinstance(send, bytes):
            ws.send_bytes(send)
        else:
            ws.send_text(send)
        error = ws.receive_json()
        assert (error["type"], error["code"]) == ("error", code), error
        assert error["message"]
        _, second = turn(ws, "How can I track my order?")
    assert second["decision"] == "answer"
    stored = rows(settings, "SELECT role, text FROM messages ORDER BY id")
    assert [r.text for r in stored if r.role == "user"] == [FAQ_QUESTION,
                                                            "How can I track my order?"]


def test_a_resent_client_id_is_answered_once(client: TestClient, settings: Settings) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        _, first = turn(ws, FAQ_QUESTION, client_id="m-1")
        tokens, again = turn(ws, FAQ_QUESTION, client_id="m-1")
        _, other = turn(ws, FAQ_QUESTION, client_id="m-2")
    assert again["duplicate"] and not first["duplicate"] and not other["duplicate"]
    assert again["message_id"] == first["message_id"] and "".join(tokens) == first["text"]
    assert other["message_id"] != first["message_id"]
    assert len(rows(settings, "SELECT id FROM messages")) == 4


def test_feedback_is_stored_and_the_latest_rating_counts(client: TestClient,
                                                         settings: Settings) -> None:
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        _, reply = turn(ws, FAQ_QUESTION)
        for rating in ("up", "down"):
            ws.send_json({"type": "feedback", "message_id": reply["message_id"],
                          "rating": rating})
            assert ws.receive_json() == {"type": "feedback", "message_id": reply["message_id"],
                                         "rating": rating}
        user_message = reply["message_id"] - 1  # the customer's own message is not rateable
        ws.send_json({"type": "feedback", "message_id": user_message, "rating": "up"})
        assert ws.receive_json()["code"] == "unknown_message"
    with client.websocket_connect("/ws") as other:  # another conversation cannot rate it
        other.receive_json()
        other.send_json({"type": "feedback", "message_id": reply["message_id"],
                         "rating": "up"})
        assert other.receive_json()["code"] == "unknown_message"
    assert [tuple(r) for r in rows(settings, "SELECT message_id, rating FROM feedback")] == [
        (reply["message_id"], "down")]
    seen = client.get(f"/v1/conversations/{hello['conversation_id']}",
                      headers={"X-Conversation-Token": hello["token"]}).json()
    assert [m.get("feedback") for m in seen["messages"]] == [None, "down"]


def test_rest_chat_conversation_and_feedback(client: TestClient, settings: Settings) -> None:
    first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
    conversation, token = first["conversation_id"], first["token"]
    assert first["reply"]["decision"] == "answer" and first["reply"]["message_id"]
    second = client.post("/v1/chat", json={"text": NEAR_MISS, "conversation_id": conversation,
                                           "token": token}).json()
    assert second["reply"]["decision"] == "clarify" and second["reply"]["suggestions"]
    picked = second["reply"]["suggestions"][1]["question"]
    third = client.post("/v1/chat", json={"text": picked, "conversation_id": conversation,
                                          "token": token}).json()
    assert third["reply"]["decision"] == "answer"
    assert third["reply"]["sources"][0]["id"] == second["reply"]["suggestions"][1]["id"]
    seen = client.get(f"/v1/conversations/{conversation}",
                      headers={"X-Conversation-Token": token})
    assert seen.status_code == 200 and len(seen.json()["messages"]) == 6
    rated = client.post("/v1/feedback", json={"conversation_id": conversation, "token": token,
                                              "message_id": third["reply"]["message_id"],
                                              "rating": "up", "comment": "spot on"})
    assert rated.status_code == 200
    assert [tuple(r) for r in rows(settings, "SELECT rating, comment FROM feedback")] == [
        ("up", "spot on")]


def test_rest_refuses_bad_requests_with_what_is_wrong(client: TestClient,
                                                      settings: Settings) -> None:
    first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
    conversation, token = first["conversation_id"], first["token"]
    cases: list[tuple[Any, int, str]] = [
        (client.post("/v1/chat", json={"text": "  "}), 422, "text is empty"),
        (client.post("/v1/chat", json={"text": "x" * 2001}), 422, "2001 characters"),
        (client.post("/v1/chat", json={"text": "x" * 20000}), 413, "larger than"),
        (client.post("/v1/chat", content=b"{oops", headers={"Content-Type":
                                                             "application/json"}), 422, "JSON"),
        (client.post("/v1/chat", json={"text": "hi", "conversation_id": conversation,
                                       "token": "forged"}), 403, "do not match"),
        (client.post("/v1/chat", json={"text": "hi", "conversation_id": conversation}), 403,
         "do not match"),
        (client.get(f"/v1/conversations/{conversation}"), 422, "x-conversation-token"),
        (client.get(f"/v1/conversations/{conversation}",
                    headers={"X-Conversation-Token": "forged"}), 403, "do not match"),
        (client.post("/v1/feedback", json={"conversation_id": conversation, "token": token,
                                           "message_id": 10_000, "rating": "up"}), 404,
         "not a bot message"),
        (client.post("/v1/feedback", json={"conversation_id": conversation, "token": token,
                                           "message_id": 1, "rating": "great"}), 422,
         "rating"),
    ]
    for response, status, detail in cases:
        assert response.status_code == status, (response.status_code, response.text)
        assert detail.lower() in response.text.lower(), response.text
    assert len(rows(settings, "SELECT id FROM messages")) == 2  # nothing else was stored


def test_rest_streams_server_sent_events(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat", json={"text": FAQ_QUESTION, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    events = [(block.split("\n")[0].removeprefix("event: "),
               json.loads(block.split("\n")[1].removeprefix("data: ")))
              for block in body.strip().split("\n\n")]
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "hello" and kinds[-1] == "reply" and set(kinds[1:-1]) == {"token"}
    assert "".join(data["text"] for kind, data in events if kind == "token") == \
        events[-1][1]["text"]
    assert events[0][1]["conversation_id"].startswith("web-")


def test_rate_limits_answer_with_an_error_frame_and_429(tmp_path: Path,
                                                        sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, burst_per_connection=2, rate_per_connection=0.01)
    with TestClient(create_app(settings, index=sample_index)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            _, answered = turn(ws, FAQ_QUESTION)
            turn(ws, FAQ_QUESTION)
            ws.send_json({"type": "message", "text": FAQ_QUESTION, "client_id": "x"})
            refused = ws.receive_json()
            assert refused["code"] == "rate_limited" and refused["client_id"] == "x"
            ws.send_json({"type": "ping"})
            assert ws.receive_json() == {"type": "pong"}  # still connected
            ws.send_json({"type": "feedback", "message_id": answered["message_id"],
                          "rating": "up"})  # ratings count against the IP's budget only
            assert ws.receive_json()["type"] == "feedback"
        first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
        again = {"text": FAQ_QUESTION, "conversation_id": first["conversation_id"],
                 "token": first["token"]}
        assert client.post("/v1/chat", json=again).status_code == 200
        limited = client.post("/v1/chat", json=again)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        metrics = client.get("/metrics").text
    assert 'supportbot_rate_limited_total{scope="conversation"} 2.0' in metrics


def test_metrics_count_turns_latency_tokens_and_sockets(tmp_path: Path,
                                                        sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, sample_index, generate=True)
    _, load = scripted()
    with TestClient(create_app(settings, index=sample_index, generator=load)) as client:
        with client.websocket_connect("/ws") as ws:
            ws.receive_json()
            turn(ws, FAQ_QUESTION)
            tokens, generated = turn(ws, NEAR_MISS)
            assert generated["decision"] == "generate" and generated["text"] == FAITHFUL
            assert "".join(tokens) == FAITHFUL  # released once the sentence was verified
            open_now = client.get("/metrics").text
        after = client.get("/metrics").text
        client.post("/v1/chat", json={"text": FAQ_QUESTION})
        rest = client.get("/metrics").text
    assert "supportbot_websockets_open 1.0" in open_now and "supportbot_websockets_open 0.0" \
        in after
    assert 'supportbot_turns_total{channel="web",decision="answer"} 1.0' in after
    assert 'supportbot_turns_total{channel="web",decision="generate"} 1.0' in after
    assert 'supportbot_turn_seconds_count{kind="generated"} 1.0' in after
    assert 'supportbot_turn_seconds_count{kind="faq"} 1.0' in after
    assert f"supportbot_generated_tokens_total {float(len(FAITHFUL.split()))}" in after
    assert 'supportbot_turns_total{channel="rest",decision="answer"} 1.0' in rest


def test_cors_origins_come_from_settings(tmp_path: Path, sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, cors_origins=["https://shop.example"])
    with TestClient(create_app(settings, index=sample_index)) as client:
        allowed = client.options("/v1/chat", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
        refused = client.options("/v1/chat", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in refused.headers


def test_a_foreign_page_may_not_open_the_socket(tmp_path: Path,
                                                sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, cors_origins=["https://shop.example"])
    with TestClient(create_app(settings, index=sample_index)) as client:
        for origin, allowed in (("http://testserver", True), ("https://shop.example", True),
                                ("https://evil.example", False)):
            with client.websocket_connect("/ws", headers={"Origin": origin}) as ws:
                frame = ws.receive_json()
                assert (frame["type"] == "hello") is allowed, origin
                if not allowed:
                    assert frame["code"] == "bad_origin"


def test_the_signing_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    web = WebSettings(secret_file=tmp_path / "keys" / "web-secret")
    first = ConversationTokens.from_settings(web)
    conversation, token = first.new()
    assert (web.secret_file.stat().st_mode & 0o777) == 0o600
    assert ConversationTokens.from_settings(web).verify(conversation, token)
    web.secret_file.write_text("short")
    with pytest.raises(SettingsError, match="delete it"):
        ConversationTokens.from_settings(web)


def test_token_buckets_refill_at_their_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, max_keys=2)
    assert [limiter.hit("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("a", now=0.0) == pytest.approx(0.5)
    assert limiter.hit("a", now=0.5) == 0.0  # one token back after 1 / rate seconds
    limiter.hit("b", now=0.5)
    limiter.hit("c", now=0.5)  # "a" is forgotten: at most max_keys buckets are kept
    assert limiter.hit("a", now=0.5) == 0.0
