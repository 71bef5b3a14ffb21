"""Operator sessions: a signed cookie (no server-side session table), and a failed-login
throttle per name and client address.

The cookie holds the operator's name, when it was issued and when it expires, signed with a key
derived from the web secret (web.secret / web.secret_file), so every worker sharing that secret
accepts it. Each request also checks the account in the database: removing an operator ends
their sessions, and so does logging out (`operators.sessions_after`: a copied cookie stops
working too, on every device).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from bot.lru import BoundedLRU

if TYPE_CHECKING:
    from bot.settings import OperatorSettings

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


Entry = tuple[int, float]  # failures counted, wall-clock time of the latest
K = TypeVar("K")


class FailureLedger(Protocol):
    """Where every worker keeps the throttle's counts (the database: OperatorStore)."""

    async def login_failures(self, keys: list[str]) -> dict[str, Entry]: ...

    async def keep_login_failures(self, entries: Mapping[str, Entry | None],
                                  stale_before: float | None = None) -> None: ...


class LoginThrottle:
    """Failed logins counted per (name, client address), and per address over all names.

    After `limit` failures of a name from one address, that pair waits `first_delay` seconds,
    then twice as long after each further failure, up to `lockout`; after `per_ip` failures
    from one address (any names), that address waits the same way. So an attacker trying a name
    from many addresses never locks its operator out of their own address. Names with and
    without an account are counted alike; twice `lockout` without a failure forgets the count,
    and a right password clears the pair's. The least recently used keys are forgotten beyond
    `max_keys`.

    The sign-in route uses the `shared_*` methods, whose counts are in a ledger (the database):
    every worker's, and they outlive restarts. They read a sign-in's two entries before deciding
    and write them after, under keys that are digests, so no typed name or address is stored.
    The plain methods count in this process only. Times are wall-clock seconds.
    """

    def __init__(self, limit: int, lockout: float, per_ip: int = 20, first_delay: float = 1.0,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self.lockout = lockout
        self.per_ip = per_ip
        self.first_delay = first_delay
        self._pairs: BoundedLRU[tuple[str, str], Entry] = BoundedLRU(max_keys)
        self._ips: BoundedLRU[str, Entry] = BoundedLRU(max_keys)
        self._lock = asyncio.Lock()  # one sign-in's read-decide-write at a time, per process
        self._next_sweep = 0.0  # when stale ledger rows are deleted next

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> LoginThrottle:
        """The throttle the operators settings ask for."""
        return cls(settings.max_failed_logins, settings.lockout_minutes * 60,
                   settings.max_failed_logins_per_ip)

    def wait(self, name: str, ip: str, now: float | None = None) -> float:
        """Seconds until `name` may be tried again from `ip`; 0.0 if it may now."""
        now = time.time() if now is None else now
        return max(self._left(self._pairs.get((name, ip)), self.limit, now),
                   self._left(self._ips.get(ip), self.per_ip, now))

    def attempt(self, name: str, ip: str, now: float | None = None) -> float:
        """Before checking a password: the wait if one is due (nothing counted), else 0.0 and
        the attempt counted as failed until `succeeded` (so that attempts sent at once are
        counted before their answers)."""
        now = time.time() if now is None else now
        wait = self.wait(name, ip, now)
        if not wait:
            self._pairs[(name, ip)] = (self._count(self._pairs.get((name, ip)), now) + 1, now)
            self._ips[ip] = (self._count(self._ips.get(ip), now) + 1, now)
        return wait

    def failed(self, name: str, ip: str, now: float | None = None) -> None:
        """A wrong password (counted at its attempt): the wait starts from now, its answer."""
        now = time.time() if now is None else now
        pair = self._pairs.get((name, ip))
        if pair is not None:
            self._pairs[(name, ip)] = (pair[0], now)
        address = self._ips.get(ip)
        if address is not None:
            self._ips[ip] = (address[0], now)

    def succeeded(self, name: str, ip: str) -> None:
        """A right password: the pair's count is cleared, the attempt not held against `ip`."""
        self._pairs.pop((name, ip))
        entry = self._ips.get(ip)
        if entry is not None:
            self._ips[ip] = (max(0, entry[0] - 1), entry[1])

    @staticmethod
    def keys(name: str, ip: str) -> tuple[str, str]:
        """The ledger's keys of a (name, address) pair and of the address: digests."""
        pair = hashlib.sha256(f"pair\0{name}\0{ip}".encode("utf-8", "replace")).hexdigest()
        address = hashlib.sha256(f"ip\0{ip}".encode("utf-8", "replace")).hexdigest()
        return pair, address

    def entries(self, name: str, ip: str) -> dict[str, Entry | None]:
        """This sign-in's two entries, under the ledger's keys."""
        pair, address = self.keys(name, ip)
        return {pair: self._pairs.get((name, ip)), address: self._ips.get(ip)}

    def restore(self, name: str, ip: str, kept: Mapping[str, Entry]) -> None:
        """Take this sign-in's two entries from the ledger (what every worker counted)."""
        pair, address = self.keys(name, ip)
        _put(self._pairs, (name, ip), kept.get(pair))
        _put(self._ips, ip, kept.get(address))

    async def _load(self, ledger: FailureLedger, name: str, ip: str) -> None:
        """Take this sign-in's two entries from the ledger, as every worker left them."""
        self.restore(name, ip, await ledger.login_failures(list(self.keys(name, ip))))

    async def shared_attempt(self, ledger: FailureLedger, name: str, ip: str) -> float:
        """`attempt`, with the counts of every worker (read, decided, written under a lock, so
        attempts sent at once to this process are all counted)."""
        async with self._lock:
            await self._load(ledger, name, ip)
            wait = self.attempt(name, ip)
            if not wait:
                now = time.time()
                stale = now - 2 * self.lockout if now >= self._next_sweep else None
                await ledger.keep_login_failures(self.entries(name, ip), stale)
                if stale is not None:
                    self._next_sweep = now + 600.0
            return wait

    async def shared_failed(self, ledger: FailureLedger, name: str, ip: str) -> None:
        """`failed`, written to the ledger."""
        async with self._lock:
            await self._load(ledger, name, ip)
            self.failed(name, ip)
            await ledger.keep_login_failures(self.entries(name, ip))

    async def shared_succeeded(self, ledger: FailureLedger, name: str, ip: str) -> None:
        """`succeeded`, written to the ledger."""
        async with self._lock:
            await self._load(ledger, name, ip)
            self.succeeded(name, ip)
            await ledger.keep_login_failures(self.entries(name, ip))

    def _count(self, entry: Entry | None, now: float) -> int:
        """Failures counted so far: 0 when none, or the last is over twice `lockout` ago."""
        if entry is None or now - entry[1] > 2 * self.lockout:
            return 0
        return entry[0]

    def _left(self, entry: Entry | None, limit: int, now: float) -> float:
        count = self._count(entry, now)
        if entry is None or count < limit:
            return 0.0
        delay = min(self.lockout, self.first_delay * 2.0 ** min(count - limit, 40))
        return max(0.0, entry[1] + delay - now)


def _put(table: BoundedLRU[K, Entry], key: K, entry: Entry | None) -> None:
    """Set `key` to `entry`, or forget it for None."""
    if entry is None:
        table.pop(key)
    else:
        table[key] = entry
