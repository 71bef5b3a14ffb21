"""The Generator interface: a batch of chat prompts in, n completions each out, optionally
streamed row by row and stopped row by row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bot.settings import GenerationSettings

ChatMessage = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Prompt = list[ChatMessage]
TextSink = Callable[[int, str], None]  # (prompt index in the batch, new text)
StopCheck = Callable[[int], bool]  # (prompt index) -> stop generating that row now


class Generator(Protocol):
    """A chat model behind one small interface, so that backends can be swapped."""

    name: str
    context_tokens: int  # prompt + completion must fit in this

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt takes once the chat template is applied."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        """Complete every prompt in one batch: params.n completions per prompt.

        With `on_text` (and n == 1), each prompt's text is also handed over piece by piece as it
        is produced. `should_stop` is asked after every token; a prompt for which it answers True
        stops there (its completion so far is returned).
        """
        ...
