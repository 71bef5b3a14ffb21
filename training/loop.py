"""train(): LoRA fine-tuning of a local causal LM on token rows, in one process or under torchrun.

Read top to bottom: the edge (environment, rows, device), then `train`, then the helpers it calls
(batching, loss, eval, checkpoints, outputs).
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
import transformers
from torch import nn

from training import checkpoint, interrupt, memory
from training.config import TrainConfig
from training.errors import ConfigError, TrainingError, TrainingInterrupted
from training.examples import collate
from training.types import IGNORE, Row

# transformers 5 takes a (batch, sequence) boolean mask as logits_to_keep and computes logits
# only there; older versions compute every position's.
LOGITS_BY_MASK = int(transformers.__version__.split(".")[0]) >= 5


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_env() -> Dist:
    """Where this process sits in a torchrun launch: the only place that reads the environment."""
    env = os.environ
    return Dist(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")),
                 int(env.get("WORLD_SIZE", "1")))


def train(config: TrainConfig, base_model: Path, train_rows: list[Row], eval_rows: list[Row],
          out_dir: Path, resume: bool = False, pad_id: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Fit a LoRA adapter on `train_rows`, write it and its report to `out_dir`, return the metrics.

    Under torchrun (WORLD_SIZE > 1) every rank calls this with the same rows; each trains on its
    own shard, and only rank 0 writes files and shows progress.

    A SIGTERM or Ctrl+C while training ends the run after the current optimizer step, with a
    checkpoint and the adapter so far (metrics.json "partial": true), by raising
    TrainingInterrupted; every rank stops at the same step.
    """
    dist = dist_env()
    _check_rows(train_rows, eval_rows, config.max_length)
    device = _device(config.device, dist)
    own_group = dist.world_size > 1 and not torch_dist.is_initialized()
    if own_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                      rank=dist.rank, world_size=dist.world_size)
    try:
        stopped: TrainingInterrupted | None = None
        # Caught from loading to the last file written: a signal before the first step stops
        # the run after it; a second Ctrl+C exits at once.
        try:
            with interrupt.catching_stops() as flag:
                metrics = _train(config, Path(base_model), train_rows, eval_rows, Path(out_dir),
                                 resume, pad_id, progress and dist.main, dist, device, flag)
        except TrainingInterrupted as e:  # every rank raises it at the same step
            stopped = e
        if own_group:
            # Every rank done with its collectives before any tears the group down: a rank that
            # destroyed it while the other's gloo work was in flight aborted ("terminate called
            # without an active exception") once in CI.
            torch_dist.barrier()
        if stopped is not None:
            raise stopped
        return metrics
    finally:
        if own_group:
            torch_dist.destroy_process_group()


def _train(config: TrainConfig, base_model: Path, train_rows: list[Row], eval_rows: list[Row],
           out_dir: Path, resume: bool, pad_id: int | None, show: bool, dist: Dist,
           device: torch.device, flag: interrupt.StopFlag) -> dict[str, Any]:
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoints = out_dir / "checkpoints"
    if not resume and checkpoint.complete(checkpoints):
        raise TrainingError(f"{out_dir} holds checkpoints of an earlier run: pass resume to "
                            "continue it, or train into another folder")

    # The same seed on every rank gives every rank the same LoRA initialisation (DDP would
    # broadcast rank 0's anyway, but a single process must not depend on that).
    _seed_everything(config.seed)
    # "auto" checkpointing is decided on the memory there is before the model takes its share.
    checkpointing = memory.resolve_checkpointing(
        config, memory.read_model_config(base_model), device.type,
        memory.available_bytes(str(device)), memory.label_share(train_rows))
    tokenizer, model = _load(config, base_model, device, checkpointing)
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
    if pad_id is None:
        raise TrainingError(f"the tokenizer in {base_model} has no pad or end-of-text token; "
                            "pass pad_id")

    # How long: steps are optimizer steps; an epoch is every rank's shard once.
    micro_batches = len(_batches(len(train_rows), config.batch_size, config.seed, 0, dist))
    steps_per_epoch = math.ceil(micro_batches / config.grad_accum)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    warmup = (config.warmup_steps if config.warmup_steps is not None
              else math.ceil(config.warmup_ratio * total_steps))

    from transformers import get_scheduler

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = "constant_with_warmup" if config.schedule == "constant" else config.schedule
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_steps)

    metrics: dict[str, Any] = {
        "base_model": str(base_model), "device": str(device), "world_size": dist.world_size,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "train_rows": len(train_rows), "eval_rows": len(eval_rows),
        "data_digest": {"train": checkpoint.rows_digest(train_rows),
                        "eval": checkpoint.rows_digest(eval_rows)},
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in model.parameters()),
        "steps": total_steps, "steps_per_epoch": steps_per_epoch, "warmup_steps": warmup,
        "tokens_per_s_counts": "all tokens of the rows (prompt and answer, not padding), "
                               "summed over ranks, per second of the step",
        "train": [], "eval": [], "base_eval_loss": None, "base_eval_perplexity": None,
        "wall_time_s": 0.0,
        "gradient_checkpointing": checkpointing,
    }
    step, earlier_time = 0, 0.0
    if resume:
        step, metrics, earlier_time = checkpoint.resume(checkpoints, config, model, optimizer,
                                                        scheduler, dist, device, train_rows,
                                                        eval_rows)
    else:
        # Ranks draw different dropout masks; the seed still fixes each rank's stream.
        torch.manual_seed(config.seed + dist.rank)
    if step == 0 and metrics["base_eval_loss"] is None:  # also a resume whose stop dropped it
        # The eval loss before any update: LoRA's B starts at zero, so this is the base model,
        # and the eval points after it show what training bought. (No dropout: no RNG drawn.)
        base = _evaluate(model, eval_rows, config.batch_size, pad_id, device, dist, flag)
        if base is not None:
            metrics["eval"].append({"step": 0, **base})
            metrics["base_eval_loss"], metrics["base_eval_perplexity"] = base["loss"], \
                base["perplexity"]

    net: nn.Module = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                      else None)

    stopped_by: str | None = None
    clock = interrupt.SaveClock(config.save_every_minutes)
    saved_step = step if resume else -1  # the newest checkpoint's step
    with _progress_bar(show, total_steps, step) as bar:
        changed = metrics.get("data_changed_on_resume", [{}])[-1]
        if show and resume and changed.get("step") == step:
            bar.log(f"warning: the {' and '.join(changed['rows'])} rows are not those of the "
                    f"checkpoint (as many, other tokens): continuing in the same order; "
                    "metrics.json records it (data_changed_on_resume)")
        epoch_batches: tuple[int, list[list[int]]] = (-1, [])
        while step < total_steps:
            # The data position follows from the step alone (the order is a pure function of
            # seed and epoch), so a resumed run picks up exactly where the checkpoint left off.
            epoch, window = divmod(step, steps_per_epoch)
            if epoch_batches[0] != epoch:
                epoch_batches = (epoch, _batches(len(train_rows), config.batch_size,
                                                 config.seed, epoch, dist))
            window_batches = epoch_batches[1][window * config.grad_accum:
                                              (window + 1) * config.grad_accum]
            tick = time.perf_counter()
            # The generators as they are after `step`: what a checkpoint needs if this window
            # is abandoned half-way (dropout has drawn from them by then).
            rng_at_step = checkpoint.rng_state()
            batches = [collate([train_rows[i] for i in b], pad_id) for b in window_batches]
            targets = [_targets(b) for b in batches]

            # The denominator is the label-token count of the whole window on all ranks, so the
            # gradient is that of the mean loss over one big batch: accumulation and DDP change
            # how the work is split, never the update.
            label_tokens = _all_sum(torch.tensor(
                float(sum(int((t != IGNORE).sum()) for t in targets)), device=device))
            denominator = label_tokens.clamp(min=1)
            model.train()
            loss_sum = torch.zeros((), device=device)
            for i, (batch, target) in enumerate(zip(batches, targets, strict=True)):
                # A stop signal abandons the window between micro-batches: model, optimizer
                # and scheduler are still those after `step`, and a resume redoes the window.
                stopped_by = interrupt.agree_stop(flag, dist, device)
                if stopped_by:
                    break
                # Gradients are exchanged once per window, on its last micro-batch.
                last = i == len(batches) - 1
                sync = nullcontext() if last or dist.world_size == 1 else net.no_sync()  # type: ignore[operator]
                with sync:
                    loss = _loss_sum(net, batch, target, device)
                    # DDP averages gradients over ranks; times world_size makes that a sum.
                    (loss * dist.world_size / denominator).backward()
                loss_sum += loss.detach()
            if stopped_by:
                optimizer.zero_grad(set_to_none=True)
                if saved_step != step:
                    metrics["wall_time_s"] = earlier_time + time.perf_counter() - started
                    checkpoint.save(checkpoints, model, optimizer, scheduler, step, epoch,
                                    window, metrics, config, dist, rng_at_step=rng_at_step)
                bar.log(f"{stopped_by}: stopping at step {step} of {total_steps} (the "
                        "unfinished step is redone on resume)")
                break

            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            tokens = sum(len(train_rows[i]) for b in window_batches for i in b)
            totals = _all_sum(torch.tensor([float(loss_sum), float(tokens)], device=device))
            seconds = time.perf_counter() - tick
            entry = {"step": step, "epoch": epoch, "loss": float(totals[0] / denominator),
                     "lr": lr, "grad_norm": float(grad_norm), "tokens": int(totals[1]),
                     "label_tokens": int(label_tokens), "tokens_per_s": float(totals[1]) / seconds}
            metrics["train"].append(entry)
            info = f"loss {entry['loss']:.4f}  lr {lr:.2e}  {entry['tokens_per_s']:.0f} tok/s"
            bar.update(step, info)
            if show and config.log_every and step % config.log_every == 0:
                bar.log(f"step {step}/{total_steps}  {info}")

            if config.eval_every and step % config.eval_every == 0 and step < total_steps:
                point = _evaluate(model, eval_rows, config.batch_size, pad_id, device, dist,
                                  flag)
                if point is not None:
                    metrics["eval"].append({"step": step, **point})
                    bar.log(f"step {step}  eval loss {point['loss']:.4f}  "
                            f"perplexity {point['perplexity']:.2f}")
            if step == total_steps:
                point = _evaluate(model, eval_rows, config.batch_size, pad_id, device, dist)
                if point is not None:
                    metrics["eval"].append({"step": step, **point})
            # A signal that came during this step stops the run here, on every rank at once;
            # one that came during the last step changes nothing.
            decision = interrupt.agree(flag, clock, dist, device)
            stopped_by = decision.stop if step < total_steps else None
            if ((config.save_every and step % config.save_every == 0) or step == total_steps
                    or decision.save_due or stopped_by):
                metrics["wall_time_s"] = earlier_time + time.perf_counter() - started
                checkpoint.save(checkpoints, model, optimizer, scheduler, step, epoch, window,
                                 metrics, config, dist)
                clock.saved()
                saved_step = step
            if stopped_by:
                bar.log(f"{stopped_by}: stopping at step {step} of {total_steps}")
                break

    last_eval = metrics["eval"][-1] if metrics["eval"] else {}
    metrics["final_train_loss"] = metrics["train"][-1]["loss"] if metrics["train"] else None
    metrics["final_eval_loss"] = last_eval.get("loss")
    metrics["final_eval_perplexity"] = last_eval.get("perplexity")
    if dist.world_size > 1:
        metrics["rank_weight_max_diff"] = _rank_divergence(trainable)
    metrics["peak_memory_mb"] = _peak_memory_mb(device)
    metrics["wall_time_s"] = earlier_time + time.perf_counter() - started
    # A stopped run's adapter is usable but unfinished; its eval loss is the last one measured.
    metrics["partial"] = stopped_by is not None
    if stopped_by:
        metrics.update(stopped_by=stopped_by, stopped_at_step=step)
    if dist.main:
        checkpoint.write_outputs(out_dir, model, tokenizer, config, metrics)
    if stopped_by:
        raise TrainingInterrupted(stopped_by, step, total_steps,
                                  interrupt.EXIT_STATUS[stopped_by], metrics)
    return metrics


# --- the edge: rows, device, model ----

def _check_rows(train_rows: list[Row], eval_rows: list[Row], max_length: int) -> None:
    if not train_rows:
        raise TrainingError("no training rows: the data left nothing to train on")
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        for n, row in enumerate(rows):
            if not len(row) == len(row.labels) == len(row.position_ids) or not len(row):
                raise TrainingError(f"{name} row {n}: input_ids, labels and position_ids must "
                                    "have the same, non-zero length")
            if len(row) > max_length:
                raise TrainingError(f"{name} row {n} has {len(row)} tokens, more than "
                                    f"max_length {max_length}")


def _device(setting: str, dist: Dist) -> torch.device:
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and dist.world_size > 1:
        return torch.device("cuda", dist.local_rank)  # one GPU per process
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {setting} asked for, but torch sees no CUDA device")
    return torch.device(setting)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _load(config: TrainConfig, base_model: Path, device: torch.device,
          checkpointing: bool) -> tuple[Any, nn.Module]:
    """The tokenizer and the base model wrapped with fresh LoRA layers (in `config.dtype`)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    dtype = (torch.bfloat16 if device.type == "cuda" else torch.float32) \
        if config.dtype == "auto" else getattr(torch, config.dtype)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    model.to(device)  # type: ignore[arg-type]  # transformers' stubs miss this overload
    if checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA trains adapters only).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.rank, lora_alpha=config.alpha,
                      lora_dropout=config.dropout, target_modules=config.target_modules)
    try:
        return tokenizer, get_peft_model(model, lora)
    except ValueError as e:  # e.g. a target module name the model does not have
        raise ConfigError(f"target_modules: {e}") from e


# --- batches and loss ----

def _batches(n_rows: int, batch_size: int, seed: int, epoch: int,
             dist: Dist = Dist()) -> list[list[int]]:
    """This rank's micro-batches (row indices) for one epoch: a seeded shuffle dealt round-robin
    to the ranks. The shuffle is padded by wrapping round so every rank gets as many rows (and
    batches) as the others, which DDP's collectives need; the last batch may be short."""
    order = list(range(n_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    order += [order[i % n_rows] for i in range(-n_rows % dist.world_size)]
    mine = order[dist.rank::dist.world_size]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def _targets(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The token each position predicts; never the first token of the next packed example."""
    targets = batch["labels"][:, 1:].clone()
    targets[batch["position_ids"][:, 1:] == 0] = IGNORE
    return targets


def _loss_sum(net: nn.Module, batch: dict[str, torch.Tensor], targets: torch.Tensor,
              device: torch.device) -> torch.Tensor:
    """Summed cross-entropy over the label tokens (the caller divides by the window's count)."""
    # use_cache=False and no attention_mask: transformers then builds the block-diagonal causal
    # mask from position_ids, so packed examples do not see each other.
    input_ids = batch["input_ids"].to(device)
    inputs = {"input_ids": input_ids, "position_ids": batch["position_ids"].to(device),
              "use_cache": False}
    targets = targets.to(device)
    if LOGITS_BY_MASK:
        # Only positions with a label go through the output head: a chat's prompt tokens carry
        # no loss, and the head (vocabulary x hidden) is a fifth of a small model's compute and
        # most of its activation memory.
        keep = torch.zeros_like(input_ids, dtype=torch.bool)
        keep[:, :-1] = targets != IGNORE
        logits = net(**inputs, logits_to_keep=keep).logits  # (label tokens, vocabulary)
        return F.cross_entropy(_wide(logits), targets[keep[:, :-1]], reduction="sum")
    logits = _wide(net(**inputs).logits[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """Logits for the loss: in fp32 even when the model is bf16, in fp64 when it is fp64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def _all_sum(tensor: torch.Tensor) -> torch.Tensor:
    if torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
        torch_dist.all_reduce(tensor)
    return tensor


@torch.no_grad()
def _evaluate(model: nn.Module, rows: list[Row], batch_size: int, pad_id: int,
              device: torch.device, dist: Dist, flag: interrupt.StopFlag | None = None
              ) -> dict[str, float] | None:
    """Token-weighted mean loss and perplexity over all eval rows (each rank a shard).

    With `flag`, a stop signal drops the evaluation between batches (None, as for no rows): a
    large eval set must not hold a stop past a scheduler's grace period. Every rank checks
    before each batch of the largest shard, so all of them drop it at the same batch."""
    if not rows:
        return None
    model.eval()  # no dropout
    shard = rows[dist.rank::dist.world_size]
    batches = math.ceil(math.ceil(len(rows) / dist.world_size) / batch_size)  # rank 0's
    # float64: a float32 sum loses the last digits over many batches, and counts tokens exactly
    # only up to 2**24; MPS has no float64, and its eval sets are small enough for float32.
    totals = torch.zeros(2, device=device,
                         dtype=torch.float32 if device.type == "mps" else torch.float64)
    for start in range(0, batches * batch_size, batch_size):
        if flag is not None and interrupt.agree_stop(flag, dist, device):
            model.train()
            return None
        if start >= len(shard):
            continue  # a shorter shard: only the check above, for the other ranks
        batch = collate(shard[start:start + batch_size], pad_id)
        targets = _targets(batch)
        totals[0] += _loss_sum(model, batch, targets, device)
        totals[1] += int((targets != IGNORE).sum())
    model.train()
    loss = float(_all_sum(totals)[0] / totals[1].clamp(min=1))
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


# --- the end of a run ----

def _rank_divergence(trainable: list[nn.Parameter]) -> float:
    """Largest difference between any rank's trainable weights and rank 0's (0.0 when in step)."""
    mine = torch.cat([p.detach().float().reshape(-1) for p in trainable])
    reference = mine.clone()
    torch_dist.broadcast(reference, src=0)
    diff = (mine - reference).abs().max()
    torch_dist.all_reduce(diff, op=torch_dist.ReduceOp.MAX)
    return float(diff)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class _Bar:
    """A rich progress bar on rank 0 (loss, lr, tokens/s), or nothing."""

    def __init__(self, progress: Any | None, task: Any) -> None:
        self.progress, self.task = progress, task

    def update(self, step: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, info=info)

    def log(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line)


@contextmanager
def _progress_bar(show: bool, total: int, done: int) -> Iterator[_Bar]:
    if not show:
        yield _Bar(None, None)
        return
    from rich import progress as rp

    with rp.Progress(rp.TextColumn("training"), rp.BarColumn(), rp.MofNCompleteColumn(),
                     rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[info]}")) as progress:
        yield _Bar(progress, progress.add_task("train", total=total, completed=done, info=""))
