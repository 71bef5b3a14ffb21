"""supportbot runtime: settings, dialogue manager, storage, channels and the command line."""

from __future__ import annotations

__version__ = "0.1.0"
