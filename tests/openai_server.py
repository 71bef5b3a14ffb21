"""A scripted OpenAI-compatible server for the tests: real HTTP on 127.0.0.1, real SSE.

Each test queues the replies (`server.respond(...)`; the last one repeats) and then reads what
the server saw: the calls with their headers and JSON bodies, the most requests it had in flight
at once, and the streams whose client went away.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Stream:
    """Stream `pieces` as chat.completion.chunk events, `delay_s` apart (`first_delay_s` before
    the first); `drop_after` pieces, close the connection mid-body instead of finishing;
    `finish` False ends with [DONE] but no finish_reason (as llama-cpp-python's interrupt).
    With `together`, the first piece waits for that many requests to be in flight at once
    instead, `first_delay_s` at most: concurrent requests go on as soon as they are all in."""

    pieces: list[str]
    delay_s: float = 0.0
    first_delay_s: float = 0.0
    drop_after: int | None = None
    finish: bool = True
    usage: int | None = None  # completion_tokens sent in a final usage chunk, if asked for
    together: int = 0


@dataclass
class Completion:
    """A non-streamed chat.completion with these choices."""

    choices: list[str]
    usage: int | None = None


@dataclass
class Status:
    """An error status with a JSON (dict) or text body and headers."""

    code: int
    body: dict[str, Any] | str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Drop:
    """Close the connection without answering."""


Reply = Stream | Completion | Status | Drop


@dataclass
class Call:
    """One request the server got."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closes its kept-alive connection is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class OpenAIServer:
    """The server; start() binds a free port, stop() ends it and its sleeping handlers."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.models = ["scripted-model"]
        self.disconnects = 0  # streams whose client closed before they were done
        self.disconnected = threading.Event()
        self.max_in_flight = 0
        self._in_flight = 0
        self._replies: list[Reply | Callable[[Call], Reply]] = [Stream(["Hello", " there."])]
        self._lock = threading.Lock()
        self._entered = threading.Condition(self._lock)  # notified when a request comes in
        self._stopping = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True, name="openai-test-server")

    @property
    def url(self) -> str:
        """The API root, up to /v1."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def respond(self, *replies: Reply | Callable[[Call], Reply]) -> None:
        """Replies to the next completion requests in turn; the last one repeats."""
        with self._lock:
            self._replies = list(replies)

    def completions(self) -> list[Call]:
        """The chat completion requests so far."""
        return [c for c in self.calls if c.path.endswith("/chat/completions")]

    def start(self) -> OpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._entered:
            self._entered.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def sleep(self, seconds: float) -> None:
        """Wait, unless the server stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def until_in_flight(self, count: int, seconds: float) -> None:
        """Wait until `count` requests have been in flight at once, `seconds` at most."""
        with self._entered:
            self._entered.wait_for(
                lambda: self.max_in_flight >= count or self._stopping.is_set(), seconds)

    def _next(self, call: Call) -> Reply:
        with self._lock:
            self.calls.append(call)
            reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        return reply(call) if callable(reply) else reply

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._entered.notify_all()

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            server.calls.append(Call("GET", self.path, dict(self.headers), None, time.monotonic()))
            if self.path.endswith("/models"):
                self._json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "owned_by": "test"} for m in server.models]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            reply = server._next(Call("POST", self.path, dict(self.headers), body,
                                      time.monotonic()))
            server._enter()
            try:
                self._reply(reply, body or {})
            finally:
                server._leave()

        def _reply(self, reply: Reply, body: dict[str, Any]) -> None:
            if isinstance(reply, Drop):
                self._drop()
            elif isinstance(reply, Status):
                if isinstance(reply.body, dict):
                    self._json(reply.code, reply.body, reply.headers)
                else:
                    self._send(reply.code, reply.body.encode(), "text/plain", reply.headers)
            elif isinstance(reply, Completion):
                payload: dict[str, Any] = {
                    "id": "cmpl-1", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": i, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}
                                for i, text in enumerate(reply.choices)]}
                if reply.usage is not None:
                    payload["usage"] = {"completion_tokens": reply.usage}
                self._json(200, payload)
            else:
                self._stream(reply, body)

        def _stream(self, reply: Stream, body: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            try:
                for data in _events(reply, body):
                    if data is None:  # drop here: no terminating chunk
                        self._drop()
                        return
                    self._chunk(data)
                self._chunk(b"")
            except OSError:  # the client went away
                with server._lock:
                    server.disconnects += 1
                server.disconnected.set()
                self.close_connection = True

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _json(self, code: int, payload: object, headers: dict[str, str] | None = None
                  ) -> None:
            self._send(code, json.dumps(payload).encode(), "application/json", headers or {})

        def _send(self, code: int, data: bytes, kind: str, headers: dict[str, str]) -> None:
            self.send_response(code)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _drop(self) -> None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    def _events(reply: Stream, body: dict[str, Any]) -> Iterator[bytes | None]:
        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {"id": "chunk", "object": "chat.completion.chunk", "choices": choices,
                     **extra}
            return f"data: {json.dumps(chunk)}\n\n".encode()

        if reply.together:
            server.until_in_flight(reply.together, reply.first_delay_s)
        else:
            server.sleep(reply.first_delay_s)
        yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
        for number, piece in enumerate(reply.pieces):
            if reply.drop_after is not None and number == reply.drop_after:
                yield None
                return
            if number:
                server.sleep(reply.delay_s)
            yield b": ping\n\n" + event(
                [{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        if reply.drop_after is not None:
            yield None
            return
        if reply.finish:
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if reply.usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            yield event([], usage={"completion_tokens": reply.usage})
        yield b"data: [DONE]\n\n"

    return Handler
