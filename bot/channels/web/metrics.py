"""Prometheus metrics of the web server, in a registry of the app's own.

Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set by the parent before the workers
start) every worker writes its values to files there, and /metrics on any worker shows the
sum over all of them, dead ones included for counters (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from bot.actions.caller import CallRecord
from bot.types import BotReply, Decision

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when first imported
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them


class _TokensCollector(Collector):
    """Reads the model's own count of generated tokens when scraped."""

    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("supportbot_generated_tokens",
                                     "Tokens the model has generated (all conversations).")
        family.add_metric([], float(self.read()))
        yield family


class Metrics:
    """Turns by decision and channel, latencies (FAQ and generated apart), tokens, errors,
    open web sockets, rate-limited requests and feedback."""

    def __init__(self, tokens_generated: Callable[[], int]) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns = Counter("supportbot_turns", "Turns answered, by decision and channel.",
                             ["decision", "channel"], registry=r)
        self.latency = Histogram("supportbot_turn_seconds", "Whole-turn latency; kind is "
                                 "'generated' for model-written answers, else 'faq'.",
                                 ["kind"], buckets=_SECONDS, registry=r)
        self.first_text = Histogram("supportbot_first_text_seconds", "Time to the first "
                                    "visible text of a turn.", ["kind"], buckets=_SECONDS,
                                    registry=r)
        self.errors = Counter("supportbot_errors", "Failed turns ('turn', 'storage') and "
                              "refused client input (by error code).", ["kind"], registry=r)
        self.websockets = Gauge("supportbot_websockets_open", "Open web-socket connections.",
                                multiprocess_mode="livesum", registry=r)
        self.rate_limited = Counter("supportbot_rate_limited", "Requests refused by a rate "
                                    "limit.", ["scope"], registry=r)
        self.feedback = Counter("supportbot_feedback", "Ratings of bot messages.", ["rating"],
                                registry=r)
        self.action_calls = Counter("supportbot_action_calls", "Actions' calls to the "
                                    "company's API, by action and outcome ('ok', 'timeout', "
                                    "'http_status', 'breaker_open', ...).",
                                    ["action", "outcome"], registry=r)
        self.action_seconds = Histogram("supportbot_action_call_seconds", "Duration of "
                                        "actions' calls, retries included.", ["action"],
                                        buckets=_SECONDS, registry=r)
        self._read_tokens = tokens_generated
        self._tokens_counted = 0
        self.worker_turns: Gauge | None = None
        if self.multiprocess:
            # The model's own count lives in this process only: mirrored into a counter, which
            # the files add up over the workers.
            self._tokens = Counter("supportbot_generated_tokens", "Tokens the model has "
                                   "generated (all conversations).", registry=r)
            self.worker_turns = Gauge("supportbot_worker_turns", "Turns answered by each live "
                                      "worker process (pid): how the load is spread.",
                                      multiprocess_mode="liveall", registry=r)
        else:
            r.register(_TokensCollector(tokens_generated))

    def turn(self, reply: BotReply, channel: str, first_text_s: float | None) -> None:
        """Count a finished turn."""
        kind = "generated" if reply.decision is Decision.GENERATE else "faq"
        self.turns.labels(reply.decision.value, channel).inc()
        if self.worker_turns is not None:
            self.worker_turns.inc()
            self._count_tokens()
        self.latency.labels(kind).observe(reply.latency_ms / 1000)
        if first_text_s is not None:
            self.first_text.labels(kind).observe(first_text_s)
        if reply.decision is Decision.ERROR:
            self.errors.labels("turn").inc()
        if "storage_error" in reply.meta:
            self.errors.labels("storage").inc()

    def action_call(self, record: CallRecord) -> None:
        """Count an action's call (an ActionBook listener)."""
        self.action_calls.labels(record.action, record.outcome).inc()
        self.action_seconds.labels(record.action).observe(record.duration_ms / 1000)

    def render(self) -> bytes:
        """The text exposition format (under several workers: the sum over all of them)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        self._count_tokens()
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged)

    def _count_tokens(self) -> None:
        """Add the tokens generated since the last call to the multiprocess counter; called at
        every turn and scrape, so the sum lags no turn that has ended."""
        generated = self._read_tokens()
        if generated > self._tokens_counted:
            self._tokens.inc(generated - self._tokens_counted)
            self._tokens_counted = generated
