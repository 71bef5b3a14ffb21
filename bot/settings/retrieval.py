"""The retrieval and dialogue sections: the FAQ search and the policy built on its scores."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bot.settings.base import Section as _Section
from bot.settings.model import BUNDLED_EMBEDDER


class RetrievalSettings(_Section):
    """The FAQ corpus, the embedder and the decision thresholds."""

    embedder: str = Field(BUNDLED_EMBEDDER,
                          description="The bundled name; 'mpnet' once `supportbot models "
                          "install mpnet` has installed it; a local sentence-transformers "
                          "folder; or a hub id.")
    faq_path: Path = Field(Path("data/faq.yaml"), description="FAQ file (.yaml, .jsonl, .csv).")
    index_dir: Path = Field(Path(".supportbot/index"), description="Where the index is saved.")
    scoring: Literal["nearest", "blend", "classifier"] = Field(
        "classifier", description="An entry's score: 'classifier' ranks by a softmax head "
        "fitted on the FAQ's phrasings when the index opens (seconds), scored as the mean of its "
        "probability and the blend cosine; 'nearest', the nearest phrasing's cosine; 'blend', "
        "the mean of that and the cosine with the phrasings' centroid. 'classifier' answers more "
        "questions right at the default thresholds, at the cost of the fit when the index "
        "opens (figures in bench/README.md). "
        "`supportbot tune-retriever` measures each on your FAQ and recommends one.")
    lexical: Literal["auto", "on", "off"] = Field(
        "auto", description="Whether the classifier also weighs the question's words (TF-IDF "
        "word and character n-grams) next to its embedding: 'auto' fits the head with and "
        "without them when the index opens and keeps what predicts held-out phrasings better. "
        "The words tend to help FAQs with many phrasings per entry; on small ones 'auto' "
        "leaves them out. The cost is a longer fit at the first start on large FAQs; the "
        "fitted head is kept in the index folder for the next start, and a refit after an FAQ "
        "change starts from the last head.")
    out_of_scope: str = Field(
        "bundled", description="Questions no FAQ entry covers, which the classifier scoring "
        "learns as one more class so that unrelated questions score lower: 'bundled' "
        "(CLINC150's 100 out-of-scope training questions), 'none', or a text file with one "
        "question per line (# starts a comment), such as unrelated questions from your logs.")
    index_type: Literal["flat", "hnsw", "ivf"] = Field(
        "flat", description="The FAISS index of the phrasings: 'flat' searches exactly; "
        "'hnsw' (a graph) and 'ivf' (clusters) search approximately, faster for nearest-phrasing "
        "search over very large FAQs, at some cost in recall. Blend and classifier "
        "scoring read every vector whatever the type. Changing it rebuilds the index.")
    top_k: int = Field(5, ge=1, le=50, description="FAQ entries retrieved per message.")
    answer_threshold: float = Field(
        0.70, ge=-1.0, le=1.0, description="Score at or above which the FAQ answers directly. "
        "Unless set here (file or environment), the threshold calibrated on the FAQ's own "
        "phrasings when the index is built or changes is used instead (target_precision); a "
        "value set explicitly wins over the calibrated one.",
        json_schema_extra={"example_commented": True})
    answer_margin: float = Field(
        0.0, ge=0.0, le=1.0, description="A direct answer also needs the top entry this far "
        "ahead of the second; closer entries get 'Did you mean'. Unless set here (file or "
        "environment), the margin calibrated with the answer threshold is used; a value set "
        "explicitly wins.", json_schema_extra={"example_commented": True})
    target_precision: float = Field(
        0.97, ge=0.5, le=1.0, description="The share of direct answers that should be right: "
        "the answer threshold and margin are calibrated to reach it on the FAQ's own phrasings "
        "(cross-validated; out-of-scope questions simulated), never below 0.5. Higher answers "
        "fewer questions directly and offers 'Did you mean' more often.")
    suggest_threshold: float = Field(0.45, ge=-1.0, le=1.0,
                                     description="Score at or above which 'Did you mean' offers "
                                     "(never above the answer threshold in use).")
    max_suggestions: int = Field(3, ge=1, le=5, description="Questions offered in 'Did you mean'.")
    auto_rebuild: bool = Field(True, description="Rebuild a missing or stale index on start.")
    threads: int = Field(1, ge=0, le=64, description="Torch threads of the event loop's "
                         "thread and of each of the two retrieval workers (0: all cores). More "
                         "speeds up a search but takes cores from generation, which slows it "
                         "on a small machine.")

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
        "adapter: the untuned bundled model gets few such answers right.")
    prompt_entries: int = Field(1, ge=1, le=10, description="Retrieved FAQ entries put in the "
                                "prompt (more helps larger models; the 135M one mixes them up).")
    prompt_floor: float | None = Field(None, ge=-1.0, le=1.0, description="The score an entry "
                                       "after the first needs to be in the prompt (the first "
                                       "needs retrieval.suggest_threshold); empty: the suggest "
                                       "threshold too. Lower lets the model compare the first "
                                       "entry with a runner-up that may be the right one; the "
                                       "bundled 135M model then picks the wrong one more "
                                       "often.")
    prompt_phrasings: bool = Field(True, description="Show each entry in the prompt as the "
                                   "phrasing retrieval matched and its answer (Q: / A:), not the "
                                   "answer alone. An adapter must be served with the format it "
                                   "was trained with (supportbot train reads this too).")
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
