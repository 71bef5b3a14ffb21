"""The operator inbox: accounts (CLI, hashing), sessions, the inbox API, live delivery of an
operator's reply to the customer's web socket, and the bot's silence while an operator holds
a conversation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bot.channels.web import create_app
from bot.channels.web import operators as operator_api
from bot.cli import app as cli_app
from bot.errors import InputError
from bot.operators.accounts import check_name, hash_password, verify_password
from bot.operators.auth import COOKIE, LoginThrottle, SessionSigner
from bot.operators.store import OperatorStore
from bot.settings import Settings
from bot.storage import ConversationStore
from bot.types import BotReply, ConversationStatus, Decision, UserMessage
from retrieval.index import FaqIndex
from tests.operator_support import PASSWORD, handed_off, login, turn
from tests.web_support import rows

pytestmark = pytest.mark.timeout(120)
FAQ_QUESTION = "how do I reset my password"
runner = CliRunner()


# --- accounts and sessions, without a server ---------------------------------------------------

def test_a_password_is_stored_as_an_argon2_hash_that_verifies() -> None:
    stored = hash_password(PASSWORD)
    assert PASSWORD not in stored and stored.startswith("$argon2id$")
    assert stored != hash_password(PASSWORD)  # salted
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + "!")
    assert not verify_password(None, PASSWORD)  # an unknown name
    assert not verify_password("not a hash", PASSWORD)
    with pytest.raises(InputError):
        hash_password("short")
    for bad in ("", " anna", "<b>anna</b>", "a" * 65):
        with pytest.raises(InputError):
            check_name(bad)


def test_a_session_cookie_verifies_until_it_expires_and_not_when_altered() -> None:
    signer = SessionSigner(b"k" * 32, hours=1)
    value, expires = signer.issue("anna", now=1000.0)
    assert expires == 1000.0 + 3600
    assert signer.verify(value, now=1001.0) == "anna"
    assert signer.verify(value, now=expires) is None
    payload, signature = value.split(".")
    assert signer.verify(f"{payload}.{signature[:-1]}A", now=1001.0) is None
    assert SessionSigner(b"x" * 32, hours=1).verify(value, now=1001.0) is None
    assert signer.verify("garbage", now=1001.0) is None and signer.verify(None) is None


def test_the_login_throttle_holds_back_a_name_from_an_address_after_failures() -> None:
    throttle = LoginThrottle(limit=3, lockout=60)
    for _ in range(3):
        assert throttle.attempt("anna", "1.2.3.4", now=0) == 0.0
        throttle.failed("anna", "1.2.3.4", now=0)
    assert throttle.wait("anna", "1.2.3.4", now=0.5) == 0.5
    assert throttle.attempt("anna", "1.2.3.4", now=0.5) == 0.5  # refused: not counted
    assert throttle.wait("ben", "1.2.3.4", now=0.5) == 0.0  # per name
    assert throttle.wait("anna", "5.6.7.8", now=0.5) == 0.0  # and per address
    assert throttle.attempt("anna", "1.2.3.4", now=1) == 0.0  # served: one more try
    throttle.failed("anna", "1.2.3.4", now=1)
    assert throttle.wait("anna", "1.2.3.4", now=1) == 2.0  # twice as long
    throttle.succeeded("anna", "1.2.3.4")
    assert throttle.wait("anna", "1.2.3.4", now=1) == 0.0


def test_operator_accounts_through_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "supportbot.yaml"
    db = tmp_path / "bot.db"
    config.write_text(f"storage:\n  database_url: sqlite+aiosqlite:///{db}\n", encoding="utf-8")

    def run(*args: str, given: str | None = None) -> tuple[int, str, str]:
        result = runner.invoke(cli_app, ["--config", str(config), "operator", *args],
                               input=given)
        return result.exit_code, result.stdout, result.stderr

    assert run("add", "anna", given=f"{PASSWORD}\n{PASSWORD}\n")[0] == 0  # asked twice
    assert run("add", "ben", "--password-stdin", given=f"{PASSWORD}2\n") == (
        0, "operator ben added\n", "")
    code, _, err = run("add", "anna", "--password-stdin", given=f"{PASSWORD}\n")
    assert code == 1 and "already an operator named 'anna'" in err
    code, _, err = run("add", "carl", "--password-stdin", given="short\n")
    assert code == 1 and "at least 8 characters" in err
    code, out, _ = run("list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["anna", "ben"]
    settings = Settings()
    settings.storage.database_url = f"sqlite+aiosqlite:///{db}"
    hashes = {r.name: r.password_hash
              for r in rows(settings, "SELECT name, password_hash FROM operators")}
    assert all(PASSWORD not in h for h in hashes.values())
    assert verify_password(hashes["anna"], PASSWORD)
    assert verify_password(hashes["ben"], PASSWORD + "2")
    assert run("remove", "ben") == (0, "operator ben removed\n", "")
    code, _, err = run("remove", "ben")
    assert code == 1 and "no operator named 'ben'" in err
    assert run("list")[1].startswith("anna  (added ")


# --- the API --------------------------------------------------------------------------------------

@pytest.fixture
def operators() -> tuple[str, ...]:
    return ("anna", "ben")


ROUTES = [("post", "/operator/api/logout"), ("get", "/operator/api/me"),
          ("get", "/operator/api/conversations"), ("get", "/operator/api/conversations/web-x"),
          ("post", "/operator/api/conversations/web-x/claim"),
          ("post", "/operator/api/conversations/web-x/reply"),
          ("post", "/operator/api/conversations/web-x/typing"),
          ("post", "/operator/api/conversations/web-x/release"),
          ("post", "/operator/api/conversations/web-x/close"),
          ("post", "/operator/api/messages/7/correction"), ("get", "/operator/api/faq"),
          ("post", "/operator/api/faq"), ("post", "/operator/api/faq/9/remove")]


def test_every_route_but_login_is_listed_here(client: TestClient) -> None:
    paths = {route.path for route in operator_api.router.routes  # type: ignore[attr-defined]
             if route.path.startswith("/operator/api")}  # type: ignore[attr-defined]
    listed = {path.replace("web-x", "{conversation_id}").replace("/7/", "/{message_id}/")
              .replace("/9/", "/{addition_id}/") for _, path in ROUTES}
    assert paths == listed | {"/operator/api/login"}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_session(client: TestClient, method: str, path: str) -> None:
    body = {"json": {"text": "hello"}} if path.endswith(("/reply", "/correction")) else \
        {"json": {"question": "hello", "entry_id": "invoice"}} if (method, path) == (
            "post", "/operator/api/faq") else {}
    assert getattr(client, method)(path, **body).status_code == 401
    client.cookies.set(COOKIE, "eyJuIjoiYW5uYSIsImUiOjk5OTk5OTk5OTl9.forged",
                       domain="testserver.local", path="/operator")
    assert getattr(client, method)(path, **body).status_code == 401


def test_login_sets_a_strict_cookie_and_logout_ends_it(client: TestClient,
                                                       settings: Settings) -> None:
    wrong = login(client, password="not the password")
    nobody = login(client, name="nobody")
    assert wrong.status_code == nobody.status_code == 401
    assert wrong.json() == nobody.json() == {"detail": "wrong name or password"}
    response = login(client)
    assert response.status_code == 200 and response.json()["name"] == "anna"
    cookie = response.headers["set-cookie"].lower()
    for part in ("httponly", "secure", "samesite=strict", "path=/operator", "max-age=43200"):
        assert part in cookie
    assert PASSWORD.lower() not in cookie
    assert client.get("/operator/api/me").json() == {"name": "anna"}
    assert client.post("/operator/api/logout").status_code == 200
    assert client.get("/operator/api/me").status_code == 401
    assert [(r.operator, r.action) for r in rows(
        settings, "SELECT operator, action FROM operator_actions ORDER BY id")] == [
        ("anna", "login"), ("anna", "logout")]


def test_repeated_wrong_passwords_lock_the_name(client: TestClient, settings: Settings) -> None:
    for _ in range(settings.operators.max_failed_logins):
        assert login(client, password="not the password").status_code == 401
    locked = login(client)
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert login(client, name="ben").status_code == 200  # other names are not locked


def test_logout_ends_the_session_everywhere_even_a_copied_cookie(client: TestClient) -> None:
    assert login(client).status_code == 200
    copied = TestClient(client.app, base_url="https://testserver")
    copied.cookies.set(COOKIE, client.cookies[COOKIE], domain="testserver.local",
                       path="/operator")
    assert copied.get("/operator/api/me").json() == {"name": "anna"}
    assert client.post("/operator/api/logout").status_code == 200
    assert copied.get("/operator/api/me").status_code == 401  # the copy ends too
    assert login(copied).status_code == 200  # a new sign-in works at once
    assert copied.get("/operator/api/me").json() == {"name": "anna"}


def test_wrong_passwords_are_counted_by_every_worker_alike(settings: Settings,
                                                          sample_index: FaqIndex) -> None:
    # The counts are in the database: failures spread over two workers add up, for names with
    # and without an account alike; the table holds digests, not the names or the address.
    with TestClient(create_app(settings, index=sample_index),
                    base_url="https://testserver") as one, \
            TestClient(create_app(settings, index=sample_index),
                       base_url="https://testserver") as two:
        limit = settings.operators.max_failed_logins
        for name in ("anna", "nobody"):
            for attempt in range(limit):  # half on each worker
                assert login((one, two)[attempt % 2], name=name,
                             password="wrong").status_code == 401
            for worker in (one, two):
                locked = login(worker, name=name)
                assert locked.status_code == 429, locked.text
        assert login(one, name="ben").status_code == 200
    kept = rows(settings, "SELECT key, failures FROM login_failures")
    assert kept and all(len(r.key) == 64 for r in kept)
    assert not any(n in r.key for r in kept for n in ("anna", "nobody", "testclient"))


def test_removing_an_operator_ends_their_session(client: TestClient,
                                                 settings: Settings) -> None:
    assert login(client, name="ben").status_code == 200
    rows(settings, "SELECT 1")  # the database is there
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.storage.database_url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM operators WHERE name = 'ben'"))
    engine.dispose()
    assert client.get("/operator/api/me").status_code == 401


def test_claim_reply_live_bot_silent_release(client: TestClient, settings: Settings) -> None:
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        conversation_id = hello["conversation_id"]
        assert turn(ws, FAQ_QUESTION)["decision"] == "answer"
        assert turn(ws, "I want to talk to a human")["decision"] == "handoff"
        waiting = turn(ws, "hello? anyone there")
        assert waiting["decision"] == "waiting" and waiting["text"]  # waiting_text, unclaimed

        assert login(client).status_code == 200
        inbox = client.get("/operator/api/conversations").json()
        assert inbox["claimed"] == [] and len(inbox["waiting"]) == 1
        item = inbox["waiting"][0]
        assert item["conversation_id"] == conversation_id and item["channel"] == "web"
        assert item["last_customer_message"]["text"] == "hello? anyone there"
        assert item["waiting_since"] and item["claimed_by"] is None
        detail = client.get(f"/operator/api/conversations/{conversation_id}").json()
        answer = detail["messages"][1]
        assert answer["role"] == "bot" and answer["decision"] == "answer"
        assert answer["sources"][0]["id"] == "reset-password" and answer["sources"][0]["score"]
        assert answer["confidence"] > 0 and "feedback" in answer
        assert [m["role"] for m in detail["messages"]] == ["user", "bot"] * 3

        assert client.post(f"/operator/api/conversations/{conversation_id}/reply",
                           json={"text": "too early"}).status_code == 409  # not claimed yet
        assert client.post(f"/operator/api/conversations/{conversation_id}/typing"
                           ).status_code == 409
        claimed = client.post(f"/operator/api/conversations/{conversation_id}/claim")
        assert claimed.json() == {"conversation_id": conversation_id, "status": "handoff",
                                  "claimed_by": "anna"}
        inbox = client.get("/operator/api/conversations").json()
        assert inbox["waiting"] == [] and inbox["claimed"][0]["claimed_by"] == "anna"

        blank = client.post(f"/operator/api/conversations/{conversation_id}/reply",
                            json={"text": "   "})
        assert (blank.status_code, blank.json()) == (422, {"detail": "text is empty"})
        blank = client.post(f"/operator/api/messages/{answer['id']}/correction",
                            json={"text": " \n "})
        assert (blank.status_code, blank.json()) == (422, {"detail": "text is empty"})
        typing = client.post(f"/operator/api/conversations/{conversation_id}/typing")
        assert typing.status_code == 200
        assert ws.receive_json() == {"type": "typing", "name": "anna"}
        sent = client.post(f"/operator/api/conversations/{conversation_id}/reply",
                           json={"text": "Hi, Anna here. Let me look."})
        assert sent.status_code == 200 and sent.json()["live_sockets"] == 1
        live = ws.receive_json()
        assert live == {"type": "operator", "text": "Hi, Anna here. Let me look.",
                        "name": "anna", "message_id": sent.json()["message_id"],
                        "created_at": sent.json()["created_at"]}

        held = turn(ws, "thanks, my order is 123")  # claimed: stored, the bot says nothing
        assert held["decision"] == "held" and held["text"] == "" and held["message_id"] is None
        assert held["status"] == "handoff"

        # Another operator can neither take it nor write in it.
        other = TestClient(client.app, base_url="https://testserver")
        assert login(other, name="ben").status_code == 200
        assert other.post(f"/operator/api/conversations/{conversation_id}/claim"
                          ).status_code == 409
        assert other.post(f"/operator/api/conversations/{conversation_id}/reply",
                          json={"text": "me too"}).status_code == 409
        assert other.post(f"/operator/api/conversations/{conversation_id}/release"
                          ).status_code == 409

        assert client.post(f"/operator/api/conversations/{conversation_id}/release"
                           ).json() == {"conversation_id": conversation_id, "status": "bot"}
        assert ws.receive_json() == {"type": "status", "status": "bot"}
        assert turn(ws, FAQ_QUESTION)["decision"] == "answer"  # the bot answers again

    stored = rows(settings, "SELECT role, text, meta FROM messages WHERE conversation_id = :c "
                  "ORDER BY id", c=conversation_id)
    assert [r.role for r in stored] == ["user", "bot"] * 3 + ["operator", "user", "user", "bot"]
    assert '"operator": "anna"' in stored[6].meta and stored[7].text == "thanks, my order is 123"
    status = rows(settings, "SELECT status, claimed_by FROM conversations WHERE id = :c",
                  c=conversation_id)
    assert [tuple(r) for r in status] == [("bot", None)]
    actions = rows(settings, "SELECT operator, action, conversation_id, message_id "
                   "FROM operator_actions ORDER BY id")
    assert [(r.operator, r.action) for r in actions] == [
        ("anna", "login"), ("anna", "claim"), ("anna", "reply"), ("ben", "login"),
        ("anna", "release")]
    assert actions[2].message_id == sent.json()["message_id"]
    assert {r.conversation_id for r in actions if r.action != "login"} == {conversation_id}


def test_a_reply_to_an_absent_customer_is_in_the_history_on_reconnect(
        client: TestClient, settings: Settings) -> None:
    conversation_id, token = handed_off(client)
    assert login(client).status_code == 200
    base = f"/operator/api/conversations/{conversation_id}"
    assert client.post(f"{base}/claim").status_code == 200
    sent = client.post(f"{base}/reply", json={"text": "Sorry for the wait!"})
    assert sent.json()["live_sockets"] == 0
    resume = f"/ws?conversation_id={conversation_id}&token={token}"
    with client.websocket_connect(resume) as ws:
        hello = ws.receive_json()
        for _ in range(2):  # the page re-sends what it saw no reply to: stored once
            ws.send_json({"type": "message", "text": "still there?", "client_id": "c9"})
            frame = ws.receive_json()
            assert (frame["type"], frame["decision"], frame["text"]) == ("reply", "held", "")
    assert hello["status"] == "handoff"
    last = hello["history"][-1]
    assert (last["role"], last["text"], last["name"]) == ("operator", "Sorry for the wait!",
                                                          "anna")
    with client.websocket_connect(resume) as ws:
        history = ws.receive_json()["history"]
    assert [(m["role"], m.get("held")) for m in history[-2:]] == [("operator", None),
                                                                   ("user", True)]
    assert len(rows(settings, "SELECT id FROM messages WHERE client_id = 'c9'")) == 1
    assert client.post(f"{base}/close").json()["status"] == "closed"
    assert client.get("/operator/api/conversations").json() == {"waiting": [], "claimed": []}
    detail = client.get(base).json()
    assert detail["conversation"]["status"] == "closed"
    assert detail["conversation"]["claimed_by"] is None
    assert [a["action"] for a in detail["actions"]] == ["claim", "reply", "close"]
    assert client.post(f"{base}/claim").status_code == 409  # closed: not waiting any more


def test_unknown_conversations_and_empty_replies_are_refused(client: TestClient) -> None:
    assert login(client).status_code == 200
    assert client.get("/operator/api/conversations/web-nope").status_code == 404
    assert client.post("/operator/api/conversations/web-nope/claim").status_code == 404
    assert client.post("/operator/api/conversations/" + "x" * 200 + "/claim"
                       ).status_code == 404
    conversation_id, _ = handed_off(client)
    assert client.post(f"/operator/api/conversations/{conversation_id}/claim"
                       ).status_code == 200
    for text in ("", "   "):
        assert client.post(f"/operator/api/conversations/{conversation_id}/reply",
                           json={"text": text}).status_code == 422


def test_the_release_command_clears_the_claim(tmp_path: Path) -> None:
    """Else the next handoff of the conversation would look held by the earlier operator."""
    async def scenario() -> tuple[Any, Any]:
        store = ConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
        try:
            await store.init()
            await store.record_turn(UserMessage("human", conversation_id="c"),
                                    BotReply("A colleague will answer.", Decision.HANDOFF, "c"),
                                    status=ConversationStatus.HANDOFF)
            await OperatorStore(store).claim("c", "anna")
            held = await store.get_conversation("c")
            await store.set_status("c", ConversationStatus.BOT)  # `supportbot release c`
            return held, await store.get_conversation("c")
        finally:
            await store.close()

    held, released = asyncio.run(scenario())
    assert held.claimed_by == "anna" and held.claimed_at is not None
    assert (released.status, released.claimed_by, released.claimed_at) == ("bot", None, None)


def test_corrections_and_replies_become_training_data(client: TestClient,
                                                       settings: Settings) -> None:
    from bot.export import export

    with client.websocket_connect("/ws") as ws:
        conversation = ws.receive_json()["conversation_id"]
        wrong = turn(ws, "How can I track my order?")
        assert turn(ws, "I want to talk to a human")["decision"] == "handoff"
    assert login(client).status_code == 200
    right = "Open My orders and pick the order: anna@example.com can help too."
    corrected = client.post(f"/operator/api/messages/{wrong['message_id']}/correction",
                            json={"text": right})
    assert corrected.status_code == 200, corrected.text
    assert corrected.json()["correction"]["operator"] == "anna"
    assert client.post("/operator/api/messages/999999/correction",
                       json={"text": right}).status_code == 404
    client.post(f"/operator/api/conversations/{conversation}/claim")
    client.post(f"/operator/api/conversations/{conversation}/reply",
                json={"text": "Anything else I can do?"})
    actions = [a["action"] for a in client.get(
        f"/operator/api/conversations/{conversation}").json()["actions"]]
    assert actions == ["correct", "claim", "reply"]

    async def exported() -> list[dict[str, Any]]:
        store = ConversationStore(settings.storage.database_url)
        await store.init()
        try:
            out = Path(settings.storage.database_url.split("///")[1]).parent / "export.jsonl"
            stats = await export(store, out, lambda text: text.replace(
                "anna@example.com", "<EMAIL>"))
            assert stats.corrections == 1 and stats.conversations == 1
            return [json.loads(line) for line in out.read_text().splitlines()]
        finally:
            await store.close()

    [record] = asyncio.run(exported())  # nobody rated it: the operator's work puts it in
    assert record["id"] == conversation
    learned = [m["content"] for m in record["messages"] if m.get("weight") == 1]
    assert learned == [right.replace("anna@example.com", "<EMAIL>"),
                       "Anything else I can do?"]
    assert wrong["text"] not in [m["content"] for m in record["messages"]]
