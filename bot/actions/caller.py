"""Calling an action's HTTP API safely (issue 34): allowed hosts, bounded time and size.

Only hosts in `allowed_hosts` are called, checked after templating and at every redirect hop
(a 3xx is followed only to the same host, at most 3 hops). The whole call, retries included,
ends within the action's `timeout_s` (capped at `max_timeout_s`); retries are for idempotent
methods only, on connect errors and 502/503/504. The response is streamed and abandoned past
`max_bytes`. A circuit breaker per action fails fast after `breaker_failures` consecutive
failures, for `breaker_seconds`, then lets one trial call through. Records and logs hold the
action id, method, host, status, outcome and duration: never a body, header or secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bot.actions.model import Action, unsafe_value
from bot.actions.templates import MissingEnv, render_body, render_plain, render_url

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
RETRY_STATUSES = frozenset({502, 503, 504})
# Outcomes that count against the breaker: the system behind the action is failing.
SYSTEM_FAILURES = frozenset({"timeout", "connect", "bad_json", "too_large"})


@dataclass(frozen=True)
class CallResult:
    """How a call went: `data` is the parsed JSON when `ok`; `error` is one of "timeout",
    "connect", "http_status", "bad_json", "too_large", "host_not_allowed", "redirect",
    "breaker_open", "missing_env", "bad_url"; `detail` a safe sentence (never a secret)."""

    ok: bool
    status: int | None
    duration_ms: float
    data: Any | None = None
    error: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class CallRecord:
    """What is kept of every call for metrics and storage: no body, header or secret."""

    action: str
    method: str
    host: str
    status: int | None
    outcome: str
    duration_ms: float


class _Failure(Exception):
    """A call that ends with an error outcome (internal)."""

    def __init__(self, error: str, status: int | None = None, detail: str | None = None):
        super().__init__(error)
        self.error, self.status, self.detail = error, status, detail


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float | None = None
    trial: bool = False


def _host_key(url: httpx.URL) -> tuple[str, int]:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.host.lower(), port


class ActionCaller:
    """Makes actions' calls; one per process, shared by every conversation."""

    def __init__(self, allowed_hosts: Sequence[str], *, max_bytes: int = 1_000_000,
                 retries: int = 2, breaker_failures: int = 5, breaker_seconds: float = 30.0,
                 max_timeout_s: float = 10.0, environ: Mapping[str, str] | None = None,
                 on_call: Callable[[CallRecord], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 backoff_s: float = 0.1) -> None:
        self._allowed = [_parse_allowed(host) for host in allowed_hosts]
        self.max_bytes = max_bytes
        self.retries = retries
        self.breaker_failures = breaker_failures
        self.breaker_seconds = breaker_seconds
        self.max_timeout_s = max_timeout_s
        self._environ = environ
        self._on_call = on_call
        self._clock = clock
        self._backoff_s = backoff_s
        self._breakers: dict[str, _Breaker] = {}
        # trust_env=False: no proxies or .netrc credentials from the environment.
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                         trust_env=False)

    def allowed(self, url: httpx.URL) -> bool:
        """Whether `url`'s host (and port, when the allowed entry names one) is allowed."""
        host, port = _host_key(url)
        return any(host == a_host and a_port in (None, port) for a_host, a_port in self._allowed)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def call(self, action: Action, values: Mapping[str, str]) -> CallResult:
        """Make `action`'s call with the slot `values`; never raises for the API's faults."""
        started = time.monotonic()
        method, host = action.call.method, "-"
        breaker = self._breakers.setdefault(action.id, _Breaker())
        admitted = False
        try:
            if not self._admit(breaker):
                raise _Failure("breaker_open", detail="too many recent failures")
            admitted = True
            request = self._request(action, values)
            host = request.url.netloc.decode("ascii", "replace")
            status, data = await self._within_deadline(action, request, started)
            result = CallResult(True, status, _ms(started), data)
        except _Failure as failure:
            result = CallResult(False, failure.status, _ms(started), None, failure.error,
                                failure.detail)
        except BaseException:  # cancelled (the customer left): a trial must not stay taken
            if admitted:
                breaker.trial = False
            raise
        self._settle(breaker, result)
        self._record(CallRecord(action.id, method, host, result.status,
                                result.error or "ok", result.duration_ms))
        return result

    # --- the breaker ------------------------------------------------------------------------

    def _admit(self, breaker: _Breaker) -> bool:
        if breaker.open_until is None:
            return True
        if breaker.trial or self._clock() < breaker.open_until:
            return False
        breaker.trial = True  # half-open: this call is the one trial
        return True

    def _settle(self, breaker: _Breaker, result: CallResult) -> None:
        if result.error == "breaker_open":
            return
        failed = result.error in SYSTEM_FAILURES or (
            result.error == "http_status" and (result.status or 0) >= 500)
        if result.error in ("missing_env", "bad_url", "host_not_allowed", "redirect"):
            failed = breaker.trial  # a configuration fault: the trial is not conclusive
        breaker.trial = False
        if not failed:
            breaker.failures, breaker.open_until = 0, None
            return
        breaker.failures += 1
        if breaker.open_until is not None or breaker.failures >= self.breaker_failures:
            breaker.open_until = self._clock() + self.breaker_seconds

    def _record(self, record: CallRecord) -> None:
        logger.info("action %s: %s %s -> %s %s in %.0f ms", record.action, record.method,
                    record.host, record.status, record.outcome, record.duration_ms)
        if self._on_call is not None:
            try:
                self._on_call(record)
            except Exception:  # a metrics hook must not break a customer's turn
                logger.exception("the on_call hook failed for action %s", record.action)

    # --- the request ------------------------------------------------------------------------

    def _request(self, action: Action, values: Mapping[str, str]) -> httpx.Request:
        environ = os.environ if self._environ is None else self._environ
        call = action.call
        for name, value in values.items():
            if unsafe_value(value):  # Slot.find never yields these; a caller might
                raise _Failure("bad_url", detail=f"the value of {name} is not sent as given")
        try:
            url_text = render_url(call.url, values, environ)
            headers = [(name, render_plain(text, values, environ))
                       for name, text in call.headers]
        except MissingEnv as exc:
            raise _Failure("missing_env", detail=str(exc)) from None
        except KeyError as exc:
            raise _Failure("bad_url", detail=f"no value for the slot {exc}") from None
        try:
            url = httpx.URL(url_text)
        except (httpx.InvalidURL, ValueError):
            raise _Failure("bad_url", detail="the URL is malformed") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise _Failure("bad_url", detail="the URL must be http:// or https:// with a host")
        if url.userinfo:
            raise _Failure("bad_url", detail="the URL must not hold a user name or password")
        if not self.allowed(url):
            raise _Failure("host_not_allowed", detail=f"{url.host} is not in allowed_hosts")
        body = None if call.body is None else json.dumps(render_body(call.body, values))
        headers.append(("Accept", "application/json"))
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        return self._client.build_request(call.method, url, headers=headers, content=body)

    async def _within_deadline(self, action: Action, request: httpx.Request, started: float
                               ) -> tuple[int, Any]:
        budget = min(action.call.timeout_s, self.max_timeout_s)
        deadline = started + budget
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Failure("timeout", detail=f"no answer within {budget:g} s")
            try:
                return await asyncio.wait_for(self._attempt(request, remaining), remaining)
            except asyncio.TimeoutError:
                raise _Failure("timeout", detail=f"no answer within {budget:g} s") from None
            except _Failure as failure:
                retry = failure.error == "connect" or failure.status in RETRY_STATUSES
                pause = self._backoff_s * (2 ** attempt)
                if (not retry or not action.call.idempotent or attempt >= self.retries
                        or time.monotonic() + pause >= deadline):
                    raise
            attempt += 1
            await asyncio.sleep(pause)

    async def _attempt(self, request: httpx.Request, remaining: float) -> tuple[int, Any]:
        """One try: the request and the redirects it is allowed to follow."""
        timeout = httpx.Timeout(remaining)
        for _ in range(MAX_REDIRECTS + 1):
            request.extensions["timeout"] = timeout.as_dict()
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TimeoutException:
                raise _Failure("timeout", detail="the API did not answer in time") from None
            except httpx.HTTPError:
                raise _Failure("connect", detail="the API cannot be reached") from None
            try:
                if response.is_redirect:
                    request = self._redirected(request, response)
                    continue
                if response.status_code >= 400:
                    raise _Failure("http_status", response.status_code,
                                   f"the API answered {response.status_code}")
                return response.status_code, await self._json(response)
            finally:
                await response.aclose()
        raise _Failure("redirect", detail=f"more than {MAX_REDIRECTS} redirects")

    def _redirected(self, request: httpx.Request, response: httpx.Response) -> httpx.Request:
        location = response.headers.get("location", "")
        try:
            target = request.url.join(location)
        except (httpx.InvalidURL, ValueError):
            raise _Failure("redirect", response.status_code, "a malformed redirect") from None
        if (not location or target.scheme != request.url.scheme or target.userinfo
                or _host_key(target) != _host_key(request.url) or not self.allowed(target)):
            raise _Failure("redirect", response.status_code, "a redirect to another host")
        keep = response.status_code in (307, 308)
        method = request.method if keep or request.method == "GET" else "GET"
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if keep or k.lower() not in ("content-type", "content-length")]
        return self._client.build_request(method, target, headers=headers,
                                          content=request.content if keep else None)

    async def _json(self, response: httpx.Response) -> Any:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _Failure("too_large", response.status_code, "the answer is too large")
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise _Failure("too_large", response.status_code, "the answer is too large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip() and response.status_code == 204:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Failure("bad_json", response.status_code, "the answer is not JSON") from None


def _parse_allowed(entry: str) -> tuple[str, int | None]:
    """"host" (any port) or "host:port", lower-cased."""
    host, sep, port = entry.strip().lower().rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host.strip("[]"), int(port)
    return entry.strip().lower().strip("[]"), None


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
