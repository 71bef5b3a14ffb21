"""Conversation tokens (who may read and write a conversation) and token-bucket rate limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from bot.errors import SettingsError
from bot.lru import BoundedLRU
from bot.settings import WebSettings

_SECRET_BYTES = 32
# What a browser's Sec-Fetch-Site says of a request the bot's own page (or the user) made.
_OWN_FETCH_SITES = ("same-origin", "none")
_PREFIX = "web-"
_SOURCE_HEX = 24  # 96 bits of a client's digest: distinct clients never share a source


class ConversationTokens:
    """Issues conversation ids with their secret tokens, and verifies a token for an id.

    A token is an HMAC of the id under the server's key: nothing to store, and every worker
    sharing the key accepts it. Ids carry 128 random bits, so nobody guesses another's.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise SettingsError(["web.secret: use at least 16 characters"])
        self._key = key

    @classmethod
    def from_settings(cls, web: WebSettings) -> ConversationTokens:
        """The key from web.secret, else from web.secret_file (created once, mode 0600)."""
        if web.secret is not None:
            return cls(web.secret.get_secret_value().encode())
        return cls(_key_file(web.secret_file))

    def derived_key(self, purpose: str) -> bytes:
        """A key for another signature (operator sessions), derived from the server's key so
        that nothing signed for one purpose verifies for another."""
        return hmac.new(self._key, b"derive:" + purpose.encode(), hashlib.sha256).digest()

    def client_digest(self, address: str) -> str:
        """Who a web customer is for learning's per-customer shares (bot/learning/): the client
        address under a key derived from the server's, so that one address always gives the
        same source (on every worker) and the address itself is never stored."""
        digest = hmac.new(self.derived_key("learning-sources"), address.encode(),
                          hashlib.sha256).hexdigest()
        return f"web:{digest[:_SOURCE_HEX]}"

    def new(self) -> tuple[str, str]:
        """A new conversation id and its token."""
        conversation_id = _PREFIX + secrets.token_hex(16)
        return conversation_id, self.token(conversation_id)

    def token(self, conversation_id: str) -> str:
        """The token of a conversation id."""
        digest = hmac.new(self._key, b"conversation:" + conversation_id.encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, conversation_id: str, token: str) -> bool:
        """Whether `token` opens `conversation_id` (constant time)."""
        if not conversation_id.startswith(_PREFIX) or len(conversation_id) > 128:
            return False
        return hmac.compare_digest(self.token(conversation_id).encode(), token.encode())


def _key_file(path: Path) -> bytes:
    """Read the key file, creating it with a random key when missing (race-safe)."""
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the database's
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SettingsError([f"web.secret_file: cannot create {path}: {exc.strerror}"]) from exc
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(_SECRET_BYTES))
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise SettingsError([f"web.secret_file: cannot read {path}: {exc.strerror}"]) from exc
    if not key:  # another worker has created it and not written it yet
        time.sleep(0.1)
        key = path.read_text().strip()
    if len(key) < 16:
        raise SettingsError([f"web.secret_file: {path} holds {len(key)} characters; "
                             "delete it to get a new random key"])
    return key.encode()


class RateLimiter:
    """Token buckets per key (an IP, a connection, a conversation).

    Each key may spend `burst` at once and then `rate` per second; the least recently used
    keys are forgotten beyond `max_keys`, so memory stays bounded under many clients.
    """

    def __init__(self, rate: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: BoundedLRU[str, tuple[float, float]] = BoundedLRU(max_keys)

    def hit(self, key: str, now: float | None = None) -> float:
        """Spend one token for `key`: 0.0 if allowed, else the seconds until one is free."""
        now = time.monotonic() if now is None else now
        tokens, updated = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        return wait


def same_origin(origin: str, host: str) -> bool:
    """Whether a browser's Origin header names the host (and port) it connected to."""
    return urlsplit(origin).netloc.lower() == host.lower()


def foreign_request(headers: Mapping[str, str]) -> str | None:
    """Who sent a browser request that the bot's own pages did not send (another origin,
    another site, another port of this host), or None when they did. Clients that are not
    browsers send neither Origin nor Sec-Fetch-Site, and pass."""
    origin = headers.get("origin")
    if origin is not None and not same_origin(origin, headers.get("host", "")):
        return f"origin {origin[:100]}"
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _OWN_FETCH_SITES:
        return f"a {site[:20]} page"
    return None
