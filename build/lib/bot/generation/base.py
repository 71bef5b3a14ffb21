"""The Generator interface: a batch of chat prompts in, n completions each out; or a stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from bot.settings import GenerationSettings

ChatMessage = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Prompt = list[ChatMessage]


class Generator(Protocol):
    """A chat model behind one small interface, so that backends can be swapped."""

    name: str
    context_tokens: int  # prompt + completion must fit in this

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the prompt takes once the chat template is applied."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings) -> list[list[str]]:
        """Complete every prompt in one batch: params.n completions per prompt."""
        ...

    def stream(self, prompt: Prompt, params: GenerationSettings) -> Iterator[str]:
        """Complete one prompt, yielding text pieces as the tokens are produced."""
        ...
