"""The llama.cpp Generator: a GGUF file run in process by llama-cpp-python (fast on a CPU).

llama.cpp runs one sequence at a time here, so a batch is generated prompt after prompt (the
runtime wraps it with a batch size of 1); the bundled model runs at about 6x the transformers
backend's speed for one stream on this project's reference machine (bench/README.md).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ModelError
from bot.generation.base import Prompt, StopCheck, TextSink
from bot.generation.bundled import bundled_gguf
from bot.settings import BUNDLED_GENERATOR, GenerationSettings
from bot.shared.artifacts import ADAPTER_GGUF  # where `supportbot export-gguf` writes it

if TYPE_CHECKING:
    from llama_cpp import Llama

# The serve-only install (`make serve`) leaves llama-cpp-python out: it compiles llama.cpp.
INSTALL_HINT = ("model.backend llama_cpp needs llama-cpp-python, which is not installed: run "
                "`make llama` in the project's folder, or pip install 'supportbot[llama]' "
                "(either compiles llama.cpp: 3-9 min)")


def check_installed() -> None:
    """Refuse the backend in one line when llama-cpp-python is missing: called at start-up,
    before the index is built or a customer is served, and without importing it (that loads
    the llama.cpp library)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelError(INSTALL_HINT)


def gguf_path(base_model: str) -> Path:
    """The GGUF file to load: the bundled one, or a .gguf file the setting names."""
    if base_model == BUNDLED_GENERATOR:
        return bundled_gguf()
    path = Path(base_model).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise ModelError(f"model.base_model: '{base_model}' is not a .gguf file; the llama_cpp "
                         "backend loads GGUF files (or the bundled model)")
    return path


def adapter_gguf(adapter: Path) -> Path:
    """The GGUF form of a LoRA adapter: the file itself, or adapter.gguf in a peft folder."""
    if adapter.is_file() and adapter.suffix.lower() == ".gguf":
        return adapter
    candidate = adapter / ADAPTER_GGUF
    if candidate.is_file():
        return candidate
    raise ModelError(f"model.adapter: {adapter} has no {ADAPTER_GGUF}; the llama_cpp backend "
                     f"needs the adapter in GGUF form: supportbot export-gguf {adapter}")


def default_threads() -> int:
    """All cores but one. llama.cpp's threads wait for each other at every operation, spinning:
    when another thread of the process (embedding a customer's message) or another process
    takes a core, one generating thread too many stalls them all. On 2 cores: 2 threads give 98
    tokens/s on an idle machine but 10 with the other core busy; 1 thread gives 51 either way."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


class LlamaCppGenerator:
    """Chat completion with llama.cpp: the GGUF's own chat template, streamed token by token."""

    def __init__(self, llama: Llama, name: str = "model",
                 context_tokens: int | None = None) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llama = llama
        self.name = name
        self.context_tokens = min(context_tokens or llama.n_ctx(), llama.n_ctx())
        metadata = llama.metadata
        template = metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{name}: the GGUF file has no chat template")
        vocab = llama.tokenizer()

        def token_text(key: str) -> str:
            token = metadata.get(key)
            return vocab.decode([int(token)]) if token is not None else ""

        self._eos = token_text("tokenizer.ggml.eos_token_id")
        self._formatter = Jinja2ChatFormatter(template, eos_token=self._eos,
                                              bos_token=token_text("tokenizer.ggml.bos_token_id"))
        self._lock = threading.Lock()  # one sequence at a time per model
        self.tokens_generated = 0

    @classmethod
    def load(cls, base_model: str, adapter: Path | None = None, threads: int = 0,
             context_tokens: int | None = None) -> LlamaCppGenerator:
        """Load the GGUF (bundled or a file) and an optional LoRA adapter in GGUF form."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(INSTALL_HINT) from exc
        path = gguf_path(base_model)
        lora = adapter_gguf(adapter) if adapter is not None else None
        threads = threads or default_threads()
        try:
            llama = Llama(model_path=str(path), n_ctx=context_tokens or 2048, n_threads=threads,
                          n_threads_batch=threads, lora_path=str(lora) if lora else None,
                          verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load '{path}' with llama.cpp: {exc}") from exc
        return cls(llama, name=base_model, context_tokens=context_tokens)

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model sees it: the GGUF's chat template, ready for the reply."""
        messages: Any = list(prompt)
        return str(self._formatter(messages=messages).prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the templated prompt takes."""
        return len(self._tokens(self.render(prompt)))

    def _tokens(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode(), add_bos=False, special=True))

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        """Each prompt in turn, params.n completions each (sampled when n > 1)."""
        results: list[list[str]] = []
        for row, prompt in enumerate(prompts):
            tokens = self._tokens(self.render(prompt))
            completions = []
            for _ in range(params.n):
                sink = on_text if params.n == 1 else None
                completions.append(self._complete(row, tokens, params, sink, should_stop))
            results.append(completions)
        return results

    def _complete(self, row: int, tokens: list[int], params: GenerationSettings,
                  on_text: TextSink | None, should_stop: StopCheck | None) -> str:
        from llama_cpp import LogitsProcessorList

        temperature = params.sampling_temperature
        options: dict[str, Any] = {
            "max_tokens": params.max_new_tokens, "temperature": temperature,
            "top_p": params.top_p, "top_k": params.top_k, "min_p": 0.0,
            "repeat_penalty": 1.0, "stop": [self._eos] if self._eos else None, "stream": True}
        if params.repetition_penalty != 1.0:
            # transformers' rule, not llama.cpp's (which looks at the last 64 generated tokens
            # only): every token of prompt and reply so far is penalised, so that both backends
            # decode alike.
            options["logits_processor"] = LogitsProcessorList(
                [_RepetitionPenalty(params.repetition_penalty)])
        text = ""
        with self._lock:
            chunks: Any = self.llama.create_completion(tokens, **options)
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    piece = choice.get("text") or ""
                    if choice.get("finish_reason") is None:
                        self.tokens_generated += 1
                    if piece:
                        text += piece
                        if on_text is not None:
                            on_text(row, piece)
                    if should_stop is not None and should_stop(row):
                        break
            finally:
                chunks.close()
        return text.strip()


class _RepetitionPenalty:
    """transformers' RepetitionPenaltyLogitsProcessor over numpy logits: the logit of every
    token seen so far (prompt included) is divided by the penalty, or multiplied if negative."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        seen = np.unique(np.asarray(input_ids, dtype=np.int64))
        seen = seen[seen < scores.shape[-1]]
        picked = scores[seen]
        scores[seen] = np.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores
