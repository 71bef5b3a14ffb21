"""TrainConfig: every LoRA fine-tuning setting, with its help text, checked when it is made."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from training.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DTYPES = ("auto", "float32", "bfloat16", "float64")


@dataclass
class TrainConfig:
    """The settings of one LoRA training run; `train_config.json` holds exactly `to_dict()`."""

    # LoRA
    rank: int = field(default=16, metadata={
        "help": "LoRA rank r: the width of the low-rank update."})
    alpha: int = field(default=32, metadata={
        "help": "LoRA alpha: the update is scaled by alpha / rank."})
    dropout: float = field(default=0.05, metadata={
        "help": "Dropout on the LoRA branch's input, in [0, 1)."})
    target_modules: str | list[str] = field(default="all-linear", metadata={
        "help": "Modules that get a LoRA update: 'all-linear' (every linear layer but the output "
                "head, peft's shorthand) or a list of module names such as ['q_proj', 'v_proj']."})
    # Optimisation
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    warmup_ratio: float = field(default=0.05, metadata={
        "help": "Share of the optimizer steps spent warming the learning rate up linearly from 0, "
                "in [0, 1); ignored when warmup_steps is set."})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "Warm-up length in optimizer steps; overrides warmup_ratio when set."})
    schedule: str = field(default="cosine", metadata={
        "help": "Learning-rate schedule after warm-up: 'cosine' (to 0), 'linear' (to 0) or "
                "'constant'."})
    epochs: int = field(default=1, metadata={
        "help": "Passes over the training rows; ignored when max_steps is set."})
    max_steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps to train for; wins over epochs when set."})
    batch_size: int = field(default=8, metadata={
        "help": "Rows per forward pass on each process (a micro-batch)."})
    grad_accum: int = field(default=1, metadata={
        "help": "Micro-batches per optimizer step; the loss is averaged over all label tokens of "
                "the window, so this is exactly a batch grad_accum times bigger."})
    max_length: int = field(default=512, metadata={
        "help": "Longest row in tokens (examples are cut or packed to fit)."})
    max_grad_norm: float = field(default=1.0, metadata={
        "help": "Gradients are clipped to this global L2 norm before each step."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW's decoupled weight decay."})
    seed: int = field(default=0, metadata={
        "help": "Seeds the LoRA initialisation, dropout and the order of the rows."})
    # Bookkeeping
    eval_every: int = field(default=50, metadata={
        "help": "Optimizer steps between eval-loss measurements; 0 = only before and after."})
    save_every: int = field(default=100, metadata={
        "help": "Optimizer steps between checkpoints; 0 = only at the end."})
    log_every: int = field(default=1, metadata={
        "help": "Optimizer steps between log lines printed above the progress bar (every step "
                "is recorded in metrics.json regardless)."})
    # Data (used by the steps that build rows)
    pack: bool = field(default=True, metadata={
        "help": "Pack several short examples into one row of at most max_length tokens."})
    eval_fraction: float = field(default=0.1, metadata={
        "help": "Share of the conversations held out for the eval loss, in [0, 1)."})
    # Machine
    device: str = field(default="auto", metadata={
        "help": "'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'."})
    dtype: str = field(default="auto", metadata={
        "help": "Weights' precision while training: 'auto' (bfloat16 on CUDA, float32 "
                "elsewhere), 'float32', 'bfloat16' or 'float64' (slow; for exactness checks "
                "whose tolerances must hold on any CPU)."})
    threads: int = field(default=0, metadata={
        "help": "CPU threads for torch; 0 keeps torch's default."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute each layer's activations in the backward pass instead of keeping "
                "them: far less memory (SmolLM2-135M keeps ~3.5 MB per token of a step without "
                "it), about a third more compute."})

    def __post_init__(self) -> None:
        _positive_int(self, "rank", "alpha", "epochs", "batch_size", "grad_accum", "log_every")
        _non_negative_int(self, "seed", "eval_every", "save_every", "threads")
        _positive_number(self, "learning_rate", "max_grad_norm")
        _non_negative_number(self, "weight_decay")
        _unit_interval(self, "dropout", "warmup_ratio", "eval_fraction")
        if self.max_steps is not None:
            _positive_int(self, "max_steps")
        if self.warmup_steps is not None:
            _non_negative_int(self, "warmup_steps")
        _int_field(self, "max_length")
        if self.max_length < 2:  # one token predicts nothing
            raise ConfigError(f"max_length: must be at least 2 (got {self.max_length})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule: must be one of {', '.join(SCHEDULES)} "
                              f"(got {self.schedule!r})")
        for flag in ("pack", "gradient_checkpointing"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag}: must be true or false (got {getattr(self, flag)!r})")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ConfigError(f"device: must be auto, cpu, cuda, cuda:N or mps "
                              f"(got {self.device!r})")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: must be one of {', '.join(DTYPES)} (got {self.dtype!r})")
        self._check_target_modules()

    def _check_target_modules(self) -> None:
        targets = self.target_modules
        if isinstance(targets, str):
            if not targets.strip():
                raise ConfigError("target_modules: must be 'all-linear' or a list of module names")
            return
        if (isinstance(targets, (list, tuple)) and targets
                and all(isinstance(t, str) and t.strip() for t in targets)):
            self.target_modules = list(targets)  # a tuple from code, a list from JSON: one form
            return
        raise ConfigError(f"target_modules: must be 'all-linear' or a non-empty list of module "
                          f"names (got {targets!r})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, in field order."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of `to_dict`; an unknown key is an error (a typo would do nothing)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)


def _int_field(config: TrainConfig, name: str) -> int:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):  # True is an int to Python
        raise ConfigError(f"{name}: must be a whole number (got {value!r})")
    return value


def _positive_int(config: TrainConfig, *names: str) -> None:
    for name in names:
        if _int_field(config, name) < 1:
            raise ConfigError(f"{name}: must be at least 1 (got {getattr(config, name)})")


def _non_negative_int(config: TrainConfig, *names: str) -> None:
    for name in names:
        if _int_field(config, name) < 0:
            raise ConfigError(f"{name}: must be 0 or more (got {getattr(config, name)})")


def _number(config: TrainConfig, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{name}: must be a number (got {value!r})")
    return float(value)


def _positive_number(config: TrainConfig, *names: str) -> None:
    for name in names:
        if _number(config, name) <= 0:
            raise ConfigError(f"{name}: must be greater than 0 (got {getattr(config, name)})")


def _non_negative_number(config: TrainConfig, *names: str) -> None:
    for name in names:
        if _number(config, name) < 0:
            raise ConfigError(f"{name}: must be 0 or more (got {getattr(config, name)})")


def _unit_interval(config: TrainConfig, *names: str) -> None:
    for name in names:
        if not 0 <= _number(config, name) < 1:
            raise ConfigError(f"{name}: must be in [0, 1) (got {getattr(config, name)})")
