"""Operator sessions: a signed cookie (no server-side session table), and a failed-login
throttle per name.

The cookie holds the operator's name, when it was issued and when it expires, signed with a key
derived from the web secret (web.secret / web.secret_file), so every worker sharing that secret
accepts it. Each request also checks the account in the database: removing an operator ends
their sessions, and so does logging out (`operators.sessions_after`: a copied cookie stops
working too, on every device). Wrong passwords are counted in the database as well, so the
lockout holds across workers; this process's own count also covers names without an account.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import OrderedDict

COOKIE = "supportbot_operator"
COOKIE_PATH = "/operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and checks session cookie values: base64(JSON {n: name, e: expiry, i: issued
    in milliseconds}).signature."""

    def __init__(self, key: bytes, hours: float) -> None:
        self._key = key
        self.seconds = hours * 3600

    def issue(self, name: str, now: float | None = None) -> tuple[str, float]:
        """A cookie value for `name`, and when it expires (Unix time)."""
        issued = time.time() if now is None else now
        expires = issued + self.seconds
        payload = _b64(json.dumps({"n": name, "e": int(expires), "i": int(issued * 1000)},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", float(int(expires))

    def verify(self, value: str | None, now: float | None = None) -> str | None:
        """The operator's name if `value` is a genuine cookie that has not expired."""
        session = self.session(value, now)
        return None if session is None else session[0]

    def session(self, value: str | None, now: float | None = None
                ) -> tuple[str, float] | None:
        """The operator's name and when the cookie was issued (Unix time), if `value` is a
        genuine cookie that has not expired."""
        if not value or value.count(".") != 1 or len(value) > 1024:
            return None
        payload, signature = value.split(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            name, expires, issued = data["n"], data["e"], data["i"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(name, str) or not all(type(v) is int for v in (expires, issued)):
            return None
        if (time.time() if now is None else now) >= expires:
            return None
        return name, issued / 1000

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, b"operator-session:" + payload.encode(),
                             hashlib.sha256).digest())


class LoginThrottle:
    """Refuses logins to a name for `lockout` seconds after `limit` wrong passwords in a row.

    Per process, bounded in memory: the names tried least recently are forgotten beyond
    `max_names`. A right password clears the count. Accounts are also counted in the database
    (OperatorStore.login_failed), which every worker sees; this covers unknown names too.
    """

    def __init__(self, limit: int, lockout: float, max_names: int = 10_000) -> None:
        self.limit = limit
        self.lockout = lockout
        self.max_names = max_names
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait(self, name: str, now: float | None = None) -> float:
        """Seconds until `name` may try again; 0.0 if it may now."""
        now = time.monotonic() if now is None else now
        count, last = self._failures.get(name, (0, 0.0))
        if count < self.limit:
            return 0.0
        left = last + self.lockout - now
        if left <= 0:  # served its time: one more try, then locked again if wrong
            self._failures[name] = (self.limit - 1, last)
            return 0.0
        return left

    def failed(self, name: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        count, _ = self._failures.pop(name, (0, 0.0))
        self._failures[name] = (count + 1, now)
        if len(self._failures) > self.max_names:
            self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
