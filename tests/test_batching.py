"""BatchingGenerator on a tiny model: concurrent callers share a batch, get their own results."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.generation.base import Prompt
from bot.generation.batching import BatchingGenerator
from bot.generation.transformers_generator import TransformersGenerator
from bot.settings import GenerationSettings

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8, repetition_penalty=1.0)
QUESTIONS = ["Where is my parcel?", "return", "How long does standard delivery take?",
             "Can I pay with PayPal?", "password"]


class RecordingGenerator(TransformersGenerator):
    """The real generator, noting the size of every batch it runs."""

    batches: list[int]

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings) -> list[list[str]]:
        self.batches.append(len(prompts))
        return super().generate(prompts, params)


@pytest.fixture
def recording(tiny_model_dir: Path) -> RecordingGenerator:
    plain = TransformersGenerator.load(str(tiny_model_dir), device="cpu")
    generator = RecordingGenerator(plain.model, plain.tokenizer, name="tiny")
    generator.batches = []
    return generator


def call_concurrently(batcher: BatchingGenerator, params: list[GenerationSettings]
                      ) -> list[list[list[str]]]:
    results: list[list[list[str]]] = [[] for _ in QUESTIONS]
    barrier = threading.Barrier(len(QUESTIONS))

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = batcher.generate([[{"role": "user", "content": QUESTIONS[i]}]], params[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_calls_share_one_forward_pass(recording: RecordingGenerator) -> None:
    batcher = BatchingGenerator(recording, max_batch=8, window_s=0.5)
    results = call_concurrently(batcher, [GREEDY] * len(QUESTIONS))
    assert recording.batches == [5], "five callers, one batch"
    alone = [recording.generate([[{"role": "user", "content": q}]], GREEDY) for q in QUESTIONS]
    assert results == alone, "each caller gets its own completion"


def test_batches_respect_size_and_settings(recording: RecordingGenerator) -> None:
    batcher = BatchingGenerator(recording, max_batch=2, window_s=0.5)
    other = GREEDY.model_copy(update={"max_new_tokens": 4})
    results = call_concurrently(batcher, [GREEDY, GREEDY, GREEDY, other, other])
    assert sorted(recording.batches) == [1, 2, 2]
    assert all(len(r) == 1 and r[0] for r in results)


def test_errors_reach_every_caller(recording: RecordingGenerator,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(prompts: Sequence[Prompt], params: GenerationSettings) -> list[list[str]]:
        raise RuntimeError("device lost")

    monkeypatch.setattr(recording, "generate", broken)
    batcher = BatchingGenerator(recording, max_batch=8, window_s=0.01)
    with pytest.raises(RuntimeError, match="device lost"):
        batcher.generate([[{"role": "user", "content": "hi"}]], GREEDY)
    monkeypatch.undo()
    assert batcher.generate([[{"role": "user", "content": "hi"}]], GREEDY)[0], \
        "the worker survives a failed batch"
