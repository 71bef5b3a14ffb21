"""Run the web app on uvicorn (what `supportbot serve` does once the index is open), with the
channels that share its port: the composition of the web and Telegram channels, which do not
import each other."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from bot.channels.telegram.delivery import TelegramDelivery
from bot.channels.telegram.webhook import SharedWebhook
from bot.channels.web.app import create_app
from bot.errors import SupportbotError
from bot.generation.base import Generator
from bot.settings import Settings
from retrieval.index import FaqIndex

# uvicorn refuses larger web-socket frames at the protocol level (closing the socket); ours are
# refused politely by the app at web.max_frame_bytes, so uvicorn's limit sits well above.
_WS_MAX_SIZE = 1 << 20
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def check_address(host: str, port: int) -> None:
    """SupportbotError unless `host:port` can be listened on; checked before the slow start-up
    (index, database) so that a port in use is one clear line, not a log after start-up."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
        reason = os.strerror(code).lower() if code else exc.strerror or str(exc)
        hint = ("; another server (another supportbot serve?) is using it: stop it or choose "
                "another port (--port, web.port)") if code == errno.EADDRINUSE else ""
        raise SupportbotError(f"cannot listen on {host}:{port}: {reason}{hint}") from None


def served_app(settings: Settings, *, index: FaqIndex | None = None,
               generator: Callable[[], Generator] | None = None) -> FastAPI:
    """The web app (create_app) with the Telegram channel's parts: the delivery of operators'
    messages to Telegram chats, and the webhook when it shares the web server's port
    (telegram.mode webhook and telegram.webhook_share_web_port; then a missing bot token fails
    here, before serving)."""
    telegram = settings.telegram
    shares_port = telegram.mode == "webhook" and telegram.webhook_share_web_port
    return create_app(settings, index=index, generator=generator,
                      shared=[SharedWebhook(settings)] if shares_port else [],
                      delivery=TelegramDelivery(telegram))


def serve(settings: Settings, index: FaqIndex, generator: Callable[[], Generator]) -> None:
    """Serve until interrupted; on SIGINT / SIGTERM turns in flight finish (web.drain_seconds)
    and are stored, and the process exits with status 0."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    web = settings.web
    config = uvicorn.Config(served_app(settings, index=index, generator=generator),
                            host=web.host, port=web.port,
                            **server_options(web.drain_seconds, web.forwarded_allow_ips))
    server = uvicorn.Server(config)
    with _clean_exit(server):
        server.run()


def server_options(drain_seconds: float, forwarded_allow_ips: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """uvicorn's options for every server, one process or several workers."""
    return {"ws_max_size": _WS_MAX_SIZE, "ws_ping_interval": None, "log_level": "info",
            "timeout_graceful_shutdown": int(drain_seconds) + 5,
            **proxy_options(forwarded_allow_ips)}


def proxy_options(forwarded_allow_ips: Sequence[str]) -> dict[str, Any]:
    """X-Forwarded-For / -Proto are believed from these proxies only (web.forwarded_allow_ips).

    uvicorn's own default believes them from 127.0.0.1, so that any local process (or a proxy
    that appends to the header instead of replacing it) could pick the address the per-IP
    limits count. None named: the headers are ignored, the peer is the client.
    """
    if not forwarded_allow_ips:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(forwarded_allow_ips)}


@contextlib.contextmanager
def _clean_exit(server: uvicorn.Server) -> Iterator[None]:
    """A stop by SIGINT / SIGTERM that uvicorn carried out gracefully ends with status 0.

    uvicorn catches these signals while it serves; once it has shut down it restores the
    handlers it found and raises the signal again, so with Python's defaults the process would
    die of SIGTERM (status -15 / 143) or end in KeyboardInterrupt after a clean drain. The
    handlers found here ignore that repeat when the server was told to exit; a signal before
    uvicorn took over still stops the process as it would have.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        if server.should_exit:
            return  # uvicorn's repeat of the signal it has already acted on
        signal.signal(sig, previous[signal.Signals(sig)] or signal.SIG_DFL)
        signal.raise_signal(sig)

    for sig in _STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old or signal.SIG_DFL)
