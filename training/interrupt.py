"""Stop signals and time-based saves during training, agreed on by every rank.

A SIGTERM (a scheduler's preemption, a CI time limit) or a Ctrl+C (SIGINT) only raises a flag:
the loop finishes its optimizer step, then every rank learns of it through one collective and
all of them save together (a rank that saved alone would leave the others waiting in a
collective forever). The same collective carries rank 0's "a checkpoint is due by the clock",
since ranks' clocks disagree.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as torch_dist

if TYPE_CHECKING:
    from training.loop import Dist

# The exit status of a stopped run is the shells' for a process killed by that signal
# (128 + its number), so scripts and schedulers read it as they would have anyway.
EXIT_STATUS = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A SIGINT this soon after the first is the same Ctrl+C: under torchrun each rank gets the
# terminal's SIGINT and then the one torchrun forwards, within milliseconds.
SAME_PRESS_S = 1.0


@dataclass
class StopFlag:
    """Which signal asked this process to stop (None: none yet)."""

    signal_name: str | None = None
    installed: bool = False
    first_at: float = 0.0

    def raise_for(self, signum: int) -> None:
        """What the handler does: remember the first signal; a second Ctrl+C (a second or more
        after the first) exits at once (os._exit: no save, no cleanup); a repeated SIGTERM is
        ignored so that the save finishes."""
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            if name == "SIGINT" and time.monotonic() - self.first_at >= SAME_PRESS_S:
                os._exit(EXIT_STATUS["SIGINT"])
            return
        self.signal_name, self.first_at = name, time.monotonic()


@contextmanager
def catching_stops() -> Iterator[StopFlag]:
    """SIGINT and SIGTERM raise the yielded flag while inside; the previous handlers come back
    after. Outside the main thread (where Python allows no handlers) nothing is caught."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        flag.raise_for(signum)

    previous: dict[int, Any] = {s: signal.signal(s, handle) for s in _SIGNALS}
    flag.installed = True
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@dataclass
class SaveClock:
    """Rank 0's clock for checkpoints every `minutes` (0: never by time)."""

    minutes: float
    last: float = field(default_factory=time.monotonic)

    def due(self) -> bool:
        return bool(self.minutes) and time.monotonic() - self.last >= self.minutes * 60

    def saved(self) -> None:
        self.last = time.monotonic()


@dataclass(frozen=True)
class Decision:
    """What every rank does after a step: stop (by which signal) and/or save by the clock."""

    stop: str | None
    save_due: bool


_CODES = {None: 0.0, "SIGINT": 1.0, "SIGTERM": 2.0}


def agree(flag: StopFlag, clock: SaveClock, dist: Dist, device: torch.device) -> Decision:
    """The same decision on every rank after an optimizer step: stop if any rank was signalled
    (SIGTERM wins over SIGINT), save by time if rank 0's clock says so. One all_reduce of two
    numbers per step."""
    due = clock.due() if dist.main else False
    stop, due = _reduce(flag, due, dist, device)
    return Decision(stop, due)


def agree_stop(flag: StopFlag, dist: Dist, device: torch.device) -> str | None:
    """Before each micro-batch: has any rank been signalled? So a stop is answered within one
    micro-batch's time, not a whole optimizer step's (with grad_accum 8 on a CPU, minutes: more
    than a scheduler's grace period)."""
    return _reduce(flag, False, dist, device)[0]


def _reduce(flag: StopFlag, due: bool, dist: Dist, device: torch.device) -> tuple[str | None, bool]:
    if dist.world_size == 1:
        return flag.signal_name, due
    both = torch.tensor([_CODES[flag.signal_name], float(due)], device=device)
    torch_dist.all_reduce(both, op=torch_dist.ReduceOp.MAX)
    code = int(both[0])
    stop = next(name for name, c in _CODES.items() if c == code)
    if stop is not None and flag.signal_name is None:
        flag.signal_name = stop  # a rank that was not signalled stops for the same reason
    return stop, bool(both[1])
