"""The default Generator: transformers (+ peft for a LoRA adapter) on CUDA with bf16, else CPU."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ModelError
from bot.generation.base import Prompt, StopCheck, TextSink
from bot.generation.bundled import resolve_model_path
from bot.settings import GenerationSettings
from bot.shared.artifacts import ADAPTER_CONFIG

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def pick_device(setting: str) -> tuple[str, torch.dtype]:
    """'auto' takes CUDA (bf16 where supported, else fp16) when there is one, else CPU fp32."""
    import torch

    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelError("model.device is 'cuda' but torch sees no CUDA device")
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


class TransformersGenerator:
    """Batched and streamed chat completion with a transformers causal LM."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 name: str = "model", context_tokens: int | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        limit = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self.context_tokens = min(context_tokens, limit) if context_tokens else limit
        self._lock = threading.Lock()  # one generate at a time per model
        self.tokens_generated = 0  # new tokens produced so far, all rows and candidates

    @classmethod
    def load(cls, base_model: str, adapter: Path | None = None, device: str = "auto",
             cache_dir: Path | None = None, context_tokens: int | None = None
             ) -> TransformersGenerator:
        """Load the base model (bundled, local folder or hub id) and merge an optional adapter."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cache_dir = cache_dir or Path.home() / ".cache" / "supportbot" / "models"
        path = resolve_model_path(base_model, cache_dir)
        device_name, dtype = pick_device(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model '{base_model}' from {path}: {exc}") from exc
        if adapter is not None:
            model = _with_adapter(model, adapter)
        model.to(device_name)
        return cls(model, tokenizer, name=base_model, context_tokens=context_tokens)

    @property
    def device(self) -> Any:
        """Where the model's weights are."""
        return self.model.device

    def render(self, prompt: Prompt) -> str:
        """The prompt as the model sees it, chat template applied, ready for the reply."""
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False,
                                                  add_generation_prompt=True)
        return str(text)

    def count_tokens(self, prompt: Prompt) -> int:
        """Tokens the templated prompt takes."""
        return len(self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"])

    def generate(self, prompts: Sequence[Prompt], params: GenerationSettings,
                 on_text: TextSink | None = None,
                 should_stop: StopCheck | None = None) -> list[list[str]]:
        """One forward pass per step for the whole batch; params.n completions per prompt.

        `on_text` receives each prompt's new text as tokens are decoded (n == 1 only);
        `should_stop` is asked after every step and ends the rows it answers True for.
        """
        import torch
        from transformers import StoppingCriteriaList

        if not prompts:
            return []
        n = params.n
        batch = self.encode(prompts)
        config = self.generation_config(params)
        options: dict[str, Any] = {}
        if on_text is not None and n == 1:
            options["streamer"] = _RowStreamer(self.tokenizer, len(prompts), on_text)
        if should_stop is not None:
            options["stopping_criteria"] = StoppingCriteriaList([_StopRows(should_stop, n)])
        with self._lock, torch.inference_mode():
            output = self.model.generate(**batch, generation_config=config, **options)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        eos = self.tokenizer.eos_token_id
        produced = torch.ones_like(new_tokens, dtype=torch.bool)
        for end in {self.tokenizer.pad_token_id, *(eos if isinstance(eos, list) else [eos])}:
            if end is not None:
                produced &= new_tokens != end
        self.tokens_generated += int(produced.sum())  # padding and end markers not counted
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [[t.strip() for t in texts[i * n:(i + 1) * n]] for i in range(len(prompts))]

    def stream(self, prompt: Prompt, params: GenerationSettings) -> Iterator[str]:
        """Yield text pieces as they are decoded (always one completion: n is ignored).

        Leaving the loop early stops the model after its current token.
        """
        pieces: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        stop = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                self.generate([prompt], params.model_copy(update={"n": 1}),
                              on_text=lambda _, text: pieces.put(text),
                              should_stop=lambda _: stop.is_set())
            except BaseException as exc:  # surfaced in the consumer below
                failure.append(exc)
            finally:
                pieces.put(None)

        worker = threading.Thread(target=run, name="generate-stream", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not None:
                yield piece
        finally:
            stop.set()
            worker.join()
        if failure:
            raise failure[0]

    def encode(self, prompts: Sequence[Prompt]) -> Any:
        """Template and tokenize prompts into one left-padded batch on the model's device."""
        texts = [self.render(p) for p in prompts]
        return self.tokenizer(texts, return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self.device)

    def generation_config(self, params: GenerationSettings) -> Any:
        """A transformers GenerationConfig for these settings (greedy when temperature is 0)."""
        from transformers import GenerationConfig

        temperature = params.sampling_temperature
        sample = temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "repetition_penalty": params.repetition_penalty,
            "do_sample": sample,
            "num_return_sequences": params.n,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if sample:
            options.update(temperature=temperature, top_p=params.top_p,
                           top_k=params.top_k or None)
        return GenerationConfig(**options)


def _with_adapter(model: PreTrainedModel, adapter: Path) -> PreTrainedModel:
    """Load a LoRA adapter with peft and merge it, so inference costs what the base model costs."""
    from peft import PeftModel

    if not (adapter / ADAPTER_CONFIG).is_file():
        raise ModelError(f"model.adapter: {adapter} is not a peft adapter folder "
                         f"(no {ADAPTER_CONFIG})")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load adapter {adapter}: {exc}") from exc
    merged: PreTrainedModel = peft_model.merge_and_unload()
    return merged


class _RowStreamer:
    """A transformers streamer for a whole batch: hands each row's new text to a sink.

    Each row's tokens are decoded in full at every step and only the new characters are passed
    on, so multi-byte characters split over tokens arrive whole.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, rows: int, sink: TextSink) -> None:
        self.tokenizer = tokenizer
        self.sink = sink
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.sent = [0] * rows
        self.finished = [False] * rows
        self.prompt_seen = False
        eos = tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])

    def put(self, value: torch.Tensor) -> None:
        """Called by generate: first with the prompt ids, then with one new token per row."""
        if not self.prompt_seen:  # the first call carries the prompt itself
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.finished[row]:
                continue
            if token in self.eos:
                self.finished[row] = True
                continue
            self.tokens[row].append(token)
            text = str(self.tokenizer.decode(self.tokens[row], skip_special_tokens=True))
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if len(text) > self.sent[row]:
                self.sink(row, text[self.sent[row]:])
                self.sent[row] = len(text)

    def end(self) -> None:
        """Called by generate when it is done; nothing is held back."""


class _StopRows:
    """A stopping criterion that ends the rows whose prompt `should_stop` names."""

    def __init__(self, should_stop: StopCheck, n: int) -> None:
        self.should_stop = should_stop
        self.n = n

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        rows = input_ids.shape[0]
        return torch.tensor([self.should_stop(row // self.n) for row in range(rows)],
                            dtype=torch.bool, device=input_ids.device)
