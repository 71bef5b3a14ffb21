"""Fine-tuning on support transcripts (LoRA SFT); filled in by the training issue."""

from __future__ import annotations
