"""Names of the files training writes and serving reads, in one place for both sides."""

from __future__ import annotations

ADAPTER_CONFIG = "adapter_config.json"  # peft writes it; its presence marks an adapter folder
ADAPTER_GGUF = "adapter.gguf"  # next to adapter_config.json; the llama_cpp backend looks here
