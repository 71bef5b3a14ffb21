"""How long `supportbot train` takes to stop after a SIGTERM, against how long one optimizer step
takes, in the same run: a scheduler's grace period must cover the stop.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_stop.py [--package /work/main] [--runs 2]
     [--label after] [--set batch_size=1 ...]

`supportbot train` runs as a user runs it (the bundled SmolLM2-135M, 256 Taskmaster-4
coffee-order dialogues read as bench_train.py reads them, the default settings: batch 1 x
grad_accum 8, max length 512) in a child process whose `bot` and `training` packages are
`--package`'s (by PYTHONPATH: so one script measures two checkouts). Once step 2 is logged,
the step time is the gap between the step-1 and step-2 log lines; the SIGTERM goes out half a
step later, in the middle of step 3. Figures: the step time,
the seconds from the signal to the process's exit (the stop, the checkpoint and the partial
adapter), their ratio, when the log said it was stopping (the rest is saving and exiting),
and the exit status (143 expected).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_train import SAMPLE, SHARED, messages_file
from common import ENV, ROOT

WAIT_S = 900.0


def _logged(log: Path, text: str) -> bool:
    return text in log.read_text(encoding="utf-8", errors="replace")


def one_run(package: Path, work: Path, settings: list[str]) -> dict[str, Any]:
    """One stopped run: (step seconds, stop seconds, exit status)."""
    out, log_path = work / "out", work / "train.log"
    data = work / "dialogues.jsonl"  # enough rows for full 8-row windows in steps 1-3
    messages_file(SHARED if SHARED.is_file() else SAMPLE, 256, data)
    cmd = [sys.executable, "-m", "bot", "train", str(data), "--format", "messages", "--out",
           str(out),
           "--max-steps", "8", "--samples", "0", "--set", "save_every=0",
           "--set", "save_every_minutes=0", *(f"--set={s}" for s in settings)]
    with log_path.open("w") as log:
        child = subprocess.Popen(cmd, cwd=work, env={**ENV, "PYTHONPATH": str(package)},
                                 stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_S
        marks: dict[str, float] = {}
        try:
            while "step 2/" not in marks:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"training ended or hung before step 2: {log_path}\n"
                                     + log_path.read_text()[-2000:])
                for mark in ("step 1/", "step 2/"):
                    if mark not in marks and _logged(log_path, mark):
                        marks[mark] = time.perf_counter()
                time.sleep(0.05)
            step_s = marks["step 2/"] - marks["step 1/"]
            time.sleep(step_s / 2)
            sent = time.perf_counter()
            child.send_signal(signal.SIGTERM)
            decided_s: float | None = None
            while (status := child.poll()) is None:
                if decided_s is None and _logged(log_path, "stopping at step"):
                    decided_s = time.perf_counter() - sent
                if time.perf_counter() - sent > WAIT_S:
                    raise SystemExit(f"no exit {WAIT_S:.0f} s after SIGTERM: {log_path}")
                time.sleep(0.05)
            stop_s = time.perf_counter() - sent
        finally:
            if child.poll() is None:
                child.kill()
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {"step_s": step_s, "stop_s": stop_s, "decided_s": decided_s,
            "ratio": stop_s / step_s, "status": status,
            "stopped_at_step": metrics.get("stopped_at_step"), "partial": metrics.get("partial")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT,
                        help="The checkout whose `bot` and `training` run [default: this one].")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--label", default="")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        help="A TrainConfig setting, KEY=VALUE (repeatable).")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for number in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-stop-") as work:
            row = one_run(args.package.resolve(), Path(work), args.settings)
        rows.append(row)
        print(f"run {number + 1}: step {row['step_s']:.1f} s, SIGTERM -> exit "
              f"{row['stop_s']:.1f} s ({row['ratio']:.2f} of a step; stop decided after "
              f"{row['decided_s'] or float('nan'):.1f} s), exit status "
              f"{row['status']}, stopped at step {row['stopped_at_step']}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"package": str(args.package), "label": args.label, "runs": rows}))


if __name__ == "__main__":
    main()
