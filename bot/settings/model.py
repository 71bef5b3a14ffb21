"""The model section: which generator, on which backend, and how it samples."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from bot.settings.base import Section as _Section

# The bundled models' names live here, so that reading settings loads no model code;
# bot.generation.bundled imports the first, retrieval.embedder repeats the second (a test
# checks they agree: retrieval must not import bot).
BUNDLED_GENERATOR = "SmolLM2-135M-Instruct"
BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"


class GenerationSettings(_Section):
    """Sampling parameters for the generator (used by the generated branch)."""

    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy decoding.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(50, ge=0, description="Sample among the k likeliest tokens; 0 disables.")
    max_new_tokens: int = Field(100, ge=1, le=4096, description="Longest reply in tokens.")
    repetition_penalty: float = Field(1.05, ge=1.0, le=3.0, description="1.0 disables.")
    n: int = Field(1, ge=1, le=16, description="Candidates generated; the best grounded is sent.")
    candidate_temperature: float = Field(
        0.7, gt=0.0, le=5.0, description="With n > 1 and temperature 0, candidates are sampled "
        "at this temperature (greedy decoding would give n copies of one answer).")

    @property
    def sampling_temperature(self) -> float:
        """The temperature actually used: 0 (greedy) only for a single candidate."""
        if self.temperature == 0 and self.n > 1:
            return self.candidate_temperature
        return self.temperature


class OpenAISettings(_Section):
    """`model.backend: openai`: a server of the OpenAI chat API (vLLM, TGI, llama.cpp, Ollama)."""

    base_url: str = Field("http://127.0.0.1:8080/v1", description="The server's API root, up to "
                          "and including /v1 (requests go to {base_url}/chat/completions).")
    model: str = Field("", description="Model (or LoRA adapter) name the server knows; empty: "
                       "the first one its /models lists.")
    api_key: SecretStr | None = Field(None, description="Sent as 'Authorization: Bearer ...'; "
                                      "better set as SUPPORTBOT_MODEL__OPENAI__API_KEY.")
    connect_timeout_s: float = Field(5.0, gt=0.0, le=600.0,
                                     description="Longest wait to connect to the server.")
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0, description="Longest wait for the first "
                             "token, and then between two pieces of a streamed reply (n > 1 is "
                             "not streamed: for the whole reply).")
    max_retries: int = Field(3, ge=0, le=20, description="Retries of a request that got 429, a "
                             "5xx, no connection or no reply, before any of its text was shown.")
    backoff_s: float = Field(0.5, ge=0.0, le=60.0, description="First retry's wait, doubled at "
                             "each retry (a Retry-After header from the server wins).")
    concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once; the "
                             "server batches them (continuous batching). llama-cpp-python's "
                             "server runs one at a time and, unless started with "
                             "--interrupt_requests false, cuts a reply short for the next.")
    tokenizer: str = Field("", description="Local tokenizer folder or id to count prompt tokens "
                           "with; empty: a cautious estimate from the text's length.")


class ModelSettings(_Section):
    """The generator model and its optional LoRA adapter."""

    backend: Literal["transformers", "llama_cpp", "openai"] = Field(
        "transformers", description="transformers (+ peft; CPU or CUDA), llama_cpp (a GGUF file "
        "in process; fast on a CPU) or openai (a model server over HTTP: model.openai).")
    base_model: str = Field(BUNDLED_GENERATOR,
                            description="Bundled name, a local folder, or a hub id; for "
                            "llama_cpp, the bundled name or a .gguf file.")
    adapter: Path | None = Field(None, description="Folder of a LoRA adapter to load, if any.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if available.")
    context_tokens: int = Field(2048, ge=256, le=131072,
                                description="Prompt + reply budget (capped at the model's own).")
    max_batch: int = Field(8, ge=1, le=256, description="Prompts of concurrent conversations "
                           "generated in one batch (1 turns batching off).")
    batch_window_ms: float = Field(250.0, ge=0.0, le=5000.0, description="Longest wait of a "
                                   "generation for other conversations' turns, still being "
                                   "retrieved, to share its batch (none coming: no wait).")
    threads: int = Field(0, ge=0, le=256, description="Threads of the generation worker, "
                         "torch's (0: all cores) or llama.cpp's (0: all cores but one, as "
                         "llama.cpp's threads stall on a busy core).")
    cache_dir: Path = Field(Path("~/.cache/supportbot/models"), validate_default=True,
                            description="Where the bundled GGUF is converted to safetensors once.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)

    @field_validator("adapter", "cache_dir")
    @classmethod
    def _expand_user(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None
