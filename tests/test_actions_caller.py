"""The action caller against real servers on loopback (issue 34): the demo shop, and a hostile
API that is slow, fails, lies about JSON, redirects elsewhere, sends 10 MB, and records every
path it is asked for."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from bot.actions.caller import ActionCaller, CallRecord, CallResult
from bot.actions.demo_shop import create_app
from bot.actions.templates import MissingField, render_reply, render_status
from tests.actions_support import ORDER, Hits, action, hostile_app
from tests.web_support import running

TOKEN = "s3cret-shop-token-9f8e7d"


@pytest.fixture(scope="module")
def shop() -> Iterator[str]:
    with running(create_app(TOKEN), timeout_graceful_shutdown=2) as (host, _):
        yield host


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, Hits, str, Hits]]:
    """(hostile host, its hits, other host, its hits)."""
    other_hits, hits = Hits(), Hits()
    with running(hostile_app(other_hits), timeout_graceful_shutdown=2) as (other, _), \
            running(hostile_app(hits, other), timeout_graceful_shutdown=2) as (host, _):
        yield host, hits, other, other_hits


@pytest.fixture()
def hostile(servers: tuple[str, Hits, str, Hits]) -> tuple[str, Hits, str, Hits]:
    _, hits, _, other_hits = servers
    for seen in (hits, other_hits):
        seen.paths.clear()
        seen.methods.clear()
        seen.streamed, seen.fail_status = 0, 500
    return servers


def caller(*hosts: str, **options: object) -> ActionCaller:
    records: list[CallRecord] = []
    made = ActionCaller(list(hosts), on_call=records.append, backoff_s=0.01,  # type: ignore[arg-type]
                        **options)
    made.records = records  # type: ignore[attr-defined]
    return made


VALUES = {"order_id": "KO-123456"}


async def test_the_demo_shop_answers_with_the_token_from_the_environment(shop: str) -> None:
    status = action("http://${SHOP}/orders/{order_id}",
                    headers=(("Authorization", "Bearer ${SHOP_TOKEN}"),),
                    reply="Order {order_id} is {status}: {tracking_url} ({items.0.name})")
    made = caller(shop, environ={"SHOP": shop, "SHOP_TOKEN": TOKEN})
    result = await made.call(status, VALUES)
    assert result.ok and result.status == 200 and result.error is None
    assert render_reply(status, result.data, VALUES) == (
        "Order KO-123456 is shipped: https://tracking.example/parcel/PX7781234 (Ridge 2 tent)")
    missing = await made.call(status, {"order_id": "KO-999999"})
    assert (missing.ok, missing.status, missing.error) == (False, 404, "http_status")
    assert render_status(status, 404, {"order_id": "KO-999999"}) == "No order KO-999999."
    wrong = caller(shop, environ={"SHOP": shop, "SHOP_TOKEN": "guess"})
    assert (await wrong.call(status, VALUES)).status == 401
    cancel = action("http://${SHOP}/orders/{order_id}/cancel", method="POST",
                    headers=(("Authorization", "Bearer ${SHOP_TOKEN}"),),
                    body={"reason": "asked for {order_id}"})
    first = await made.call(cancel, {"order_id": "KO-111111"})
    again = await made.call(cancel, {"order_id": "KO-111111"})
    assert first.ok and first.data["status"] == "cancelled" and again.status == 409
    returns = await made.call(action("http://${SHOP}/returns/{order_id}",
                                     headers=cancel.call.headers), {"order_id": "KO-654321"})
    assert returns.data == {"order_id": "KO-654321", "status": "received",
                            "refund_amount": "24.90"}
    for made_ in (made, wrong):
        await made_.aclose()


async def test_the_demo_shop_s_fixtures_fail_and_stall_within_the_deadline(shop: str) -> None:
    made = caller(shop, environ={"SHOP_TOKEN": TOKEN}, retries=1)
    headers = (("Authorization", "Bearer ${SHOP_TOKEN}"),)
    failing = await made.call(action(f"http://{shop}/orders/{{order_id}}", headers=headers),
                              {"order_id": "KO-000500"})
    assert (failing.status, failing.error) == (500, "http_status")
    started = time.monotonic()
    slow = await made.call(action(f"http://{shop}/orders/{{order_id}}", headers=headers,
                                  timeout_s=0.5), {"order_id": "KO-000504"})
    assert slow.error == "timeout" and time.monotonic() - started < 1.5
    await made.aclose()


async def test_the_demo_shop_s_slow_order_stops_when_the_client_goes_away() -> None:
    with running(create_app(TOKEN), timeout_graceful_shutdown=20) as (host, server):
        made = caller(host, environ={"T": TOKEN})
        slow = action(f"http://{host}/orders/{{order_id}}", timeout_s=0.3,
                      headers=(("Authorization", "Bearer ${T}"),))
        assert (await made.call(slow, {"order_id": "KO-000504"})).error == "timeout"
        await made.aclose()
        deadline = time.monotonic() + 3
        while server.server_state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not server.server_state.tasks  # not still waiting out its 10 s


async def test_a_slow_api_is_abandoned_at_the_action_s_timeout(hostile: tuple) -> None:
    host, hits, _, _ = hostile
    made = caller(host, max_timeout_s=0.4)  # caps the action's 3 s
    started = time.monotonic()
    result = await made.call(action(f"http://{host}/slow"), VALUES)
    elapsed = time.monotonic() - started
    assert result.error == "timeout" and not result.ok and 0.35 < elapsed < 1.2
    assert hits.paths == ["/slow"]  # a timeout is not retried past the deadline
    await made.aclose()


async def test_a_5xx_is_retried_for_get_only(hostile: tuple) -> None:
    host, hits, _, _ = hostile
    made = caller(host, retries=2)
    get = await made.call(action(f"http://{host}/fail"), VALUES)
    assert (get.error, get.status, len(hits.paths)) == ("http_status", 500, 1)  # 500: no retry
    hits.fail_status = 503
    await made.call(action(f"http://{host}/fail"), VALUES)
    assert hits.methods[1:] == ["GET"] * 3  # 503: two retries
    post = await made.call(action(f"http://{host}/fail", method="POST"), VALUES)
    assert post.status == 503 and hits.methods[4:] == ["POST"]  # never repeated
    await made.aclose()


async def test_a_connect_error_is_retried_then_reported() -> None:
    made = caller("127.0.0.1", retries=2)
    result = await made.call(action("http://127.0.0.1:9/orders/{order_id}"), VALUES)
    assert result.error == "connect" and result.status is None
    assert made.records[-1].outcome == "connect"  # type: ignore[attr-defined]
    await made.aclose()


async def test_the_breaker_opens_fails_fast_and_half_opens(hostile: tuple) -> None:
    host, hits, _, _ = hostile
    now = [1000.0]
    made = caller(host, breaker_failures=3, breaker_seconds=30, clock=lambda: now[0])
    failing = action(f"http://{host}/fail", method="POST")
    for _ in range(3):
        assert (await made.call(failing, VALUES)).error == "http_status"
    assert len(hits.paths) == 3
    fast = await made.call(failing, VALUES)
    assert fast.error == "breaker_open" and fast.duration_ms < 50 and len(hits.paths) == 3
    other = action(f"http://{host}/ok/x", ident="other")  # per action
    assert (await made.call(other, VALUES)).ok
    now[0] += 31  # half-open: one trial, which fails and opens it again
    assert (await made.call(failing, VALUES)).error == "http_status"
    assert (await made.call(failing, VALUES)).error == "breaker_open"
    assert len(hits.paths) == 5
    now[0] += 31
    hits.fail_status = 200  # recovered: the trial closes it
    assert (await made.call(failing, VALUES)).ok
    assert (await made.call(failing, VALUES)).ok
    assert [r.outcome for r in made.records][-3:] == ["breaker_open", "ok", "ok"]  # type: ignore[attr-defined]
    await made.aclose()


async def test_a_cancelled_trial_call_does_not_hold_the_breaker_open(hostile: tuple) -> None:
    host, hits, _, _ = hostile
    now = [0.0]
    made = caller(host, breaker_failures=1, breaker_seconds=10, clock=lambda: now[0])
    assert (await made.call(action(f"http://{host}/fail"), VALUES)).error == "http_status"
    now[0] = 11
    trial = asyncio.ensure_future(made.call(action(f"http://{host}/slow"), VALUES))
    await asyncio.sleep(0.2)
    trial.cancel()  # the customer went away during the trial
    with pytest.raises(asyncio.CancelledError):
        await trial
    hits.fail_status = 200
    assert (await made.call(action(f"http://{host}/fail"), VALUES)).ok
    await made.aclose()


async def test_a_4xx_does_not_open_the_breaker(shop: str) -> None:
    made = caller(shop, breaker_failures=2, environ={"T": TOKEN})
    missing = action(f"http://{shop}/orders/{{order_id}}",
                     headers=(("Authorization", "Bearer ${T}"),))
    for _ in range(4):
        assert (await made.call(missing, {"order_id": "KO-999999"})).error == "http_status"
    await made.aclose()


async def test_bad_json_and_a_missing_reply_field(hostile: tuple) -> None:
    host, _, _, _ = hostile
    made = caller(host)
    bad = await made.call(action(f"http://{host}/badjson"), VALUES)
    assert (bad.ok, bad.status, bad.error, bad.data) == (False, 200, "bad_json", None)
    fieldless = action(f"http://{host}/nofield")
    result = await made.call(fieldless, VALUES)
    assert result.ok
    with pytest.raises(MissingField) as caught:
        render_reply(fieldless, result.data, VALUES)
    assert caught.value.name == "status"
    await made.aclose()


async def test_a_redirect_to_another_host_is_refused_and_never_followed(hostile: tuple) -> None:
    host, hits, other, other_hits = hostile
    made = caller(host, other)  # even an allowed other host: redirects stay on one host
    result = await made.call(action(f"http://{host}/away"), VALUES)
    assert (result.error, result.status) == ("redirect", 302)
    assert other_hits.paths == []
    followed = await made.call(action(f"http://{host}/same"), VALUES)
    assert followed.ok and followed.data["path"] == "followed"
    looping = await made.call(action(f"http://{host}/loop"), VALUES)
    assert looping.error == "redirect" and hits.paths.count("/loop") == 4
    await made.aclose()


async def test_a_10_mb_answer_is_abandoned_with_memory_bounded(hostile: tuple) -> None:
    host, hits, _, _ = hostile
    made = caller(host, max_bytes=1_000_000)
    hits.streamed = 0
    tracemalloc.start()
    try:
        result = await made.call(action(f"http://{host}/huge"), VALUES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error == "too_large" and peak < 4_000_000
    assert hits.streamed < 10_000_000  # the server was not read to the end
    declared = await made.call(action(f"http://{host}/declared"), VALUES)
    assert declared.error == "too_large"
    await made.aclose()


async def test_an_injected_slot_value_never_reaches_another_path(hostile: tuple) -> None:
    host, hits, _, _ = hostile
    attack = "KO-123456/../../admin"
    assert ORDER.find(attack) is None and ORDER.find(f"my order {attack} please") is None
    made = caller(host)
    for value in (attack, "KO-1\r\nX-Evil: 1", "a b"):  # even if a value got through
        header = action(f"http://{host}/orders/x", headers=(("X-Order", "{order_id}"),))
        for tried in (action(f"http://{host}/orders/{{order_id}}"), header):
            result = await made.call(tried, {"order_id": value})
            assert result.error == "bad_url" and "order_id" in (result.detail or "")
    assert hits.paths == []
    assert ORDER.find("KO-123456?admin") == "KO-123456"  # `?` ends a candidate
    ok = await made.call(action(f"http://{host}/orders/{{order_id}}"), {"order_id": "KO-1"})
    assert ok.data["path"] == "KO-1" and hits.paths == ["/orders/KO-1"]
    await made.aclose()


async def test_a_host_not_allowed_is_never_contacted(hostile: tuple) -> None:
    host, hits, other, other_hits = hostile
    made = caller(other)
    for url in (f"http://{host}/ok/x", f"http://user:pw@{other}/ok/x", "ftp://x/y",
                "${BASE}/ok/x"):
        result = await made.call(action(url), VALUES | {}) if "BASE" not in url else \
            await caller(other, environ={"BASE": f"http://{host}"}).call(action(url), VALUES)
        assert result.error in ("host_not_allowed", "bad_url"), url
    assert hits.paths == [] and other_hits.paths == []
    port_only = caller(host.split(":")[0] + ":1")
    assert (await port_only.call(action(f"http://{host}/ok/x"), VALUES)).error == (
        "host_not_allowed")
    assert (await caller("127.0.0.1").call(action(f"http://{host}/ok/x"), VALUES)).ok
    await made.aclose()


async def test_secrets_stay_out_of_results_records_and_logs(
        hostile: tuple, caplog: pytest.LogCaptureFixture) -> None:
    host, _, _, _ = hostile
    caplog.set_level(logging.DEBUG)
    made = caller(host, environ={"API": f"http://{host}", "TOKEN": TOKEN})
    secret_action = action("${API}/ok/{order_id}",
                           headers=(("Authorization", "Bearer ${TOKEN}"),))
    results: list[CallResult] = [await made.call(secret_action, VALUES)]
    results.append(await made.call(action("${API}/fail", headers=secret_action.call.headers),
                                   VALUES))
    missing = await caller(host, environ={}).call(secret_action, VALUES)
    assert missing.error == "missing_env" and missing.detail == (
        "environment variable API is not set")
    shown = repr(results) + repr(missing) + repr(made.records) + caplog.text  # type: ignore[attr-defined]
    assert TOKEN not in shown and "Bearer" not in shown
    assert [r.outcome for r in made.records] == ["ok", "http_status"]  # type: ignore[attr-defined]
    assert all(r.host == host and r.method == "GET" for r in made.records)  # type: ignore[attr-defined]
    assert "action a: GET " + host in caplog.text
    await made.aclose()
