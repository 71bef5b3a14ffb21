"""Rate limit per user and a flood guard (the same message again and again), in memory.

Counted per user and conversation: the web channel names no user (every page is "web"), so a
per-user count alone would throttle all its customers together; its per-IP buckets apply in
front. The counts live in this process: behind several workers each counts its own share.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from bot.safety.base import GuardContext, Verdict

_MAX_USERS = 100_000  # oldest users are forgotten beyond this, so memory stays bounded


class RateGuard:
    """Blocks a user's message past `per_minute` in the last 60 s, or the `repeats`-th copy of
    one message within `window` seconds."""

    name = "rate"

    def __init__(self, per_minute: int, repeats: int, window: float) -> None:
        self.per_minute = per_minute
        self.repeats = repeats
        self.window = window
        self._times: dict[str, deque[float]] = {}
        self._texts: dict[str, deque[tuple[float, str]]] = {}
        self._lock = threading.Lock()

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Count the message, then compare with the limits."""
        now = time.monotonic() if context.now is None else context.now
        key = f"{context.channel}:{context.user_id}:{context.conversation_id}"
        same = context.folded or text.lower()
        with self._lock:
            times = self._times.pop(key, None) or deque()
            self._times[key] = times  # re-inserted: the dict stays in least-recent order
            while times and times[0] <= now - 60:
                times.popleft()
            times.append(now)
            texts = self._texts.pop(key, None) or deque()
            self._texts[key] = texts
            while texts and texts[0][0] <= now - self.window:
                texts.popleft()
            texts.append((now, same))
            copies = sum(1 for _, t in texts if t == same)
            for table in (self._times, self._texts):
                while len(table) > _MAX_USERS:
                    del table[next(iter(table))]
        if self.per_minute and len(times) > self.per_minute:
            return Verdict(self.name, False, f"{len(times)} messages in a minute", 1.0,
                           category="rate")
        if self.repeats and copies >= self.repeats:
            return Verdict(self.name, False, f"the same message {copies} times", 1.0,
                           category="flood")
        return Verdict(self.name, True, "", len(times) / self.per_minute if self.per_minute
                       else 0.0)
