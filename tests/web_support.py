"""Helpers for the web tests: test-server settings, a scripted model, uvicorn on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.settings import Settings
from retrieval.index import FaqIndex
from tests.dialogue_support import FAITHFUL, into_generated_band
from tests.fakes import ScriptedGenerator

# Customer questions on the sample FAQ's topics (the many-conversation tests cycle through them).
FAQ_QUESTIONS = ["how do I reset my password", "How can I track my order?", "can I pay later",
                 "do you deliver abroad", "is there a discount for students"]


def web_settings(tmp_path: Path, index: FaqIndex | None = None, generate: bool = False,
                 **web: Any) -> Settings:
    """Settings for a test server: a SQLite file in tmp_path, a fixed key, generous limits.

    With `generate` (and the index), NEAR_MISS falls in the generated band.
    """
    settings = Settings()
    settings.storage.database_url = f"sqlite+aiosqlite:///{tmp_path / 'web.db'}"
    settings.web.secret = "a test key, long enough to sign"  # type: ignore[assignment]
    settings.web.burst_per_ip = 10_000
    settings.web.burst_per_connection = 1_000
    settings.web.drain_seconds = 10
    for key, value in web.items():
        setattr(settings.web, key, value)
    if generate:
        assert index is not None
        into_generated_band(settings, index)
        settings.model.generation.max_new_tokens = 60
    return settings


def scripted(answer: str = FAITHFUL, seconds_per_token: float = 0.0
             ) -> tuple[ScriptedGenerator, Callable[[], Any]]:
    """A scripted generator and a loader that returns it."""
    generator = ScriptedGenerator(answer, seconds_per_token)
    return generator, lambda: generator


def rows(settings: Settings, query: str, **params: Any) -> list[Any]:
    """Rows of a query on the test database (read with the plain sqlite driver)."""
    url = settings.storage.database_url.replace("+aiosqlite", "")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query), params).all())
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: FastAPI, **config: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    """A real uvicorn serving `app` on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    options = {"log_level": "warning", "ws_max_size": 1 << 20, "ws_ping_interval": None,
               **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(30)


async def stored(url: str) -> list[Any]:
    """All messages of the database, oldest first (read with its async driver: SQLite or
    PostgreSQL alike)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(
                "SELECT id, conversation_id, role, text, client_id, decision, meta "
                "FROM messages ORDER BY id"))
            return list(result.all())
    finally:
        await engine.dispose()
