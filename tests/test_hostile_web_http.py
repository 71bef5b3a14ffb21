"""Hostile tests of the web server's HTTP surface (issue 31): forged operator requests from
same-site pages, the pages without their headers under /static/, X-Forwarded-For from anyone
on loopback, public API docs, token guessing without a limit, and database errors shown to
anonymous clients."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect

from bot.channels.serve import server_options
from bot.channels.web import create_app
from bot.channels.web import operators as operator_api
from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.operator_support import PASSWORD, handed_off, login
from tests.web_support import running, web_settings

pytestmark = pytest.mark.timeout(120)

FAQ_QUESTION = "how do I reset my password"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def operators() -> tuple[str, ...]:
    return ("anna",)


def changes(conversation_id: str) -> list[str]:
    """Every state-changing operator route, its parameters filled in."""
    paths = []
    for route in operator_api.router.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/operator/api") \
                and route.methods - {"GET", "HEAD"}:
            paths.append(route.path.replace("{conversation_id}", conversation_id)
                         .replace("{message_id}", "1").replace("{addition_id}", "1"))
    return paths


# --- item 6: forged operator requests ---------------------------------------------------------

def test_a_same_site_page_cannot_act_as_a_signed_in_operator(client: TestClient) -> None:
    conversation_id, _ = handed_off(client)
    assert login(client).status_code == 200
    routes = changes(conversation_id)
    assert len(routes) >= 10 and "/operator/api/login" in routes
    forged = [{"Origin": "https://testserver:8443"},  # another port of this host
              {"Origin": "https://shop.testserver"},  # a sibling subdomain
              {"Origin": "null"},
              {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"},
              {"Origin": "https://testserver", "Sec-Fetch-Site": "same-site"}]
    for path in routes:
        for headers in forged:
            response = client.post(path, json={}, headers=headers)
            assert response.status_code == 403, (path, headers, response.text)
    close = f"/operator/api/conversations/{conversation_id}/close"
    claim = f"/operator/api/conversations/{conversation_id}/claim"
    # What an auto-submitted HTML form (or a no-cors fetch) can send: never JSON.
    for kind, body in (("application/x-www-form-urlencoded", b"a=1"), ("text/plain", b"{}"),
                       ("multipart/form-data; boundary=x", b"--x--\r\n")):
        for path in (claim, close):
            response = client.post(path, content=body, headers={"Content-Type": kind})
            assert response.status_code == 415, (path, kind, response.text)
    response = client.post("/operator/api/login", content=json.dumps(
        {"name": "anna", "password": PASSWORD}), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    waiting = client.get("/operator/api/conversations").json()["waiting"]
    assert [item["conversation_id"] for item in waiting] == [conversation_id]  # untouched
    # The inbox's own requests: same origin, JSON (or no body at all).
    own = {"Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"}
    assert client.post(claim, json={}, headers=own).status_code == 200
    assert client.post(close, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_the_operator_page_sends_every_change_as_json() -> None:
    script = (Path(__file__).parents[1] / "bot/channels/web/static/operator.js").read_text()
    assert 'options.headers["Content-Type"] = "application/json";' in script
    assert 'if (method !== "GET")' in script


# --- item 7: the pages only with their headers ------------------------------------------------

def test_the_pages_are_not_served_without_their_headers(client: TestClient) -> None:
    for path in ("/static/operator.html", "/static/index.html", "/static/./operator.html",
                 "/static/operator.html/", "/static//index.html"):
        response = client.get(path)
        framed = "frame-ancestors 'none'" in response.headers.get("content-security-policy", "")
        assert response.status_code == 404 or framed, (path, response.status_code)
    operator = client.get("/operator")
    assert operator.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in operator.headers["content-security-policy"]
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]
    assert client.get("/static/operator.js").status_code == 200
    assert client.get("/static/chat.css").status_code == 200


# --- item 9: X-Forwarded-For from loopback ----------------------------------------------------

async def _new_conversations(address: str, count: int) -> int:
    """Open `count` sockets, each claiming another client address; how many were refused."""
    refused = 0
    for n in range(count):
        headers = {"X-Forwarded-For": f"203.0.113.{n % 250 + 1}"}
        async with connect(f"ws://{address}/ws", additional_headers=headers) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            refused += frame.get("code") == "rate_limited"
    return refused


@pytest.mark.parametrize("proxies", [[], ["127.0.0.1"]])
def test_x_forwarded_for_is_believed_only_from_a_named_proxy(
        tmp_path: Path, sample_index: FaqIndex, proxies: list[str]) -> None:
    settings = web_settings(tmp_path, burst_per_ip=20, rate_per_ip=0.01)
    named = (proxies,) if proxies else ()  # web.forwarded_allow_ips, or its default
    options = {**server_options(settings.web.drain_seconds, *named), "log_level": "warning"}
    with running(create_app(settings, index=sample_index), **options) as (address, _):
        refused = asyncio.run(_new_conversations(address, 100))
    if proxies:
        assert refused == 0  # the proxy's header names 100 clients
    else:
        assert refused >= 75, refused  # one client, whatever the header says


def test_the_proxies_are_checked_settings_and_command_line(config_file: Path) -> None:
    from typer.testing import CliRunner

    from bot.cli import app as cli_app

    with pytest.raises(ValueError, match="not an IP address"):
        Settings.model_validate({"web": {"forwarded_allow_ips": ["nginx"]}})
    assert Settings.model_validate({"web": {"forwarded_allow_ips": ["10.0.0.0/8"]}}) \
        .web.forwarded_allow_ips == ["10.0.0.0/8"]
    result = CliRunner().invoke(cli_app, ["--config", str(config_file), "serve",
                                          "--forwarded-allow-ips", "127.0.0.1,proxy"])
    assert result.exit_code == 1 and "'proxy' is not an IP address" in result.stderr
    assert "Traceback" not in result.stderr


# --- item 10: API docs ------------------------------------------------------------------------

def test_api_docs_are_off_by_default_and_never_list_operator_routes(
        client: TestClient, tmp_path: Path, sample_index: FaqIndex) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    settings = web_settings(tmp_path / "docs", api_docs=True)
    (tmp_path / "docs").mkdir()
    with TestClient(create_app(settings, index=sample_index)) as docs:
        schema = docs.get("/openapi.json")
        assert docs.get("/docs").status_code == docs.get("/redoc").status_code == 404
    paths = set(schema.json()["paths"])
    assert {"/v1/chat", "/v1/feedback", "/v1/conversations/{conversation_id}"} <= paths
    assert not [p for p in paths if p.startswith("/operator")], paths
    assert "cdn" not in schema.text.lower()


# --- item 13: token guessing is rate limited --------------------------------------------------

def test_wrong_token_reads_spend_the_ip_budget(tmp_path: Path, sample_index: FaqIndex) -> None:
    settings = web_settings(tmp_path, burst_per_ip=20, rate_per_ip=0.01)
    with TestClient(create_app(settings, index=sample_index)) as client:
        statuses = [client.get("/v1/conversations/web-guess",
                               headers={"X-Conversation-Token": f"guess-{n}"}).status_code
                    for n in range(200)]
        feedback = client.post("/v1/feedback", json={
            "conversation_id": "web-guess", "token": "guess", "message_id": 1, "rating": "up"})
        chat = client.post("/v1/chat", json={"text": "hi", "conversation_id": "web-guess",
                                             "token": "guess"})
        with client.websocket_connect("/ws?conversation_id=web-guess&token=guess") as ws:
            resumed = ws.receive_json()
    assert statuses.count(403) <= 20 and statuses.count(429) >= 180, statuses
    assert feedback.status_code == chat.status_code == 429
    assert resumed["code"] == "rate_limited"


# --- item 14: database errors stay in the log -------------------------------------------------

def _hidden(response: Any, settings: Settings) -> str:
    """The response's request id, after checking it tells nothing of the database."""
    database = settings.storage.database_url.split("///")[-1]
    body = response.text.lower()
    for secret in ("sqlite", database.lower(), "locked", "not a database", "aiosqlite"):
        assert secret not in body, (secret, response.text)
    request_id = response.json()["request_id"]
    assert response.headers["x-request-id"] == request_id and len(request_id) >= 8
    return str(request_id)


def test_a_locked_database_is_not_described_to_the_customer(
        tmp_path: Path, sample_index: FaqIndex, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("bot.storage.engine.BUSY_TIMEOUT_MS", 200)  # fail fast, not after 30 s
    settings = web_settings(tmp_path)
    with TestClient(create_app(settings, index=sample_index)) as client:
        first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
        lock = sqlite3.connect(settings.storage.database_url.split("///")[-1])
        try:
            lock.execute("BEGIN EXCLUSIVE")
            with caplog.at_level(logging.WARNING):
                response = client.post("/v1/feedback", json={
                    "conversation_id": first["conversation_id"], "token": first["token"],
                    "message_id": first["reply"]["message_id"], "rating": "up"})
        finally:
            lock.rollback()
            lock.close()
    assert response.status_code == 503
    request_id = _hidden(response, settings)
    logged = [r.getMessage() for r in caplog.records if request_id in r.getMessage()]
    assert logged and "locked" in logged[0]  # the detail is in the log, under the same id


def test_an_unreadable_database_is_not_described_to_anyone(
        settings: Settings, client: TestClient) -> None:
    first = client.post("/v1/chat", json={"text": FAQ_QUESTION}).json()
    assert login(client).status_code == 200
    store = client.app.state.web.manager.store  # type: ignore[attr-defined]
    client.portal.call(store.close)  # type: ignore[union-attr]  # reopened at the next use
    database = Path(settings.storage.database_url.split("///")[-1])
    for extra in ("-wal", "-shm"):
        Path(f"{database}{extra}").unlink(missing_ok=True)
    database.write_bytes(b"this is not a database " * 400)
    responses = [
        client.get(f"/v1/conversations/{first['conversation_id']}",
                   headers={"X-Conversation-Token": first["token"]}),
        client.post("/v1/feedback", json={
            "conversation_id": first["conversation_id"], "token": first["token"],
            "message_id": first["reply"]["message_id"], "rating": "down"}),
        client.get("/readyz"),
        client.get("/operator/api/conversations")]
    for response in responses:
        assert response.status_code == 503, (response.request.url, response.text)
        _hidden(response, settings)


def test_a_locked_database_is_not_described_on_the_web_socket_either(
        tmp_path: Path, sample_index: FaqIndex, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("bot.storage.engine.BUSY_TIMEOUT_MS", 200)
    settings = web_settings(tmp_path)
    with TestClient(create_app(settings, index=sample_index)) as client, \
            client.websocket_connect("/ws") as ws:
        ws.receive_json()  # hello
        ws.send_json({"type": "message", "text": FAQ_QUESTION})
        reply = ws.receive_json()
        while reply["type"] != "reply":
            reply = ws.receive_json()
        lock = sqlite3.connect(settings.storage.database_url.split("///")[-1])
        try:
            lock.execute("BEGIN EXCLUSIVE")
            with caplog.at_level(logging.WARNING):
                ws.send_json({"type": "feedback", "message_id": reply["message_id"],
                              "rating": "up"})
                refused = ws.receive_json()
        finally:
            lock.rollback()
            lock.close()
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # the socket goes on
    assert refused["type"] == "error" and refused["code"] == "unavailable", refused
    database = settings.storage.database_url.split("///")[-1].lower()
    for secret in ("sqlite", database, "locked"):
        assert secret not in refused["message"].lower(), refused
    request_id = refused["message"].rsplit("request ", 1)[1].rstrip(")")
    assert any(request_id in r.getMessage() and "locked" in r.getMessage()
               for r in caplog.records)
