"""The demo shop API (bot/actions/demo_shop.py, sample data) served on loopback in a thread of
its own, for the sample FAQ's actions: `supportbot serve`, `chat` and the Telegram channel start
it when the sample FAQ is in use and SHOP_API_URL does not name a real shop (actions.demo_shop).
Each process starts its own on a free port, with a random token that only its caller knows."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from bot.actions.demo_shop import create_app
from bot.errors import SupportbotError

START_SECONDS = 30.0


@dataclass(frozen=True)
class DemoShop:
    """A running demo shop: its base URL (SHOP_API_URL), host:port, token and how to stop it."""

    url: str
    host: str
    token: str
    stop: Callable[[], None]


def start_demo_shop(host: str = "127.0.0.1") -> DemoShop:
    """Serve the demo shop on `host` at a free port until `stop()` (or the process ends)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = int(probe.getsockname()[1])
    token = secrets.token_urlsafe(24)
    server = uvicorn.Server(uvicorn.Config(create_app(token), host=host, port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True,
                              name="demo-shop")
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise SupportbotError(f"the demo shop API did not start on {host}:{port}")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return DemoShop(f"http://{host}:{port}", f"{host}:{port}", token, stop)
