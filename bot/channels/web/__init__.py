"""The web channel: FastAPI app with the chat page, a streaming web socket, REST and metrics."""

from bot.channels.web.app import create_app

__all__ = ["create_app"]
