"""Settings: one typed object read from supportbot.yaml, then SUPPORTBOT_* environment variables."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import string
import textwrap
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import SettingsError, SettingsWarning
from bot.shared.pii import ENTITIES as PII_LABELS
from bot.shared.pii import PHONE_REGIONS, keep_patterns
from bot.shared.textfile import TextFileError, read_text

# The bundled models' names live here, so that reading settings loads no model code;
# bot.generation.bundled imports the first, retrieval.embedder repeats the second (a test
# checks they agree: retrieval must not import bot).
BUNDLED_GENERATOR = "SmolLM2-135M-Instruct"
BUNDLED_EMBEDDER = "all-MiniLM-L6-v2"

DEFAULT_CONFIG = Path("supportbot.yaml")
ENV_PREFIX = "SUPPORTBOT_"
ENV_DELIMITER = "__"
CONFIG_ENV = "SUPPORTBOT_CONFIG"  # read by the CLI (--config), not a setting
WORKER_ENV = "SUPPORTBOT_WORKER_SETTINGS"  # set by `serve --workers` for its workers, not a setting
_NAMES = frozenset({"bot_name", "company_name"})
# The {placeholders} each persona text may use; render() fills exactly these.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "system_prompt": _NAMES, "greeting": _NAMES, "fallback_text": _NAMES,
    "handoff_text": _NAMES, "clarify_text": _NAMES, "clarify_footer": _NAMES,
    "empty_text": _NAMES, "too_long_text": _NAMES | {"max_chars"}, "error_text": _NAMES,
    "waiting_text": _NAMES, "wait_notice_text": _NAMES | {"wait"}, "identity_text": _NAMES,
    "stay_text": _NAMES,
    "blocked_text": _NAMES, "abuse_text": _NAMES, "harmful_text": _NAMES,
    "self_harm_text": _NAMES, "rate_text": _NAMES, "cooldown_text": _NAMES | {"minutes"},
    "busy_text": _NAMES,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PersonaSettings(_Section):
    """Who the bot is and the fixed texts it says ({bot_name} and {company_name} are filled in)."""

    company_name: str = Field("Kestrel Outfitters", min_length=1,
                              description="Company the bot speaks for.")
    bot_name: str = Field("Kes", min_length=1, description="Name the bot introduces itself with.")
    system_prompt: str = Field(
        "You are {bot_name}, the support assistant of {company_name}. Answer the customer's "
        "question with the facts from the FAQ, in one to three sentences. Do not add anything "
        "that is not in the FAQ.",
        min_length=1, description="System prompt for generation; {bot_name} and {company_name} "
        "are filled in.")
    greeting: str = Field("Hi, I'm {bot_name} from {company_name}. How can I help you today?",
                          description="First message in an interactive chat.")
    fallback_text: str = Field(
        "Sorry, I don't have an answer to that. Would you like me to pass you to a human "
        "colleague? Type 'human' and I'll connect you.", min_length=1,
        description="Reply when nothing in the FAQ matches.")
    handoff_text: str = Field(
        "I'm passing you to a human colleague now. Someone from our team will reply here as "
        "soon as possible.", min_length=1, description="Reply when handing off to a human.")
    clarify_text: str = Field("I'm not quite sure what you mean. Did you mean:", min_length=1,
                              description="Lead-in before the 'Did you mean' suggestions.")
    clarify_footer: str = Field(
        "Reply with a number, or ask your question in other words.",
        description="Line after the suggestions.")
    empty_text: str = Field("Please type your question.", min_length=1,
                            description="Reply to an empty message.")
    too_long_text: str = Field(
        "Your message is too long for me; please keep it under {max_chars} characters.",
        min_length=1, description="Reply to a message over dialogue.max_input_chars.")
    error_text: str = Field(
        "Sorry, something went wrong on our side. Please try again in a moment, or type "
        "'human' to reach a colleague.", min_length=1,
        description="Reply when a turn fails (the error is logged and stored).")
    busy_text: str = Field(
        "I'm still working on your previous message. Please send this one again in a moment.",
        min_length=1, description="Reply when the conversation's previous turn is still "
        "running after storage.turn_lock_seconds (the message is not stored).")
    waiting_text: str = Field(
        "A colleague from our team has your conversation and will reply here soon.",
        min_length=1, description="Reply while a handed-off conversation waits for a human.")
    wait_notice_text: str = Field(
        "Thank you for waiting. Our colleagues are all busy at the moment; the wait is {wait}. "
        "You don't need to stay: we will reply here in this chat.", min_length=1,
        description="Sent once to a customer still waiting for a human after "
        "operators.wait_notice_minutes; {wait}: 'about N minutes' from recent claims, else "
        "'a little longer than usual'.")
    identity_text: str = Field(
        "I'm {bot_name}, the virtual assistant of {company_name}. I can answer questions "
        "from our help pages; type 'human' to reach a colleague.", min_length=1,
        description="Reply to 'are you a human or a bot?'.")
    stay_text: str = Field(
        "All right, I'll keep helping you here. What would you like to know?", min_length=1,
        description="Reply when the customer says they do not want a human.")
    blocked_text: str = Field(
        "Sorry, I can't help with that. I'm happy to help with your orders, deliveries, returns "
        "and account.", min_length=1,
        description="Reply to a message the safety guards block (it does not say which rule).")
    abuse_text: str = Field(
        "I'm here to help, and I'd like to keep this conversation friendly. What can I do for "
        "you?", min_length=1, description="Reply to an abusive or offensive message.")
    harmful_text: str = Field(
        "Sorry, I can't help with that.", min_length=1,
        description="Reply to a request for something harmful (weapons, crime, violence).")
    self_harm_text: str = Field(
        "I'm really sorry you're feeling this way. You deserve support right now: if you are in "
        "danger, please call your local emergency number, or reach a crisis line (988 in the "
        "US, 116 123 in the UK and Ireland). You don't have to go through this alone.",
        min_length=1, description="Reply when a message speaks of self-harm or suicide.")
    rate_text: str = Field(
        "You're sending messages faster than I can answer. Please wait a moment and try again.",
        min_length=1, description="Reply when a user goes over the rate or flood limit.")
    cooldown_text: str = Field(
        "Let's take a short break. I'll be able to reply again in about {minutes} minutes.",
        min_length=1, description="Reply during a cool-down after repeated blocked messages "
        "({minutes} is filled in).")

    @field_validator(*PLACEHOLDERS)
    @classmethod
    def _known_placeholders(cls, text: str, info: ValidationInfo) -> str:
        allowed = PLACEHOLDERS[str(info.field_name)]
        for name in _placeholders(text):
            if name not in allowed:
                names = ", ".join(f"{{{a}}}" for a in sorted(allowed))
                raise ValueError(f"unknown placeholder {{{name}}} (allowed: {names}; "
                                 "write {{ and }} for a literal brace)")
        return text

    def render(self, text: str, **extra: object) -> str:
        """Fill {bot_name}, {company_name} and any extra fields into a persona text."""
        return text.format(bot_name=self.bot_name, company_name=self.company_name, **extra)


def _placeholders(text: str) -> Iterator[str]:
    """The field names of the {placeholders} in a format string; ValueError if malformed."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed braces: {exc} (write {{{{ and }}}} for a literal brace)"
                         ) from None
    for _, name, spec, _ in parsed:
        if name is not None:
            yield name
            yield from _placeholders(spec or "")


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
                         "llama.cpp's threads stall on a busy core). See bench/README.md.")
    cache_dir: Path = Field(Path("~/.cache/supportbot/models"), validate_default=True,
                            description="Where the bundled GGUF is converted to safetensors once.")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)

    @field_validator("adapter", "cache_dir")
    @classmethod
    def _expand_user(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None


class RetrievalSettings(_Section):
    """The FAQ corpus, the embedder and the decision thresholds."""

    embedder: str = Field(BUNDLED_EMBEDDER,
                          description="Bundled name, a local sentence-transformers folder, or id.")
    faq_path: Path = Field(Path("data/faq.yaml"), description="FAQ file (.yaml, .jsonl, .csv).")
    index_dir: Path = Field(Path(".supportbot/index"), description="Where the index is saved.")
    scoring: Literal["nearest", "blend", "classifier"] = Field(
        "classifier", description="An entry's score: 'classifier' ranks by a softmax head "
        "fitted on the FAQ's phrasings when the index opens (seconds), scored as the mean of its "
        "probability and the blend cosine; 'nearest', the nearest phrasing's cosine; 'blend', "
        "the mean of that and the cosine with the phrasings' centroid. At the default "
        "thresholds 'classifier' answers more questions right, and fewer wrong, than 'nearest' "
        "on every data set measured (bench/README.md). `supportbot tune-retriever` measures each "
        "on your FAQ and recommends one.")
    lexical: Literal["auto", "on", "off"] = Field(
        "auto", description="Whether the classifier also weighs the question's words (TF-IDF "
        "word and character n-grams) next to its embedding: 'auto' fits the head with and "
        "without them when the index opens and keeps what predicts held-out phrasings better. "
        "On FAQs with many phrasings per entry the words win (Banking77, 104 per entry: top-1 "
        "92.3% -> 93.5%), on small ones 'auto' leaves them out. The cost is at the first "
        "start on large FAQs: about 2.5x the fitting time (17 s instead of 7 s for 8,000 "
        "phrasings); the fitted head is kept in the index folder for the next start, and a "
        "refit after an FAQ change starts from the last head (bench/README.md).")
    out_of_scope: str = Field(
        "bundled", description="Questions no FAQ entry covers, which the classifier scoring "
        "learns as one more class so that unrelated questions score lower: 'bundled' "
        "(CLINC150's 100 out-of-scope training questions), 'none', or a text file with one "
        "question per line (# starts a comment), such as unrelated questions from your logs.")
    index_type: Literal["flat", "hnsw", "ivf"] = Field(
        "flat", description="The FAISS index of the phrasings: 'flat' searches exactly; "
        "'hnsw' (a graph) and 'ivf' (clusters) search approximately, faster for nearest-phrasing "
        "search over very large FAQs (recall and speed in bench/README.md). Blend and classifier "
        "scoring read every vector whatever the type. Changing it rebuilds the index.")
    top_k: int = Field(5, ge=1, le=50, description="FAQ entries retrieved per message.")
    answer_threshold: float = Field(0.70, ge=-1.0, le=1.0,
                                    description="Cosine score at or above which the FAQ answers.")
    answer_margin: float = Field(0.0, ge=0.0, le=1.0, description="A direct answer also needs "
                                 "the top entry this far ahead of the second; closer entries "
                                 "get 'Did you mean' (calibrated by tune-retriever).")
    suggest_threshold: float = Field(0.45, ge=-1.0, le=1.0,
                                     description="Score at or above which 'Did you mean' offers.")
    max_suggestions: int = Field(3, ge=1, le=5, description="Questions offered in 'Did you mean'.")
    auto_rebuild: bool = Field(True, description="Rebuild a missing or stale index on start.")
    threads: int = Field(1, ge=0, le=64, description="Torch threads of the event loop's "
                         "thread and of each of the two retrieval workers (0: all cores). More "
                         "than one slows generation on a small machine: bench/README.md.")

    @field_validator("faq_path", "index_dir")
    @classmethod
    def _expand_user(cls, path: Path) -> Path:
        return path.expanduser()

    @field_validator("out_of_scope")
    @classmethod
    def _outside_file(cls, value: str) -> str:
        if value in ("bundled", "none"):
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"'{value}' is not 'bundled', 'none' or an existing file")
        return str(path)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> RetrievalSettings:
        if self.suggest_threshold > self.answer_threshold:
            raise ValueError(
                f"suggest_threshold ({self.suggest_threshold}) must not exceed "
                f"answer_threshold ({self.answer_threshold})")
        return self


class DialogueSettings(_Section):
    """Policy knobs of the dialogue manager."""

    middle: Literal["generate", "clarify", "fallback"] = Field(
        "clarify", description="Between suggest and answer threshold: 'Did you mean', a "
        "grounded generated answer, or the fallback. 'clarify' until you serve a fine-tuned "
        "adapter: the untuned bundled model gets 9 of 167 such answers right (bench/README.md).")
    prompt_entries: int = Field(1, ge=1, le=10, description="Retrieved FAQ entries put in the "
                                "prompt (more helps larger models; the 135M one mixes them up).")
    prompt_floor: float | None = Field(None, ge=-1.0, le=1.0, description="The score an entry "
                                       "after the first needs to be in the prompt (the first "
                                       "needs retrieval.suggest_threshold); empty: the suggest "
                                       "threshold too. Lower lets the model compare the first "
                                       "entry with a runner-up that may be the right one; the "
                                       "bundled 135M model then picks the wrong one more often "
                                       "(20 sent / 6 wrong at 0.2 against 27 / 2, "
                                       "bench/README.md).")
    prompt_phrasings: bool = Field(True, description="Show each entry in the prompt as the "
                                   "phrasing retrieval matched and its answer (Q: / A:), not the "
                                   "answer alone. An adapter must be served with the format it "
                                   "was trained with (supportbot train reads this too): the FAQ "
                                   "adapter sends 27 of 40 middle-band answers with phrasings, "
                                   "15 without; the untuned model 0 and 3 (bench/README.md).")
    history_turns: int = Field(4, ge=0, le=50,
                               description="Recent messages given to the model and to retrieval.")
    min_grounding: float = Field(0.725, ge=0.0, le=1.0, description="A generated sentence "
                                 "scoring below this is not shown (nor anything after it); with "
                                 "nothing shown, 'Did you mean' is offered instead.")
    max_input_chars: int = Field(2000, ge=1, description="Longer messages are refused (and "
                                 "stored cut to this length).")
    release: Literal["sentence", "answer"] = Field(
        "sentence", description="Generated text reaches the customer sentence by sentence, each "
        "once it passes the grounding check, or only as a whole checked answer.")
    handoff_keywords: list[str] = Field(
        default_factory=lambda: ["human", "agent", "real person", "operator",
                                 "talk to someone", "speak to someone", "representative"],
        description="A message that is one of these (or asks for one) goes to a human.")


InputGuard = Literal["normalize", "rate", "injection", "harmful", "abuse", "pii"]
OutputGuard = Literal["toxicity", "blocklist", "pii_leak", "prompt_leak"]
INPUT_GUARDS: tuple[InputGuard, ...] = ("normalize", "rate", "injection", "harmful", "abuse",
                                        "pii")
OUTPUT_GUARDS: tuple[OutputGuard, ...] = ("toxicity", "blocklist", "pii_leak", "prompt_leak")
PII_ENTITIES = PII_LABELS  # bot/shared/pii.py: the one redactor's labels


class SafetySettings(_Section):
    """Input guards (before retrieval) and output guards (on generated text); bot/safety/."""

    enabled: bool = Field(True, description="Run the guards at all (off: nothing is checked "
                          "and PII is stored as typed).")
    input_guards: list[InputGuard] = (
        Field(default_factory=lambda: list(INPUT_GUARDS), description="Input guards, in the "
              "order they run; the first block wins. PII is redacted in what is stored "
              "whether or not 'pii' is listed (see redact_stored)."))
    output_guards: list[OutputGuard] = Field(
        default_factory=lambda: list(OUTPUT_GUARDS), description="Guards on every generated "
        "sentence before it is shown; a block stops the answer there, like a failed grounding "
        "check.")
    injection_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Probability of the "
                                       "learned injection head at which a message is blocked "
                                       "(patterns block on their own). Tuned on data/safety "
                                       "dev.")
    harmful_threshold: float = Field(0.988, ge=0.0, le=1.0, description="Probability of the "
                                     "learned harmful-request head at which a message is "
                                     "blocked (the lexicon blocks on its own).")
    abuse_threshold: float = Field(0.8, ge=0.0, le=1.0, description="alt-profanity-check "
                                   "probability at which a customer's message is abuse.")
    abuse_allow: list[str] = Field(
        default_factory=lambda: ["hell", "the hell", "damn", "dammit", "bloody", "crap",
                                 "crappy", "freaking", "frigging", "heck", "wtf"],
        description="Mild swear words a frustrated customer may use: left out before the abuse "
        "score (\"where the hell is my parcel\" is a customer, not abuse).")
    abuse_allow_frustration: bool = Field(
        True, description="Let through swearing that is aimed at no one in a message that asks "
        "for something (\"this bullshit jacket broke, how do I return it?\"); swearing at the "
        "bot or staff is still abuse.")
    output_toxicity_threshold: float = Field(0.5, ge=0.0, le=1.0, description="The same "
                                             "probability for a generated sentence (stricter: "
                                             "the bot speaks for the company).")
    detector_path: Path | None = Field(None, description="Weights of the learned heads "
                                       "(default: the file shipped in bot/safety/, made by "
                                       "training/safety_detector.py).")
    blocklist: list[str] = Field(default_factory=list, description="Words and sentences the "
                                 "bot must never say (case, accents and homoglyphs folded).")
    pii_entities: list[str] = Field(default_factory=lambda: list(PII_ENTITIES),
                                    description="PII labels found and redacted.")
    phone_regions: list[str] = Field(default_factory=lambda: list(PHONE_REGIONS),
                                     description="Regions whose national phone formats are "
                                     "recognised (international +NN numbers always are).")
    pii_keep_patterns: list[str] = Field(
        default_factory=list, description="Regular expressions of identifiers the company "
        "keeps, never redacted (e.g. order ids 'KO-\\d{6}'); digits after 'order', "
        "'invoice', 'tracking' and the like are never taken for phone numbers anyway.")
    pii_use_in_turn: bool = Field(True, description="The live turn (retrieval, generation) may "
                                  "use the customer's PII; off: it sees the redacted text.")
    redact_stored: bool = Field(True, description="Redact PII in everything stored and logged "
                                "(the message, the retrieval query, generated text, checks).")
    rate_per_minute: int = Field(20, ge=0, description="Messages one user may send per minute "
                                 "in one conversation (0: no limit).")
    flood_repeats: int = Field(4, ge=0, description="The same message this many times within "
                               "flood_window_seconds (one user, one conversation) is blocked "
                               "(0: off).")
    flood_window_seconds: float = Field(120.0, gt=0, description="Window of the flood guard.")
    cooldown_after: int = Field(3, ge=0, description="After this many blocked messages in a "
                                "conversation it cools down (0: never).")
    cooldown_seconds: float = Field(300.0, ge=0, description="How long a cool-down lasts.")
    handoff_after: int = Field(0, ge=0, description="After this many blocked messages the "
                               "conversation goes to a human instead (0: never; checked "
                               "before cooldown_after).")

    @field_validator("pii_entities")
    @classmethod
    def _known_entities(cls, entities: list[str]) -> list[str]:
        unknown = [e for e in entities if e not in PII_ENTITIES]
        if unknown:
            raise ValueError(f"unknown PII label(s) {', '.join(unknown)} (known: "
                             f"{', '.join(PII_ENTITIES)})")
        return entities

    @field_validator("pii_keep_patterns")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        keep_patterns(patterns)  # the error names the setting and the pattern
        return patterns

    @field_validator("detector_path")
    @classmethod
    def _expand_user(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None


class StorageSettings(_Section):
    """Where conversations are stored."""

    database_url: str = Field("sqlite+aiosqlite:///.supportbot/supportbot.db",
                              description="Any async SQLAlchemy URL.")
    turn_lock_seconds: float = Field(60.0, gt=0, le=3600, description="How long a turn waits "
                                     "for the conversation's previous one (on any worker) "
                                     "before the customer is asked to send it again.")
    original_text_hours: float = Field(72.0, ge=0, le=24 * 90, description="How long a "
                                       "customer's message as written (before PII redaction) "
                                       "is kept for the operator holding the conversation; "
                                       "then it is deleted (everything else only ever holds "
                                       "the redacted text). 0: never kept. docs/privacy.md.")

    def original_ttl(self) -> timedelta | None:
        """original_text_hours as a time span; None when texts as written are not kept."""
        return timedelta(hours=self.original_text_hours) if self.original_text_hours else None


class WebSettings(_Section):
    """The web server: the chat page, the web socket, the REST API and metrics."""

    host: str = Field("127.0.0.1", description="Address `supportbot serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `supportbot serve` listens on.")
    preload: bool = Field(False, description="Load the model at start, not at the first "
                          "generated turn.")
    secret: SecretStr | None = Field(None, description="Key that signs conversation tokens; "
                                     "every worker needs the same. Unset: web.secret_file.")
    secret_file: Path = Field(Path(".supportbot/web-secret"), description="Where a random key "
                              "is created (once, mode 0600) when web.secret is unset.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins other than the "
                                    "bot's own that may call the REST API from a browser.")
    max_frame_bytes: int = Field(16384, ge=256, le=1048576, description="Largest web-socket "
                                 "frame or REST body accepted.")
    heartbeat_seconds: float = Field(20.0, gt=0, le=3600, description="Web-socket ping interval.")
    send_timeout_seconds: float = Field(10.0, gt=0, le=600, description="How long sending one "
                                        "web-socket frame may take; a client that reads "
                                        "nothing for that long is dropped (closed 1008).")
    rate_per_connection: float = Field(1.0, gt=0, description="Messages per second one "
                                       "connection or conversation may send, on average.")
    burst_per_connection: int = Field(5, ge=1, description="Messages one connection may send "
                                      "at once before the rate applies.")
    rate_per_ip: float = Field(5.0, gt=0, description="Requests per second from one client IP, "
                               "on average (messages, feedback, REST calls, new sockets).")
    burst_per_ip: int = Field(60, ge=1, description="Requests one client IP may make at once.")
    drain_seconds: float = Field(30.0, ge=0, le=600, description="On shutdown, how long turns "
                                 "in flight may take to finish.")
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the port "
                         "(`serve --workers`); more than 1 needs PostgreSQL in "
                         "storage.database_url. Each loads the embedder (and the model, if "
                         "local): see the README.")
    forwarded_allow_ips: list[str] = Field(default_factory=list, description="Addresses or "
                                           "networks (10.0.0.0/8) of your proxies, whose "
                                           "X-Forwarded-For / -Proto name the client (rate "
                                           "limits are per client IP); empty: trust no proxy, "
                                           "the peer is the client. See docs/deploy.md.")
    api_docs: bool = Field(False, description="Serve the REST API's OpenAPI schema at "
                           "/openapi.json (the customer routes only; no Swagger UI nor ReDoc, "
                           "which would load third-party scripts).")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)


def check_networks(values: list[str]) -> list[str]:
    """`values`, each an IP address or network; ValueError naming the first that is not."""
    for item in values:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (such as 127.0.0.1 "
                             "or 10.0.0.0/8)") from None
    return values


class OperatorSettings(_Section):
    """The operator inbox (`/operator/api/`): human colleagues answering handed-off chats."""

    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="How long an operator "
                                 "stays signed in after logging in.")
    max_failed_logins: int = Field(5, ge=1, le=1000, description="Wrong passwords for one "
                                   "name from one client address before its logins from there "
                                   "wait: 1 s, then twice as long after each further one.")
    max_failed_logins_per_ip: int = Field(20, ge=1, le=100000, description="Wrong passwords "
                                          "from one client address, for any names, before its "
                                          "logins wait the same way.")
    lockout_minutes: float = Field(15.0, gt=0, le=24 * 60, description="The longest wait "
                                   "between logins after wrong passwords; twice this without "
                                   "one forgets them.")
    secure_cookie: bool = Field(True, description="Send the session cookie over HTTPS only; "
                                "turn off only to try the inbox on plain http://localhost.")
    wait_notice_minutes: float = Field(5.0, ge=0, le=24 * 60, description="A customer waiting "
                                       "this long for a human gets persona.wait_notice_text, "
                                       "once per handoff (0: never).")
    faq_sync_seconds: float = Field(2.0, ge=0, le=3600, description="How often a bot process "
                                    "looks in the database for FAQ phrasings and entries "
                                    "operators added on another process (0: before every turn); "
                                    "the process that adds one uses it at once.")


_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{30,}$")  # BotFather's format: <bot id>:<secret>
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what Telegram accepts as secret_token
TELEGRAM_TEXTS = ("help_text", "text_only_text", "reset_text", "feedback_text", "not_yours_text")


class TelegramSettings(_Section):
    """The Telegram channel (`supportbot telegram`): token, polling or webhook, and rendering."""

    token: SecretStr | None = Field(None, description="The bot's token from BotFather "
                                    "(123456:ABC...); better set as SUPPORTBOT_TELEGRAM__TOKEN.")
    base_url: str = Field("https://api.telegram.org/bot", min_length=1, description="Bot API "
                          "base URL in python-telegram-bot's form (the token is appended); "
                          "change it for your own Bot API server.")
    base_file_url: str = Field("https://api.telegram.org/file/bot", min_length=1,
                               description="Bot API file URL, in the same form.")
    mode: Literal["polling", "webhook"] = Field("polling", description="polling: ask Telegram "
                                                "for updates (works behind any firewall); "
                                                "webhook: Telegram posts them to webhook_url.")
    poll_timeout_seconds: int = Field(10, ge=0, le=50, description="Long-polling wait of one "
                                      "getUpdates call.")
    webhook_url: str | None = Field(None, description="Public HTTPS URL Telegram posts updates "
                                    "to (webhook mode), ending in webhook_path.")
    webhook_secret: SecretStr | None = Field(None, description="Secret Telegram sends in "
                                             "X-Telegram-Bot-Api-Secret-Token (A-Z, a-z, 0-9, "
                                             "_ and -); unset: derived from the token.")
    webhook_share_web_port: bool = Field(False, description="Serve the webhook from "
                                         "`supportbot serve` at webhook_path, not from a "
                                         "server of its own.")
    webhook_listen: str = Field("127.0.0.1", description="Address the webhook's own server "
                                "listens on (behind your HTTPS proxy).")
    webhook_port: int = Field(8443, ge=1, le=65535, description="Port the webhook's own "
                              "server listens on.")
    webhook_path: str = Field("/telegram/webhook", pattern=r"^/[\w./-]*$",
                              description="Path the webhook is served at.")
    answer_edited: bool = Field(False, description="Answer a customer's edited message as a "
                                "new one (default: ignore edits).")
    stream_edits: bool = Field(True, description="Show a generated answer as it is verified, "
                               "by editing one message; off: send it once complete.")
    edit_interval_seconds: float = Field(1.0, ge=0.1, le=60, description="Least time between "
                                         "two edits of a streamed message in a private chat.")
    group_edit_interval_seconds: float = Field(3.0, ge=0.1, le=60, description="The same in "
                                               "groups, where Telegram allows 20 messages a "
                                               "minute.")
    max_concurrent_updates: int = Field(64, ge=1, le=4096, description="Updates handled at "
                                        "once (one chat's always one after another, in order).")
    rate_limit: bool = Field(True, description="Spread outgoing calls under Telegram's flood "
                             "limits (python-telegram-bot's AIORateLimiter).")
    max_retries: int = Field(5, ge=0, le=50, description="Retries of a call that failed with "
                             "flood control (RetryAfter), a timeout or a network error.")
    retry_backoff_seconds: float = Field(1.0, ge=0.0, le=60, description="Wait before the "
                                         "first retry; it doubles with each further one.")
    retry_max_backoff_seconds: float = Field(30.0, ge=0.0, le=600, description="Longest wait "
                                             "between retries (a RetryAfter's own wait wins).")
    request_timeout_seconds: float = Field(20.0, gt=0, le=300, description="How long one Bot "
                                           "API call may take.")
    drain_seconds: float = Field(30.0, ge=0, le=600, description="On shutdown, how long "
                                 "updates in flight may take to finish.")
    state_file: Path | None = Field(Path(".supportbot/telegram-state.pickle"),
                                    description="Where each chat's current conversation is "
                                    "kept across restarts; null: in memory only.")
    help_text: str = Field(
        "I'm {bot_name}, the assistant of {company_name}. Ask me a question in your own words. "
        "/reset starts a new conversation, /human passes you to a colleague.", min_length=1,
        description="Reply to /help.")
    text_only_text: str = Field(
        "Sorry, I can read text only. Please type your question.", min_length=1,
        description="Reply to photos, stickers, voice messages, files and the like.")
    reset_text: str = Field("All right, let's start over. How can I help you?", min_length=1,
                            description="Reply to /reset.")
    feedback_text: str = Field("Thanks for your feedback!", min_length=1,
                               description="Shown briefly when a customer rates an answer.")
    not_yours_text: str = Field("These buttons belong to another customer's question.",
                                min_length=1, description="Shown briefly when someone in a "
                                "group presses buttons under another customer's answer.")

    @field_validator("token")
    @classmethod
    def _token_format(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not _TOKEN.match(token.get_secret_value().strip()):
            raise ValueError("not a bot token: BotFather's tokens look like "
                             "123456789:AAH...(digits, a colon, then 30 or more letters, "
                             "digits, _ or -)")
        return SecretStr(token.get_secret_value().strip()) if token is not None else None

    @field_validator("state_file")
    @classmethod
    def _expand_user(cls, path: Path | None) -> Path | None:
        return path.expanduser() if path is not None else None

    @field_validator("webhook_secret")
    @classmethod
    def _secret_format(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not _WEBHOOK_SECRET.match(secret.get_secret_value()):
            raise ValueError("the webhook secret must be 1 to 256 characters of A-Z, a-z, "
                             "0-9, _ and -")
        return secret

    @field_validator(*TELEGRAM_TEXTS)
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        for name in _placeholders(text):
            if name not in _NAMES:
                raise ValueError(f"unknown placeholder {{{name}}} (allowed: {{bot_name}}, "
                                 "{company_name}; write {{ and }} for a literal brace)")
        return text

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> TelegramSettings:
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("mode webhook needs webhook_url (the public HTTPS URL Telegram "
                             "posts updates to)")
        return self


class Settings(BaseSettings):
    """All settings; sources in order of precedence: environment, then file, then defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_DELIMITER,
                                      extra="forbid", nested_model_default_partial_update=True)

    persona: PersonaSettings = Field(default_factory=PersonaSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    dialogue: DialogueSettings = Field(default_factory=DialogueSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    operators: OperatorSettings = Field(default_factory=OperatorSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's contents arrive as init arguments; the environment overrides them.
        return (_EnvSource(settings_cls), init_settings)


class _EnvSource(PydanticBaseSettingsSource):
    """SUPPORTBOT_* variables as nested values; list settings take commas or a JSON array."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: __call__ reads the whole environment at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return env_values(os.environ)


def load_settings(path: Path | None = None, explicit: bool = False) -> Settings:
    """Read settings from a YAML file (if it exists) and the environment.

    With `explicit`, a missing file is an error (the user named it); otherwise defaults apply.
    Relative paths in the file are taken relative to the file's folder.
    """
    path = path or DEFAULT_CONFIG
    text, data = "", {}
    if path.is_file():
        text = _read_text(path)
        data = _parse_yaml(path, text)
        _resolve_relative(data, path.parent)
    elif explicit:
        raise SettingsError([f"settings file {path} not found"], path)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise SettingsError([_describe(err, path, text, data) for err in exc.errors()],
                            path if text else None) from exc


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark."""
    try:
        return read_text(path)
    except TextFileError as exc:
        where = f"line {exc.line}: " if exc.line is not None else ""
        raise SettingsError([where + exc.message], path) from exc


def _parse_yaml(path: Path, text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SettingsError([f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"], path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(["the file must hold a mapping of sections (persona, model, ...)"],
                            path)
    return data


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Make relative paths in the file relative to the file's folder, not the working directory."""
    for section, key in (("retrieval", "faq_path"), ("retrieval", "index_dir"),
                         ("model", "adapter"), ("model", "cache_dir"),
                         ("telegram", "state_file"), ("safety", "detector_path"),
                         ("web", "secret_file")):
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            data[section][key] = str(base / value)
    storage = data.get("storage")
    if not isinstance(storage, dict):
        return
    url = storage.get("database_url")
    if isinstance(url, str) and url.startswith("sqlite") and ":///" in url:
        head, file = url.split(":///", 1)
        if file and not file.startswith("/") and not file.startswith(":memory:"):
            storage["database_url"] = f"{head}:///{base.resolve() / file}"


def _describe(err: Mapping[str, Any], path: Path, text: str, data: dict[str, Any]) -> str:
    """One line per validation error: dotted key, message, value, and where it came from."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    message = str(err["msg"]).removeprefix("Value error, ")
    value = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(
        err.get("input"), dict) else ""
    env_names = _env_names_for(loc)
    sources = []
    if env_names:
        plural = "s" if len(env_names) > 1 else ""
        sources.append(f"environment variable{plural} {', '.join(env_names)}")
    exact = ENV_PREFIX + ENV_DELIMITER.join(loc).upper() in {n.upper() for n in env_names}
    if not exact and _in_file(data, loc):
        line = _yaml_line(text, loc)
        sources.append(f"{path}" + (f", line {line}" if line else ""))
    source = "; ".join(sources) or "defaults"
    if err["type"] == "extra_forbidden":
        message = "unknown setting (check the spelling; `supportbot config show` lists them)"
        value = ""
    return f"{key}: {message}{value} [{source}]"


def _in_file(data: Mapping[str, Any], loc: list[str]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _yaml_line(text: str, loc: list[str]) -> int | None:
    """The 1-based line of the key at `loc` in the YAML text, if it can be found."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if str(key_node.value) == part:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            return line
    return line


def settings_to_yaml(settings: Settings, hide_passwords: bool = True) -> str:
    """The effective settings as YAML, in the same shape as supportbot.yaml.

    With `hide_passwords` (the default), a password in storage.database_url shows as ***.
    """
    data = settings.model_dump(mode="json")
    if hide_passwords:
        data["storage"]["database_url"] = hide_password(data["storage"]["database_url"])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# user:password@ in a URL that does not parse; the password may hold "/" or ":" but not "@"
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")


def hide_password(url: str) -> str:
    """A database URL with its password (if any) replaced by ***, also when it does not parse."""
    from sqlalchemy.engine import make_url  # only here: reading settings stays light
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _PASSWORD_IN_URL.sub(r"\1***\2", url)
    return parsed.render_as_string(hide_password=True) if parsed.password is not None else url


# --- environment: SUPPORTBOT_SECTION__KEY=value ----------------------------------------------


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested setting values from SUPPORTBOT_* variables; warns about unknown names."""
    known = _env_targets()
    values: dict[str, Any] = {}
    # Whole sections (JSON objects) first, so that a variable for one key overrides them.
    for name in sorted(environ, key=lambda n: (n.count(ENV_DELIMITER), n)):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in (CONFIG_ENV, WORKER_ENV):
            continue
        if upper not in known:
            warnings.warn(_unknown_env_message(name, known), SettingsWarning, stacklevel=2)
            continue
        loc, field = known[upper]
        value = _env_value(name, environ[name], loc, field)
        node = values
        for part in loc[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(loc[-1]), dict):
            node[loc[-1]].update(value)
        else:
            node[loc[-1]] = value
    return values


def _env_targets() -> dict[str, tuple[tuple[str, ...], FieldInfo]]:
    """Every valid variable name (upper case) with the settings path and field it sets."""
    targets: dict[str, tuple[tuple[str, ...], FieldInfo]] = {}

    def walk(model: type[BaseModel], loc: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            here = (*loc, name)
            targets[ENV_PREFIX + ENV_DELIMITER.join(here).upper()] = (here, field)
            if _is_section(field):
                walk(field.annotation, here)  # type: ignore[arg-type]

    walk(Settings, ())
    return targets


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def _env_value(name: str, raw: str, loc: tuple[str, ...], field: FieldInfo) -> Any:
    """A variable's text as the value pydantic validates: JSON for sections, lists by commas."""
    key = ".".join(loc)
    if _is_section(field):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError([f"{key}: not a JSON object ({exc.msg}, column {exc.colno}) "
                                 f"[environment variable {name}]"]) from exc
        if not isinstance(value, dict):
            raise SettingsError([f"{key}: expected a JSON object of keys "
                                 f"[environment variable {name}]"])
        return value
    if get_origin(field.annotation) is list:
        if not raw.lstrip().startswith("["):
            return [part.strip() for part in raw.split(",") if part.strip()]
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError([f"{key}: not a JSON list ({exc.msg}, column {exc.colno}); "
                                 "use a comma-separated list or a JSON array "
                                 f"[environment variable {name}]"]) from exc
    return raw


def _unknown_env_message(name: str, known: Mapping[str, object]) -> str:
    # Compared without the common prefix, which would make every name look alike.
    names = [n.removeprefix(ENV_PREFIX) for n in (*known, CONFIG_ENV)]
    close = difflib.get_close_matches(name.upper().removeprefix(ENV_PREFIX), names, n=1)
    hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else (
        f"settings are {ENV_PREFIX}<SECTION>{ENV_DELIMITER}<KEY>; "
        "`supportbot config show` lists them")
    return f"ignoring unknown environment variable {name}: {hint}"


def _env_names_for(loc: list[str]) -> list[str]:
    """The variables set for `loc`, for a section holding it, or for keys inside it."""
    key = ENV_PREFIX + ENV_DELIMITER.join(loc).upper()
    known = _env_targets()
    found = []
    for name in os.environ:
        upper = name.upper()
        if upper in known and (upper == key or key.startswith(upper + ENV_DELIMITER)
                               or upper.startswith(key + ENV_DELIMITER)):
            found.append(name)
    return sorted(found)


# --- the example file: every key, its default and its description ---------------------------

EXAMPLE_HEADER = """\
# supportbot settings: every key with its default and what it does.
# Generated by `supportbot config example`: copy it to supportbot.yaml and keep what you change.
# Relative paths are taken relative to this file's folder.
# Environment variables override the file: SUPPORTBOT_<SECTION>__<KEY>, for example
# SUPPORTBOT_RETRIEVAL__TOP_K=3 or SUPPORTBOT_MODEL__GENERATION__TEMPERATURE=0.7; lists take
# commas or JSON: SUPPORTBOT_DIALOGUE__HANDOFF_KEYWORDS="human,agent".
"""


def example_yaml() -> str:
    """An example supportbot.yaml from the settings model: every key, default and description."""
    lines: list[str] = []
    _example_lines(Settings, 0, lines)
    return EXAMPLE_HEADER + "\n".join(lines) + "\n"


def _example_lines(model: type[BaseModel], depth: int, lines: list[str]) -> None:
    indent = "  " * depth
    for name, field in model.model_fields.items():
        if _is_section(field):
            section: type[BaseModel] = field.annotation  # type: ignore[assignment]
            if depth == 0:
                lines.append("")
            lines.extend(_comment((section.__doc__ or "").strip(), indent))
            lines.append(f"{indent}{name}:")
            _example_lines(section, depth + 1, lines)
            continue
        lines.extend(_comment(field.description or "", indent))
        default = field.get_default(call_default_factory=True)
        value = str(default) if isinstance(default, Path) else default
        dumped = yaml.safe_dump({name: value}, sort_keys=False, allow_unicode=True,
                                width=100 - len(indent))
        lines.extend(indent + line for line in dumped.splitlines())


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(text, 98 - len(indent))]
