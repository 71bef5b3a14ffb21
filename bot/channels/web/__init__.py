"""The web channel: FastAPI app with the chat page, a streaming web socket, REST and metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.channels.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """`create_app`, imported on first use: importing one module of the package (say, the
    protocol's frames) does not import the whole app with the operators' routes."""
    if name == "create_app":
        from bot.channels.web.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
