"""Text generation: the Generator interface, prompt building, candidate ranking, backends."""

from __future__ import annotations
