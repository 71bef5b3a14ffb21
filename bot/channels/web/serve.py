"""Run the web app on uvicorn (what `supportbot serve` does once the index is open)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import uvicorn

from bot.channels.web.app import create_app
from bot.generation.base import Generator
from bot.settings import Settings
from retrieval.index import FaqIndex

# uvicorn refuses larger web-socket frames at the protocol level (closing the socket); ours are
# refused politely by the app at web.max_frame_bytes, so uvicorn's limit sits well above.
_WS_MAX_SIZE = 1 << 20


def serve(settings: Settings, index: FaqIndex, generator: Callable[[], Generator]) -> None:
    """Serve until interrupted; on SIGINT / SIGTERM turns in flight finish (web.drain_seconds)
    and are stored before the process exits."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    web = settings.web
    config = uvicorn.Config(create_app(settings, index=index, generator=generator),
                            host=web.host, port=web.port, ws_max_size=_WS_MAX_SIZE,
                            ws_ping_interval=None, log_level="info",
                            timeout_graceful_shutdown=int(web.drain_seconds) + 5)
    uvicorn.Server(config).run()
