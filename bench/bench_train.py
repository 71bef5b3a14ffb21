"""LoRA fine-tuning speed and memory: `supportbot train` against TRL's SFTTrainer, same model, LoRA
config, data and steps, in one run.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_train.py [--steps 10] [--conversations 96]
     [--fast batch_size=2,grad_accum=4]

Each trainer runs in its own process, one after the other (so peak memory is its own and two
never compete): the bundled SmolLM2-135M, LoRA r=16 / alpha 32 / dropout 0.05 on all linear
projections, lr 2e-4 cosine with 5% warmup, max length 512, fp32 on the CPU, Taskmaster-4
coffee-order dialogues. Rows:
- TRL: SFTTrainer on the `messages` column with its own chat-template handling, batch 4; its
  defaults except gradient checkpointing (off; TRL 1.x turns it on by default and it trades
  speed for memory). TRL does not pack by default; `--trl-packing` turns its packing on.
- supportbot, old default: batch 8 packed rows, no accumulation, no checkpointing (the defaults
  before issue 35; ~17 GB at its peak, the 0.9x baseline).
- supportbot, default: `supportbot train` with no memory settings at all.
- supportbot, `--fast`: the fastest settings measured to fit in 4 GB, when they differ.
Figures: tokens/s over the training steps only (model loading and tokenising excluded; every
non-padding token a step processes), the ratio to the old default and to TRL, peak RSS of the
process, final training loss. The losses are not the same quantity: supportbot's counts
assistant tokens only, TRL's (without generation markers in SmolLM2's template) every token.
The load average before and after is printed: others' work on the machine slows every row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import ENV, ROOT

SHARED = ROOT.parent / "shared" / "data" / "transcripts" / "taskmaster4_data_00.json"
SAMPLE = ROOT / "data" / "transcripts" / "taskmaster4_sample.json"
RANK, ALPHA, DROPOUT, LR, BATCH, MAX_LENGTH, WARMUP = 16, 32, 0.05, 2e-4, 4, 512, 0.05
LORA = {"rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "learning_rate": LR,
        "max_length": MAX_LENGTH, "warmup_ratio": WARMUP, "seed": 0}
# The CPU defaults before issue 35: 8 packed rows of 512 tokens at once, all activations kept.
OLD_DEFAULT = {"batch_size": 8, "grad_accum": 1, "gradient_checkpointing": "false",
               "memory_check": "false"}


def messages_file(source: Path, n: int, target: Path) -> int:
    """The first `n` dialogues as messages JSONL (both trainers read the same file), read by
    supportbot's own Taskmaster reader."""
    from training.formats import load_conversations

    dialogues = load_conversations([source], "taskmaster", "fail")[:n]
    with target.open("w", encoding="utf-8") as file:
        for d in dialogues:
            turns = [{"role": t.role, "content": t.content} for t in d.turns]
            file.write(json.dumps({"id": d.id, "messages": turns}) + "\n")
    return len(dialogues)


def base_model() -> Path:
    from bot.generation.bundled import resolve_model_path
    from bot.settings import Settings

    settings = Settings()
    return Path(resolve_model_path(settings.model.base_model, settings.model.cache_dir))


def run_trl(data: Path, model_dir: Path, steps: int, packing: bool, work: Path) -> dict[str, Any]:
    """One SFTTrainer run in this process; prints its figures as JSON."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(work / "trl"), max_steps=steps, per_device_train_batch_size=BATCH,
        learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=math.ceil(WARMUP * steps),
        max_length=MAX_LENGTH, packing=packing,
        gradient_checkpointing=False, use_cpu=True, bf16=False, logging_steps=1,
        save_strategy="no", report_to="none", seed=0, max_grad_norm=1.0,
        include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    lora = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    losses: list[float] = []

    class Losses(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora, callbacks=[Losses()])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = int(trainer.state.num_input_tokens_seen)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "final_loss": losses[-1] if losses else float("nan"),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_supportbot(data: Path, model_dir: Path, steps: int, name: str,
                   settings: Mapping[str, object], work: Path) -> dict[str, Any]:
    """`supportbot train` as a user runs it, with `settings` over the defaults; figures from its
    metrics.json (peak RSS: the process's own ru_maxrss)."""
    out = work / name
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent)) or "supportbot"
    merged: dict[str, object] = {**LORA, "eval_fraction": 0.0, "eval_every": 0,
                                 "save_every": steps, **settings}
    cmd = [exe, "train", str(data), "--format", "messages", "--out", str(out), "--base-model",
           str(model_dir), "--max-steps", str(steps), "--samples", "0",
           *(f"--set={k}={v}" for k, v in merged.items())]
    subprocess.run(cmd, check=True, env=ENV, cwd=work, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    done = metrics["train"]
    tokens = sum(s["tokens"] for s in done)
    seconds = sum(s["tokens"] / s["tokens_per_s"] for s in done)  # the steps' own wall time
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "final_loss": done[-1]["loss"], "peak_rss_mb": metrics["peak_memory_mb"],
            "checkpointing": metrics.get("gradient_checkpointing")}


def parse_settings(text: str) -> dict[str, str]:
    """'batch_size=2,grad_accum=4' -> {'batch_size': '2', 'grad_accum': '4'}."""
    pairs = [p.partition("=") for p in text.split(",") if p.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise SystemExit(f"--fast {text}: expected KEY=VALUE[,KEY=VALUE...]")
    return {k.strip(): v.strip() for k, _, v in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--conversations", type=int, default=96)
    parser.add_argument("--trl-packing", action="store_true")
    parser.add_argument("--fast", default="", help="TrainConfig settings of the fastest run "
                        "that fits in 4 GB, when not the default (KEY=VALUE,...)")
    parser.add_argument("--worker", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = base_model()
    if args.worker == "trl":
        print(json.dumps(run_trl(args.data, model_dir, args.steps, args.trl_packing, args.work)))
        return
    rows: dict[str, Mapping[str, object]] = {"supportbot, default": {},
                                             "supportbot, old default (batch 8)": OLD_DEFAULT}
    if args.fast:
        rows[f"supportbot, {args.fast}"] = parse_settings(args.fast)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "coffee.jsonl"
        n = messages_file(SHARED if SHARED.is_file() else SAMPLE, args.conversations, data)
        print(f"{n} Taskmaster-4 dialogues, {args.steps} steps; load average before "
              f"{load_before[0]:.2f} (1 min), {load_before[1]:.2f} (5 min)", flush=True)
        trl_cmd = [sys.executable, __file__, "--worker", "trl", "--data", str(data), "--work",
                   str(work), "--steps", str(args.steps)]
        if args.trl_packing:
            trl_cmd.append("--trl-packing")
        done = subprocess.run(trl_cmd, check=True, env=ENV, capture_output=True, text=True)
        results = {f"TRL SFTTrainer (batch {BATCH})": json.loads(
            done.stdout.strip().splitlines()[-1])}
        print(json.dumps(results), flush=True)
        for i, (name, settings) in enumerate(rows.items()):
            results[name] = run_supportbot(data, model_dir, args.steps, f"sb-{i}", settings,
                                           work)
            print(json.dumps({name: results[name]}), flush=True)
    load_after = os.getloadavg()
    trl = results[f"TRL SFTTrainer (batch {BATCH})"]
    old = results["supportbot, old default (batch 8)"]
    print(f"{'trainer':40} {'tokens/s':>9} {'vs old':>7} {'vs TRL':>7} {'tokens':>8} "
          f"{'peak RSS':>9} {'final loss':>10}")
    for name, r in results.items():
        print(f"{name:40} {r['tokens_per_s']:9.1f} "
              f"{r['tokens_per_s'] / old['tokens_per_s']:6.2f}x "
              f"{r['tokens_per_s'] / trl['tokens_per_s']:6.2f}x {r['tokens']:8d} "
              f"{r['peak_rss_mb'] / 1000:7.2f}GB {r['final_loss']:10.3f}")
    print(f"load average after: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min); "
          "others' work on the 2 cores slows every row")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
