"""The openai backend: a client of any model server speaking the OpenAI chat completions API
(vLLM, TGI, llama.cpp's server or llama-cpp-python's, Ollama).

One completion is streamed (server-sent events): text reaches the customer as it is written, and
a stopped row closes the response, which makes the server abort it. n > 1 are asked for in plain
requests, until there are n (llama.cpp's servers ignore `n`). 429, 5xx, no connection and no
reply are retried with exponential backoff, only while none of the request's text was handed on.

top_k and the repetition penalty are not in the OpenAI schema: they go as the extra fields vLLM
(`top_k`, `repetition_penalty`) and llama.cpp's servers (`top_k`, `repeat_penalty`) read, and
others ignore. A server that refuses them (400 or 422 naming one, as api.openai.com does) is
asked again without them, and never sent them again.

llama-cpp-python's server (0.3) reads top_k and repeat_penalty, ignores n, stream_options and
unknown fields, stops generating for a client that went away, and runs one request at a time:
start it with `--interrupt_requests false`, else a new request ends the running stream with
[DONE] but no finish_reason (taken here as a stream stopped early).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import httpx

from bot.errors import ModelError
from bot.generation.base import Prompt, StopCheck, TextSink
from bot.settings import GenerationSettings, OpenAISettings

T = TypeVar("T")
_EXTRA_FIELDS = ("top_k", "repetition_penalty", "repeat_penalty", "stream_options")


class _Retry(Exception):
    """A failure worth another try; the final message is `head` [after N retries]: `detail`."""

    def __init__(self, head: str, detail: str = "", wait_s: float | None = None,
                 free: bool = False) -> None:
        super().__init__(head)
        self.head, self.detail, self.wait_s = head, detail, wait_s
        self.free = free  # resend at once, not counted (the request changed)


def estimate_tokens(prompt: Prompt) -> int:
    """A cautious token count without the model's tokenizer: 0.4 per ASCII letter (English runs
    at ~4 characters per token), 1 per digit and per ASCII symbol (digits are often single
    tokens), 2/3 per UTF-8 byte of anything else (Cyrillic, CJK and emoji split into byte
    pieces in small vocabularies), 6 per message for the chat template's markers and 8 for the
    reply's opening and a default system prompt. Against SmolLM2's tokenizer it over-counts the
    sample FAQ by ~40%, and digits, German, Russian, Chinese and emoji by 7-40%: a prompt is cut
    a little early rather than refused by the server. Set model.openai.tokenizer to count."""
    total = 8.0
    for message in prompt:
        total += 6
        for char in message.get("content", ""):
            if char.isascii():
                total += 0.4 if char.isalpha() else 0.0 if char.isspace() else 1.0
            else:
                total += len(char.encode()) * 2 / 3
    return math.ceil(total)


class OpenAIGenerator:
    """The Generator interface over HTTP; safe to call from several threads at once (one
    shared connection pool of `concurrency` connections)."""

    def __init__(self, settings: OpenAISettings, context_tokens: int,
                 tokenizer: Any = None) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.name = settings.model or self.base_url  # the model's name once it is known
        self.context_tokens = context_tokens
        self.tokenizer = tokenizer  # a transformers tokenizer, or None: estimate_tokens
        self.tokens_generated = 0  # completion tokens: the server's usage, else pieces counted
        self._model = settings.model or None
        self._extras = True  # send the non-OpenAI sampling fields (until a server refuses them)
        self._lock = threading.Lock()  # the counter, the tokenizer
        self._model_lock = threading.Lock()
        self._closed = threading.Event()
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s,
                                  pool=None),  # waiting for a free connection: no limit
            limits=httpx.Limits(max_connections=settings.concurrency,
                                max_keepalive_connections=settings.concurrency))

    @classmethod
    def from_settings(cls, settings: OpenAISettings, context_tokens: int) -> OpenAIGenerator:
        """A client for `model.openai`; loads its tokenizer if one is set (the server is first
        contacted by the first generation)."""
        tokenizer = None
        if settings.tokenizer:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer)
            except (OSError, ValueError) as exc:
                raise ModelError(f"model.openai.tokenizer: cannot load tokenizer "
                                 f"'{settings.tokenizer}': {exc}") from exc
        return cls(settings, context_tokens, tokenizer)

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens of the chat-templated prompt with model.openai.tokenizer; without one, the
        cautious estimate of `estimate_tokens`."""
        if self.tokenizer is None:
            return estimate_tokens(prompt)
        with self._lock:  # a fast tokenizer is not safe to share between threads
            text = self.tokenizer.apply_chat_template(prompt, tokenize=False,
                                                      add_generation_prompt=True)
            return len(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])

    def model(self) -> str:
        """The model name: the setting, else the first id of the server's /models (asked once)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    try:
                        self._model = self._retrying(self._first_model, lambda: False, "")
                    except ModelError as exc:
                        raise ModelError(f"model.openai.model is empty and the server's model "
                                         f"list could not be read: {exc}") from exc
                    self.name = self._model
        return self._model

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        """params.n completions per prompt; several prompts are requested concurrently.

        With n == 1 the reply is streamed: `on_text` gets each piece, `should_stop` is asked
        after each one. The callbacks are never called from two threads at once.
        """
        if self._closed.is_set():
            raise ModelError(f"the client of the model server at {self.base_url} is closed")
        if len(prompts) <= 1:
            return [self._complete(row, p, params, on_text, should_stop)
                    for row, p in enumerate(prompts)]
        lock, failed = threading.Lock(), threading.Event()

        def sink(row: int, text: str) -> None:
            with lock:
                if on_text is not None:
                    on_text(row, text)

        def stop(row: int) -> bool:  # a failed row ends the others: the batch has failed
            with lock:
                return failed.is_set() or (should_stop is not None and should_stop(row))

        def run(row: int) -> list[str]:
            try:
                return self._complete(row, prompts[row], params,
                                      sink if on_text is not None else None, stop)
            except BaseException:
                failed.set()
                raise

        with ThreadPoolExecutor(len(prompts), thread_name_prefix="openai-row") as pool:
            futures = [pool.submit(run, row) for row in range(len(prompts))]
            return [future.result() for future in futures]

    def close(self) -> None:
        """Stop waiting retries and close the connections (running streams end with an error)."""
        self._closed.set()
        self._client.close()

    def _complete(self, row: int, prompt: Prompt, params: GenerationSettings,
                  on_text: TextSink | None, should_stop: StopCheck | None) -> list[str]:
        def stop() -> bool:
            return should_stop is not None and should_stop(row)

        if params.n == 1:
            emit = (lambda text: on_text(row, text)) if on_text is not None else None
            return [self._stream(prompt, params, emit, stop)]
        texts: list[str] = []  # not streamed: timeout_s bounds the wait for all of a reply
        while len(texts) < params.n and not stop():  # until the server has given n
            texts += self._retrying(partial(self._post, prompt, params, params.n - len(texts)),
                                    stop, [])
        return (texts + [""] * params.n)[:params.n]

    def _stream(self, prompt: Prompt, params: GenerationSettings,
                emit: Callable[[str], None] | None, stop: Callable[[], bool]) -> str:
        pieces: list[str] = []  # handed on: from then on, no retry

        def attempt() -> str:
            finished, usage = False, None
            try:
                with self._client.stream("POST", f"{self.base_url}/chat/completions",
                                         json=self._body(prompt, params, 1, True)) as response:
                    self._check(response)
                    last = time.monotonic()
                    for data in _sse_data(response.iter_lines()):
                        if data is None:  # keep-alive pings do not count as a reply
                            if time.monotonic() - last > self.settings.timeout_s:
                                raise httpx.ReadTimeout("only keep-alive pings")
                            continue
                        last = time.monotonic()
                        if data == "[DONE]":
                            break
                        chunk = self._json(data)
                        usage = (chunk.get("usage") or {}).get("completion_tokens", usage)
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content") or ""
                            finished = finished or bool(choice.get("finish_reason"))
                            if text:
                                pieces.append(text)
                                if emit is not None:
                                    emit(text)
                        if stop():  # leaving closes the response: the server aborts
                            return self._finish(pieces, None)
            except httpx.TransportError as exc:
                raise self._failure(exc, len("".join(pieces))) from exc
            if not finished:  # [DONE] or the end without a finish_reason: cut short
                if pieces:
                    raise ModelError(f"the model server at {self.base_url} stopped the stream "
                                     f"after {len(''.join(pieces))} characters")
                raise _Retry(f"the model server at {self.base_url} ended the stream early")
            return self._finish(pieces, usage)

        return self._retrying(attempt, stop, "") if not stop() else ""

    def _finish(self, pieces: list[str], usage: Any) -> str:
        with self._lock:
            self.tokens_generated += usage if isinstance(usage, int) else len(pieces)
        return "".join(pieces).strip()

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One plain request: its JSON object, or a _Retry or ModelError."""
        try:
            response = self._client.request(method, f"{self.base_url}{path}", json=body)
        except httpx.TransportError as exc:
            raise self._failure(exc) from exc
        self._check(response)
        return self._json(response.text)

    def _post(self, prompt: Prompt, params: GenerationSettings, n: int) -> list[str]:
        payload = self._request("POST", "/chat/completions",
                                self._body(prompt, params, n, False))
        texts = [str((c.get("message") or {}).get("content") or "").strip()
                 for c in payload.get("choices") or []]
        if not texts:
            raise ModelError(f"the model server at {self.base_url} answered without choices")
        usage = (payload.get("usage") or {}).get("completion_tokens")
        with self._lock:  # without usage, ~4 bytes a token
            self.tokens_generated += usage if isinstance(usage, int) else sum(
                math.ceil(len(t.encode()) / 4) for t in texts)
        return texts

    def _first_model(self) -> str:
        models = self._request("GET", "/models").get("data") or [{}]
        if not isinstance(models[0], dict) or not models[0].get("id"):
            raise ModelError(f"the model server at {self.base_url} lists no models: set "
                             "model.openai.model")
        return str(models[0]["id"])

    def _body(self, prompt: Prompt, params: GenerationSettings, n: int,
              stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model(), "messages": list(prompt), "stream": stream,
            "temperature": params.sampling_temperature,  # 0: greedy
            "top_p": params.top_p, "max_tokens": params.max_new_tokens}
        if n > 1:
            body["n"] = n
        if self._extras:
            if stream:
                body["stream_options"] = {"include_usage": True}
            if params.top_k:  # 0 (off) is left out: vLLM's "off" was -1 for a long time
                body["top_k"] = params.top_k
            body["repetition_penalty"] = body["repeat_penalty"] = params.repetition_penalty
        return body

    def _retrying(self, attempt: Callable[[], T], stop: Callable[[], bool], stopped: T) -> T:
        """attempt(), again after a _Retry, with backoff; `stopped` if stop() while waiting."""
        retries = 0
        while True:
            try:
                return attempt()
            except _Retry as exc:
                if exc.free:
                    continue
                if retries >= self.settings.max_retries:
                    after = f" after {retries} retries" if retries else ""
                    detail = f": {exc.detail}" if exc.detail else ""
                    raise ModelError(f"{exc.head}{after}{detail}") from exc
                wait = self.settings.backoff_s * 2 ** retries
                if exc.wait_s is not None:  # Retry-After, up to the reply timeout
                    wait = min(exc.wait_s, self.settings.timeout_s)
                retries += 1
                if self._closed.wait(wait):
                    raise ModelError(f"{exc.head} (the client was closed)") from exc
                if stop():
                    return stopped

    def _check(self, response: httpx.Response) -> None:
        """Raise what an error status means: _Retry for 429 and 5xx, else ModelError."""
        status = response.status_code
        if status < 300:
            return
        detail, where = _message(response.read().decode(errors="replace")), \
            f"the model server at {self.base_url}"
        if status == 429 or status >= 500:
            try:  # Retry-After in seconds (its HTTP-date form is ignored)
                wait: float | None = max(0.0, float(response.headers.get("retry-after", "")))
            except ValueError:
                wait = None
            raise _Retry(f"{where} answered {status}", detail, wait)
        if status in (400, 422) and self._extras and any(f in detail for f in _EXTRA_FIELDS):
            self._extras = False  # it refuses fields it does not know: never send them again
            raise _Retry(f"{where} answered {status}", detail, free=True)
        if status in (401, 403):
            raise ModelError(f"{where} refused the request ({status}): the api key "
                             f"(model.openai.api_key) is missing or wrong: {detail}")
        hint = " (check model.openai.model, and base_url: up to /v1)" if status == 404 else ""
        raise ModelError(f"{where} refused the request ({status}){hint}: {detail}")

    def _failure(self, exc: httpx.TransportError, shown: int = 0) -> Exception:
        """A transport error as _Retry, or as ModelError once `shown` characters went out."""
        where = f"the model server at {self.base_url}"
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ModelError(f"model.openai.base_url '{self.base_url}': {exc}")
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, httpx.ConnectTimeout):
                reason = f"no connection within {self.settings.connect_timeout_s:g} s"
            elif "refused" in reason.lower():
                reason = "connection refused"
            return _Retry(f"cannot reach {where}", reason)
        timeout = self.settings.timeout_s
        if isinstance(exc, httpx.TimeoutException):
            head, detail = f"no reply from {where} within {timeout:g} s", ""
        else:
            head, detail = f"{where} closed the connection", str(exc) or type(exc).__name__
        if shown:
            return ModelError(f"{where} stopped the stream after {shown} characters: "
                              f"{detail or f'nothing more within {timeout:g} s'}")
        return _Retry(head, detail)

    def _json(self, text: str) -> dict[str, Any]:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise ModelError(f"the model server at {self.base_url} sent something that is not "
                             f"a JSON object: {text[:200]!r}")
        if "error" in payload and not payload.get("choices"):  # an error inside a stream
            raise ModelError(f"the model server at {self.base_url} reported an error: "
                             f"{_message(text)}")
        return payload


def _sse_data(lines: Iterator[str]) -> Iterator[str | None]:
    """The data of each server-sent event (multi-line data joined); None for every other line
    (comments, pings, event names), so that the reader can watch its clock."""
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if not line and data:
            yield "\n".join(data)
            data = []
        else:
            yield None
    if data:
        yield "\n".join(data)


def _message(text: str) -> str:
    """The message of an OpenAI, vLLM or FastAPI error body, else the body; 200 characters."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        found = payload.get("error") or payload.get("message") or payload.get("detail")
        if isinstance(found, dict):
            found = found.get("message") or found
        text = found if isinstance(found, str) else json.dumps(found) if found else text
    return " ".join(text.split())[:200] or "(empty body)"
