"""TrainConfig: every LoRA fine-tuning setting, with its help text, checked when it is made."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from training.checked import CheckedConfig
from training.errors import ConfigError

Schedule = Literal["cosine", "linear", "constant"]
Dtype = Literal["auto", "float32", "bfloat16", "float64"]
SCHEDULES: tuple[Schedule, ...] = ("cosine", "linear", "constant")
DTYPES: tuple[Dtype, ...] = ("auto", "float32", "bfloat16", "float64")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class TrainConfig(CheckedConfig):
    """The settings of one LoRA training run; `train_config.json` holds exactly `to_dict()`."""

    # LoRA
    rank: int = Field(16, ge=1, description="LoRA rank r: the width of the low-rank update.")
    alpha: int = Field(32, ge=1, description="LoRA alpha: the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0, lt=1,
                           description="Dropout on the LoRA branch's input, in [0, 1).")
    target_modules: str | list[str] = Field(
        "all-linear", description="Modules that get a LoRA update: 'all-linear' (every linear "
        "layer but the output head, peft's shorthand) or a list of module names such as "
        "['q_proj', 'v_proj'].")
    # Optimisation
    learning_rate: float = Field(2e-4, gt=0, description="Peak AdamW learning rate.")
    warmup_ratio: float = Field(
        0.05, ge=0, lt=1, description="Share of the optimizer steps spent warming the learning "
        "rate up linearly from 0, in [0, 1); ignored when warmup_steps is set.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Warm-up length in optimizer steps; overrides warmup_ratio when "
        "set.")
    schedule: Schedule = Field(
        "cosine", description="Learning-rate schedule after warm-up: 'cosine' (to 0), 'linear' "
        "(to 0) or 'constant'.")
    epochs: int = Field(1, ge=1, description="Passes over the training rows; ignored when "
                        "max_steps is set.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to train for; wins "
                                  "over epochs when set.")
    batch_size: int = Field(
        1, ge=1, description="Rows per forward pass on each process (a micro-batch). 1 with "
        "grad_accum 8 keeps a CPU run of 512-token rows near 3.3 GB where 8 rows at once take "
        "14-17 GB (docs/training.md#memory); with memory to spare (a GPU, a big machine), 8 "
        "with grad_accum 1 does the same step in fewer, larger operations.")
    grad_accum: int = Field(
        8, ge=1, description="Micro-batches per optimizer step; the loss is averaged over all "
        "label tokens of the window, so this is exactly a batch grad_accum times bigger.")
    max_length: int = Field(512, ge=2, description="Longest row in tokens (examples are cut or "
                            "packed to fit; one token would predict nothing).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradients are clipped to this global "
                                 "L2 norm before each step.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay.")
    seed: int = Field(0, ge=0, description="Seeds the LoRA initialisation, dropout and the order "
                      "of the rows.")
    # Bookkeeping
    eval_every: int = Field(50, ge=0, description="Optimizer steps between eval-loss "
                            "measurements; 0 = only before and after.")
    save_every: int = Field(100, ge=0, description="Optimizer steps between checkpoints; 0 = "
                            "only at the end.")
    save_every_minutes: float = Field(
        10.0, ge=0, description="Minutes between checkpoints, whatever the step count (rank "
        "0's clock decides for every rank), so a slow CPU run loses at most this much to a "
        "kill -9 or a power cut; 0 = by steps only.")
    log_every: int = Field(
        1, ge=1, description="Optimizer steps between log lines printed above the progress bar "
        "(every step is recorded in metrics.json regardless).")
    # Data (used by the steps that build rows)
    pack: bool = Field(True, description="Pack several short examples into one row of at most "
                       "max_length tokens.")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of the conversations held "
                                 "out for the eval loss, in [0, 1).")
    # Machine
    device: str = Field("auto", description="'auto' (cuda when available, else cpu), 'cpu', "
                        "'cuda', 'cuda:N' or 'mps'.")
    dtype: Dtype = Field(
        "auto", description="Weights' precision while training: 'auto' (bfloat16 on CUDA, "
        "float32 elsewhere), 'float32', 'bfloat16' or 'float64' (slow; for exactness checks "
        "whose tolerances must hold on any CPU).")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's default.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="Recompute each layer's activations in the backward pass instead of "
        "keeping them: far less memory (~3.5 -> ~0.6 MB per token of a micro-batch on the CPU) "
        "for ~30% more compute. 'auto' (the default) turns it on exactly when the memory "
        "estimate without it exceeds 80% of the memory available (GPU memory on CUDA), since "
        "where the activations fit, recomputing them only costs time; true or false force it.")
    memory_check: bool = Field(
        True, description="Refuse to start when the memory estimate printed before training "
        "exceeds the memory available; false trains anyway.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _module_names(cls, targets: Any) -> Any:
        """'all-linear' (or another non-empty name), or a non-empty list of names; a tuple from
        code becomes a list, the form JSON gives back."""
        if isinstance(targets, str):
            if not targets.strip():
                raise ValueError("must be 'all-linear' or a list of module names")
            return targets
        if (isinstance(targets, (list, tuple)) and targets
                and all(isinstance(t, str) and t.strip() for t in targets)):
            return list(targets)
        raise ValueError("must be 'all-linear' or a non-empty list of module names")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not _DEVICE.fullmatch(device):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return device

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, in field order."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of `to_dict`; an unknown key is an error (a typo would do nothing)."""
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)
