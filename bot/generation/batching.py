"""BatchingGenerator: generation on its own thread; concurrent requests share one forward pass.

Callers never block a thread while they wait: `submit` returns a future (asyncio code awaits it
with `asyncio.wrap_future`), so a turn that waits for the model does not hold a pool thread that
FAQ turns need. Streams are batched too: each request may carry a text sink and a cancel event.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bot.generation.base import Generator, Prompt, StopCheck, TextSink
from bot.settings import GenerationSettings

log = logging.getLogger(__name__)
_POLL_S = 0.005  # how often a waiting batch asks whether more callers are still expected
KEPT_BATCHES = 1000  # sizes of the most recent batches kept (for benchmarks and tests)


@dataclass
class _Request:
    prompts: list[Prompt]
    params: GenerationSettings
    on_text: TextSink | None
    cancel: threading.Event
    should_stop: StopCheck | None = None  # the caller's own check, asked with the cancel event
    future: concurrent.futures.Future[list[list[str]]] = field(
        default_factory=concurrent.futures.Future)

    def stopped(self) -> bool:
        """Whether the request should stop now: its cancel event, or the caller's own check
        answering True for one of its prompts (which then sets the event)."""
        if self.should_stop is not None and any(map(self.should_stop, range(len(self.prompts)))):
            self.cancel.set()
        return self.cancel.is_set()


class GeneratorClosedError(RuntimeError):
    """The generator was closed while a request was waiting."""


class BatchingGenerator:
    """Wraps a Generator: one worker thread runs queued requests in batches.

    A request waits at most `window_s` for others with the same settings (with `expected` set,
    only while more are expected); then the worker runs up to `max_batch` prompts as one batch.
    A request whose `cancel` event is set stops after the current token; the others in its
    batch go on. With `workers` > 1, that many batches run at once (for a backend that is
    itself concurrent, such as a model server over HTTP); `inner.generate` must then be safe to
    call from several threads.
    """

    def __init__(self, inner: Generator, max_batch: int = 8, window_s: float = 0.01,
                 initializer: Callable[[], None] | None = None, workers: int = 1) -> None:
        self.inner = inner
        self.initializer = initializer  # run first on the worker thread (e.g. torch threads)
        # How many callers may submit soon (turns still retrieving); with it, a batch waits up
        # to `window_s` only while that is above 0, so a lone conversation never waits.
        self.expected: Callable[[], int] | None = None
        self.name = inner.name
        self.context_tokens = inner.context_tokens
        self.max_batch = max_batch
        self.window_s = window_s
        # Sizes of the last KEPT_BATCHES batches run, newest last, and how many ran in all
        # (for benchmarks): a long-running server keeps only the recent ones.
        self.batches: deque[int] = deque(maxlen=KEPT_BATCHES)
        self.batches_run = 0
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self._worker_count = workers
        self._running: list[_Request] = []

    @property
    def tokens_generated(self) -> int:
        """New tokens the wrapped generator has produced (0 if it does not count them)."""
        return int(getattr(self.inner, "tokens_generated", 0))

    def count_tokens(self, prompt: Prompt) -> int:
        """Delegated to the wrapped generator."""
        return self.inner.count_tokens(prompt)

    def batches_since(self, count: int) -> list[int]:
        """Sizes of the batches run after the first `count` (`batches_run` read earlier), of
        those still kept."""
        new = min(self.batches_run - count, len(self.batches))
        return list(self.batches)[len(self.batches) - new:] if new > 0 else []

    def submit(self, prompts: Sequence[Prompt], params: GenerationSettings,
               on_text: TextSink | None = None, cancel: threading.Event | None = None,
               should_stop: StopCheck | None = None
               ) -> concurrent.futures.Future[list[list[str]]]:
        """Queue prompts for the next batch they fit in; the future holds their completions.

        Setting `cancel`, or `should_stop` answering True for one of the prompts, stops that
        prompt after the current token.
        """
        request = _Request(list(prompts), params, on_text, cancel or threading.Event(),
                           should_stop)
        if not request.prompts:
            request.future.set_result([])
            return request.future
        with self._cond:
            if self._closed:
                raise GeneratorClosedError("the generator is closed")
            self._pending.append(request)
            if not self._workers:
                for number in range(self._worker_count):
                    worker = threading.Thread(target=self._run, daemon=True,
                                              name=f"generate-batcher-{number}")
                    worker.start()
                    self._workers.append(worker)
            self._cond.notify_all()
        return request.future

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        """The Generator interface, blocking: queue, wait for the batch, return completions."""
        return self.submit(prompts, params, on_text, should_stop=should_stop).result()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what is running, fail what waits, stop the worker thread, then close the
        wrapped generator if it has a close() (a model server's connections)."""
        with self._cond:
            self._closed = True
            waiting, self._pending = self._pending, []
            self._cond.notify_all()
            for request in self._running:
                request.cancel.set()
        for request in waiting:
            request.future.set_exception(GeneratorClosedError("the generator was closed"))
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        close_inner = getattr(self.inner, "close", None)
        if callable(close_inner):
            close_inner()

    def _run(self) -> None:
        if self.initializer is not None:
            self.initializer()
        while (batch := self._next_batch()) is not None:
            with self._cond:
                self._running.extend(batch)
            try:
                self._run_batch(batch)
            finally:
                with self._cond:
                    for request in batch:
                        self._running.remove(request)

    def _run_batch(self, batch: list[_Request]) -> None:
        rows: list[tuple[_Request, int]] = [(r, i) for r in batch for i in range(len(r.prompts))]
        prompts = [r.prompts[i] for r, i in rows]
        streaming = any(r.on_text is not None for r in batch)

        def on_text(row: int, text: str) -> None:
            request, i = rows[row]
            if request.on_text is not None and not request.cancel.is_set():
                request.on_text(i, text)

        def should_stop(row: int) -> bool:
            return rows[row][0].stopped()

        with self._cond:
            self.batches.append(len(prompts))
            self.batches_run += 1
        try:
            results = self.inner.generate(prompts, batch[0].params,
                                          on_text=on_text if streaming else None,
                                          should_stop=should_stop)
        except Exception as exc:  # every waiting caller gets the failure; the worker goes on
            log.warning("generation failed for a batch of %d: %s", len(prompts), exc)
            for request in batch:
                request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            request.future.set_result(results[start:start + len(request.prompts)])
            start += len(request.prompts)

    def _next_batch(self) -> list[_Request] | None:
        """Wait for a request, give others `window_s` to join, take those that fit together."""
        with self._cond:
            while True:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                # A request cancelled before its batch started is dropped unrun.
                for request in [r for r in self._pending if r.stopped()]:
                    self._pending.remove(request)
                    request.future.set_result([[""] * request.params.n for _ in request.prompts])
                if self._pending:
                    break
            deadline = time.monotonic() + self.window_s
            first = self._pending[0]
            while sum(len(r.prompts) for r in self._pending
                      if r.params == first.params) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                if self.expected is not None:  # wait only while turns that may join are coming
                    if self.expected() <= 0:
                        break
                    remaining = min(remaining, _POLL_S)
                self._cond.wait(remaining)
            batch: list[_Request] = []
            size = 0
            for request in list(self._pending):
                fits = size + len(request.prompts) <= self.max_batch or not batch
                if request.params == first.params and fits:
                    batch.append(request)
                    size += len(request.prompts)
                    self._pending.remove(request)
            return batch


def as_batching(generator: Generator, max_batch: int = 1,
                window_s: float = 0.0) -> BatchingGenerator:
    """The generator itself if it already batches, else wrapped (max_batch 1: one at a time)."""
    if isinstance(generator, BatchingGenerator):
        return generator
    return BatchingGenerator(generator, max_batch, window_s)

