"""BatchingGenerator: concurrent callers share a batch, get their own results, stop alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.generation.base import Prompt, StopCheck, TextSink
from bot.generation.batching import BatchingGenerator, GeneratorClosedError
from bot.generation.transformers_generator import TransformersGenerator
from bot.settings import GenerationSettings
from tests.fakes import ScriptedGenerator

pytestmark = pytest.mark.timeout(60)

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8, repetition_penalty=1.0)
QUESTIONS = ["Where is my parcel?", "return", "How long does standard delivery take?",
             "Can I pay with PayPal?", "password"]


class RecordingGenerator(TransformersGenerator):
    """The real generator, noting the size of every batch it runs."""

    batches: list[int]

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        self.batches.append(len(prompts))
        return super().generate(prompts, params, on_text, should_stop)


@pytest.fixture
def recording(tiny_model_dir: Path) -> RecordingGenerator:
    plain = TransformersGenerator.load(str(tiny_model_dir), device="cpu")
    generator = RecordingGenerator(plain.model, plain.tokenizer, name="tiny")
    generator.batches = []
    return generator


def prompt(question: str) -> Prompt:
    return [{"role": "user", "content": question}]


def call_concurrently(batcher: BatchingGenerator, params: list[GenerationSettings]
                      ) -> list[list[list[str]] | None]:
    """Every caller starts at once; each result lands in its caller's own slot."""
    results: list[list[list[str]] | None] = [None] * len(params)
    barrier = threading.Barrier(len(params))

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = batcher.generate([prompt(QUESTIONS[i])], params[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(params))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a caller never got its result"
    return results


def test_concurrent_calls_share_one_forward_pass(recording: RecordingGenerator) -> None:
    batcher = BatchingGenerator(recording, max_batch=8, window_s=0.5)
    results = call_concurrently(batcher, [GREEDY] * len(QUESTIONS))
    assert recording.batches == [5], "five callers, one batch"
    alone = [recording.generate([prompt(q)], GREEDY) for q in QUESTIONS]
    assert results == alone, "each caller gets its own completion, in its own slot"
    assert len({r[0][0] for r in alone}) > 1, "the completions differ, so a mix-up would show"
    batcher.close()


def test_callers_get_their_own_answers_by_question() -> None:
    scripted = ScriptedGenerator(lambda q: f"answer to {q}", seconds_per_token=0.01)
    batcher = BatchingGenerator(scripted, max_batch=8, window_s=0.3)
    params = GenerationSettings(max_new_tokens=20)
    results = call_concurrently(batcher, [params] * len(QUESTIONS))
    assert scripted.batches == [5]
    assert [r[0][0] if r else None for r in results] == [f"answer to {q}" for q in QUESTIONS]
    batcher.close()


def test_batches_respect_size_and_settings(recording: RecordingGenerator) -> None:
    batcher = BatchingGenerator(recording, max_batch=2, window_s=0.5)
    other = GREEDY.model_copy(update={"max_new_tokens": 4})
    results = call_concurrently(batcher, [GREEDY, GREEDY, GREEDY, other, other])
    assert sorted(recording.batches) == [1, 2, 2]
    assert all(r is not None and len(r) == 1 and len(r[0]) == 1 and r[0][0] for r in results)
    batcher.close()


def test_errors_reach_every_caller() -> None:
    broken = ScriptedGenerator("never", fail=RuntimeError("device lost"))
    batcher = BatchingGenerator(broken, max_batch=8, window_s=0.2)
    outcomes: list[str] = []

    def ask() -> None:
        try:
            batcher.generate([prompt("hi")], GREEDY)
            outcomes.append("ok")
        except RuntimeError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert outcomes == ["device lost"] * 3 and broken.batches == [3]
    broken.fail = None
    assert batcher.generate([prompt("hi")], GREEDY) == [["never"]], "the worker survives"
    batcher.close()


def test_a_cancelled_request_stops_alone_within_a_token() -> None:
    scripted = ScriptedGenerator(" ".join(["word"] * 50), seconds_per_token=0.01)
    batcher = BatchingGenerator(scripted, max_batch=8, window_s=0.2)
    params = GenerationSettings(max_new_tokens=100)
    cancel = threading.Event()
    seen: list[str] = []

    def on_text(_: int, text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.set()

    stopped = batcher.submit([prompt("a")], params, on_text=on_text, cancel=cancel)
    other = batcher.submit([prompt("b")], params)
    assert stopped.result(timeout=10) == [["word word word"]]
    assert other.result(timeout=10) == [[" ".join(["word"] * 50)]], "its batch mate goes on"
    assert scripted.batches == [2] and len(seen) == 3
    batcher.close()


def test_the_real_model_stops_a_cancelled_row(recording: RecordingGenerator) -> None:
    batcher = BatchingGenerator(recording, max_batch=8, window_s=0.2)
    params = GREEDY.model_copy(update={"max_new_tokens": 40})
    pieces: list[str] = []
    cancel = threading.Event()

    def on_text(_: int, text: str) -> None:
        pieces.append(text)
        cancel.set()

    cut = batcher.submit([prompt(QUESTIONS[2])], params, on_text=on_text, cancel=cancel)
    full = batcher.submit([prompt(QUESTIONS[2])], params)
    short, long = cut.result(timeout=30)[0][0], full.result(timeout=30)[0][0]
    assert len(pieces) <= 2, "stopped after the token in flight"
    assert long.startswith(short) and len(long) > len(short)
    batcher.close()


def test_close_fails_waiting_callers_and_refuses_new_ones() -> None:
    scripted = ScriptedGenerator(" ".join(["word"] * 200), seconds_per_token=0.01)
    batcher = BatchingGenerator(scripted, max_batch=1, window_s=0.0)
    params = GenerationSettings(max_new_tokens=500)
    running = batcher.submit([prompt("a")], params)
    assert scripted.running.wait(5)
    waiting = batcher.submit([prompt("b")], params)
    batcher.close()
    assert len(running.result(timeout=5)[0][0].split()) < 200, "the running batch was stopped"
    with pytest.raises(GeneratorClosedError):
        waiting.result(timeout=5)
    with pytest.raises(GeneratorClosedError):
        batcher.submit([prompt("c")], params)


class _MeetingGenerator:
    """Each call waits (up to 10 s) until `parties` calls are inside generate at once."""

    name = "meeting"
    context_tokens = 2048

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.closed = False

    def count_tokens(self, prompt: Prompt) -> int:
        return 1

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        self.barrier.wait()
        return [[str(p[0]["content"])] for p in prompts]

    def close(self) -> None:
        self.closed = True


def test_several_workers_run_requests_at_the_same_time() -> None:
    # For a backend that is itself concurrent (a model server): 3 requests of one prompt each
    # are inside the backend together; with one worker the meeting would never happen.
    inner = _MeetingGenerator(3)
    batching = BatchingGenerator(inner, max_batch=1, window_s=0.0, workers=3)
    futures = [batching.submit([[{"role": "user", "content": q}]], GREEDY)
               for q in ("a", "b", "c")]
    assert [f.result(timeout=20) for f in futures] == [[["a"]], [["b"]], [["c"]]]
    assert list(batching.batches) == [1, 1, 1]
    batching.close()
    assert inner.closed, "closing the batcher closes the backend (its connections)"
