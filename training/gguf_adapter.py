"""export_gguf_adapter(): a peft LoRA adapter as a llama.cpp LoRA GGUF file.

llama.cpp serves LoRA adapters in its own format: each adapted weight's A and B matrices under
the base GGUF's tensor name (`blk.3.attn_q.weight.lora_a`, `.lora_b`), with the LoRA alpha in
the metadata. This follows llama.cpp's own `convert_lora_to_gguf.py`, including its one
surprise: for the llama architecture, the HF-to-GGUF conversion reorders the rows of the query
and key projections (rotary embedding layout), so the B matrices of those are reordered too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bot.shared.artifacts import ADAPTER_CONFIG, ADAPTER_GGUF
from training.errors import TrainingError

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])"
                       r"(?:\.default)?\.weight$")


def gguf_metadata(base_gguf: Path) -> dict[str, Any]:
    """The base GGUF's architecture, head counts and block count."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(base_gguf))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read the base GGUF {base_gguf}: {exc}") from exc

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    arch = str(value("general.architecture"))
    return {"arch": arch, "heads": value(f"{arch}.attention.head_count"),
            "kv_heads": value(f"{arch}.attention.head_count_kv"),
            "blocks": value(f"{arch}.block_count"),
            "tensors": {t.name for t in reader.tensors}}


def _permute(rows: Any, heads: int) -> Any:
    """convert_hf_to_gguf's LlamaModel.permute, on the output rows of a matrix."""
    return (rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def export_gguf_adapter(adapter: Path, base_gguf: Path, out: Path | None = None) -> Path:
    """Write `adapter`'s LoRA weights as a llama.cpp LoRA GGUF (default: adapter/adapter.gguf)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    adapter = Path(adapter)
    config_file = adapter / ADAPTER_CONFIG
    weights_file = adapter / "adapter_model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise TrainingError(f"{adapter} is not a peft LoRA adapter folder (it needs "
                            "adapter_config.json and adapter_model.safetensors)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise TrainingError(f"{config_file}: peft_type {config.get('peft_type')} is not LORA")
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise TrainingError(f"{config_file}: DoRA and per-module ranks or alphas have no "
                            "llama.cpp form; train with one rank and alpha")
    base = gguf_metadata(base_gguf)
    arch_names = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
    if base["arch"] not in arch_names:
        raise TrainingError(f"{base_gguf}: unknown architecture {base['arch']}")
    names = gguf.get_tensor_name_map(arch_names[base["arch"]], int(base["blocks"]))

    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(weights_file)).items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise TrainingError(f"{weights_file}: tensor {key} is not a LoRA A or B matrix "
                                "(adapters that train whole modules have no llama.cpp form)")
        module = match["module"]
        name = names.get_name(module)
        if name is None or f"{name}.weight" not in base["tensors"]:
            raise TrainingError(f"{weights_file}: module {module} has no tensor in {base_gguf}")
        pairs.setdefault(f"{name}.weight", {})[match["part"]] = tensor.astype(np.float32)

    target = Path(out) if out is not None else adapter / ADAPTER_GGUF
    writer = gguf.GGUFWriter(str(target), base["arch"])
    writer.add_string("general.type", "adapter")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.get("lora_alpha", 8)))
    for name, parts in sorted(pairs.items()):
        lora_a, lora_b = parts.get("A"), parts.get("B")
        if lora_a is None or lora_b is None:
            raise TrainingError(f"{weights_file}: {name} has only one of its A and B matrices")
        if base["arch"] == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = base["heads"] if "attn_q" in name else base["kv_heads"]
            lora_b = _permute(lora_b, int(heads))
        # Shapes as torch holds them: A is (rank, in), B is (out, rank).
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(lora_a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(lora_b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
