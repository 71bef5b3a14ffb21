"""The web chat page and the embed widget in a real browser, against the real server.

Debian's Chromium driven by Playwright (tests/browser_support.py): without them the module is
skipped, unless REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from retrieval.corpus import load_faq
from tests.browser_support import (  # skips this module without a browser
    DESKTOP,
    PHONE,
    WAIT_MS,
    Browser,
    LiveServer,
    Page,
    Shots,
    WebSocketRoute,
    expect,
    launch,
    new_page,
    running,
    sync_playwright,
)
from tests.conftest import SAMPLE_FAQ

FAQ_QUESTION = "how do I reset my password"
CLARIFY_QUESTION = "what's the time limit for sending stuff back"  # "Did you mean" on the sample
XSS = '<img src=x onerror="window.__xss = 1"> <b>bold?</b>'

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(LiveServer(tmp_path_factory.mktemp("web-server"))) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        yield launch(playwright)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as page:
        yield page


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path)


# --- helpers ----------------------------------------------------------------------------------


def _ask(page: Page, text: str) -> None:
    """Type a question and send it with Enter, as a customer would."""
    box = page.get_by_test_id("message-input")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def _bot_messages(page: Page, count: int) -> Any:
    """The bot's finished messages, once there are `count` of them."""
    messages = page.get_by_test_id("bot-message")
    expect(messages).to_have_count(count)
    expect(page.get_by_test_id("bot-typing")).to_have_count(0)
    return messages


def _stored(page: Page) -> dict[str, str]:
    value = page.evaluate("localStorage.getItem('supportbot.conversation')")
    assert isinstance(value, str), "the page keeps its conversation in localStorage"
    data: dict[str, str] = json.loads(value)
    assert set(data) == {"conversation_id", "token"}
    return data


def _no_horizontal_scroll(page: Page) -> None:
    widths = page.evaluate("""() => {
        const log = document.querySelector('[data-testid=message-log]');
        return {page: document.documentElement.scrollWidth, view: window.innerWidth,
                log: log.scrollWidth, logView: log.clientWidth};
    }""")
    assert widths["page"] <= widths["view"], widths
    assert widths["log"] <= widths["logView"], widths


# --- the page ---------------------------------------------------------------------------------


def test_chat_page_answers_suggests_rates_and_survives_a_reload(
        server: LiveServer, page: Page, shots: Shots) -> None:
    entries = load_faq(SAMPLE_FAQ)
    faq = {entry.question: entry for entry in entries}  # as sources and suggestions name them
    frames: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: frames.append(json.loads(payload))))
    refused: list[str] = []  # what the Content-Security-Policy blocked: nothing, or it broke
    page.on("console", lambda m: refused.append(m.text)
            if "Content Security Policy" in m.text else None)
    response = page.goto(server.url + "/")
    assert response is not None
    assert "connect-src 'self'" in response.headers["content-security-policy"]

    expect(page.get_by_test_id("greeting")).to_contain_text("How can I help")
    expect(page.get_by_test_id("bot-name")).to_have_text(server.settings.persona.bot_name)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "online")
    box = page.get_by_test_id("message-input")
    send = page.get_by_test_id("send-button")
    expect(box).to_be_focused()
    expect(send).to_be_disabled()  # nothing typed
    box.fill("   ")
    expect(send).to_be_disabled()  # only spaces
    box.fill("x" * (server.settings.dialogue.max_input_chars + 1))
    expect(send).to_be_disabled()  # over max_text_chars: the counter says so
    expect(page.get_by_test_id("char-counter")).to_have_class("over")
    box.fill("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")  # Shift+Enter: a new line, not sent
    expect(page.get_by_test_id("user-message")).to_have_count(0)

    # An FAQ question: the answer streams in, then shows its source as a link.
    _ask(page, FAQ_QUESTION)
    expect(page.get_by_test_id("user-message")).to_have_text([FAQ_QUESTION])
    answer = _bot_messages(page, 1).first
    entry = next(e for e in entries if e.id == "reset-password")
    expect(answer).to_contain_text(entry.answer[:60])
    source = answer.get_by_test_id("source-link")
    expect(source).to_have_text(entry.question + " (opens in a new tab)")
    expect(source).to_have_attribute("href", str(entry.link))
    expect(source).to_have_attribute("target", "_blank")
    expect(source).to_have_attribute("rel", "noopener noreferrer")
    tokens = [f for f in frames if f.get("type") == "token"]
    reply = next(f for f in frames if f.get("type") == "reply")
    assert tokens and "".join(t["text"] for t in tokens) == reply["text"]
    assert reply["decision"] == "answer"
    expect(page.get_by_test_id("announcer")).to_contain_text(entry.answer[:40])

    # "Did you mean": the offered questions are buttons; one click asks it.
    _ask(page, CLARIFY_QUESTION)
    clarify = _bot_messages(page, 2).nth(1)
    expect(clarify).to_have_attribute("data-decision", "clarify")
    offered = clarify.get_by_test_id("suggestion")
    expect(offered.first).to_be_visible()
    shots.take(page, "page-clarify")
    picked = offered.first.locator(".label").inner_text()
    assert picked in faq, picked
    offered.first.click()
    expect(page.get_by_test_id("user-message").last).to_have_text(picked)
    chosen = _bot_messages(page, 3).nth(2)
    expect(chosen).to_contain_text(faq[picked].answer[:60])

    # Thumbs up on the first answer: the server's ack shows, and the rating is stored.
    answer.get_by_test_id("thumbs-up").click()
    expect(answer.get_by_test_id("thumbs-up")).to_have_attribute("aria-pressed", "true")
    expect(answer.get_by_test_id("thumbs-down")).to_have_attribute("aria-pressed", "false")
    # ... and thumbs down on the "Did you mean", by keyboard.
    clarify.get_by_test_id("thumbs-down").press("Space")
    expect(clarify.get_by_test_id("thumbs-down")).to_have_attribute("aria-pressed", "true")
    ratings = {int(str(answer.get_attribute("data-message-id"))): "up",
               int(str(clarify.get_attribute("data-message-id"))): "down"}
    conversation = _stored(page)
    rest = httpx.get(f"{server.url}/v1/conversations/{conversation['conversation_id']}",
                     headers={"X-Conversation-Token": conversation["token"]}, timeout=10)
    assert rest.status_code == 200, rest.text
    rated = {m["message_id"]: m["feedback"] for m in rest.json()["messages"]
             if m["role"] == "bot" and m.get("feedback")}
    assert rated == ratings
    engine = sa.create_engine(f"sqlite:///{server.database}")
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text("SELECT message_id, rating FROM feedback")).all()
    finally:
        engine.dispose()
    assert dict(tuple(row) for row in rows) == ratings
    shots.take(page, "page-desktop")

    # A reload resumes the conversation: the whole history, with its links, buttons and rating.
    texts = page.get_by_test_id("bot-message").all_inner_texts()
    users = page.get_by_test_id("user-message").all_inner_texts()
    page.reload()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "online")
    expect(page.get_by_test_id("bot-message")).to_have_text(texts, use_inner_text=True)
    expect(page.get_by_test_id("user-message")).to_have_text(users, use_inner_text=True)
    assert _stored(page) == conversation
    again = page.get_by_test_id("bot-message").first
    expect(again.get_by_test_id("source-link")).to_have_attribute("href", str(entry.link))
    expect(again.get_by_test_id("thumbs-up")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("bot-message").nth(1).get_by_test_id("thumbs-down")
           ).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("bot-message").nth(1).get_by_test_id("suggestion")).to_have_count(
        offered.count())
    expect(page.get_by_test_id("handoff-banner")).to_be_hidden()

    # At phone width nothing scrolls sideways.
    page.set_viewport_size(PHONE)
    _no_horizontal_scroll(page)
    shots.take(page, "page-phone")
    assert not refused, refused


def test_handoff_banner_and_text_never_markup(
        server: LiveServer, page: Page, shots: Shots) -> None:
    page.set_viewport_size(PHONE)
    page.goto(server.url + "/")
    expect(page.get_by_test_id("greeting")).to_be_visible()
    expect(page.get_by_test_id("handoff-banner")).to_be_hidden()
    # Text is text, never markup.
    _ask(page, XSS)
    _bot_messages(page, 1)
    expect(page.get_by_test_id("user-message")).to_have_text([XSS])
    assert page.evaluate("window.__xss") is None
    assert page.locator(".bubble img, .bubble b").count() == 0

    _ask(page, "human")
    handoff = _bot_messages(page, 2).nth(1)
    expect(handoff).to_have_attribute("data-decision", "handoff")
    banner = page.get_by_test_id("handoff-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("A colleague will reply here")
    page.reload()
    expect(page.get_by_test_id("bot-message")).to_have_count(2)
    expect(page.get_by_test_id("handoff-banner")).to_be_visible()  # hello's status
    expect(page.get_by_test_id("user-message").first).to_have_text(XSS)
    _no_horizontal_scroll(page)
    shots.take(page, "page-handoff-phone")


def test_a_stale_token_starts_a_new_conversation(server: LiveServer, page: Page) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "online")
    first = _stored(page)
    page.evaluate("""(c) => localStorage.setItem('supportbot.conversation',
        JSON.stringify({conversation_id: c, token: 'not-the-token'}))""", first["conversation_id"])
    page.reload()
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "online")
    expect(page.get_by_test_id("greeting")).to_be_visible()
    fresh = _stored(page)
    assert fresh["conversation_id"] != first["conversation_id"]
    assert fresh["token"] != "not-the-token"


def test_a_dropped_socket_reconnects_and_heartbeats_are_answered(
        server: LiveServer, page: Page) -> None:
    sockets: list[tuple[WebSocketRoute, WebSocketRoute]] = []
    sent: list[dict[str, Any]] = []

    def relay(socket: WebSocketRoute) -> None:
        """Pass the page's socket through to the server, noting what the page sends."""
        upstream = socket.connect_to_server()

        def from_page(message: str | bytes) -> None:
            sent.append(json.loads(message))
            upstream.send(message)

        socket.on_message(from_page)
        sockets.append((socket, upstream))

    def wait_until(done: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline, f"waited 10 s for {what}"
            page.wait_for_timeout(100)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), relay)
    page.goto(server.url + "/")
    _ask(page, FAQ_QUESTION)
    _bot_messages(page, 1)
    # The server pings every heartbeat_seconds (1 s here); the page answers each with a pong.
    wait_until(lambda: any(frame["type"] == "pong" for frame in sent), "a pong")

    # The connection drops: the page reconnects, resumes, and shows the history once.
    page_side, server_side = sockets[0]
    page_side.close(code=4000, reason="the test drops the socket")
    server_side.close()
    wait_until(lambda: len(sockets) == 2, "a new socket")
    conversation = _stored(page)
    assert f"conversation_id={conversation['conversation_id']}" in sockets[1][0].url
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "online")
    expect(page.get_by_test_id("user-message")).to_have_text([FAQ_QUESTION])
    _bot_messages(page, 1)
    _ask(page, "how can I track my order")
    expect(_bot_messages(page, 2).nth(1).get_by_test_id("source-link")).to_be_visible()


# --- the widget -------------------------------------------------------------------------------


SHOP_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Shop</title></head>
<body style="margin:0;font-family:sans-serif"><header style="padding:16px 24px;background:#222;
color:#fff"><b>Example Shop</b></header><main style="padding:24px"><h1>Tents</h1>
<p>Our best tents for every season.</p></main>
<script src="{url}/widget.js" defer></script></body></html>"""


@pytest.fixture
def shop_site(server: LiveServer) -> Iterator[str]:
    """A company's page embedding the widget, served from another origin (its own port).

    A real local server, not Playwright's router: Chromium lets a page load the bot's
    127.0.0.1 script only if the page itself comes from the local network.
    """
    body = SHOP_PAGE.format(url=server.url).encode()

    class Shop(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    thread = threading.Thread(target=site.serve_forever, name="shop", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}/"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(timeout=10)


def test_widget_opens_the_chat_in_an_iframe(
        server: LiveServer, browser: Browser, shop_site: str, shots: Shots) -> None:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(shop_site)
        # One global, the namespace; nothing else leaks into the company's page.
        expect(page.get_by_test_id("widget-button")).to_be_visible()
        added = page.evaluate("""() => {
            const frame = document.createElement('iframe');
            document.body.appendChild(frame);
            const clean = new Set(Object.keys(frame.contentWindow));
            frame.remove();
            return Object.keys(window).filter(k => !clean.has(k));
        }""")
        assert added == ["SupportbotWidget"], added

        button = page.get_by_test_id("widget-button")
        panel = page.get_by_test_id("widget-panel")
        expect(button).to_have_attribute("aria-expanded", "false")
        expect(panel).to_be_hidden()
        expect(page.get_by_test_id("widget-frame")).to_have_count(0)  # nothing loads before
        box = button.bounding_box()
        assert box is not None
        assert box["x"] + box["width"] > DESKTOP["width"] - 40
        assert box["y"] + box["height"] > DESKTOP["height"] - 40  # bottom-right corner

        button.click()
        expect(panel).to_be_visible()
        expect(button).to_have_attribute("aria-expanded", "true")
        frame_element = page.get_by_test_id("widget-frame")
        expect(frame_element).to_have_attribute("src", server.url + "/?embed=1")
        chat = page.frame_locator("[data-testid=widget-frame]")
        expect(chat.get_by_test_id("greeting")).to_be_visible()
        expect(chat.get_by_test_id("message-input")).to_be_focused()
        expect(chat.get_by_test_id("close-embed")).to_be_visible()
        chat.get_by_test_id("message-input").fill(FAQ_QUESTION)
        chat.get_by_test_id("message-input").press("Enter")
        expect(chat.get_by_test_id("source-link")).to_be_visible()
        page.wait_for_timeout(300)  # the panel's opening animation
        shots.take(page, "widget-desktop")

        # Escape (pressed inside the chat) closes the panel; focus goes back to the button.
        chat.get_by_test_id("message-input").press("Escape")
        expect(panel).to_be_hidden()
        expect(button).to_be_focused()
        # The keyboard opens it again; the chat kept its conversation.
        page.keyboard.press("Enter")
        expect(panel).to_be_visible()
        expect(chat.get_by_test_id("bot-message")).to_have_count(1)
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()

        # On a phone the panel fills the screen; the chat's own button closes it.
        page.set_viewport_size(PHONE)
        button.click()
        expect(panel).to_be_visible()
        page.wait_for_timeout(300)
        rect = panel.bounding_box()
        assert rect is not None
        assert (rect["x"], rect["y"], rect["width"], rect["height"]) == (
            0, 0, PHONE["width"], PHONE["height"])
        shots.take(page, "widget-phone")
        chat.get_by_test_id("close-embed").click()
        expect(panel).to_be_hidden()
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()
