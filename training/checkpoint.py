"""What a run leaves on disk: checkpoints to resume from, and the finished adapter with its
settings, metrics and loss curve."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as torch_dist
from torch import nn

from training.config import TrainConfig
from training.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    from training.loop import Dist
    from training.types import Row

# Settings a resumed run may change; any other change would make the continuation a different run.
RESUMABLE_CHANGES = {"epochs", "max_steps", "eval_every", "save_every", "save_every_minutes",
                     "log_every", "device", "threads", "gradient_checkpointing",
                     "memory_check"}
KEEP_CHECKPOINTS = 2


def complete(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder gets its final name only once written;
    `.step-N.partial` folders, a write that was killed, are never among them)."""
    found = [p for p in root.glob("step-*") if (p / "trainer_state.pt").is_file()
             and p.name.removeprefix("step-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def rows_digest(rows: list[Row]) -> str:
    """A short SHA-256 of the token rows (ids, labels, positions, in order): what a resume
    compares to say the data changed since the checkpoint."""
    digest = hashlib.sha256()
    for row in rows:
        for values in (row.input_ids, row.labels, row.position_ids):
            digest.update(array("q", values).tobytes())
            digest.update(b"|")
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def remove_unfinished(root: Path) -> list[Path]:
    """Delete the temporary folders of checkpoint writes that were killed; returns them."""
    left = sorted(root.glob(".step-*.partial"))
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    return left


def _sync(folder: Path, files: bool = True) -> None:
    """Flush the folder's files (when `files`) and the folder itself to disk, so a rename never
    points at data still in the page cache when the machine goes down."""
    for path in [*(folder.iterdir() if files else ()), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state() -> dict[str, Any]:
    """This process's random number generators (what dropout draws next)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save(root: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: Any, step: int, epoch: int, window: int,
                     metrics: dict[str, Any], config: TrainConfig, dist: Dist,
                     rng_at_step: dict[str, Any] | None = None) -> None:
    """Adapter, optimizer, scheduler, data position, every rank's RNG and the metrics so far.

    `rng_at_step`: this rank's generators as they were right after `step` (taken before an
    optimizer step that was then abandoned), instead of as they are now."""
    own = rng_at_step if rng_at_step is not None else rng_state()
    rng: list[Any] = [own]
    if dist.world_size > 1:  # each rank's dropout stream is its own
        rng = [None] * dist.world_size
        torch_dist.all_gather_object(rng, own)
    if not dist.main:
        return
    final, partial = root / f"step-{step}", root / f".step-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)  # type: ignore[operator]
    torch.save({"step": step, "epoch": epoch, "window": window, "world_size": dist.world_size,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng, "config": config.to_dict()}, partial / "trainer_state.pt")
    (partial / "metrics.json").write_text(json.dumps(metrics, indent=1))
    _sync(partial)
    # Renamed only when complete, so a run killed mid-save never leaves a checkpoint to trust:
    # the older ones stay until this one has its name.
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    _sync(root, files=False)
    for old in complete(root)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)


def resume(root: Path, config: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Any, dist: Dist, device: torch.device, train_rows: list[Row],
            eval_rows: list[Row]) -> tuple[int, dict[str, Any], float]:
    """Load the newest checkpoint into the fresh objects: (step, metrics, seconds so far)."""
    if dist.main:
        remove_unfinished(root)
    found = complete(root)
    if not found:
        raise TrainingError(f"nothing to resume: no checkpoint in {root}")
    path = found[-1]
    state = torch.load(path / "trainer_state.pt", map_location=device, weights_only=True)
    if state["world_size"] != dist.world_size:
        raise TrainingError(f"{path} was written by {state['world_size']} process(es); resume it "
                            f"with as many (now {dist.world_size}), or the data order changes")
    changed = sorted(k for k, v in state["config"].items()
                     if k not in RESUMABLE_CHANGES and config.to_dict().get(k) != v)
    if changed:
        raise ConfigError(f"resume: these settings differ from the checkpoint's: "
                          f"{', '.join(changed)}")
    metrics = json.loads((path / "metrics.json").read_text())
    # Another row count changes the data order and the schedule: refused. The same count with
    # other tokens (an edited transcript; retrieval for grounded rows on another CPU ranking a
    # near tie the other way) keeps the order: continued, and recorded.
    changed = []
    for name, key, rows in (("training", "train", train_rows), ("eval", "eval", eval_rows)):
        if key == "train" and len(rows) != metrics.get("train_rows", len(rows)):
            raise TrainingError(
                f"resume: {len(rows)} training rows now, {metrics['train_rows']} in "
                f"{path.name}: the transcripts or the data settings changed since, and with "
                "them the data order; resume with the same data, or train into a new --out")
        then = metrics.get("data_digest", {}).get(key)  # older checkpoints have none
        if then is not None and then != rows_digest(rows):
            changed.append(name)
    if changed:
        metrics.setdefault("data_changed_on_resume", []).append(
            {"step": int(state["step"]), "rows": changed})
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors",
                                               device=str(device)))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"][dist.rank]
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"].cpu())
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return int(state["step"]), metrics, float(metrics.get("wall_time_s", 0.0))


def write_outputs(out_dir: Path, model: nn.Module, tokenizer: Any, config: TrainConfig,
                   metrics: dict[str, Any]) -> None:
    """The adapter, the tokenizer (its chat template goes along), the settings and the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # type: ignore[operator]
    tokenizer.save_pretrained(out_dir)
    (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    plot(metrics, out_dir / "loss.png")


def plot(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)  # draws off-screen; no pyplot, no global backend switch
    axes = figure.add_subplot()
    axes.plot([e["step"] for e in metrics["train"]], [e["loss"] for e in metrics["train"]],
              label="train loss", linewidth=1)
    if metrics["eval"]:
        axes.plot([e["step"] for e in metrics["eval"]], [e["loss"] for e in metrics["eval"]],
                  "o-", label="eval loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (mean per label token)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100, bbox_inches="tight")
