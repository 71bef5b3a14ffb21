"""The bot's grounded-answer prompt: bot/shared/prompt.py's format with the persona's system text.

The format lives in `bot/shared/prompt.py` because training builds its examples with it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.errors import GenerationError
from bot.generation.base import ChatMessage, Prompt
from bot.settings import PersonaSettings
from bot.shared.prompt import EXAMPLE, EXAMPLE_MATCHED, BuiltPrompt, PromptTooLong, user_turn
from bot.shared.prompt import build_prompt as _build
from retrieval.corpus import FaqEntry

__all__ = ["EXAMPLE", "EXAMPLE_MATCHED", "BuiltPrompt", "build_prompt", "user_turn"]


def build_prompt(persona: PersonaSettings, entries: Sequence[FaqEntry],
                 history: Sequence[ChatMessage], question: str,
                 count_tokens: Callable[[Prompt], int], budget: int,
                 matched: Sequence[str] | None = None) -> BuiltPrompt:
    """The shared format with the persona's rendered system prompt; too long -> GenerationError."""
    try:
        return _build(persona.render(persona.system_prompt), entries, history, question,
                      count_tokens, budget, matched)
    except PromptTooLong as error:
        raise GenerationError(
            f"{error}; raise model.context_tokens or lower "
            "model.generation.max_new_tokens") from error
