"""Actions files (issue 34): every mistake named with its file, line and field, all at once;
slots found only as whole, safe tokens; templates rendered without leaking the environment."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from bot.actions.model import Action, Call, Reply, Slot
from bot.actions.spec import ActionFileError, load_actions
from bot.actions.templates import (
    MissingEnv,
    MissingField,
    render_body,
    render_confirm,
    render_plain,
    render_reply,
    render_status,
    render_url,
)

GOOD = """\
entries:
  - id: track-order
    questions: [How can I track my order?]
    answer: Open My orders.
actions:
  - id: order-status
    questions: [Where is my order?, has order KO-123456 shipped]
    slots:
      order_id:
        pattern: 'KO-\\d{6}'
        ask: "What's your order number?"
        invalid: "That doesn't look like an order number."
        upper: true
    call:
      method: GET
      url: "${SHOP_API_URL}/orders/{order_id}"
      headers: {Authorization: "Bearer ${SHOP_API_TOKEN}"}
      timeout_s: 2.5
    reply: "Order {order_id} is {status}. {tracking_url}"
    on_status: {404: "I can't find order {order_id}."}
    on_error: "I can't reach our order system right now."
  - id: cancel-order
    questions: [cancel my order]
    slots:
      order_id: {pattern: 'KO-\\d{6}', ask: "Which order?"}
    call:
      method: POST
      url: "http://127.0.0.1:8000/orders/{order_id}/cancel"
      body: {reason: "customer asked for {order_id}", items: [1, "{order_id}"]}
    confirm: "Cancel order {order_id}? (yes / no)"
    reply:
      field: status
      cases: {cancelled: "Order {order_id} is cancelled.", true: "Yes!"}
      default: "Order {order_id} is now {status}."
"""


def write(tmp_path: Path, text: str, name: str = "faq.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[int | None, str | None, str]]:
    """(line, field, message) of every problem of an actions file."""
    with pytest.raises(ActionFileError) as caught:
        load_actions(write(tmp_path, text))
    path = tmp_path / "faq.yaml"
    assert all(p.path == path for p in caught.value.problems)
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_a_good_file_loads_every_field(tmp_path: Path) -> None:
    status, cancel = load_actions(write(tmp_path, GOOD))
    assert status.id == "order-status" and status.line == 6
    assert status.questions == ("Where is my order?", "has order KO-123456 shipped")
    assert status.slots == (Slot("order_id", "KO-\\d{6}", "What's your order number?",
                                 "That doesn't look like an order number.", True),)
    assert status.call == Call("GET", "${SHOP_API_URL}/orders/{order_id}",
                               (("Authorization", "Bearer ${SHOP_API_TOKEN}"),), None, 2.5)
    assert status.call.idempotent and not status.changes
    assert dict(status.on_status) == {404: "I can't find order {order_id}."}
    assert status.confirm is None
    assert cancel.changes and not cancel.call.idempotent and cancel.call.timeout_s == 3.0
    assert cancel.reply.field == "status" and dict(cancel.reply.cases)["yes"] == "Yes!"
    assert cancel.call.body == {"reason": "customer asked for {order_id}",
                                "items": [1, "{order_id}"]}


def test_files_without_actions_declare_none(tmp_path: Path) -> None:
    assert load_actions(write(tmp_path, "- id: a\n  questions: [q]\n  answer: x\n")) == []
    assert load_actions(write(tmp_path, "entries: []\n")) == []
    assert load_actions(write(tmp_path, '{"id": "a"}\n', "faq.jsonl")) == []
    assert load_actions(write(tmp_path, "id,question,answer\n", "faq.csv")) == []
    only = GOOD[GOOD.index("actions:"):]
    assert [a.id for a in load_actions(write(tmp_path, only, "actions.yml"))] == [
        "order-status", "cancel-order"]


def test_a_missing_file_or_bad_yaml_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ActionFileError, match="actions file not found"):
        load_actions(tmp_path / "nope.yaml")
    assert problems(tmp_path, "actions:\n  - id: a\n    questions: [x\n")[0][2].startswith(
        "invalid YAML")
    assert problems(tmp_path, "actions: {id: a}\n") == [
        (1, "actions", "expected a list of actions")]


def test_every_problem_is_listed_with_its_line_and_field(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        actions:
          - id: bad id
            questions: []
            slotz: {}
            slots:
              1x: {pattern: 'a', ask: 'b'}
              order: {pattern: '(', ask: ''}
            call: {method: FETCH, url: "ftp://x/{nope}", body: {a: "${X}"}, timeout_s: 99}
            reply: {field: status, cases: {}}
            on_status: {700: "x", 404: "no {missing}"}
            on_error: ""
          - "just text"
        """)
    where = {(line, field) for line, field, _ in found}
    assert (2, "actions[1].id") in where
    assert (3, "actions[1].questions") in where
    assert (4, "actions[1].slotz") in where
    assert (6, "actions[1].slots.1x") in where
    assert (7, "actions[1].slots.order.pattern") in where
    assert (7, "actions[1].slots.order.ask") in where
    assert (8, "actions[1].call.method") in where
    assert (8, "actions[1].call.timeout_s") in where
    assert (9, "actions[1].reply.cases") in where
    assert (10, "actions[1].on_status.700") in where
    assert (10, "actions[1].on_status.404") in where
    assert (11, "actions[1].on_error") in where
    messages = "\n".join(message for _, _, message in found)
    for expected in ("unknown field 'slotz'", "does not compile", "'{nope}' is not a slot",
                     "http:// or https://", "only sent with POST", "only allowed in call.url",
                     "<= 10", "100 to 599", "'{missing}' is not a slot", "action 2 must be"):
        assert expected in messages, expected


def test_templates_are_checked_where_they_are_used(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        actions:
          - id: a
            questions: [q]
            slots: {n: {pattern: '\\d+', ask: 'which?'}}
            call:
              url: "http://h/{n}/${bad-name}"
              headers: {X-Key: "${KEY}", "bad header": "x", X-Who: "{who}"}
            confirm: "really ${KEY}?"
            reply: "it is {status} {"
          - id: a
            questions: [q]
            call: {url: "http://h/"}
            reply: "ok"
        """)
    messages = {field: message for _, field, message in found}
    assert "not an environment variable name" in messages["a.call.url"]
    assert "'{who}' is not a slot" in messages["a.call.headers.X-Who"]
    assert "letters, digits" in messages["a.call.headers.bad header"]
    assert "only allowed in call.url" in messages["a.confirm"]
    assert "a single '{'" in messages["a.reply"]
    assert "duplicate action id 'a'" in messages["a.id"]
    assert "a.call.headers.X-Key" not in messages


def test_a_reply_s_unknown_names_are_response_fields(tmp_path: Path) -> None:
    text = """\
        actions:
          - id: a
            questions: [q]
            call: {url: "${API}/x", timeout_s: 10}
            reply: "{items.0.name} costs $${price}, {{literally}}"
        """
    (action,) = load_actions(write(tmp_path, text))
    assert render_reply(action, {"items": [{"name": "Tent"}], "price": 12.5}, {}) == (
        "Tent costs $12.5, {literally}")


@pytest.mark.parametrize(("text", "found"), [
    ("has ko-123456 shipped?", "KO-123456"),  # upper: true
    ("order:KO-123456.", "KO-123456"),
    ("(KO-123456)", "KO-123456"),
    ("first KO-12 then KO-654321", "KO-654321"),
    ("KO-1234567", None),  # fullmatched, not searched
    ("xKO-123456", None),
    ("KO-123456/../../admin", None),  # `/` does not delimit: one candidate, refused
    ("../KO-123456", None),
    ("KO-123456%2F..", None),
    ("KO-123\u0000456", None),
    ("", None),
])
def test_a_slot_is_found_only_as_a_whole_safe_token(text: str, found: str | None) -> None:
    slot = Slot("order_id", r"KO-\d{6}", "Which order?", upper=True)
    assert slot.find(text) == found


def test_a_loose_pattern_still_never_yields_a_path() -> None:
    slot = Slot("ref", r"\S+", "Which reference?")
    assert slot.find("KO-123456/../../admin") is None
    assert slot.find("a/b c") == "c"
    assert slot.find("x..y") is None
    assert Slot("ref", "x", "Which one?").invalid_text == "Sorry, I didn't catch that. Which one?"


ACTION = Action("a", ("q",), (Slot("order_id", r"KO-\d{6}", "?"),),
                Call("GET", "http://h/x", (), None, 3.0),
                Reply(field="status", cases=(("shipped", "{order_id} left on {ship.date}"),),
                      default="{order_id} is {status}"),
                {404: "No {order_id}."}, "Sorry.", "Sure about {order_id}?")


def test_a_url_slot_is_one_encoded_segment_and_env_values_are_read_at_call_time() -> None:
    values = {"order_id": "a/../b?c#d e"}
    url = render_url("${BASE}/orders/{order_id}", values, {"BASE": "http://h"})
    assert url == "http://h/orders/a%2F..%2Fb%3Fc%23d%20e"
    assert render_plain("Bearer ${TOKEN} {order_id}", values, {"TOKEN": "s3cret"}) == (
        "Bearer s3cret a/../b?c#d e")
    assert render_body({"k": ["{order_id}", 1, None], "n": {"x": "{order_id}!"}},
                       {"order_id": "KO-1"}) == {"k": ["KO-1", 1, None], "n": {"x": "KO-1!"}}


@pytest.mark.parametrize("environ", [{}, {"TOKEN": ""}, {"TOKEN": "s3cret\r\nX-Evil: 1"}])
def test_a_missing_or_unsafe_env_var_is_named_never_shown(environ: dict[str, str]) -> None:
    with pytest.raises(MissingEnv) as caught:
        render_plain("Bearer ${TOKEN}", {}, environ)
    assert "environment variable TOKEN" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value)


def test_replies_render_from_slots_and_plain_response_fields() -> None:
    values = {"order_id": "KO-123456"}
    data = {"status": "shipped", "ship": {"date": "1 May\x00\u202e"}}
    assert render_reply(ACTION, data, values) == "KO-123456 left on 1 May"
    assert render_reply(ACTION, {"status": "SHIPPED", "ship": {"date": 3}}, values) == (
        "KO-123456 left on 3")
    assert render_reply(ACTION, {"status": "lost"}, values) == "KO-123456 is lost"
    assert render_reply(ACTION, {"status": "x" * 1000}, values).endswith("x…")
    assert render_status(ACTION, 404, values) == "No KO-123456."
    assert render_status(ACTION, 500, values) is None
    assert render_confirm(ACTION, values) == "Sure about KO-123456?"


@pytest.mark.parametrize("data", [
    {}, {"status": None}, {"status": ""}, {"status": {"a": 1}}, {"status": [1]},
    {"status": "shipped"},  # the shipped case needs ship.date
    {"status": "shipped", "ship": {"date": []}}, [], "text", None,
])
def test_a_missing_or_structured_field_raises_never_renders_empty(data: object) -> None:
    with pytest.raises(MissingField):
        render_reply(ACTION, data, {"order_id": "KO-123456"})
