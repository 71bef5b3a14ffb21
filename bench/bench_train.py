"""LoRA fine-tuning speed: `supportbot train` against TRL's SFTTrainer, same model, LoRA config,
data and steps, in one run.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_train.py [--steps 20] [--conversations 96]

Each trainer runs in its own process (so peak memory is its own): the bundled SmolLM2-135M,
LoRA r=16 / alpha 32 / dropout 0.05 on all linear projections, lr 2e-4 cosine with 5% warmup,
batch 4, max length 512, fp32 on the CPU, Taskmaster-4 coffee-order dialogues.
- TRL: SFTTrainer on the `messages` column with its own chat-template handling; its defaults
  except gradient checkpointing (off, as in supportbot; TRL 1.x turns it on by default and it
  trades speed for memory). TRL does not pack by default; `--trl-packing` turns its packing on.
- supportbot: `supportbot train` on the same file, packed rows (the default) and, as a second
  row, unpacked (`--set pack=false`: length-grouped batches).
Figures: tokens/s over the training steps only (model loading and tokenising excluded; every
non-padding token a step processes), peak RSS of the process, final training loss. The losses
are not the same quantity: supportbot's counts assistant tokens only, TRL's (without generation
markers in SmolLM2's template) every token.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ENV, ROOT

SHARED = ROOT.parent / "shared" / "data" / "transcripts" / "taskmaster4_data_00.json"
SAMPLE = ROOT / "data" / "transcripts" / "taskmaster4_sample.json"
RANK, ALPHA, DROPOUT, LR, BATCH, MAX_LENGTH, WARMUP = 16, 32, 0.05, 2e-4, 4, 512, 0.05
LORA = {"rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "learning_rate": LR,
        "batch_size": BATCH, "max_length": MAX_LENGTH, "warmup_ratio": WARMUP, "seed": 0}


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


def run_supportbot(data: Path, model_dir: Path, steps: int, pack: bool,
                   work: Path) -> dict[str, Any]:
    """`supportbot train` as a user runs it; figures from its metrics.json."""
    out = work / ("sb-packed" if pack else "sb-unpacked")
    exe = shutil.which("supportbot", path=str(Path(sys.executable).parent)) or "supportbot"
    settings = {**LORA, "pack": str(pack).lower(), "eval_fraction": 0.0, "eval_every": 0,
                "save_every": steps}
    cmd = [exe, "train", str(data), "--format", "messages", "--out", str(out), "--base-model",
           str(model_dir), "--max-steps", str(steps),
           *(f"--set={k}={v}" for k, v in settings.items())]
    subprocess.run(cmd, check=True, env=ENV, cwd=work)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    done = metrics["train"]
    tokens = sum(s["tokens"] for s in done)
    seconds = sum(s["tokens"] / s["tokens_per_s"] for s in done)  # the steps' own wall time
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "final_loss": done[-1]["loss"], "peak_rss_mb": metrics["peak_memory_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=96)
    parser.add_argument("--trl-packing", action="store_true")
    parser.add_argument("--worker", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    model_dir = base_model()
    if args.worker == "trl":
        print(json.dumps(run_trl(args.data, model_dir, args.steps, args.trl_packing, args.work)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "coffee.jsonl"
        n = messages_file(SHARED if SHARED.is_file() else SAMPLE, args.conversations, data)
        print(f"{n} Taskmaster-4 dialogues, {args.steps} steps of batch {LORA['batch_size']}")
        trl_cmd = [sys.executable, __file__, "--worker", "trl", "--data", str(data), "--work",
                   str(work), "--steps", str(args.steps)]
        if args.trl_packing:
            trl_cmd.append("--trl-packing")
        done = subprocess.run(trl_cmd, check=True, env=ENV, capture_output=True, text=True)
        results = {"trl": json.loads(done.stdout.strip().splitlines()[-1]),
                   "supportbot (packed)": run_supportbot(data, model_dir, args.steps, True, work),
                   "supportbot (unpacked)": run_supportbot(data, model_dir, args.steps, False,
                                                           work)}
    base = results["trl"]
    print(f"{'trainer':24} {'tokens/s':>9} {'vs TRL':>7} {'tokens':>8} {'peak RSS':>9} "
          f"{'final loss':>10}")
    for name, r in results.items():
        ratio = r["tokens_per_s"] / base["tokens_per_s"]
        print(f"{name:24} {r['tokens_per_s']:9.1f} {ratio:6.2f}x {r['tokens']:8d} "
              f"{r['peak_rss_mb']:7.0f}MB {r['final_loss']:10.3f}")


if __name__ == "__main__":
    main()
