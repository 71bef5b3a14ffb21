"""A scripted Generator: answers chosen by the test, produced word by word at a set pace."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from bot.generation.base import Prompt, StopCheck, TextSink
from bot.settings import GenerationSettings


class ScriptedGenerator:
    """Implements the Generator interface without a model: `script(question)` gives the answer.

    Each "token" is one word and takes `seconds_per_token`; it records every batch it runs and
    how many tokens each prompt produced, so tests can see batching and cancellation happen.
    """

    name = "scripted"
    context_tokens = 4096

    def __init__(self, script: Callable[[str], str] | str, seconds_per_token: float = 0.0,
                 fail: BaseException | None = None) -> None:
        self.script = script if callable(script) else (lambda _q: script)  # type: ignore[misc]
        self.seconds_per_token = seconds_per_token
        self.fail = fail
        self.batches: list[int] = []
        self.tokens: list[int] = []  # tokens produced per prompt, in the order prompts finished
        self.running = threading.Event()  # set while a batch is being generated
        self.steps = 0  # decoding steps taken so far, all batches together

    @property
    def tokens_generated(self) -> int:
        """Tokens of the prompts finished so far (what the real generator counts)."""
        return sum(self.tokens)

    def count_tokens(self, prompt: Prompt) -> int:
        """Words in the prompt."""
        return sum(len(m["content"].split()) for m in prompt)

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        """Produce each prompt's scripted answer word by word, all prompts in lock step."""
        self.batches.append(len(prompts))
        if self.fail is not None:
            raise self.fail
        words = [self.script(p[-1]["content"].rsplit("Question: ", 1)[-1]).split(" ")
                 for p in prompts]
        done = [[] for _ in prompts]  # type: list[list[str]]
        stopped = [False] * len(prompts)
        self.running.set()
        try:
            for step in range(min(max(len(w) for w in words), params.max_new_tokens)):
                time.sleep(self.seconds_per_token)
                self.steps += 1
                for row, answer in enumerate(words):
                    if stopped[row] or step >= len(answer):
                        continue
                    piece = ("" if step == 0 else " ") + answer[step]
                    done[row].append(piece)
                    if on_text is not None:
                        on_text(row, piece)
                    if should_stop is not None and should_stop(row):
                        stopped[row] = True
                if should_stop is not None:
                    for row in range(len(prompts)):
                        stopped[row] = stopped[row] or should_stop(row)
                if all(stopped[r] or step + 1 >= len(words[r]) for r in range(len(prompts))):
                    break
        finally:
            self.running.clear()
        self.tokens.extend(len(d) for d in done)
        return [["".join(d).strip()] * params.n for d in done]
