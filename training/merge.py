"""merge(): fold a LoRA adapter into its base model: a plain model folder to serve or export."""

from __future__ import annotations

from pathlib import Path

from bot.shared.artifacts import ADAPTER_CONFIG
from training.errors import TrainingError


def merge(base_model: Path, adapter: Path, out: Path) -> Path:
    """Load base + adapter, merge the LoRA weights in, save model and tokenizer to `out`.

    The tokenizer comes from the adapter folder when it has one (training saves it there, with
    the chat template it trained on), else from the base model.
    """
    base_model, adapter, out = Path(base_model), Path(adapter), Path(out)
    if not (base_model / "config.json").is_file():
        raise TrainingError(f"base model folder {base_model} has no config.json")
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise TrainingError(f"{adapter} is not a LoRA adapter folder: it has no "
                            "adapter_config.json")
    if not any((adapter / name).is_file()
               for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise TrainingError(f"{adapter} has adapter_config.json but no adapter weights "
                            "(adapter_model.safetensors)")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # dtype="auto": the merged model keeps the base's precision (and so its size on disk).
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
    try:
        model = PeftModel.from_pretrained(base, adapter)
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise TrainingError(f"cannot load the adapter in {adapter} onto {base_model}: {e}") from e
    merged = model.merge_and_unload()
    tokenizer_dir = adapter if (adapter / "tokenizer_config.json").is_file() else base_model
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
