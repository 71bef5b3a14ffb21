"""Failures a client is told about in one short line and a request id: the detail (a database
URL, a driver's message) goes to the log under that id, never to the client."""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

REQUEST_ID_HEADER = "X-Request-ID"


class Unavailable(Exception):
    """Answered 503 with `message` and `request_id` (the app's handler, unavailable_response)."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    @property
    def headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.request_id, "Retry-After": "5"}


def unavailable(message: str, exc: BaseException, logger: logging.Logger,
                trace: bool = False) -> Unavailable:
    """Log `exc` with a new request id (with its traceback when `trace`: a bug, not a
    database that is away); the exception to raise (or answer) for the client."""
    request_id = uuid.uuid4().hex[:12]
    logger.error("%s (request %s): %s", message, request_id, exc,
                 exc_info=exc if trace else None)
    return Unavailable(message, request_id)


async def unavailable_response(request: Request, exc: Exception) -> Response:
    """503 {"detail": message, "request_id": ...}, the id also in X-Request-ID."""
    assert isinstance(exc, Unavailable)
    return JSONResponse({"detail": exc.message, "request_id": exc.request_id},
                        status_code=503, headers=exc.headers)
