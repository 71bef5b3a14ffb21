"""Waiting on a condition instead of the clock: poll it until it holds, within a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, seconds: float = 10.0,
             interval: float = 0.01) -> T:
    """The first true value of `condition()`, polled every `interval`; fails the test after
    `seconds` saying what did not happen."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(interval)
