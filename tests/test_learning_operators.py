"""Operators see, approve and remove what the bot learnt from use (issue 33): the inbox API
(/operator/api/learning), an operator's reply that is an FAQ answer teaching the customer's
unanswered question, and `supportbot operator learnt`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner, Result

from bot.channels.web import create_app
from bot.cli import app as cli_app
from bot.intents import Intents
from bot.learning.answers import OperatorAnswers, unanswered_question
from bot.learning.store import SignalStore
from bot.settings import Settings
from bot.storage import ConversationStore, Message
from retrieval.index import FaqIndex
from tests.conftest import SAMPLE_FAQ
from tests.operator_support import add_operators, login, turn
from tests.web_support import rows, web_settings

pytestmark = pytest.mark.timeout(180)
# Nothing in the sample FAQ is near these: the bot falls back (or asks), until it learns them.
ODD = "my plastic rectangle got stuck in the pay thingy"
ODDER = "the shop machine swallowed my money square"
ENTRY = "payment-failed"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = web_settings(tmp_path)
    settings.operators.faq_sync_seconds = 0.0
    add_operators(settings, "anna")
    return settings


@pytest.fixture
def index(sample_index: FaqIndex) -> FaqIndex:
    return sample_index.copy()


@pytest.fixture
def client(settings: Settings, index: FaqIndex) -> Iterator[TestClient]:
    with TestClient(create_app(settings, index=index),
                    base_url="https://testserver") as test_client:
        yield test_client


def _signal(settings: Settings, wording: str, entry_id: str, source: str = "client:one",
            kind: str = "pick") -> None:
    """One customer's signal, stored as the dialogue would store it."""
    async def record() -> None:
        store = ConversationStore(settings.storage.database_url)
        await store.init()
        try:
            assert await SignalStore(store, settings.learning).record(
                kind, [entry_id], wording, f"conv-{source}", source, "web") == 1
        finally:
            await store.close()

    asyncio.run(record())


def _taught_by_reply(client: TestClient, ws: Any, index: FaqIndex, answer: str,
                     question: str = ODD) -> dict[str, Any]:
    """The customer asks `question` (not answered), asks for a human; anna claims, replies."""
    conversation_id = ws.receive_json()["conversation_id"]
    assert turn(ws, question)["decision"] in ("fallback", "clarify")
    assert turn(ws, "human please")["decision"] == "handoff"
    assert login(client).status_code == 200
    assert client.post(f"/operator/api/conversations/{conversation_id}/claim").status_code == 200
    sent = client.post(f"/operator/api/conversations/{conversation_id}/reply",
                       json={"text": answer})
    assert sent.status_code == 200, sent.text
    ws.receive_json()  # the operator's message, live
    assert client.post(f"/operator/api/conversations/{conversation_id}/release"
                       ).status_code == 200
    assert ws.receive_json() == {"type": "status", "status": "bot"}
    return dict(sent.json())


def _item(client: TestClient, wording: str) -> dict[str, Any]:
    listed = client.get("/operator/api/learning")
    assert listed.status_code == 200, listed.text
    found = [i for i in listed.json()["items"] if i["wording"] == wording]
    assert len(found) == 1, listed.json()
    return dict(found[0])


def test_an_operator_answer_teaches_and_removing_it_takes_it_out(
        client: TestClient, settings: Settings, index: FaqIndex) -> None:
    answer = "  " + index.by_id[ENTRY].answer.upper() + " "  # the same text, case and spaces aside
    with client.websocket_connect("/ws") as ws:
        sent = _taught_by_reply(client, ws, index, answer)
        assert sent["learnt"] == {"entry_id": ENTRY, "wording": ODD}
        after = turn(ws, ODD)
        assert (after["decision"], after["sources"][0]["id"]) == ("answer", ENTRY), after

        item = _item(client, ODD)
        assert item["state"] == "learnt" and item["entry_id"] == ENTRY
        assert item["entry_question"] == index.by_id[ENTRY].question
        assert item["kinds"] == {"operator": 1} and item["channels"] == ["operator"]
        assert "answered by operator anna" in item["reviewed_by"]
        assert item["first"] and item["last"]

        gone = client.post("/operator/api/learning/remove",
                           json={"wording": ODD, "entry_id": ENTRY})
        assert gone.status_code == 200, gone.text
        assert gone.json()["state"] == "removed" and "removed by anna" in \
            gone.json()["reviewed_by"]
        assert turn(ws, ODD)["decision"] in ("fallback", "clarify")  # at once
        assert all(q != ODD for q in index.by_id[ENTRY].questions)
    actions = [r.action for r in rows(settings, "SELECT action FROM operator_actions "
                                                "ORDER BY id")]
    assert actions == ["login", "claim", "reply", "learn_answer", "release", "learn_remove"]
    reviews = rows(settings, "SELECT wording, entry_id, decision, operator "
                             "FROM learning_reviews")
    assert [tuple(r) for r in reviews] == [(ODD, ENTRY, "removed", "anna")]


def test_a_reply_that_is_no_faq_answer_teaches_nothing(client: TestClient,
                                                        index: FaqIndex) -> None:
    with client.websocket_connect("/ws") as ws:
        sent = _taught_by_reply(client, ws, index, "Let me check that for you.")
        assert sent["learnt"] is None
        assert turn(ws, ODD)["decision"] in ("fallback", "clarify")
    assert all(i["wording"] != ODD for i in client.get("/operator/api/learning").json()["items"])


def test_a_question_with_personal_data_is_never_learnt_from_an_answer(
        client: TestClient, settings: Settings, index: FaqIndex) -> None:
    question = ODD + ", write to jane.doe@example.com"
    with client.websocket_connect("/ws") as ws:
        sent = _taught_by_reply(client, ws, index, index.by_id[ENTRY].answer, question)
    assert sent["learnt"] is None
    assert rows(settings, "SELECT count(*) FROM learning_signals")[0][0] == 0
    assert all("jane" not in i["wording"]
               for i in client.get("/operator/api/learning").json()["items"])


def test_approving_a_candidate_makes_the_bot_answer_it_at_once(
        client: TestClient, settings: Settings) -> None:
    _signal(settings, ODDER, ENTRY)  # one customer: not enough to trust
    assert login(client).status_code == 200
    item = _item(client, ODDER)
    assert (item["state"], item["sources"], item["net"]) == ("candidate", 1, 1.0)
    assert "needs 2" in item["reviewed_by"]
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        assert turn(ws, ODDER)["decision"] != "answer"
        made = client.post("/operator/api/learning/approve",
                           json={"wording": ODDER + " ?", "entry_id": ENTRY})
        assert made.status_code == 200, made.text
        assert made.json()["state"] == "learnt" and "approved by anna" in \
            made.json()["reviewed_by"]
        reply = turn(ws, ODDER)
        assert (reply["decision"], reply["sources"][0]["id"]) == ("answer", ENTRY), reply
    assert rows(settings, "SELECT action FROM operator_actions ORDER BY id")[-1].action == \
        "learn_approve"


def test_bad_fields_unknown_pairs_and_foreign_pages_are_refused(
        client: TestClient, settings: Settings) -> None:
    _signal(settings, ODDER, ENTRY)
    assert client.get("/operator/api/learning").status_code == 401
    assert client.post("/operator/api/learning/approve",
                       json={"wording": ODDER, "entry_id": ENTRY}).status_code == 401
    assert login(client).status_code == 200
    long = client.post("/operator/api/learning/approve", json={"wording": "x" * 501,
                                                              "entry_id": ENTRY})
    assert long.status_code == 422 and long.json()["detail"][0]["loc"][-1] == "wording"
    missing = client.post("/operator/api/learning/remove", json={"wording": ODDER})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"][-1] == "entry_id"
    blank = client.post("/operator/api/learning/approve", json={"wording": "   ",
                                                               "entry_id": ENTRY})
    assert blank.status_code == 422 and blank.json()["detail"].startswith("wording:")
    nope = client.post("/operator/api/learning/approve", json={"wording": ODDER,
                                                              "entry_id": "nope"})
    assert nope.status_code == 422 and "entry_id: no FAQ entry 'nope'" in nope.json()["detail"]
    unknown = client.post("/operator/api/learning/approve",
                          json={"wording": "how do I get a refund", "entry_id": ENTRY})
    assert unknown.status_code == 404 and "nothing learnt" in unknown.json()["detail"]
    # another site's page, or a form post, cannot approve in the operator's name
    forged = client.post("/operator/api/learning/approve", json={"wording": ODDER,
                                                                "entry_id": ENTRY},
                         headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403
    form = client.post("/operator/api/learning/approve",
                       content=f"wording={ODDER}&entry_id={ENTRY}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert rows(settings, "SELECT count(*) FROM learning_reviews")[0][0] == 0
    assert _item(client, ODDER)["state"] == "candidate"


def test_the_customers_question_is_the_last_one_the_bot_did_not_answer() -> None:
    def message(i: int, role: str, text: str, decision: str | None = None) -> Message:
        return Message(id=i, role=role, text=text, decision=decision)

    intents = Intents(["human", "agent", "operator"])
    history = [message(1, "user", "where is my parcel"), message(2, "bot", "...", "answer"),
               message(3, "user", ODD), message(4, "bot", "...", "fallback"),
               message(5, "user", "human please"), message(6, "bot", "...", "handoff"),
               message(7, "operator", "...")]
    found = unanswered_question(history, intents)
    assert found is not None and found.text == ODD
    assert unanswered_question(history[:2] + history[4:], intents) is None  # only answered ones


def test_an_answer_reworded_is_recognised_by_its_meaning(
        settings: Settings, index: FaqIndex) -> None:
    from bot.learning import UseLearning

    store = ConversationStore(settings.storage.database_url)
    answers = OperatorAnswers(UseLearning(store, index, settings.learning), Intents(["human"]))
    original = index.by_id[ENTRY].answer
    assert answers.entry_of(original.replace(".", " .")) == ENTRY
    assert answers.entry_of("Our opening hours are nine to five.") is None


def _cli(settings: Settings, tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "c.yaml"
    config.write_text(f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: {tmp_path / 'idx'}\n"
                      f"storage:\n  database_url: {settings.storage.database_url}\n",
                      encoding="utf-8")
    return CliRunner(env={"COLUMNS": "200"}).invoke(
        cli_app, ["--config", str(config), "operator", "learnt", *args])


def test_operator_learnt_lists_approves_and_removes(settings: Settings, tmp_path: Path) -> None:
    assert _cli(settings, tmp_path).stdout.startswith("nothing learnt yet")
    _signal(settings, ODDER, ENTRY)
    listed = _cli(settings, tmp_path, "--json")
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.stdout)
    assert [(i["wording"], i["state"]) for i in found["items"]] == [(ODDER, "candidate")]
    table = _cli(settings, tmp_path)
    assert table.exit_code == 0 and "candidate" in table.stdout and ENTRY in table.stdout

    assert _cli(settings, tmp_path, "--yaml").stdout == ""  # a candidate is not learnt yet
    approved = _cli(settings, tmp_path, "approve", "--entry", ENTRY, ODDER, "--by", "ben")
    assert approved.exit_code == 0, approved.output
    assert "learnt" in approved.stdout
    merged = yaml.safe_load(_cli(settings, tmp_path, "--yaml").stdout)
    assert [(e["id"], e["questions"]) for e in merged] == [(ENTRY, [ODDER])]
    removed = _cli(settings, tmp_path, "remove", "--entry", ENTRY, ODDER)
    assert removed.exit_code == 0 and "removed" in removed.stdout
    assert [tuple(r) for r in rows(settings, "SELECT decision, operator FROM learning_reviews "
                                             "ORDER BY id")] == [("approved", "ben"),
                                                                 ("removed", "cli")]

    for args, says in ((("approve", "--entry", ENTRY, "how do I get a refund"),
                        "nothing learnt or signalled"),
                       (("remove", "--entry", "nope", ODDER), "entry_id: no FAQ entry 'nope'")):
        refused = _cli(settings, tmp_path, *args)
        assert refused.exit_code == 1 and says in refused.output, refused.output
        assert "Traceback" not in refused.output
