"""How much memory a training run will take, estimated before it starts, and how much there is.

The estimate is built from the model's shape (config.json: layers, hidden, intermediate, vocabulary,
heads), the LoRA parameters with their gradients and AdamW states, and the tokens of one
micro-batch, with and without gradient checkpointing. Its per-token constants are calibrated
against peak resident sets measured on the CPU (docs/training.md#memory has the table), so that
a run is refused, or checkpointing turned on, before the machine starts swapping rather than
after an hour of it. Nothing here imports torch: the CLI asks before it loads anything.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.errors import ConfigError, TrainingError
from training.types import IGNORE, Row

GB = 1e9
# Python, torch, transformers, peft and the tokenizer before any weight is loaded (measured RSS
# of `supportbot train` up to the first step, less the weights).
RUNTIME_BYTES = int(0.75 * GB)
# Per token and layer, the tensors autograd keeps, counted in elements of the model's dtype:
# about 16 hidden-wide (norm inputs and outputs, q/k/v/o inputs and outputs, residuals, LoRA
# dropout outputs), 6 intermediate-wide (gate, up, SiLU, product, the down projection's LoRA
# input) and, per attention head, two rows of attention weights of the row's length (torch's
# CPU attention with the packed block mask keeps them).
HIDDEN_COPIES, INTERMEDIATE_COPIES, ATTENTION_COPIES = 16, 6, 2
# Per label token, the output head's logits in float32: the logits, their log-softmax and its
# gradient.
HEAD_COPIES = 3
# Measured peaks over the count above (docs/training.md#memory): without checkpointing the
# allocator's kept blocks and autograd's transient copies add ~10%; with it, recomputation keeps
# far more than one layer's activations alive (peft's LoRA branches, the mask, the rotary
# tables), so the measured 6 x 640-token peak (8.2 GB) is ~8x the count.
CALIBRATION = {False: 1.1, True: 8.0}
# Optimizer bytes per trainable parameter: the weight, its gradient and AdamW's two moments.
OPTIMIZER_COPIES = 4
# "auto" turns checkpointing on when the estimate without it exceeds this share of the memory
# available: the rest is the margin for the estimate's error and for the machine's other work.
AUTO_SHARE = 0.8


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of one training process (times the local ranks), by part."""

    bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    checkpointing: bool = False
    ranks: int = 1

    def line(self, available: int | None) -> str:
        """'memory: ~3.1 GB estimated (model 0.6, activations 2.0, ...), 21.3 GB available'."""
        parts = ", ".join(f"{name} {size / GB:.1f}" for name, size in self.parts.items())
        ranks = f" x {self.ranks} local ranks" if self.ranks > 1 else ""
        have = "available memory unknown" if available is None \
            else f"{available / GB:.1f} GB available"
        checkpointing = "on" if self.checkpointing else "off"
        return (f"memory: ~{self.bytes / GB:.1f} GB estimated ({parts}{ranks}; gradient "
                f"checkpointing {checkpointing}), {have}")


def read_model_config(base_model: Path) -> dict[str, Any]:
    """The base model's config.json, read before (and without) loading the model."""
    path = base_model / "config.json"
    if not path.is_file():
        raise TrainingError(f"base model folder {base_model} has no config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrainingError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(config, dict):
        raise TrainingError(f"{path}: not a JSON object")
    return config


def device_name(setting: str) -> str:
    """The device a `device` setting means here ('auto': cuda when torch sees one)."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plan(config: TrainConfig, base_model: Path, rows: list[Row]
         ) -> tuple[MemoryEstimate, int | None]:
    """The estimate for training `rows` on `base_model` as `config` resolves here (checkpointing
    included), and the memory available: what the CLI prints and checks before training."""
    model_config = read_model_config(base_model)
    device = device_name(config.device)
    available = available_bytes(device)
    share = label_share(rows)
    checkpointing = resolve_checkpointing(config, model_config, device, available, share)
    found = estimate(config, model_config, checkpointing=checkpointing, device=device,
                     ranks=local_ranks(), label_share=share)
    return found, available


def _shape(model_config: Mapping[str, Any]) -> tuple[int, int, int, int, int, int, int, bool]:
    """(layers, hidden, intermediate, vocabulary, heads, kv heads, head dim, tied head)."""
    text = model_config.get("text_config") or model_config  # multimodal configs nest it
    try:
        layers, hidden = int(text["num_hidden_layers"]), int(text["hidden_size"])
        vocab = int(text["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"the base model's config.json has no usable {e} for the memory "
                          "estimate") from None
    intermediate = int(text.get("intermediate_size") or 4 * hidden)
    heads = int(text.get("num_attention_heads") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    tied = bool(model_config.get("tie_word_embeddings", text.get("tie_word_embeddings", True)))
    return layers, hidden, intermediate, vocab, heads, kv_heads, head_dim, tied


def dtype_bytes(config: TrainConfig, device: str) -> int:
    """Bytes per weight and activation element: what `dtype` resolves to on `device`."""
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return {"float32": 4, "bfloat16": 2, "float64": 8}[dtype]


def estimate(config: TrainConfig, model_config: Mapping[str, Any], tokens: int | None = None,
             checkpointing: bool | None = None, device: str = "cpu", ranks: int = 1,
             label_share: float = 1.0) -> MemoryEstimate:
    """Peak memory of a run of `config` on the model `model_config` (its config.json).

    `tokens` is one micro-batch's (default batch_size x max_length, what packed rows fill);
    `checkpointing` defaults to what the config resolves to with the memory unknown (its value,
    or off for "auto"); `ranks` processes share the machine (torchrun's local ranks), so on the
    CPU each holds its own copy of everything; `label_share` is the share of tokens that carry a
    label, the only ones the output head runs on.
    """
    layers, hidden, inter, vocab, heads, kv_heads, head_dim, tied = _shape(model_config)
    width = dtype_bytes(config, device)
    tokens = config.batch_size * config.max_length if tokens is None else tokens
    if checkpointing is None:
        checkpointing = config.gradient_checkpointing is True
    kv = kv_heads * head_dim
    per_layer_params = hidden * (heads * head_dim) * 2 + hidden * kv * 2 + 3 * hidden * inter
    params = layers * (per_layer_params + 2 * hidden) + vocab * hidden * (1 if tied else 2)
    # LoRA on every linear projection ('all-linear'); a narrower list trains fewer, and the
    # estimate errs on the safe side.
    shapes = [(hidden, heads * head_dim), (hidden, kv), (hidden, kv), (heads * head_dim, hidden),
              (hidden, inter), (hidden, inter), (inter, hidden)]
    lora = layers * sum(config.rank * (a + b) for a, b in shapes)

    row = min(tokens, config.max_length)  # attention weights span one row
    layer_token = (HIDDEN_COPIES * hidden + INTERMEDIATE_COPIES * inter
                   + ATTENTION_COPIES * heads * row) * width
    if checkpointing:
        # Each layer keeps its input; one layer at a time recomputes its activations.
        activations = tokens * (layers * hidden * width + layer_token)
    else:
        activations = tokens * layers * layer_token
    activations = int(activations * CALIBRATION[checkpointing])
    parts = {"runtime": 0 if device.startswith("cuda") else RUNTIME_BYTES,
             "model": params * width,
             "LoRA + AdamW": lora * width * OPTIMIZER_COPIES,
             "activations": activations,
             "output head": int(tokens * label_share) * vocab * 4 * HEAD_COPIES}
    total = sum(parts.values())
    per_process = 1 if device.startswith("cuda") else ranks  # one GPU per rank
    return MemoryEstimate(total * per_process, parts, checkpointing, per_process)


def label_share(rows: list[Row]) -> float:
    """The share of the rows' tokens that carry a label (1.0 for no rows: the safe side)."""
    tokens = sum(len(row) for row in rows)
    labels = sum(sum(1 for label in row.labels if label != IGNORE) for row in rows)
    return labels / tokens if tokens else 1.0


def resolve_checkpointing(config: TrainConfig, model_config: Mapping[str, Any], device: str,
                          available: int | None, share: float = 1.0) -> bool:
    """What `gradient_checkpointing` means for this run: true/false as set; "auto" is on
    exactly when the estimate without it exceeds AUTO_SHARE of the available memory (unknown
    memory: off, the faster way)."""
    if isinstance(config.gradient_checkpointing, bool):
        return config.gradient_checkpointing
    if available is None:
        return False
    without = estimate(config, model_config, checkpointing=False, device=device,
                       ranks=local_ranks(), label_share=share)
    return without.bytes > AUTO_SHARE * available


def available_bytes(device: str = "cpu") -> int | None:
    """Memory free for a new process: the GPU's free memory on CUDA; else MemAvailable from
    /proc/meminfo on Linux, os.sysconf's available pages, or psutil (macOS, Windows)."""
    if device.startswith("cuda"):
        import torch

        index = int(device.partition(":")[2] or 0)
        return int(torch.cuda.mem_get_info(index)[0]) if torch.cuda.is_available() else None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform != "darwin":  # macOS's free pages leave out the file cache it would drop
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    import psutil  # a dependency, asked last: /proc/meminfo or sysconf answer on Linux

    return int(psutil.virtual_memory().available)


def local_ranks() -> int:
    """Processes torchrun starts on this machine (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check(found: MemoryEstimate, available: int | None) -> None:
    """ConfigError, in one line naming the settings to change, when the estimate does not fit."""
    if available is None or found.bytes <= available:
        return
    checkpointing = "" if found.checkpointing else ", or --set gradient_checkpointing=true"
    raise ConfigError(
        f"training needs ~{found.bytes / GB:.1f} GB but {available / GB:.1f} GB is available: "
        "lower --batch-size (raise --set grad_accum=N to keep the effective batch) or "
        f"--max-length{checkpointing}; --set memory_check=false trains anyway")
